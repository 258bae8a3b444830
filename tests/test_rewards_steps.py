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
