"""step_check: table-driven against hand-checked working."""

import pytest

from reasontune.config import FormatConfig, RewardsConfig
from reasontune.rewards import build_reward_funcs
from reasontune.rewards.steps import SETUP_CREDIT, STEP_SCORE, evaluate, step_score

Q = "Maya has 39 coins. She loses 38 coins. Then she buys 4 bags of 25 coins. How many coins now?"


@pytest.mark.parametrize("expr,value", [
    ("39 - 38", 1), ("4 x 25", 100), ("4 × 25", 100), ("(3 + 4) * 2", 14), ("7 / 2", 3.5), ("-3 + 5", 2),
    ("1,000 + 1", 1001), ("2 ** 3", None), ("abs(3)", None), ("x", None), ("", None), ("1 / 0", None),
    ("three", None), ("__import__('os')", None),
])
def test_evaluate_plain_arithmetic_only(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize("working,fraction", [
    ("39 - 38 = 1\n4 x 25 = 100\n1 + 100 = 101", 1.0),   # all right, each grounded
    ("39 - 38 = 10\n10 + 100 = 110", 0.0),                # a wrong line, then a line on a number nobody made
    ("39 - 38 = 1\n1 + 4 * 25 = 1 + 100 = 101", 1.0),     # a chain: every part must agree
    ("39 - 38 = 1\n1 + 4 * 25 = 1 + 100 = 102", 0.5),     # the chain's last part is wrong
    ("1 + 1 = 2\n2 + 2 = 4", 0.0),                        # right but not from the question: farming earns nothing
    ("39 - 38 = 1\n1 + 1 = 2", 1.0),                      # an earlier result counts as grounded
    ("Maya has coins.\nThe answer is 101", None),         # no equation: nothing to credit
    ("so x = 101", None),                                 # prose with '=' is not an equation line
])
def test_step_score_table(working, fraction):
    expected = 0.0 if fraction is None else STEP_SCORE * fraction
    assert step_score(working, Q) == pytest.approx(expected)


def test_step_check_reads_only_the_working_and_needs_questions():
    fmt = FormatConfig()
    funcs, _ = build_reward_funcs(RewardsConfig(names=["step_check"], on_error="raise"), fmt)
    (f,) = funcs
    good = f"39 - 38 = 1\n{fmt.reasoning_end}\n{fmt.solution_start}1 + 1 = 3{fmt.solution_end}"
    chat = [[{"role": "system", "content": "Solve 5 + 5."}, {"role": "user", "content": Q}]]
    assert f([good], question=[Q]) == [STEP_SCORE]  # the answer block's '1 + 1 = 3' is not working
    assert f([good], prompts=chat) == [STEP_SCORE]  # the question from the last user turn
    with pytest.raises(ValueError, match="question"):
        f([good])


REF = "39 - 38 = 1\n4 * 25 = 100\n1 + 100 = 101"


@pytest.mark.parametrize("working,with_path,without_path", [
    ("39 - 38 = 1\n4 x 25 = 100\n1 + 100 = 101", 1.0, 1.0),  # the reference's own steps
    ("39 + 38 = 77\n4 x 25 = 100\n77 + 100 = 177", 1 / 3, 1.0),  # right sums of the wrong operation
    ("39 - 38 = 1\n1 + 4 * 25 = 1 + 100 = 101", 1.0, 1.0),  # a chain lands on the path by its value
    ("4 x 25 = 100\n39 + 100 = 139\n139 - 38 = 101", 1 / 3, 1.0),  # another valid order: the answer check credits it
    ("39 - 38 = 2", SETUP_CREDIT / 3, 0.0),  # the reference step, miscalculated: credit for the setup only
    ("39 - 38 = 2\n2 + 100 = 102", SETUP_CREDIT / 3, 0.0),  # a wrong result grounds nothing after it
    ("39 - 38 = 1", 1 / 3, 1.0),  # one step of three: a third of the credit, not all of it
    ("39 - 38 = 1\n39 + 38 = 77\n4 x 25 = 100\n4 + 25 = 29\n1 + 100 = 101", 3 / 5, 1.0),  # hedged: diluted
    ("39 + 38 = 78", 0.0, 0.0),  # the wrong operation, miscalculated
])
def test_step_score_reference_path(working, with_path, without_path):
    from reasontune.rewards.steps import reference_steps

    assert step_score(working, Q, reference_steps(REF)) == pytest.approx(STEP_SCORE * with_path)
    assert step_score(working, Q) == pytest.approx(STEP_SCORE * without_path)


@pytest.mark.parametrize("worked,expected", [
    ("39 - 38 = 1\n1 + 100 = 101", [(1, "Sub", 39, 38), (101, "Add", 1, 100)]),
    # GSM8K's prose: the operation before the '=' when it makes the result, else the value alone
    ("Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 1,072 clips.", [(24, "Div", 48, 2), (1072, None, None, None)]),
    ("a box 4 x 5 = 20", [(20, "Mult", 4, 5)]),
    ("", None), (None, None), ("no equations here", None),
])
def test_reference_steps_read_each_result_and_its_operation(worked, expected):
    import ast

    from reasontune.rewards.steps import Step, reference_steps

    want = None if expected is None else [Step(r, getattr(ast, op) if op else None, a, b) for r, op, a, b in expected]
    assert reference_steps(worked) == want


# Completions from the demo's warm-up samples (runs/demo*/evals/warmup) that the old step_check paid in full
# with a wrong answer: (question, reference working, reference answer, completion)
FULL_CREDIT_WRONG = [
    # the reference's results hit in the other order by the wrong operations
    ("Felix starts with 18 apples. Next, he donates 4 apples. Later, Carlos hands him another 8 apples. How many "
     "apples does Felix have in the end?", "18 - 4 = 14\n14 + 8 = 22", "22",
     "18 + 4 = 22\n22 - 8 = 14\n</think>\n<answer>14</answer>"),
    ("Hana starts with 8 candies. Leo takes 3 candies from her. After that, Hana makes 6 new candies. What is the "
     "number of candies Hana has now?", "8 - 3 = 5\n5 + 6 = 11", "11", "8 + 3 = 11\n11 - 6 = 5\n</think>\n<answer>5</answer>"),
    # right working, then a wrong answer or none
    ("There are 12 stickers in Ben's room. Next, he receives 1 stickers from Carlos. How many stickers does Ben end "
     "up with?", "12 + 1 = 13", "13", "12 + 1 = 13\n</think>\n<answer>1</answer>"),
    ("There are 18 stickers in Omar's room. He wins 9 stickers in a game. How many stickers does Omar end up with?",
     "18 + 9 = 27", "27", "18 + 9 = 27\n</think>"),
    ("Zoe keeps 6 apples in a drawer. Later, she throws away 2 broken apples. Then she buys 4 more apples. How many "
     "apples does Zoe have now?", "6 - 2 = 4\n4 + 4 = 8", "8", "6 - 2 = 4\n4 + 4 = 8\n</answer>\n<answer>"),
]


@pytest.mark.parametrize("question,worked,answer,completion", FULL_CREDIT_WRONG)
def test_no_wrong_answer_gets_full_step_credit(question, worked, answer, completion):
    """Issue 22: on a row with a reference working, a completion whose answer is wrong never earns the full
    STEP_SCORE (each of these earned it before); the same working under the right answer does."""
    fmt = FormatConfig(reasoning_start="<think>", reasoning_end="</think>", solution_start="<answer>",
                       solution_end="</answer>")
    (f,), _ = build_reward_funcs(RewardsConfig(names=["step_check"], on_error="raise"), fmt)
    (score,) = f([completion], question=[question], worked=[worked], answer=[answer])
    assert score < STEP_SCORE
    working = worked + "\n</think>\n<answer>" + answer + "</answer>"
    assert f([working], question=[question], worked=[worked], answer=[answer]) == [STEP_SCORE]


def test_right_working_under_a_wrong_answer_keeps_the_earlier_steps():
    """The cap takes the last step (the answer) down to a set-up, not the working before it: right working with
    a wrong answer still earns more than less working with a wrong answer."""
    from reasontune.rewards.steps import reference_steps

    steps = reference_steps("25 + 3 = 28\n28 - 9 = 19")
    q = "Leo has 25 cards. He buys 3 more. Then he gives 9 to Ava. How many now?"
    both = step_score("25 + 3 = 28\n28 - 9 = 19", q, steps, answered=False)
    assert both == pytest.approx(STEP_SCORE * (1 + SETUP_CREDIT) / 2)
    assert both > step_score("25 + 3 = 28", q, steps, answered=False) > 0
    assert step_score("25 + 3 = 28\n28 - 9 = 19", q, steps, answered=None) == STEP_SCORE  # no answer column


def test_step_check_uses_the_worked_column_when_the_row_has_one():
    fmt = FormatConfig()
    funcs, _ = build_reward_funcs(RewardsConfig(names=["step_check"], on_error="raise"), fmt)
    (f,) = funcs
    wrong_op = f"39 + 38 = 77\n{fmt.reasoning_end}\n{fmt.solution_start}77{fmt.solution_end}"
    assert f([wrong_op, wrong_op], question=[Q, Q], worked=[REF, ""]) == [0.0, STEP_SCORE]
    assert f([wrong_op], question=[Q]) == [STEP_SCORE]  # no worked column: grounded arithmetic only


# (question, reference working, the right chain written line by line)
CHAINS = [
    (Q, REF, ["39 - 38 = 1", "4 x 25 = 100", "1 + 100 = 101"]),
    ("Leo has 25 cards. He buys 3 more. Then he gives 9 to Ava. How many now?", "25 + 3 = 28\n28 - 9 = 19",
     ["25 + 3 = 28", "28 - 9 = 19"]),
    ("Zoe has 6 bags of 7 beads. She loses 5. She finds 12. How many now?", "6 * 7 = 42\n42 - 5 = 37\n37 + 12 = 49",
     ["6 * 7 = 42", "42 - 5 = 37", "37 + 12 = 49"]),
]


@pytest.mark.parametrize("question,worked,lines", CHAINS)
def test_a_complete_right_chain_scores_more_than_its_first_line(question, worked, lines):
    """The reward must not pay more for less working: every further right step of the reference adds credit."""
    from reasontune.rewards.steps import reference_steps

    path = reference_steps(worked)
    scores = [step_score("\n".join(lines[:i]), question, path) for i in range(1, len(lines) + 1)]
    assert scores == sorted(scores) and scores[-1] > scores[0]
    assert scores[-1] == pytest.approx(STEP_SCORE)


@pytest.mark.parametrize("question,worked,lines", CHAINS)
def test_an_attempted_next_step_never_costs_credit(question, worked, lines):
    """Within the reference's step count, writing one more line (even a wrong one) never lowers the score:
    stopping early to avoid a mistake must not pay."""
    from reasontune.rewards.steps import reference_steps

    path = reference_steps(worked)
    first = step_score(lines[0], question, path)
    for wrong in ("1 + 1 = 3", "1000 - 1 = 999", lines[-1].replace("=", "= 1 +")):
        assert step_score(lines[0] + "\n" + wrong, question, path) >= first


# ---- references as GSM8K, MATH and OpenR1 write them (issue 35, item 1) -------------------------------------
# (reference working, the steps read: (result, operation or None for a value alone, left, right))
REFERENCE_FORMATS = [
    # GSM8K as the hub holds it: calculator notes, '$' and units after the '=', the '####' answer line
    ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10."
     "\n#### 10", [(0.2, "Div", 12, 60), (10, "Mult", 0.2, 50)]),
    # the same after data.answers.gsm8k_worked (notes and '####' removed): what the `worked` column holds
    ("Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.",
     [(0.2, "Div", 12, 60), (10, "Mult", 0.2, 50)]),
    # a chained line: every operation on its way, and no step "1" from the '= 1 + 100'
    ("Jo has 1 + 4 * 25 = 1 + 100 = <<1+4*25=101>>101 apples.", [(100, "Mult", 4, 25), (101, "Add", 1, 100)]),
    ("Total eggs = 16 - 3 - 4 = 9 eggs", [(13, "Sub", 16, 3), (9, "Sub", 13, 4)]),
    # thousands separators on both sides; a calculator note with no visible equation before it
    ("In a week it sells 1,200 * 7 = <<1200*7=8400>>8,400 eggs.", [(8400, "Mult", 1200, 7)]),
    ("She has <<5+3=8>>8 apples", [(8, "Add", 5, 3)]),
    # percent: of an amount (20% is 0.2), and a result stated in percent (read as written)
    ("The discount is 20% * 50 = $<<20*.01*50=10>>10.", [(10, "Mult", 0.2, 50)]),
    ("She pays 100% - 20% = 80% of the price.", [(80, "Sub", 100, 20)]),
    ("So 40/50 * 100 = 80%", [(0.8, "Div", 40, 50), (80, "Mult", 0.8, 100)]),
    # MATH / OpenR1: LaTeX between dollars
    (r"So she pays $\$2.50 \times 4 = \$10$ in all.", [(10, "Mult", 2.5, 4)]),
    (r"$\frac{1}{2} \cdot 4 = 2$, and $60 \div 4 = 15$.", [(0.5, "Div", 1, 2), (2, "Mult", 0.5, 4), (15, "Div", 60, 4)]),
    (r"The total is $3 \times 1,\!000 = 3,\!000$.", [(3000, "Mult", 3, 1000)]),
    # algebra is not arithmetic: no step, not even the value
    ("We have $2x + 3 = 7$, so $x = 2$.", None),
    (r"so $\sqrt{16} = 4$ and $x \geq 5$", None),
    ("#### 10", None),
]


@pytest.mark.parametrize("worked,expected", REFERENCE_FORMATS)
def test_reference_steps_read_gsm8k_math_and_openr1_as_written(worked, expected):
    import ast
    from fractions import Fraction

    from reasontune.rewards.steps import Step, reference_steps

    def frac(v):
        return None if v is None else Fraction(str(v))

    want = None if expected is None else [Step(frac(r), getattr(ast, op) if op else None, frac(a), frac(b))
                                          for r, op, a, b in expected]
    assert reference_steps(worked) == want


WENG = ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she "
        "earn?")
WENG_WORKED = ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10")
JACKET = "A jacket costs $50. It is 20% off. How much does it cost now?"
EGGS = "A farm sells 1,200 eggs a day. How many eggs does it sell in a week?"
WALK = "Tom walks 3 hours a day. How many minutes does he walk in a week?"

# GSM8K-style rows: (question, reference working, answer, the model's working, step credit as a fraction)
GSM8K_ROWS = [
    (WENG, WENG_WORKED, "10", "12 / 60 = 0.2\n0.2 * 50 = 10", 1.0),  # 60 minutes: the reference uses it
    (WENG, WENG_WORKED, "10", "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.",
     1.0),  # the model writing as GSM8K writes
    (WENG, WENG_WORKED, "10", "<start_working_out>12 / 60 = 0.2\n0.2 * 50 = 10", 1.0),  # the marker on the line
    (WENG, WENG_WORKED, "10", "0.2 * 50 = 10", 0.0),  # 0.2 is a result of the reference, not a given: derive it
    (WENG, WENG_WORKED, "10", "12 * 50 = 600\n600 / 60 = 10", 0.0),  # another order: the answer check credits it
    (WENG, WENG_WORKED, "10", "12 + 50 = 62", 0.0),
    (JACKET, "The discount is 20% * 50 = $<<20*.01*50=10>>10.\nIt costs 50 - 10 = $<<50-10=40>>40 now.\n#### 40",
     "40", "20% * 50 = 10\n50 - 10 = 40", 1.0),
    (JACKET, "The discount is 20% * 50 = $10.\nIt costs 50 - 10 = $40 now.", "40", "0.2 * 50 = 10\n50 - 10 = 40", 1.0),
    (JACKET, "She pays 100% - 20% = 80% of the price.\nSo it costs 0.8 x 50 = $<<0.8*50=40>>40.\n#### 40", "40",
     "100 - 20 = 80\n0.8 * 50 = 40", 1.0),  # 100 percent: the reference's own number
    (EGGS, "In a week it sells 1,200 * 7 = <<1200*7=8400>>8,400 eggs.\n#### 8,400", "8400", "1,200 * 7 = 8,400",
     1.0),  # 7 days in a week
    (EGGS, "In a week it sells 1,200 * 7 = 8,400 eggs.", "8400", "1200 x 7 = 8400", 1.0),
    ("Jo has 1 apple and buys 4 bags of 25 apples. How many apples does Jo have?",
     "Jo has 1 + 4 * 25 = 1 + 100 = <<1+4*25=101>>101 apples.\n#### 101", "101", "4 * 25 = 100\n1 + 100 = 101", 1.0),
    ("Jo has 1 apple and buys 4 bags of 25 apples. How many apples does Jo have?",
     "Jo has 1 + 4 * 25 = 1 + 100 = <<1+4*25=101>>101 apples.\n#### 101", "101", "1 + 4 * 25 = 101", 1.0),
    (WALK, "He walks 3 * 60 = <<3*60=180>>180 minutes a day.\nIn a week he walks 180 * 7 = <<180*7=1260>>1,260 "
     "minutes.\n#### 1,260", "1260", "3 * 60 = 180\n180 * 7 = 1260", 1.0),
    (WALK, "He walks 3 * 60 = 180 minutes a day.\nIn a week he walks 180 * 7 = 1,260 minutes.", "1260",
     "3 * 60 = 180\n180 * 24 = 4320", 0.5),  # the second step's constant is none of the reference's
]


@pytest.mark.parametrize("question,worked,answer,working,credit", GSM8K_ROWS)
def test_gsm8k_working_earns_its_step_credit(question, worked, answer, working, credit):
    """step_check as GRPO calls it, every column of the row: right GSM8K working with '$', '%', commas, chained
    lines and the constants the reference uses (60 minutes, 7 days, 100 percent) earns its credit."""
    fmt = FormatConfig()
    (f,), _ = build_reward_funcs(RewardsConfig(names=["step_check"], on_error="raise"), fmt)
    completion = f"{working}\n{fmt.reasoning_end}\n{fmt.solution_start}{answer}{fmt.solution_end}"
    assert f([completion], question=[question], worked=[worked], answer=[answer]) == [pytest.approx(STEP_SCORE * credit)]


@pytest.mark.parametrize("working,lines", [
    ("12 / 60 = 0.2\n0.2 * 50 = 10", 2), ("Weng earns 12/60 = $0.2 per minute.\nso x = 3", 1),
    ("1 + 4 * 25 = 1 + 100 = 101", 1), ("2x + 3 = 7", 0), ("no working", 0),
])
def test_working_lines_counts_lines_with_an_equation(working, lines):
    from reasontune.rewards.steps import working_lines

    assert working_lines(working + "\n</think>\n<answer>5 = 5</answer>", "</think>") == lines


@pytest.mark.parametrize("worked,checks", [
    ("39 - 38 = 1\n4 x 25 = 100\n1 + 100 = 101", 1),  # reference steps to cap: the answer is checked
    ("", 0),  # a row without reference steps: no answer check to pay for
    ("The answer is clear from the text.", 0),
])
def test_the_answer_is_checked_only_where_a_reference_working_can_be_capped(monkeypatch, worked, checks):
    """Commit 7557c13: a row without reference steps never calls check_answer (a math_verify failure there used
    to count as a step_check error, and the check was paid for nothing)."""
    from reasontune.rewards import steps

    calls = []

    def counted(given, ref):
        calls.append((given, ref))
        if not worked:
            raise RuntimeError("math_verify failed")  # what a failure would do on a row that needs no check
        return True

    monkeypatch.setattr(steps, "check_answer", counted)
    fmt = FormatConfig()
    (f,), _ = build_reward_funcs(RewardsConfig(names=["step_check"], on_error="raise"), fmt)
    text = f"39 - 38 = 1\n{fmt.reasoning_end}\n{fmt.solution_start}101{fmt.solution_end}"
    [score] = f([text], question=[Q], worked=[worked], answer=["101"])
    assert len(calls) == checks and score > 0
