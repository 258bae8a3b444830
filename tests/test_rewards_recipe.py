"""The recipe preset: every score of RECIPE.md's reward table, quirks included."""

from __future__ import annotations

import pytest

from reasontune.config import FormatConfig, RewardsConfig
from reasontune.rewards import build_reward_funcs

FMT = FormatConfig()
EOS = "<|endoftext|>"
R1, S0, S1 = FMT.reasoning_end, FMT.solution_start, FMT.solution_end


def ok(answer: str, tail: str = "") -> str:
    return f"Some working.{R1}{S0}{answer}{S1}{tail}"


@pytest.fixture(scope="module")
def recipe():
    funcs, weights = build_reward_funcs(RewardsConfig(names=["recipe"]), FMT, EOS)
    assert weights == [1.0, 1.0, 1.0, 1.0]
    return {f.__name__: f for f in funcs}


def score(recipe, name, completion, answer="42"):
    return recipe[name]([completion], answer=[answer])[0]


@pytest.mark.parametrize("completion, expected", [
    (ok("42"), 3.0),
    (ok("42", f"  {EOS}\n "), 3.0),                      # optional EOS and trailing white space
    (ok("42", f"{EOS}{EOS}"), 0.0),                       # one EOS only
    (ok("42", " and more"), 0.0),                         # text after the closing marker
    (ok("42", "\nmore text"), 3.0),                       # quirk: MULTILINE lets a later line follow
    (f"Working.{S0}42{S1}", 0.0),                         # no reasoning_end
    (f"{R1}{S0}{S1}", 0.0),                               # (.+?) needs at least one character
    (ok("1") + f"{S0}2{S1}", 3.0),                        # quirk: (.+?) spans two answer blocks
    (f"{R1}{S0}42", 0.0),                                 # no closing marker
    ("", 0.0),
])
def test_format_exact(recipe, completion, expected):
    assert score(recipe, "format_exact", completion) == expected


def test_format_exact_without_eos_configured():
    funcs, _ = build_reward_funcs(RewardsConfig(names=["format_exact"]), FMT, None)
    assert funcs[0]([ok("42", EOS)])[0] == 0.0
    assert funcs[0]([ok("42")])[0] == 3.0


def test_eos_falls_back_to_config():
    funcs, _ = build_reward_funcs(RewardsConfig(names=["format_exact"], eos_token="</s>"), FMT)
    assert funcs[0]([ok("42", "</s>")]) == [3.0]
    assert funcs[0]([ok("42", EOS)]) == [0.0]


@pytest.mark.parametrize("completion, expected", [
    (ok("42"), 1.5),
    ("no markers at all", -3.0),
    (f"{R1}{S0}42", 0.0),                                 # two once, closing missing: 0.5 + 0.5 - 1.0
    (f"{R1}{R1}{S0}{S0}42{S1}{S1}", -3.0),               # all repeated
    (f"{FMT.reasoning_start}{FMT.reasoning_start}" + ok("42"), 1.5),  # reasoning_start is not scored
])
def test_format_approx(recipe, completion, expected):
    assert score(recipe, "format_approx", completion) == expected


@pytest.mark.parametrize("completion, answer, expected", [
    ("no format", "42", -2.0),
    (ok("42"), "42", 5.0),
    (ok(" 42 "), "42", 3.5),                              # equal after strip
    (ok("40"), "42", 2.0),                                # ratio 0.952
    (ok("35"), "42", 1.5),                                # ratio 0.833
    (ok("10"), "42", -2.5),                               # ratio 0.238
    (ok("forty-two"), "42", -4.5),                        # not numeric
    (ok("0.0"), "0", -4.5),                               # quirk: true answer 0 divides by zero
    (ok("0"), "0", 5.0),
    (ok("\\frac{1}{2}"), "0.5", -4.5),                     # quirk: 1/2 is not 0.5
    (ok("1") + f"{S0}42{S1}", "42", -4.5),                 # quirk: group spans both blocks
])
def test_answer_check(recipe, completion, answer, expected):
    assert score(recipe, "answer_check", completion, answer) == expected


@pytest.mark.parametrize("completion, answer, expected", [
    ("no opening marker 42", "42", -2.5),
    (f"{S0}no digits here", "42", -2.5),
    (ok("42"), "42", 3.5),
    (f"{R1}{S0}1,000", "1000", 3.5),                       # quirk: read without a closing marker
    (ok("The answer is 41"), "42", -1.5),
    (ok("-7"), "-7", 3.5),
    (ok("42"), "forty-two", None),                         # not a numeric reference: does not apply
    ("no opening marker", "Yes", None),                    # ... whatever the completion (was -2.5 for all)
    (f"{S0}Hello, world", "42", 0.0),                      # the "number" is ',': unparseable
])
def test_number_check(recipe, completion, answer, expected):
    assert score(recipe, "number_check", completion, answer) == expected


def test_maximum_total_is_13(recipe):
    text = ok("42")
    assert sum(f([text], answer=["42"])[0] for f in recipe.values()) == 13.0


def test_conversational_completions(recipe):
    conv = [[{"role": "assistant", "content": ok("42")}],
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no format"}]]
    assert recipe["format_exact"](conv) == [3.0, 0.0]
    assert recipe["answer_check"](conv, answer=["42", "42"]) == [5.0, -2.0]


def test_trl_keyword_arguments_are_accepted(recipe):
    out = recipe["number_check"]([ok("42"), ok("7")], answer=["42", "42"], prompts=["p", "p"],
                                 completion_ids=[[1, 2], [3]], trainer_state=None, log_extra=lambda *a: None)
    assert out == [3.5, -1.5]


def test_custom_markers():
    fmt = FormatConfig(reasoning_start="<think>", reasoning_end="</think>", solution_start="<answer>",
                       solution_end="</answer>")
    funcs, _ = build_reward_funcs(RewardsConfig(names=["recipe"]), fmt)
    text = "x</think><answer>3</answer>"
    assert [f([text], answer=["3"])[0] for f in funcs] == [3.0, 1.5, 5.0, 3.5]
    assert [f([ok("3")], answer=["3"])[0] for f in funcs] == [0.0, -3.0, -2.0, -2.5]


# The recipe rewards use linear-time equivalents of the reference regexes (which backtrack
# cubically); on inputs small enough for the regexes, both must agree exactly.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from reasontune.rewards.extract import (  # noqa: E402
    recipe_format_answer, recipe_format_regex, recipe_number, recipe_number_regex,
)

PIECES = st.sampled_from([R1, S0, S1, EOS, "\n", " ", "\t", "1", "-", ".", ",", "x", "4 2", "\u0662", "\u2028"])


@settings(max_examples=400, deadline=None, derandomize=True)
@given(parts=st.lists(PIECES, max_size=14), eos=st.sampled_from([None, EOS]))
def test_fast_matchers_equal_the_reference_regexes(parts, eos):
    text = "".join(parts)
    m = recipe_format_regex(R1, S0, S1, eos).search(text)
    assert recipe_format_answer(text, FMT, eos) == (m.group(1) if m else None)
    m = recipe_number_regex(S0).search(text)
    assert recipe_number(text, FMT) == (m.group(1) if m else None)


@pytest.mark.parametrize("make, expected", [
    (lambda n: (R1 + S0 + "1" + S1 + "x") * n, [0.0, -3.0, -2.0, 3.5]),
    (lambda n: R1 * n + S0 * n + "1" + S1 * n + "x", [0.0, -3.0, -2.0, 3.5]),
    (lambda n: S0 * n, [0.0, -3.0, -2.0, -2.5]),
])
def test_recipe_rewards_scan_repeated_markers_without_the_backtracking_regex(recipe, monkeypatch, make, expected):
    """The reference regexes backtrack quadratically on repeated markers (RECIPE.md's `.*?` then `(.+?)`);
    the rewards use linear scans with the same answers (hypothesis test above). Here the regexes are
    removed: the rewards must not need them, and score thousands of markers as they score a few.
    Speed itself is measured in bench/rewards.py."""
    from reasontune.rewards import extract

    def banned(*a, **k):
        raise AssertionError("the backtracking reference regex was used")

    monkeypatch.setattr(extract, "recipe_format_regex", banned)
    monkeypatch.setattr(extract, "recipe_number_regex", banned)
    names = ["format_exact", "format_approx", "answer_check", "number_check"]
    for n in (2, 3000):
        assert [score(recipe, name, make(n), answer="1") for name in names] == expected, n
