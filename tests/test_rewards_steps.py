"""step_check: table-driven against hand-checked working."""

import pytest

from reasontune.config import FormatConfig, RewardsConfig
from reasontune.rewards import build_reward_funcs
from reasontune.rewards.steps import STEP_SCORE, evaluate, step_score

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
