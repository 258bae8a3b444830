"""Reference-answer extraction shared by the adapters: boxed answers, gsm8k's `####`, numbers."""

from __future__ import annotations

import hashlib
import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_CALC_NOTE = re.compile(r"<<[^<>]*>>")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_WS = re.compile(r"\s+")


def last_boxed(text: str | None) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, nested braces handled.

    `\\boxed 5` (no braces) gives the next token. None when there is no complete box.
    """
    if not text:
        return None
    matches = list(_BOXED.finditer(text))
    for m in reversed(matches):
        found = _read_box(text, m.end())
        if found is not None:
            return found
    return None


def _read_box(text: str, pos: int) -> str | None:
    rest = text[pos:]
    stripped = rest.lstrip()
    if not stripped:
        return None
    if not stripped.startswith("{"):
        if rest[:1] in (" ", "\t"):  # "\boxed 5" form
            token = re.match(r"[^\s$]+", stripped)
            return token.group(0) if token else None
        return None
    start = pos + (len(rest) - len(stripped)) + 1
    depth, i = 1, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip escaped characters such as \{ and \}
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
        i += 1
    return None


def remove_thousands(s: str) -> str:
    """'1,234,567' -> '1234567'; commas that are not thousands separators stay."""
    return _THOUSANDS.sub("", s)


def gsm8k_answer(text: str | None) -> str | None:
    """The text after the last `####`, stripped, thousands separators removed."""
    if not text or "####" not in text:
        return None
    ans = text.rsplit("####", 1)[1].strip()
    return remove_thousands(ans) or None


def gsm8k_worked(text: str | None) -> str:
    """The reasoning before `####`, calculator notes `<<a*b=c>>` removed."""
    body = (text or "").rsplit("####", 1)[0]
    body = _CALC_NOTE.sub("", body)
    return "\n".join(line.rstrip() for line in body.strip().splitlines())


def reference_answer(text) -> str | None:
    """Best reference answer from a free-form answer cell.

    gsm8k-style `#### N` -> N; a `\\boxed{}` -> its last content; otherwise the stripped text.
    """
    s = to_text(text)
    if s is None:
        return None
    if "####" in s:
        return gsm8k_answer(s)
    boxed = last_boxed(s)
    if boxed is not None:
        return boxed
    return s.strip() or None


def to_text(value) -> str | None:
    """A cell as text: None stays None, 3.0 -> '3', strings are stripped."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN from pandas/CSV
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    s = str(value).strip()
    return s or None


def is_number(answer: str | None) -> bool:
    """True for integers and decimals ('-3', '2.5', '1,000'), after stripping `$` and spaces."""
    if answer is None:
        return False
    s = remove_thousands(answer.strip().strip("$").strip())
    return bool(_NUMBER.fullmatch(s))


def normalise(question: str) -> str:
    """Lower-cased, white-space collapsed question text (the dedupe / disjointness key)."""
    return _WS.sub(" ", question).strip().lower()


def question_hash(question: str) -> str:
    return hashlib.sha1(normalise(question).encode("utf-8")).hexdigest()
