"""Fuzzing: any text, and huge or deeply nested LaTeX, gives a finite float or None within 1 s."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasontune.config import FormatConfig, RewardsConfig
from reasontune.rewards import build_reward_funcs, extract_answer, has_format, is_correct

FMT = FormatConfig()
R1, S0, S1 = FMT.reasoning_end, FMT.solution_start, FMT.solution_end
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                derandomize=True)


def _all_rewards():
    cfg = RewardsConfig(names=["recipe", "verified"], on_error="raise", eos_token="<|endoftext|>")
    funcs, _ = build_reward_funcs(cfg, FMT, max_completion_length=256)
    return funcs


FUNCS = _all_rewards()


def check_all(completion, answer: str) -> None:
    for f in FUNCS:
        start = time.monotonic()
        out = f([completion], answer=[answer], prompts=["p"])
        took = time.monotonic() - start
        assert took < 1.0, (f.__name__, took, completion[:200] if isinstance(completion, str) else completion)
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


def test_is_correct_on_nested_latex_against_itself_is_fast():
    expr = "\\frac{" * 200 + "1" + "}{2}" * 200
    start = time.monotonic()
    assert is_correct(expr, expr) is True  # identical strings need no parsing
    assert is_correct(expr, "0.5") is False
    assert time.monotonic() - start < 1.0
