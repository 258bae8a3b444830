"""work_check: the label-free working check, table-driven against hand-checked working."""

import pytest

from reasontune.config import FormatConfig, RewardsConfig
from reasontune.rewards import build_reward_funcs
from reasontune.rewards.scoring import needs_labels
from reasontune.rewards.workcheck import CLOSE_MISS, WRONG_ANSWER, work_score
from reasontune.rewards.steps import STEP_SCORE

CARDS = "18 cards lie on the table. Jun puts 8 of them in a pocket. How many cards are on the table?"
TWO = "Maya has 25 coins. She finds 3 more, then spends 9. How many coins does she have?"


@pytest.mark.parametrize("question,working,answer,fraction", [
    (CARDS, "18 - 8 = 10", "10", 1.0),                      # right, grounded, every number used, answer closes
    (CARDS, "8 - 8 = 0", "0", 0.5),                         # right and grounded, but the story's 18 is never used
    (CARDS, "3 - 3 = 2", "2", 0.0),                         # wrong arithmetic on numbers the story does not give
    (CARDS, "18 - 8 = 10", "12", CLOSE_MISS),               # the answer is not what the working made
    (CARDS, "18 - 8 = 10", None, CLOSE_MISS),               # no answer block
    (CARDS, "18 + 8 = 26", "26", 1.0),                      # a label-free check cannot know the operation
    (TWO, "25 + 3 = 28\n28 - 9 = 19", "19", 1.0),           # two steps, each on a number given or made
    (TWO, "25 + 3 = 28", "28", 2 / 3),                      # a step missing: 9 unused
    (TWO, "25 + 3 = 28\n28 - 9 = 18", "18", 0.5 * 2 / 3 * CLOSE_MISS),  # a slip: last right result 28, 9 unused
    (TWO, "1 + 1 = 2\n2 + 2 = 4", "4", 0.0),                # right but not from the question: farming earns nothing
    (TWO, "25 = 25\n3 = 3\n9 = 9", "9", 0.0),               # restating numbers is no arithmetic
    (TWO, "The answer is 19", "19", 0.0),                   # no equation: nothing to credit
    (TWO, "25 + 3 - 9 = 28 - 9 = 19", "19", 1.0),           # a chain is one line, every part must agree
])
def test_work_score_table(question, working, answer, fraction):
    assert work_score(working, question, answer) == pytest.approx(STEP_SCORE * fraction)


def test_work_check_reads_no_labels_and_follows_the_contract():
    fmt = FormatConfig(reasoning_start="<think>", reasoning_end="</think>", solution_start="<answer>",
                       solution_end="</answer>")
    (fn,), _ = build_reward_funcs(RewardsConfig(names=["work_check"], on_error="raise"), fmt)
    assert needs_labels([fn]) == []
    good = "<think>\n18 - 8 = 10\n</think>\n<answer>10</answer>"
    lazy = "<think>\n8 - 8 = 0\n</think>\n<answer>0</answer>"
    # a worked solution passed as a column changes nothing: the reward never reads it
    no_answer = fn(completions=[good, lazy], question=[CARDS, CARDS])
    assert no_answer == fn(completions=[good, lazy], question=[CARDS, CARDS], worked=["18 - 8 = 12", "x"])
    assert no_answer == [pytest.approx(STEP_SCORE), pytest.approx(STEP_SCORE * 0.5)]
    # the reference answer gates it: right arithmetic under a wrong answer ("takes 8: 18 + 8 = 26") earns a quarter
    adds = "<think>\n18 + 8 = 26\n</think>\n<answer>26</answer>"
    gated = fn(completions=[good, lazy, adds], question=[CARDS] * 3, answer=["10"] * 3)
    assert gated == [pytest.approx(STEP_SCORE), pytest.approx(STEP_SCORE * 0.5 * WRONG_ANSWER),
                     pytest.approx(STEP_SCORE * WRONG_ANSWER)]
    with pytest.raises(ValueError, match="needs the questions"):
        fn(completions=[good])
