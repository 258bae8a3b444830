"""The `recipe` preset: the reference notebook's four rewards, faithful, quirks included.

Scores (RECIPE.md, "Reward functions"; maximum total 13.0):

* format_exact: +3.0 when the exact-format regex matches (`.search`), else 0.
* format_approx: for each of reasoning_end, solution_start, solution_end: +0.5 if it occurs
  exactly once, else -1.0.
* answer_check: answer = group(1) of the exact-format match; none -2.0; equal +5.0; equal
  after strip +3.5; ratio float(guess)/float(true) in [0.9, 1.1] +2.0, in [0.8, 1.2] +1.5,
  other -2.5; any exception (not numeric, and a true answer of 0: ZeroDivisionError) -4.5.
* number_check: first number after the opening marker, closed or not; none -2.5; equal as
  floats (commas removed from the guess) +3.5, unequal -1.5; a guess or a reference that float()
  cannot read 0 (so a reference `1,234` scores 0, or -2.5 without a guess, as in the recipe).

rg:TASK rows with a non-numeric reference (a logic task's "Yes": rgscore.uses_rg_scorer) are the only
rows scored otherwise: number_check does not apply there (None, TRL's contract), and answer_check also
accepts what reasoning-gym's own scorer gives full credit (a knights_knaves answer in another order):
+5.0. Every other row, a non-numeric reference included, scores as in the recipe
(tests/test_rewards_recipe.py checks every score against a transcription of the reference code).

Kept on purpose: '1/2' vs '0.5' is wrong, true answer 0 gives -4.5, a number without a
closing marker is read, `(.+?)` may span several answer blocks, and MULTILINE lets text
follow the closing marker on a later line. The `verified` preset fixes these.
"""

from __future__ import annotations

from typing import Any, Callable

from reasontune.rewards.extract import completion_text, recipe_format_answer, recipe_number
from reasontune.rewards.registry import RewardContext, register_builder
from reasontune.rewards.rgscore import FULL_CREDIT, rg_score, uses_rg_scorer


def texts_of(completions: list) -> list[str]:
    return [completion_text(c) for c in completions]


def answers_of(answer: Any, n: int, reward: str) -> list[str]:
    """The reference answers as strings; a clear error when the column is missing."""
    if answer is None:
        raise ValueError(f"reward {reward!r} needs the reference answer in an 'answer' column")
    if isinstance(answer, (str, bytes)) or not hasattr(answer, "__len__"):
        answer = [answer] * n
    if len(answer) != n:
        raise ValueError(f"reward {reward!r}: {len(answer)} answers for {n} completions")
    out = []
    for a in answer:
        if a is None:
            raise ValueError(f"reward {reward!r}: the reference answer is None")
        out.append(a if isinstance(a, str) else str(a))
    return out


def column_of(values: Any, n: int) -> list:
    """A per-sample dataset column TRL passes (one value per completion), or n Nones when absent."""
    if values is None or isinstance(values, str):
        return [values] * n
    values = list(values)
    return values if len(values) == n else [None] * n


def format_exact_score(text: str, ctx: RewardContext) -> float:
    return 3.0 if recipe_format_answer(text, ctx.fmt, ctx.eos) is not None else 0.0


def format_approx_score(text: str, ctx: RewardContext) -> float:
    fmt = ctx.fmt
    # The recipe does not score reasoning_start: prompts are prefilled with it.
    return sum(0.5 if text.count(m) == 1 else -1.0 for m in (fmt.reasoning_end, fmt.solution_start, fmt.solution_end))


def answer_check_score(text: str, true_answer: str, ctx: RewardContext, rg_task: str | None = None,
                       rg_entry: str | None = None) -> float:
    guess = recipe_format_answer(text, ctx.fmt, ctx.eos)
    if guess is None:
        return -2.0
    if guess == true_answer:
        return 5.0
    if uses_rg_scorer(true_answer, rg_task, rg_entry) and rg_score(guess.strip(), rg_task, rg_entry) >= FULL_CREDIT:
        return 5.0  # a logic answer in another form that the task's own scorer accepts
    if guess.strip() == true_answer.strip():
        return 3.5
    try:
        ratio = float(guess) / float(true_answer)  # true answer 0: ZeroDivisionError, as in the recipe
    except Exception:
        return -4.5
    if 0.9 <= ratio <= 1.1:
        return 2.0
    if 0.8 <= ratio <= 1.2:
        return 1.5
    return -2.5


def number_check_score(text: str, true_answer: str, ctx: RewardContext, rg_task: str | None = None,
                       rg_entry: str | None = None) -> float | None:
    if uses_rg_scorer(true_answer, rg_task, rg_entry):
        return None  # a logic task's answer: the reward does not apply (was -2.5 without a digit, 0 with one)
    guess = recipe_number(text, ctx.fmt)
    if guess is None:
        return -2.5
    try:  # the recipe's order: the reference first; either failing (a reference "1,234") scores 0
        true_value = float(true_answer.strip())
        guess_value = float(guess.strip().replace(",", ""))
    except Exception:
        return 0.0
    return 3.5 if guess_value == true_value else -1.5


def text_reward(score: Callable[[str, RewardContext], float], ctx: RewardContext):
    def reward(completions, **kwargs):
        return [score(t, ctx) for t in texts_of(completions)]

    return reward


def answer_reward(score: Callable[[str, str, RewardContext], float], ctx: RewardContext, name: str):
    def reward(completions, answer=None, **kwargs):
        texts = texts_of(completions)
        return [score(t, a, ctx) for t, a in zip(texts, answers_of(answer, len(texts), name))]

    return reward


def rg_answer_reward(score: Callable[..., float | None], ctx: RewardContext, name: str):
    """A reward of (text, reference, ctx, rg_task, rg_entry): rg:TASK rows pass their reasoning-gym columns."""
    def reward(completions, answer=None, rg_task=None, rg_entry=None, **kwargs):
        texts = texts_of(completions)
        n = len(texts)
        return [score(t, a, ctx, task, entry) for t, a, task, entry in
                zip(texts, answers_of(answer, n, name), column_of(rg_task, n), column_of(rg_entry, n))]

    return reward


@register_builder("format_exact")
def format_exact(ctx: RewardContext):
    """Recipe: +3.0 when the completion matches the exact format (optional EOS), else 0."""
    return text_reward(format_exact_score, ctx)


@register_builder("format_approx")
def format_approx(ctx: RewardContext):
    """Recipe: +0.5 per closing/answer marker seen exactly once, else -1.0 (range -3.0..+1.5)."""
    return text_reward(format_approx_score, ctx)


@register_builder("answer_check")
def answer_check(ctx: RewardContext):
    """Recipe: string match +5.0/+3.5, ratio +2.0/+1.5/-2.5, none -2.0, not numeric -4.5."""
    return rg_answer_reward(answer_check_score, ctx, "answer_check")


@register_builder("number_check")
def number_check(ctx: RewardContext):
    """Recipe: first number after <SOLUTION>: equal +3.5, unequal -1.5, none -2.5, unparseable 0; None on rg
    rows with a logic answer."""
    return rg_answer_reward(number_check_score, ctx, "number_check")
