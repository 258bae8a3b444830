"""The verified preset: each flaw of the recipe fixed, and the public checking helpers."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from reasontune.config import ConfigError, FormatConfig, RewardsConfig
from reasontune.rewards import (
    PRESETS, build_reward_funcs, extract_answer, has_format, is_correct, parse_number,
)
from reasontune.rewards.timelimit import TimeLimitExceeded, call_with_limit
from reasontune.rewards.verified import kimi_length_scores, repetition_score

FMT = FormatConfig()
EOS = "<|endoftext|>"
R0, R1, S0, S1 = FMT.reasoning_start, FMT.reasoning_end, FMT.solution_start, FMT.solution_end


def ok(answer: str, tail: str = "") -> str:
    return f"Some working.{R1}{S0}{answer}{S1}{tail}"


@pytest.fixture(scope="module")
def verified():
    funcs, weights = build_reward_funcs(RewardsConfig(names=["verified"]), FMT, EOS, max_completion_length=100,
                                        overlong_cache=20)
    named = {f.__name__: f for f in funcs}
    assert list(named) == PRESETS["verified"]
    assert dict(zip(named, weights))["length_penalty"] == 0.0  # logged, not trained on
    return named


def score(verified, name, completion, answer="42", **kw):
    return verified[name]([completion], answer=[answer], **kw)[0]


# ------------------------------------------------------------------ format_strict
@pytest.mark.parametrize("completion, expected", [
    (ok("42"), 3.0),
    (ok("42", f" {EOS}\n"), 3.0),
    (R0 + ok("42"), 3.0),                                   # reasoning_start is optional but allowed once
    (ok("42", "\nmore text"), 1.5),                         # the recipe's MULTILINE quirk is gone
    (ok("1") + f"{S0}2{S1}", -1.5),                         # two answer blocks
    (f"{R1}{S0} {S1}", 1.5),                                # empty answer
    (f"Working.{S0}42{S1}", 0.5),                           # no reasoning_end
    (f"{S0}42{S1}{R1}", 1.5),                               # answer before the working-out ends
    (R0 + R0 + ok("42"), 0.5),                              # repeated reasoning_start
    ("", -1.5),
])
def test_format_strict(verified, completion, expected):
    assert score(verified, "format_strict", completion) == expected


def test_format_credit_cannot_be_farmed_by_repeating_tags(verified):
    scores = [score(verified, "format_strict", "w" + f"{R1}{S0}42{S1}" * k) for k in range(1, 8)]
    assert scores[0] == 3.0
    assert all(s < 0 for s in scores[1:])
    assert scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------ answer_equiv
@pytest.mark.parametrize("completion, answer, expected", [
    (ok("42"), "42", 5.0),
    (ok("\\frac{1}{2}"), "0.5", 5.0),                       # recipe: -4.5
    (ok("0.5"), "\\frac{1}{2}", 5.0),
    (ok("0.0"), "0", 5.0),                                  # true answer 0: no division
    (ok("1"), "0", -1.5),
    (ok("1,000"), "1000", 5.0),
    (ok("$\\{2, 1\\}$"), "\\{1,2\\}", 5.0),                 # sets
    (ok("(0, 1]"), "(0,1]", 5.0),                           # intervals
    (ok("(0, 1)"), "(0,1]", -1.5),
    (ok("41"), "42", -1.5),
    (ok("40"), "42", -1.5),                                 # no credit for being close
    (f"{R1}{S0}42", "42", -2.0),                            # no closing marker: no answer
    (f"The answer is 42.{R1}{S0}unsure{S1}", "42", -1.5),   # answer outside the block
    (ok("41") + f"{S0}42{S1}", "42", -2.0),                 # two answer blocks
    (ok("41 or 42"), "42", -1.5),                           # hedging inside one block
    ("", "42", -2.0),
])
def test_answer_equiv(verified, completion, answer, expected):
    assert score(verified, "answer_equiv", completion, answer) == expected


# ------------------------------------------------------------------ number_strict
@pytest.mark.parametrize("completion, answer, expected", [
    (ok("42"), "42", 3.5),
    (ok("$\\boxed{42}$"), "42", 3.5),
    (ok("x = 42"), "42", 3.5),
    (ok("1,000"), "1000", 3.5),
    (ok("\\frac{1}{2}"), "0.5", 3.5),
    (ok("41"), "42", -1.5),
    (ok("41 or 42"), "42", -1.5),                           # recipe reads the first number: 41
    (ok("42 or 41"), "42", -1.5),                           # ... and here would pay +3.5
    (f"{R1}{S0}42", "42", -2.5),                            # recipe: +3.5 without the closing marker
    (ok("42") + f"{S0}42{S1}", "42", -2.5),                 # two blocks
    (ok("\\sqrt{2}"), "\\sqrt{2}", None),                   # not a numeric task: not applicable (TRL)
])
def test_number_strict(verified, completion, answer, expected):
    assert score(verified, "number_strict", completion, answer) == expected


# ------------------------------------------------------------------ overlong_soft
@pytest.mark.parametrize("n_tokens, expected", [(0, 0.0), (80, 0.0), (90, -1.25), (100, -2.5), (150, -2.5)])
def test_overlong_soft_on_completion_ids(verified, n_tokens, expected):
    assert score(verified, "overlong_soft", "short", completion_ids=[[7] * n_tokens]) == pytest.approx(expected)


def test_overlong_soft_estimates_tokens_from_characters(verified):
    assert score(verified, "overlong_soft", "a" * 40) == 0.0           # ~10 tokens
    assert score(verified, "overlong_soft", "a" * 360) == pytest.approx(-1.25)  # ~90 tokens
    assert score(verified, "overlong_soft", "a" * 4000) == -2.5


def test_overlong_soft_needs_a_length():
    with pytest.raises(ConfigError, match="max_completion_length"):
        build_reward_funcs(RewardsConfig(names=["overlong_soft"]), FMT)
    with pytest.raises(ConfigError, match="cache"):
        build_reward_funcs(RewardsConfig(names=["overlong_soft"]), FMT, max_completion_length=10, overlong_cache=11)


def test_preset_without_length_is_an_error_not_a_smaller_set():
    """A preset is one reward set wherever it is built: overlong_soft is never silently left out."""
    with pytest.raises(ConfigError, match="overlong_soft needs max_completion_length.*preset 'verified'"):
        build_reward_funcs(RewardsConfig(names=["verified"]), FMT)
    funcs, weights = build_reward_funcs(RewardsConfig(names=["verified"]), FMT, max_completion_length=64)
    assert [f.__name__ for f in funcs] == PRESETS["verified"] and len(weights) == len(funcs)


# ------------------------------------------------------------------ repetition and length
def test_repetition_penalty(verified):
    assert score(verified, "repetition_penalty", ok("42")) == 0.0
    assert score(verified, "repetition_penalty", "Let me try again. " * 100 + ok("42")) < -1.5
    assert -2.0 <= repetition_score("a b c d e " * 1000) < -1.9
    assert repetition_score("") == 0.0


def test_length_penalty_is_group_relative():
    lengths, correct = [10, 20, 30, 10, 10], [True, True, False, False, True]
    groups = ["a", "a", "a", "b", "b"]
    assert kimi_length_scores(lengths, correct, groups) == [0.5, 0.0, -0.5, 0.0, 0.0]


def test_length_penalty_reward(verified):
    short, long_ = ok("42"), "x" * 400 + ok("42")
    out = verified["length_penalty"]([short, long_, "x" * 800 + ok("41")], answer=["42"] * 3,
                                     prompts=["p"] * 3)
    assert out[0] == 0.5 and out[1] < out[0] and out[2] == -0.5


# ------------------------------------------------------------------ public helpers
@pytest.mark.parametrize("text, expected", [
    (ok(" 42 "), "42"),
    (f"{S0}42", None),
    (ok("1") + f"{S0}2{S1}", None),
    (f"{S1}42{S0}", None),
    (ok("   "), None),
    ("no markers 42", None),
    (f"The answer{S0}x = 3{S1} and after", "x = 3"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text, FMT) == expected


@pytest.mark.parametrize("text, expected", [
    (ok("42"), True),
    (R0 + ok("42", "\n"), True),
    (ok("42", EOS), False),                                 # EOS only allowed when given
    (ok("42", " tail"), False),
    (f"{S0}42{S1}", False),
    (f"{R1}{R1}{S0}42{S1}", False),
    (f"{R1}{R0}{S0}42{S1}", False),
])
def test_has_format(text, expected):
    assert has_format(text, FMT) is expected


def test_has_format_with_eos():
    assert has_format(ok("42", f" {EOS} "), FMT, EOS)


@pytest.mark.parametrize("pred, gold, expected", [
    ("42", "42", True), ("1,234,567", "1234567", True), ("1,2", "12", False), ("1/2", "0.5", True),
    ("\\frac12", "0.5", True), ("-\\frac{3}{4}", "-0.75", True), ("0.333", "1/3", False),
    ("\\sqrt{4}", "2", True), ("2\\pi", "\\pi \\cdot 2", True), ("x^2+2x+1", "(x+1)^2", True),
    ("$\\boxed{7}$", "7", True), ("3", "x = 3", True), ("", "0", False), (None, "0", False),
    ("1/0", "0", False), ("1e999999", "1", False), ("\u0664\u0662", "42", False),
])
def test_is_correct(pred, gold, expected):
    assert is_correct(pred, gold) is expected


def test_parse_number():
    assert parse_number("1{,}000") == 1000 and parse_number("\\$") is None and parse_number("1,2") is None


# Inputs whose evaluation is one huge integer operation: refused by the guards, never handed to sympy.
REFUSED = ["2^{10^{10}}", "9!!!!!!", "\\prod_{i=1}^{10^{6}} i", "x^{x^{x^{x}}}", "\\frac{" * 13 + "1" + "}{2}" * 13,
           "(10^{9})!", "99999999^{99999}", "x" * 400]


@pytest.fixture
def sympy_calls(monkeypatch):
    """Every (pred, gold) handed to math_verify; the real check still runs."""
    from reasontune.rewards import check

    calls, real = [], check._verify
    monkeypatch.setattr(check, "_verify", lambda p, g: calls.append((p, g)) or real(p, g))
    check._equivalent.cache_clear()
    yield calls
    check._equivalent.cache_clear()


@pytest.mark.parametrize("pred", REFUSED)
def test_hazardous_inputs_are_refused_before_sympy(pred, sympy_calls):
    assert is_correct(pred, "5") is False
    assert is_correct(pred, "x+1") is False  # a non-numeric reference would otherwise go to math_verify
    assert sympy_calls == []


@pytest.fixture
def spinning_check(monkeypatch):
    """math_verify replaced by a check that never ends on its first `spins` calls, then says 'equal'."""
    from reasontune.rewards import check

    state = {"spins": 1, "calls": 0}

    def verify(pred, gold):
        state["calls"] += 1
        if state["calls"] <= state["spins"]:
            while True:
                pass
        return True

    monkeypatch.setattr(check, "_verify", verify)
    check._equivalent.cache_clear()
    yield state
    check._equivalent.cache_clear()


@pytest.mark.parametrize("in_thread", [False, True])
def test_time_limit_fires_on_a_check_built_to_exceed_it(spinning_check, in_thread):
    """The check never returns on its own; only the time limit (a signal in the main thread, an injected
    exception in a worker thread) can end it."""
    from reasontune.rewards.check import AnswerCheckError, check_answer

    spinning_check["spins"] = 2
    out = {}

    def work():
        try:
            check_answer("\\sqrt{4}", "2^{1}", timeout_s=0.05)
        except AnswerCheckError as e:
            out["error"] = str(e)
        out["is_correct"] = is_correct("\\sqrt{9}", "3^{1}", timeout_s=0.05)

    if in_thread:
        t = threading.Thread(target=work)
        t.start()
        t.join(60)
        assert not t.is_alive()
    else:
        work()
    assert "timed out" in out["error"] and out["is_correct"] is False


def test_a_timed_out_check_is_tried_again_not_cached(spinning_check):
    from reasontune.rewards.check import AnswerCheckError, check_answer

    with pytest.raises(AnswerCheckError, match="timed out"):
        check_answer("\\sqrt{4}", "2^{1}", timeout_s=0.05)
    assert check_answer("\\sqrt{4}", "2^{1}", timeout_s=0.05) is True  # the second try completes
    assert spinning_check["calls"] == 2


def test_a_failed_check_is_tried_again_not_cached(monkeypatch):
    from reasontune.rewards import check

    calls = []

    def verify(pred, gold):
        calls.append(pred)
        if len(calls) == 1:
            raise ValueError("sympy bug")
        return True

    monkeypatch.setattr(check, "_verify", verify)
    check._equivalent.cache_clear()
    try:
        with pytest.raises(check.AnswerCheckError, match="ValueError: sympy bug"):
            check.check_answer("\\sqrt{16}", "2^{2}")
        assert check.is_correct("\\sqrt{16}", "2^{2}") is True
    finally:
        check._equivalent.cache_clear()


@pytest.mark.parametrize("failure", ["timeout", "error"])
def test_answer_equiv_counts_a_failed_check_as_an_error(spinning_check, monkeypatch, failure):
    """A check that times out or fails is the reward's error (counted, None, error_rate logged), not -1.5."""
    from reasontune.rewards import check, error_counts

    spinning_check["spins"] = 100  # wrap_reward retries the failed sample on its own: it fails again
    if failure == "error":
        monkeypatch.setattr(check, "_verify", lambda p, g: 1 / 0)
    funcs, _ = build_reward_funcs(RewardsConfig(names=["answer_equiv"]), FMT, EOS, timeout_s=0.05)
    [f] = funcs
    before = error_counts().get("answer_equiv", 0)
    logged = {}
    scores = f([ok("\\sqrt{25}"), ok("7")], answer=["5^{1}", "7"],
               log_metric=lambda k, v: logged.update({k: v}))
    assert scores == [None, 5.0]
    assert error_counts()["answer_equiv"] == before + 1
    assert logged["rewards/answer_equiv/error_rate"] == 0.5


def test_a_check_that_needs_sympy_stops_at_the_time_limit():
    """A real input sympy cannot finish: binomial(10^9, 10^8) passes the guards; the limit stops it."""
    from reasontune.rewards.check import AnswerCheckError, check_answer

    with pytest.raises(AnswerCheckError, match="timed out"):
        check_answer("\\binom{10^{9}}{10^{8}}", "5", timeout_s=0.3)


@pytest.mark.parametrize("in_thread", [False, True])
def test_call_with_limit_interrupts_python_loops(in_thread):
    outcome = {}

    def spin():
        while True:
            pass

    def work():
        try:
            call_with_limit(spin, 0.2)
        except TimeLimitExceeded:
            outcome["fired"] = True
        outcome["after"] = call_with_limit(lambda: 7, 0.2)  # and nothing fires later
        time.sleep(0.3)

    if in_thread:
        t = threading.Thread(target=work)
        t.start()
        t.join(10)
    else:
        work()
    assert outcome == {"fired": True, "after": 7}
