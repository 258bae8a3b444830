"""The `verified` preset: the recipe's rewards with their flaws fixed, plus length shaping.

* format_strict: +3.0 for the strict format (`has_format`: working-out closed once, exactly
  one non-empty answer block at the end, optional EOS). Otherwise partial credit per marker:
  +0.5 seen once, -0.5 missing, -1.0 repeated (and -1.0 for a repeated reasoning_start), so
  repeating tags never pays; the partial maximum (1.5) stays below the strict score.
* answer_equiv: answer = text inside exactly one closed answer block (`extract_answer`);
  equivalent to the reference (`check_answer`: exact rationals, else math_verify, time-limited)
  +5.0, not equivalent -1.5, no answer -2.0. No division anywhere. A check that times out or
  fails is an error for that sample (counted, None), never a cached -1.5.
* answer_equiv on rg:TASK rows with a non-numeric reference (logic tasks: "Yes", a sentence, a name):
  reasoning-gym's own scorer decides, full credit only (`rgscore.verdict`).
* number_strict: for a numeric reference only (else None: not applicable, TRL leaves it out of that
  sample's sum, instead of a flat 0 that says nothing): the whole answer must be one number
  (decoration such as $...$, \\boxed{}, 'x =' allowed) equal to the reference: +3.5; another
  number or not a number -1.5; no closed answer block -2.5.
* overlong_soft: DAPO's soft overlong punishment, 0 up to max_len - cache tokens, then linear
  down to -OVERLONG_PENALTY at max_len (and below it beyond).
* repetition_penalty: -REPETITION_PENALTY x the fraction of repeated token n-grams.
* length_penalty: Kimi k1.5's group-relative length term in [-0.5, 0.5] (correct answers get
  lambda, wrong ones min(0, lambda)); weight 0 in the preset: logged, not trained on.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from reasontune.config import ConfigError
from reasontune.rewards.check import parse_number, warm_up
from reasontune.rewards.extract import extract_answer, has_format
from reasontune.rewards.recipe import (
    answer_reward, answers_of, column_of, rg_answer_reward, text_reward, texts_of,
)
from reasontune.rewards.registry import RewardContext, register_builder
from reasontune.rewards.rgscore import is_right, verdict

CORRECT, WRONG, NO_ANSWER = 5.0, -1.5, -2.0
NUMBER_EQUAL, NUMBER_WRONG, NUMBER_NONE = 3.5, -1.5, -2.5
FORMAT_STRICT, MARKER_ONCE, MARKER_MISSING, MARKER_REPEATED = 3.0, 0.5, -0.5, -1.0
OVERLONG_PENALTY = 2.5
REPETITION_PENALTY = 2.0
REPETITION_N = 4
CHARS_PER_TOKEN = 4.0  # token estimate when TRL gives no completion_ids
_TOKEN = re.compile(r"\w+|[^\w\s]")


def format_strict_score(text: str, ctx: RewardContext) -> float:
    if has_format(text, ctx.fmt, ctx.eos):
        return FORMAT_STRICT
    fmt = ctx.fmt
    score = 0.0
    for marker in (fmt.reasoning_end, fmt.solution_start, fmt.solution_end):
        count = text.count(marker)
        score += MARKER_ONCE if count == 1 else (MARKER_MISSING if count == 0 else MARKER_REPEATED)
    if text.count(fmt.reasoning_start) > 1:
        score += MARKER_REPEATED
    return score


def answer_equiv_score(text: str, true_answer: str, ctx: RewardContext, rg_task: str | None = None,
                       rg_entry: str | None = None) -> float:
    pred = extract_answer(text, ctx.fmt)
    if pred is None:
        return NO_ANSWER
    # verdict raises on a timeout, a math_verify or a reasoning-gym scorer error: wrap_reward counts the
    # sample as an error
    return CORRECT if verdict(pred, true_answer, ctx.timeout_s, rg_task, rg_entry) else WRONG


def number_strict_score(text: str, true_answer: str, ctx: RewardContext) -> float | None:
    gold = parse_number(true_answer)
    if gold is None:
        return None  # not a numeric task: the reward does not apply (TRL's contract), no flat 0 either way
    pred = extract_answer(text, ctx.fmt)
    if pred is None:
        return NUMBER_NONE
    return NUMBER_EQUAL if parse_number(pred) == gold else NUMBER_WRONG


def repetition_score(text: str, n: int = REPETITION_N) -> float:
    tokens = _TOKEN.findall(text)
    if len(tokens) <= n:
        return 0.0
    grams = list(zip(*(tokens[i:] for i in range(n))))
    repeated = 1.0 - len(set(grams)) / len(grams)
    return -REPETITION_PENALTY * repeated if repeated > 0 else 0.0


def token_lengths(texts: list[str], completion_ids: Any) -> list[int]:
    """Completion lengths in tokens: from TRL's `completion_ids` when given, else estimated."""
    if completion_ids is not None and len(completion_ids) == len(texts):
        return [len(ids) for ids in completion_ids]
    return [math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts]


def overlong_score(length: int, max_len: int, cache: int) -> float:
    free = max_len - cache
    if length <= free:
        return 0.0
    if length <= max_len:
        return -OVERLONG_PENALTY * (length - free) / cache
    return -OVERLONG_PENALTY


@register_builder("format_strict")
def format_strict(ctx: RewardContext):
    """Verified: +3.0 strict format; else per-marker partial credit that repeats cannot farm."""
    return text_reward(format_strict_score, ctx)


@register_builder("answer_equiv")
def answer_equiv(ctx: RewardContext):
    """Verified: math equivalence (reasoning-gym's scorer for rg logic answers) inside exactly one answer
    block: +5.0 / -1.5, none -2.0."""
    warm_up()
    return rg_answer_reward(answer_equiv_score, ctx, "answer_equiv")


@register_builder("number_strict")
def number_strict(ctx: RewardContext):
    """Verified: the closed answer is exactly the reference number: +3.5 / -1.5, none -2.5; None for a
    non-numeric reference."""
    return answer_reward(number_strict_score, ctx, "number_strict")


@register_builder("repetition_penalty")
def repetition_penalty(ctx: RewardContext):
    """Verified: -2.0 x the fraction of repeated 4-grams of tokens (0 for no repetition)."""
    return text_reward(lambda text, _ctx: repetition_score(text), ctx)


@register_builder("overlong_soft")
def overlong_soft(ctx: RewardContext):
    """Verified: DAPO soft overlong punishment, 0 .. -2.5 over the last `cache` tokens."""
    max_len = ctx.max_completion_length
    if max_len is None or max_len <= 0:
        raise ConfigError(f"overlong_soft needs max_completion_length > 0 (got {max_len!r}): pass "
                          "max_completion_length to build_reward_funcs (the completion token budget) or drop "
                          "overlong_soft")
    cache = ctx.overlong_cache if ctx.overlong_cache is not None else max(1, max_len // 5)
    if not 0 < cache <= max_len:
        raise ConfigError(f"overlong cache={cache!r} must be in (0, max_completion_length={max_len}]")

    def reward(completions, completion_ids=None, **kwargs):
        texts = texts_of(completions)
        return [overlong_score(n, max_len, cache) for n in token_lengths(texts, completion_ids)]

    return reward


def _group_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def kimi_length_scores(lengths: list[int], correct: list[bool], groups: list[str]) -> list[float]:
    """Kimi k1.5: lambda = 0.5 - (len - min) / (max - min) within each group of the same prompt."""
    bounds: dict[str, tuple[int, int]] = {}
    for g, n in zip(groups, lengths):
        lo, hi = bounds.get(g, (n, n))
        bounds[g] = (min(lo, n), max(hi, n))
    out = []
    for g, n, ok in zip(groups, lengths, correct):
        lo, hi = bounds[g]
        lam = 0.0 if hi == lo else 0.5 - (n - lo) / (hi - lo)
        out.append(lam if ok else min(0.0, lam))
    return out


@register_builder("length_penalty")
def length_penalty(ctx: RewardContext):
    """Verified: Kimi k1.5 group-relative length term in [-0.5, 0.5] (weight 0 in the preset)."""
    warm_up()

    def reward(completions, answer=None, prompts=None, completion_ids=None, rg_task=None, rg_entry=None, **kwargs):
        texts = texts_of(completions)
        answers = answers_of(answer, len(texts), "length_penalty")
        n = len(texts)
        # is_right, not verdict: a failed check is logged and counted as wrong, because wrap_reward's
        # one-sample retry would score each completion as a group of one
        correct = [is_right(extract_answer(t, ctx.fmt), a, ctx.timeout_s, task, entry) for t, a, task, entry in
                   zip(texts, answers, column_of(rg_task, n), column_of(rg_entry, n))]
        if prompts is not None and len(prompts) == len(texts):
            groups = [_group_key(p) for p in prompts]
        else:
            groups = [""] * len(texts)
        return kimi_length_scores(token_lengths(texts, completion_ids), correct, groups)

    return reward
