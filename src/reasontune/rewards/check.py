"""Answer checking: exact numbers first, then mathematical equivalence with math_verify.

`is_correct` never raises for odd input and never runs past its time limit: plain numbers
(thousands separators, fractions, LaTeX `\\frac`) compare exactly as rationals without
sympy; anything else goes to math_verify under `timelimit.call_with_limit`, after size and
nesting guards that keep pathological LaTeX away from sympy altogether.
"""

from __future__ import annotations

import functools
import logging
import re
from fractions import Fraction

from reasontune.rewards.timelimit import TimeLimitExceeded, call_with_limit

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 0.5  # per is_correct call, parsing and comparison together
MAX_CHARS = 300  # longer answers only get a white-space-insensitive string comparison
MAX_DEPTH = 12  # deeper bracket nesting likewise
_MAX_NUMBER_CHARS = 80
_MAX_EXPONENT = 400

_DECIMAL = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_THOUSANDS = re.compile(r"[-+]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_FRACTION = re.compile(r"([-+]?)\\[dt]?frac\{\s*([-+]?[0-9]+)\s*\}\{\s*([-+]?[0-9]+)\s*\}")
_SLASH = re.compile(r"([-+]?[0-9]+)\s*/\s*([-+]?[0-9]+)")
_BOXED = re.compile(r"\\boxed\{(.*)\}")
_LHS = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")
_LATEX_SPACES = re.compile(r"\\[,!;: ]|~")


def _unwrap(text: str) -> str:
    """Strip the decoration around a lone value: $...$, \\(...\\), \\boxed{...}, 'x =', a final '.'."""
    s = text.strip()
    for _ in range(4):
        before = s
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$").strip()
        if s.startswith(("\\(", "\\[")) and s.endswith(("\\)", "\\]")):
            s = s[2:-2].strip()
        m = _BOXED.fullmatch(s)
        if m:
            s = m.group(1).strip()
        m = _LHS.match(s)
        if m and "=" not in s[m.end():]:
            s = s[m.end():].strip()
        s = s.rstrip(".").strip()
        if s == before:
            break
    return s


def parse_number(text: str | None) -> Fraction | None:
    """An exact rational for a lone number, or None when `text` is anything else.

    Accepts decimals ('-0.5', '1e3'), thousands separators ('1,234,567', '1{,}000', '1\\,000'),
    integer fractions ('3/4', '\\frac{3}{4}', '-\\dfrac34' is not accepted), the unicode
    minus, and the decoration `_unwrap` removes. Sets such as '1,2' are not numbers.
    """
    if text is None:
        return None
    s = _unwrap(str(text)).replace("\u2212", "-").replace("{,}", ",")
    s = _LATEX_SPACES.sub("", s).replace(" ", "")
    if not s or len(s) > _MAX_NUMBER_CHARS:
        return None
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    try:
        if _DECIMAL.fullmatch(s):
            exp = re.search(r"[eE]([-+]?[0-9]+)$", s)
            if exp and abs(int(exp.group(1))) > _MAX_EXPONENT:
                return None
            return Fraction(s)
        m = _FRACTION.fullmatch(s)
        if m:
            sign = -1 if m.group(1) == "-" else 1
            return sign * Fraction(int(m.group(2)), int(m.group(3)))
        m = _SLASH.fullmatch(s)
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth = max(depth - 1, 0)
    return deepest


_CHAINED_FACTORIAL = re.compile(r"[!)}\]]\s*!|[0-9]{4,}\s*!")
_BIG_LITERAL = re.compile(r"[0-9]{5,}")


def _exponents(text: str) -> list[str]:
    """The exponent after each '^': a balanced {...} group or the next token."""
    out = []
    for m in re.finditer(r"\^\s*", text):
        i = m.end()
        if text[i : i + 1] != "{":
            token = re.match(r"[0-9]+|\\[A-Za-z]+|.?", text[i:], flags=re.DOTALL)
            out.append(token.group(0))
            continue
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
        out.append(text[i : j + 1])
    return out


def _hazardous(text: str) -> bool:
    """Inputs whose evaluation is one huge C-level integer operation (a power tower, 10^{10^9},
    a factorial of a factorial): the main thread's signal can stop those, a worker thread's
    watchdog cannot, so they are never handed to sympy."""
    t = text.replace("**", "^")
    if _CHAINED_FACTORIAL.search(t):
        return True
    return any("^" in e or "!" in e or _BIG_LITERAL.search(e) for e in _exponents(t))


def _as_latex(text: str) -> str:
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@functools.lru_cache(maxsize=1)
def _math_verify():
    import math_verify
    import math_verify.grader
    import math_verify.parser

    # We pass timeouts of None and enforce our own limit; silence the one-time "timeout is
    # disabled" warning that would otherwise tell users the opposite.
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    # Warm up sympy's lazily built parsers and evaluators (about a second, once), so that the
    # first real checks are not charged for it against their time limit.
    for gold, pred in _WARMUP:
        try:
            math_verify.verify(math_verify.parse(gold, parsing_timeout=None),
                               math_verify.parse(pred, parsing_timeout=None), timeout_seconds=None)
        except Exception:  # warm-up only
            logger.debug("math_verify warm-up failed on %r", pred, exc_info=True)
    return math_verify


_WARMUP = [("$1$", "$1$"), ("$\\frac{1}{2}$", "$0.5$"), ("$\\{1,2\\}$", "$\\{2,1\\}$"), ("$(0,1]$", "$(0,1]$"),
           ("$x+1$", "$1+x$"), ("$42$", "$I am not sure$"), ("$\\sqrt{2}$", "$2^{1/2}$"), ("$\\pi$", "$3.14$")]


def warm_up() -> None:
    """Import math_verify and warm up sympy (about a second, once); builders call this early."""
    _math_verify()


def _verify(pred: str, gold: str) -> bool:
    mv = _math_verify()
    gold_parsed = mv.parse(_as_latex(gold), parsing_timeout=None)
    if not gold_parsed:
        return False
    pred_parsed = mv.parse(_as_latex(pred), parsing_timeout=None)
    if not pred_parsed:
        return False
    return bool(mv.verify(gold_parsed, pred_parsed, timeout_seconds=None))


class AnswerCheckError(Exception):
    """The check itself failed (time limit, or a math_verify/sympy error): neither right nor wrong."""


@functools.lru_cache(maxsize=65536)
def _equivalent(pred: str, gold: str, timeout_s: float) -> bool:
    """Cached verdicts only: lru_cache keeps no result for a call that raises, so a check that timed out
    on a loaded CPU (or hit a sympy bug) is tried again next time instead of staying wrong for the run."""
    if _squash(pred) == _squash(gold):
        return True
    a, b = parse_number(pred), parse_number(gold)
    if a is not None and b is not None:
        return a == b
    if max(len(pred), len(gold)) > MAX_CHARS or max(_depth(pred), _depth(gold)) > MAX_DEPTH:
        return False
    if _hazardous(pred) or _hazardous(gold):
        logger.debug("not handed to math_verify (huge integer work): pred=%.200r gold=%.200r", pred, gold)
        return False
    _math_verify()  # import (seconds, once) outside the time limit
    try:
        return call_with_limit(lambda: _verify(pred, gold), timeout_s)
    except TimeLimitExceeded:
        raise AnswerCheckError(f"answer check timed out after {timeout_s:.3g} s: pred={pred:.200s} "
                               f"gold={gold:.200s}") from None
    except Exception as e:  # math_verify/sympy bugs on odd input
        raise AnswerCheckError(f"math_verify failed ({type(e).__name__}: {e}): pred={pred:.200s} "
                               f"gold={gold:.200s}") from e


def check_answer(pred: str | None, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Like `is_correct`, but a check that times out or fails raises AnswerCheckError: rewards call this,
    so `wrap_reward` counts the sample in the reward's errors instead of scoring it as a wrong answer."""
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if not pred or not gold:
        return False
    return _equivalent(pred, gold, float(timeout_s))


def is_correct(pred: str | None, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when `pred` and `gold` are mathematically equal (exact rationals, else math_verify).

    Plain numbers compare exactly after removing thousands separators ('1,000' == '1000',
    '1/2' == '0.5' == '\\frac{1}{2}'); other answers (LaTeX, sets, intervals, expressions)
    go to math_verify, stopped after `timeout_s` seconds. A check that times out or fails is
    False with a warning (evaluation counts it as not right), and is not cached.
    """
    try:
        return check_answer(pred, gold, timeout_s)
    except AnswerCheckError as e:
        logger.warning("%s; counted as not equal", e)
        return False
