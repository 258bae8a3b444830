"""Text helpers shared by the rewards: completion text, the recipe's regexes, strict extraction.

Two families live here:

* the recipe's regexes, reproduced from the reference notebook with their quirks (`.search`
  with MULTILINE, a lazy `(.+?)` that may swallow further answer blocks, the number regex
  that reads a number even when the closing marker never comes);
* the strict helpers used by the `verified` preset and by evaluation: exactly one closed
  answer block, nothing but an optional EOS token and white space after it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from reasontune.config import FormatConfig


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a plain string, or a conversation (list of messages).

    For a conversation the content of the last assistant message is used (the last message
    when none has a role). Content given as a list of parts keeps its text parts.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"]
        chosen = (assistant or messages or [None])[-1]
        if chosen is None:
            raise TypeError(f"completion is a list without message dicts: {completion!r:.200}")
        return _content_text(chosen.get("content"))
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise TypeError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def _markers(fmt: FormatConfig) -> tuple[str, str, str, str]:
    return fmt.reasoning_start, fmt.reasoning_end, fmt.solution_start, fmt.solution_end


# ---------------------------------------------------------------- recipe (faithful) matching
# The reference regexes backtrack cubically (tens of seconds on 20 kB of repeated markers), so
# the recipe rewards use the linear-time equivalents below; the regexes stay as the
# specification, and tests check that both agree.
@functools.lru_cache(maxsize=64)
def recipe_format_regex(reasoning_end: str, solution_start: str, solution_end: str, eos: str | None) -> re.Pattern:
    """The reference notebook's exact-format regex (used with `.search`)."""
    eos_part = rf"(?:{re.escape(eos)})?" if eos else ""
    return re.compile(
        rf"{re.escape(reasoning_end)}.*?{re.escape(solution_start)}(.+?){re.escape(solution_end)}"
        rf"[\s]{{0,}}{eos_part}[\s]{{0,}}$",
        flags=re.MULTILINE | re.DOTALL,
    )


@functools.lru_cache(maxsize=64)
def recipe_number_regex(solution_start: str) -> re.Pattern:
    """The reference notebook's number regex (used with `.search`)."""
    return re.compile(re.escape(solution_start) + r".*?[\s]{0,}([-]?[\d\.\,]{1,})", flags=re.MULTILINE | re.DOTALL)


_RECIPE_NUMBER = re.compile(r"-?[\d.,]+")


def _line_end_after_space(text: str, p: int) -> bool:
    """Whether `[\\s]*$` (MULTILINE) can match at p: the white space run from p hits '\\n' or the end."""
    n = len(text)
    while p < n and text[p].isspace():
        if text[p] == "\n":
            return True
        p += 1
    return p == n


def _tail_ok(text: str, p: int, eos: str | None) -> bool:
    """Whether `[\\s]*(?:EOS)?[\\s]*$` (MULTILINE) matches at p."""
    if _line_end_after_space(text, p):
        return True
    if not eos:
        return False
    q = p
    while True:
        if text.startswith(eos, q) and _line_end_after_space(text, q + len(eos)):
            return True
        if q >= len(text) or not text[q].isspace():
            return False
        q += 1


def recipe_format_answer(text: str, fmt: FormatConfig, eos: str | None) -> str | None:
    """group(1) of the recipe's exact-format `.search`, or None when it does not match.

    Leftmost reasoning_end, then its first solution_start, then the first solution_end (at
    least one character later) followed by white space, an optional EOS and a line end.
    """
    r_close, s_open, s_close = fmt.reasoning_end, fmt.solution_start, fmt.solution_end
    a = text.find(r_close)
    if a < 0:
        return None
    b = text.find(s_open, a + len(r_close))
    if b < 0:
        return None
    start = b + len(s_open)
    c = text.find(s_close, start + 1)
    while c >= 0:
        if _tail_ok(text, c + len(s_close), eos or None):
            return text[start:c]
        c = text.find(s_close, c + 1)
    return None


def recipe_number(text: str, fmt: FormatConfig) -> str | None:
    """The recipe's number: the first run of digits, '.', ',' (optional '-') after the first opening marker."""
    i = text.find(fmt.solution_start)
    if i < 0:
        return None
    m = _RECIPE_NUMBER.search(text, i + len(fmt.solution_start))
    return m.group(0) if m else None


# ---------------------------------------------------------------- strict helpers
def _strip_tail(text: str, eos: str | None) -> str:
    """Drop trailing white space and at most one EOS token (with white space around it)."""
    text = text.rstrip()
    if eos and text.endswith(eos):
        text = text[: -len(eos)].rstrip()
    return text


def answer_block(text: str, fmt: FormatConfig) -> tuple[int, int] | None:
    """(start, end) offsets of the content of the only answer block, or None.

    None when either marker is missing, when either occurs more than once, or when the
    closing marker comes before the opening one.
    """
    _, _, s_open, s_close = _markers(fmt)
    if text.count(s_open) != 1 or text.count(s_close) != 1:
        return None
    i = text.index(s_open) + len(s_open)
    j = text.index(s_close)
    if j < i:
        return None
    return i, j


def extract_answer(text: str, fmt: FormatConfig) -> str | None:
    """The stripped text inside exactly one closed answer block; None when absent or empty.

    Several answer blocks, a missing closing marker or an empty block all give None, so
    no answer is credited from outside a single well-formed block.
    """
    if not isinstance(text, str):
        text = completion_text(text)
    span = answer_block(text, fmt)
    if span is None:
        return None
    answer = text[span[0] : span[1]].strip()
    return answer or None


def has_format(text: str, fmt: FormatConfig, eos: str | None = None) -> bool:
    """Strict format: working-out closed once, then exactly one non-empty answer block at the end.

    The reasoning-start marker is optional (prompts for base models are prefilled with it)
    but, when present, must occur once and before the reasoning-end marker. After the
    closing answer marker only white space and one optional EOS token may follow.
    """
    if not isinstance(text, str):
        text = completion_text(text)
    r_open, r_close, s_open, s_close = _markers(fmt)
    if text.count(r_close) != 1 or text.count(r_open) > 1:
        return False
    span = answer_block(text, fmt)
    if span is None or not text[span[0] : span[1]].strip():
        return False
    close_at = text.index(r_close)
    if r_open in text and text.index(r_open) > close_at:
        return False
    if close_at + len(r_close) > span[0] - len(s_open):
        return False  # the answer block must come after the working-out
    return _strip_tail(text, eos).endswith(s_close)
