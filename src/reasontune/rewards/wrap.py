"""Error handling around reward functions: never a silent 0.0.

A wrapped reward runs on the whole batch; if that raises (or returns a non-finite or
non-numeric score), it is run again one sample at a time to find the offending
completions. Each failing sample is counted in `errors` (reward name -> count), logged
with its completion, and then `on_error` decides: 'raise' re-raises, 'none' returns None
for that sample, which TRL skips for that reward.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections import Counter
from numbers import Real
from typing import Any, Callable

from reasontune.rewards.extract import completion_text

logger = logging.getLogger(__name__)

errors: Counter = Counter()  # reward name -> number of failed samples since import / reset
_errors_lock = threading.Lock()
_TRACEBACKS_PER_REWARD = 3  # full tracebacks logged per reward; later errors get one line


class RewardError(ValueError):
    """A reward returned something TRL cannot use (wrong length, NaN, a string, ...)."""


def error_counts() -> dict[str, int]:
    """A copy of the error counters, for logging as metrics."""
    with _errors_lock:
        return dict(errors)


def reset_errors() -> None:
    with _errors_lock:
        errors.clear()


def _score(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise RewardError(f"reward returned {value!r} ({type(value).__name__}); expected a float or None")
    value = float(value)
    if not math.isfinite(value):
        raise RewardError(f"reward returned a non-finite score {value!r}")
    return value


def _run(fn: Callable, completions: list, kwargs: dict) -> list[float | None]:
    out = list(fn(completions, **kwargs))
    if len(out) != len(completions):
        raise RewardError(f"reward returned {len(out)} scores for {len(completions)} completions")
    return [_score(v) for v in out]


def _one(kwargs: dict, n: int, i: int) -> dict:
    """Slice per-sample kwargs (lists with one entry per completion) down to sample i."""
    return {k: (v[i : i + 1] if isinstance(v, (list, tuple)) and len(v) == n else v) for k, v in kwargs.items()}


def _record(name: str, completion: Any, exc: BaseException) -> None:
    with _errors_lock:
        errors[name] += 1
        count = errors[name]
    try:
        text = completion_text(completion)
    except Exception:
        text = repr(completion)
    logger.warning("reward %r failed (%s: %s) on completion %.500r", name, type(exc).__name__, exc, text,
                   exc_info=exc if count <= _TRACEBACKS_PER_REWARD else None)


def _per_sample(fn: Callable, name: str, on_error: str, completions: list, kwargs: dict) -> tuple[list, int]:
    n = len(completions)
    out: list[float | None] = []
    failed = 0
    for i in range(n):
        try:
            out.append(_run(fn, completions[i : i + 1], _one(kwargs, n, i))[0])
        except Exception as exc:
            _record(name, completions[i], exc)
            if on_error == "raise":
                raise
            failed += 1
            out.append(None)
    return out, failed


def wrap_reward(fn: Callable, name: str, on_error: str = "none") -> Callable:
    """`fn` with error counting and the `on_error` policy; `__name__` is `name` (TRL logs by it)."""
    if on_error not in ("none", "raise"):
        raise ValueError(f"on_error={on_error!r}: use 'none' or 'raise'")

    @functools.wraps(fn)
    def reward(completions, **kwargs):
        completions = list(completions)
        try:
            out, failed = _run(fn, completions, kwargs), 0
        except Exception as batch_exc:
            out, failed = _per_sample(fn, name, on_error, completions, kwargs)
            if failed == 0 and on_error == "raise":  # failed only as a batch: count it once and re-raise
                _record(name, "(whole batch)", batch_exc)
                raise
            if failed == 0:
                logger.debug("reward %r failed on the batch but not per sample: %s", name, batch_exc)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and completions:
            log_metric(f"rewards/{name}/error_rate", failed / len(completions))
        return out

    reward.__name__ = name
    reward.__qualname__ = name
    reward.on_error = on_error
    return reward
