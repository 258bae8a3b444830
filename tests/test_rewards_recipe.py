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
    (ok("42"), "forty-two", 0.0),                          # quirk: float() of the reference fails: 0
    (ok("1234"), "1,234", 0.0),                            # ... a reference with a comma too
    ("no opening marker", "1,234", -2.5),                  # ... but no guess is -2.5 first
    ("no opening marker", "Yes", -2.5),
    (f"{S0}Hello, world", "42", 0.0),                      # the "number" is ',': unparseable
])
def test_number_check(recipe, completion, answer, expected):
    assert score(recipe, "number_check", completion, answer) == expected


def test_number_check_does_not_apply_on_logic_rows_only(recipe):
    """rg:TASK rows with a non-numeric reference (reasoning-gym's scorer judges them): None; a numeric rg
    reference, and any row without the rg columns, score as the recipe does."""
    rg = {"rg_task": ["syllogism"], "rg_entry": ['{"question": "q", "answer": "Yes", "metadata": {}}']}
    assert recipe["number_check"](["no opening marker"], answer=["Yes"], **rg) == [None]
    assert recipe["number_check"]([ok("1")], answer=["Yes"], **rg) == [None]
    assert recipe["number_check"]([ok("12")], answer=["12"], **rg) == [3.5]
    assert recipe["number_check"]([ok("12")], answer=["Yes"]) == [0.0]


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


# ---------------------------------------------------------------- the reference, as an independent oracle
# THE REFERENCE: a literal transcription of the recipe's four reward functions and their two regexes (the
# Unsloth "Qwen3-4B-Base GRPO" notebook that RECIPE.md's reward table describes), quirks included: the bare
# `except:`, check_numbers' float() of the reference inside the try, the unescaped markers. Only the
# notebook's debug print in check_numbers is left out. Nothing here imports reasontune.
import random  # noqa: E402
import re  # noqa: E402

reasoning_start = "<start_working_out>"
reasoning_end = "<end_working_out>"
solution_start = "<SOLUTION>"
solution_end = "</SOLUTION>"
ref_eos_token = EOS

solution_end_regex = r"</SOLUTION>[\s]{0,}" + "(?:" + re.escape(ref_eos_token) + ")?"
match_format = re.compile(
    rf"{reasoning_end}.*?"
    rf"{solution_start}(.+?){solution_end_regex}"
    rf"[\s]{{0,}}$",
    flags=re.MULTILINE | re.DOTALL
)
match_numbers = re.compile(
    solution_start + r".*?[\s]{0,}([-]?[\d\.\,]{1,})",
    flags=re.MULTILINE | re.DOTALL
)


def match_format_exactly(completions, **kwargs):
    scores = []
    for completion in completions:
        score = 0
        response = completion[0]["content"]
        # Match if format is seen exactly!
        if match_format.search(response) is not None: score += 3.0  # noqa: E701
        scores.append(score)
    return scores


def match_format_approximately(completions, **kwargs):
    scores = []
    for completion in completions:
        score = 0
        response = completion[0]["content"]
        # No need to reward <start_working_out> since we always prepend it!
        score += 0.5 if response.count(reasoning_end) == 1 else -1.0
        score += 0.5 if response.count(solution_start) == 1 else -1.0
        score += 0.5 if response.count(solution_end) == 1 else -1.0
        scores.append(score)
    return scores


def check_answer(prompts, completions, answer, **kwargs):
    question = prompts[0][-1]["content"]  # noqa: F841
    responses = [completion[0]["content"] for completion in completions]

    extracted_responses = [
        guess.group(1)
        if (guess := match_format.search(r)) is not None else None
        for r in responses
    ]

    scores = []
    for guess, true_answer in zip(extracted_responses, answer):
        score = 0
        if guess is None:
            scores.append(-2.0)
            continue
        # Correct answer gets 5 points!
        if guess == true_answer:
            score += 5.0
        # Match if spaces are seen, but less reward
        elif guess.strip() == true_answer.strip():
            score += 3.5
        else:
            # We also reward it if the answer is close via ratios!
            try:
                ratio = float(guess) / float(true_answer)
                if ratio >= 0.9 and ratio <= 1.1: score += 2.0  # noqa: E701
                elif ratio >= 0.8 and ratio <= 1.2: score += 1.5  # noqa: E701
                else: score -= 2.5  # Penalize wrong answers  # noqa: E701
            except:  # noqa: E722
                score -= 4.5  # Penalize
        scores.append(score)
    return scores


def check_numbers(prompts, completions, answer, **kwargs):
    question = prompts[0][-1]["content"]  # noqa: F841
    responses = [completion[0]["content"] for completion in completions]

    extracted_responses = [
        guess.group(1)
        if (guess := match_numbers.search(r)) is not None else None
        for r in responses
    ]

    scores = []
    for guess, true_answer in zip(extracted_responses, answer):
        if guess is None:
            scores.append(-2.5)
            continue
        # Convert to numbers
        try:
            true_answer = float(true_answer.strip())
            # Remove commas like in 123,456
            guess = float(guess.strip().replace(",", ""))
            scores.append(3.5 if guess == true_answer else -1.5)
        except:  # noqa: E722
            scores.append(0)
            continue
    return scores
# ---------------------------------------------------------------- end of the reference


ORACLE_ANSWERS = ["42", "1,234", "1234", "-7", "0", "0.0", "3.5", "12.50", "1,000,000", "-1,234.5", "Yes",
                  " 42 ", "1e3", "forty-two", "\\frac{1}{2}", "0.5", "41", "45", "50", "4 2", "..", "-", "nan"]
ORACLE_TEXT = ["The answer is ", "about ", "x = ", "", " ", "\n", "so, ", "Hello, world"]


def _near(rng: random.Random, answer: str) -> str:
    """A guess at a ratio of a numeric reference that lands in each of the recipe's ratio bands."""
    try:
        return f"{float(answer) * rng.choice([0.95, 1.05, 0.85, 1.15, 3.0]):g}"
    except ValueError:
        return answer


def _oracle_completion(rng: random.Random, answer: str) -> str:
    """A completion built from the pieces the recipe's scores turn on: each marker missing, once or twice,
    answers with commas, signs and decimals (often the reference itself), text or white space or EOS after
    the closing marker, a second answer block, a missing answer."""
    guess = rng.choice([answer, answer, f" {answer.strip()} ", rng.choice(ORACLE_ANSWERS),
                        rng.choice(ORACLE_TEXT) + rng.choice(ORACLE_ANSWERS),
                        "", str(rng.randint(-2000, 2000)), f"{rng.randint(1, 9)},{rng.randint(100, 999)}",
                        f"{rng.uniform(-50, 50):.{rng.randint(0, 3)}f}", _near(rng, answer)])
    working = rng.choice(["Let me add 12 and 30.", "12 + 30 = 42", "", "think, 1,5 and -3.", "\n  \n"])
    parts = [working, reasoning_end * rng.choice([0, 1, 1, 1, 2]), rng.choice(["", "\n", " ok "]),
             solution_start * rng.choice([0, 1, 1, 1, 1, 2]), guess, solution_end * rng.choice([0, 1, 1, 1, 2])]
    tail = rng.choice(["", "", " ", "\n", f"{EOS}", f" {EOS}\n ", f"{EOS}{EOS}", " and more", "\nmore text",
                       f"{solution_start}{rng.choice(ORACLE_ANSWERS)}{solution_end}", f"\n{solution_start}7",
                       f"{reasoning_end}", "."])
    return "".join(parts) + tail


def oracle_table(n: int = 600, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(_oracle_completion(rng, a := rng.choice(ORACLE_ANSWERS)), a) for _ in range(n)]


def test_every_recipe_score_equals_the_reference_code(recipe):
    """600 generated completions x 4 rewards: our `recipe` preset (as TRL calls it, conversational completions
    with a prompts column) gives exactly the reference functions' scores, the `1,234` reference included."""
    table = oracle_table()
    prompts = [[{"role": "system", "content": FMT.prompt}, {"role": "user", "content": "q"}]] * len(table)
    completions = [[{"role": "assistant", "content": text}] for text, _ in table]
    answers = [a for _, a in table]
    pairs = [("format_exact", match_format_exactly), ("format_approx", match_format_approximately),
             ("answer_check", check_answer), ("number_check", check_numbers)]
    differ = []
    for ours, reference in pairs:
        want = reference(prompts=prompts, completions=completions, answer=answers)
        got = recipe[ours](completions, prompts=prompts, answer=answers)
        differ += [(ours, t, a, g, w) for (t, a), g, w in zip(table, got, want) if g != w]
    assert not differ, f"{len(differ)} of {len(table) * 4} scores differ, e.g. {differ[:5]}"
    # the table reaches every score the reference can give, and the reference quirks it is about
    seen = {name: {s for s in reference(prompts=prompts, completions=completions, answer=answers)}
            for name, reference in pairs}
    assert seen["number_check"] == {-2.5, 3.5, -1.5, 0}
    assert seen["answer_check"] == {-2.0, 5.0, 3.5, 2.0, 1.5, -2.5, -4.5}
    assert seen["format_exact"] == {0, 3.0} and seen["format_approx"] == {-3.0, -1.5, 0.0, 1.5}
    assert sum(a == "1,234" for a in answers) >= 20
