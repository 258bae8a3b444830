"""Fuzzing: any text, and huge or deeply nested LaTeX, gives a finite float or None (or, for a check that ran
out of time, the check's own error, which rewards count); only guarded inputs ever reach sympy."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasontune.config import FormatConfig, RewardsConfig
from reasontune.rewards import build_reward_funcs, check, extract_answer, has_format, is_correct
from reasontune.rewards.check import MAX_CHARS, MAX_DEPTH, AnswerCheckError, _depth, _hazardous

FMT = FormatConfig()
R1, S0, S1 = FMT.reasoning_end, FMT.solution_start, FMT.solution_end
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                derandomize=True)


def _all_rewards():
    cfg = RewardsConfig(names=["recipe", "verified"], on_error="raise", eos_token="<|endoftext|>")
    funcs, _ = build_reward_funcs(cfg, FMT, max_completion_length=256)
    return funcs


FUNCS = _all_rewards()


SYMPY_CALLS: list = []


@pytest.fixture(autouse=True)
def guarded_sympy(monkeypatch):
    """Whatever reaches math_verify has passed the guards (size, nesting, huge integer work), and runs
    under the time limit: hand-offs are recorded and checked, the real check still runs."""
    from reasontune.rewards import timelimit

    real, limited = check._verify, timelimit.call_with_limit
    under_limit = []

    def spy(pred, gold):
        assert under_limit, "math_verify called outside call_with_limit"
        for s in (pred, gold):
            assert len(s) <= MAX_CHARS and _depth(s) <= MAX_DEPTH and not _hazardous(s), s[:200]
        SYMPY_CALLS.append((pred, gold))
        return real(pred, gold)

    def limit(fn, seconds):
        assert seconds is not None and 0 < seconds <= 1.0
        under_limit.append(1)
        try:
            return limited(fn, seconds)
        finally:
            under_limit.pop()

    monkeypatch.setattr(check, "_verify", spy)
    monkeypatch.setattr(check, "call_with_limit", limit)
    SYMPY_CALLS.clear()
    check._equivalent.cache_clear()
    yield
    check._equivalent.cache_clear()


def check_all(completion, answer: str) -> None:
    for f in FUNCS:
        try:
            out = f([completion], answer=[answer], prompts=["p"])
        except AnswerCheckError:  # a check that ran out of time: counted as the reward's error when training
            continue
        assert len(out) == 1 and (out[0] is None or (isinstance(out[0], float) and math.isfinite(out[0]))), out


marker = st.sampled_from([R1, S0, S1, FMT.reasoning_start, "<|endoftext|>", "\n", " "])
text_with_markers = st.lists(st.one_of(st.text(max_size=40), marker), max_size=12).map("".join)
answers = st.one_of(st.text(max_size=20), st.integers(-10**6, 10**6).map(str),
                    st.sampled_from(["0", "0.5", "\\frac{1}{2}"]))


@settings(max_examples=300, **SETTINGS)
@given(text=st.one_of(st.text(), text_with_markers), answer=answers)
def test_any_unicode_text(text, answer):
    check_all(text, answer)
    assert extract_answer(text, FMT) is None or S0 in text
    assert isinstance(has_format(text, FMT), bool)


def latex(depth: int = 6):
    leaf = st.one_of(st.integers(-10**12, 10**12).map(str), st.sampled_from(["x", "\\pi", "e", "i", "0", "n!"]))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda t: f"\\frac{{{t[0]}}}{{{t[1]}}}"),
        st.tuples(inner, inner).map(lambda t: f"{{{t[0]}}}^{{{t[1]}}}"),
        inner.map(lambda s: f"\\sqrt{{{s}}}"),
        inner.map(lambda s: f"({s})!"),
        st.tuples(inner, inner).map(lambda t: f"\\{{{t[0]}, {t[1]}\\}}"),
        st.tuples(inner, inner, st.sampled_from("+-*,")).map(lambda t: f"{t[0]}{t[2]}{t[1]}"),
    ), max_leaves=depth * 4)


@settings(max_examples=150, **SETTINGS)
@given(expr=latex(), answer=answers)
def test_nested_latex_in_the_answer_block(expr, answer):
    check_all(f"work{R1}{S0}${expr}${S1}", answer)


@pytest.mark.parametrize("expr", [
    "\\frac{" * 3000 + "1" + "}{2}" * 3000,
    "{" * 50_000 + "}" * 50_000,
    "2^{" * 500 + "2" + "}" * 500,
    "x" * 200_000,
    "+".join(f"\\sqrt{{{i}}}" for i in range(5000)),
    f"{S0}" * 5000 + f"{S1}" * 5000,
])
def test_huge_inputs(expr):
    check_all(f"work{R1}{S0}{expr}{S1}", "42")
    check_all(expr, expr[:100])
    assert SYMPY_CALLS == []  # none of them is handed to sympy


def test_nested_latex_is_compared_without_sympy():
    expr = "\\frac{" * 200 + "1" + "}{2}" * 200
    assert is_correct(expr, expr) is True  # identical strings need no parsing
    assert is_correct(expr, "0.5") is False  # too deep for sympy: not equal
    assert SYMPY_CALLS == []
