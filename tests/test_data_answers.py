"""Reference-answer extraction: boxed answers, gsm8k's ####, numbers, question hashing."""

import pytest

from reasontune.data.answers import (gsm8k_answer, gsm8k_worked, is_number, last_boxed, normalise,
                                     question_hash, reference_answer, to_text)


@pytest.mark.parametrize("text, expected", [
    (r"so \boxed{5}", "5"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\sqrt{\frac{a^{2}}{b}}} done", r"\sqrt{\frac{a^{2}}{b}}"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\boxed{ 3 }", "3"),
    (r"\boxed {42}", "42"),
    (r"$\boxed 7$", "7"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"\fbox{x+1}", "x+1"),
    (r"\boxed{(0, \infty)} and \boxed{oops", r"(0, \infty)"),  # the last box is unclosed
    (r"\boxed{unclosed", None),
    ("no box here", None),
    ("", None),
    (None, None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("She sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
    ("Total is <<1000+234=1234>>1,234 dollars.\n#### 1,234", "1234"),
    ("#### 1,234,567", "1234567"),
    ("#### -3", "-3"),
    ("#### 2.50", "2.50"),
    ("no marker", None),
])
def test_gsm8k_answer(text, expected):
    assert gsm8k_answer(text) == expected


def test_gsm8k_worked_removes_calculator_notes_and_answer_line():
    text = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert gsm8k_worked(text) == "Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips."


@pytest.mark.parametrize("value, expected", [
    ("#### 1,000", "1000"), (r"The answer is \boxed{12}.", "12"), ("  7 ", "7"), (72, "72"),
    (3.0, "3"), (2.5, "2.5"), (float("nan"), None), (None, None), ("   ", None),
])
def test_reference_answer(value, expected):
    assert reference_answer(value) == expected


@pytest.mark.parametrize("answer, expected", [
    ("42", True), ("-3", True), ("2.5", True), ("1,000", True), ("$5", True), (".5", True),
    (r"\frac{1}{2}", False), ("x=3", False), ("", False), (None, False), ("1,00", False), ("3/4", False),
])
def test_is_number(answer, expected):
    assert is_number(answer) is expected


def test_normalised_hash_ignores_case_and_whitespace():
    assert normalise("  What  is\n2+2? ") == "what is 2+2?"
    assert question_hash("What is 2+2?") == question_hash("what   IS 2+2?\n")
    assert question_hash("What is 2+2?") != question_hash("What is 2+3?")
    assert to_text(True) == "True"
