"""work_check: a process reward that needs no worked solution (the reference answer, where there is one, gates it).

step_check pays working lines that perform the steps of a reference working (the `worked` column): a label on
every problem. In answers-only mode (rewards.answers_only) it falls back to the fraction of right, grounded
lines, and that fraction is easy to satisfy without solving anything. The label-free demo (issue 38, a 128-
solution primer then GRPO on answers) learned working like `8 - 8 = 0` for "18 cards lie on the table. Jun
puts 8 of them in a pocket.": a right line on a number of the story, and the story's 18 never used.

What a reader can check about working without knowing the answer:
1. every line is right (exact arithmetic, rewards/steps.py's reader);
2. every line is built on the question's numbers or on earlier right results (grounded);
3. every number the question gives is used by some right, grounded line;
4. the answer block states the last line's result (the working is what the answer came from).
And with the reference answer, which answers-only mode keeps: 5. the answer is right (else WRONG_ANSWER of it).

    score = STEP_SCORE x (right, grounded lines / lines with an equation) x (question numbers used / question
            numbers) x (1 if the answer is the last result, else CLOSE_MISS) x (WRONG_ANSWER if the answer is wrong)

No equation: 0.0 (nothing to credit). A question without numbers: factor 3 is 1. Factor 3 is soft on purpose:
GSM8K-style stories carry numbers the solution does not need ("3 friends" who are only named), so a working
that ignores one of four numbers keeps three quarters of its credit rather than none.
"""

from __future__ import annotations

from fractions import Fraction

from reasontune.rewards.check import check_answer
from reasontune.rewards.extract import extract_answer
from reasontune.rewards.recipe import texts_of
from reasontune.rewards.registry import RewardContext, register_builder
from reasontune.rewards.steps import STEP_SCORE, _chain_values, _equations, _numbers, _operations, question_of

CLOSE_MISS = 0.5  # of the credit, when the answer block is missing or is not the last line's result
# Of the credit, when the row has a reference answer (an answer is the label answers-only mode keeps) and the answer
# block misses it. Ungated, right arithmetic under a wrong answer earned the full 2.0: in the label-free demo (seed 1,
# 26 steps) GRPO drifted to adding on take-away stories ("Omar takes 2 of 19 cookies: 19 + 2 = 21"), since an
# addition is right more often than a subtraction, and level 1 fell 0.60 -> 0.45.
WRONG_ANSWER = 0.25


def work_score(working: str, question: str, answer_text: str | None, answered: bool | None = None) -> float:
    """STEP_SCORE x right-and-grounded fraction x question-numbers-used fraction x (1 or CLOSE_MISS), x WRONG_ANSWER
    when `answered` is False (the answer block misses the reference answer; None: no reference to check)."""
    given = _numbers(question)
    known, used = set(given), set()
    right, total, last = 0, 0, None
    for chain in (c for line in working.splitlines() for c in _equations(line) if len(c) > 1):
        values, exprs = _chain_values(chain)
        total += 1
        operands = _numbers(exprs[0])
        if None in values or len(set(values)) != 1 or not operands or not operands <= known:
            continue
        if not _operations(exprs[0]):  # '18 = 18' restates a number: no arithmetic done
            continue
        right += 1
        used |= operands & given
        known.add(values[0])
        last = values[0]
    if not total:
        return 0.0
    coverage = len(used) / len(given) if given else 1.0
    closes = last is not None and answer_text is not None and check_answer(answer_text, _plain(last))
    gate = WRONG_ANSWER if answered is False else 1.0
    return STEP_SCORE * (right / total) * coverage * (1.0 if closes else CLOSE_MISS) * gate


def _plain(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


@register_builder("work_check")
def work_check(ctx: RewardContext):
    """Process reward without worked solutions: 2.0 x the share of working lines that are right and built on the
    question's numbers or earlier results, x the share of the question's numbers used, x 0.5 unless the answer block
    states the last result, x 0.25 when the row's reference answer (if any) is missed. Reads no worked solution."""

    def reward(completions, question=None, prompts=None, answer=None, **kwargs):
        texts = texts_of(completions)
        source = question if question is not None else prompts
        if source is None or len(source) != len(texts):
            raise ValueError("work_check needs the questions: a 'question' column, or the prompts TRL passes")
        end = ctx.fmt.reasoning_end
        given = [extract_answer(t, ctx.fmt) for t in texts]
        refs = answer if answer is not None else [None] * len(texts)
        answered = [None if a is None else check_answer(g, a) for g, a in zip(given, refs)]
        return [work_score(t.split(end)[0] if end else t, question_of(q), g, ok)
                for t, q, g, ok in zip(texts, source, given, answered)]

    return reward
