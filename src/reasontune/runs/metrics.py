"""Evaluation statistics: pass@k, majority vote, percentiles and a paired bootstrap.

Pure Python (no numpy/torch), so reports and comparisons stay cheap to import.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

# Above this fraction of GRPO groups with zero reward variance, more than 9 groups in 10 give GRPO no gradient at
# all: advise's rule before training and the watcher's zero_variance condition during it.
ZERO_VARIANCE_MAX = 0.90


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    (Chen et al., 2021.) k must be in [1, n]; with fewer than k wrong samples it is 1.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(answers: Sequence[Any], same: Callable[[Any, Any], bool] | None = None) -> Any | None:
    """The most common non-None answer; ties go to the answer seen first. None when all are None.

    `same(a, b)` groups equivalent answers (e.g. '0.5' and '1/2'); default: equal stripped strings.
    """
    groups: list[list[Any]] = []  # each group: [representative, count], in order of first sighting
    for a in answers:
        if a is None:
            continue
        for g in groups:
            if (same(g[0], a) if same else str(g[0]).strip() == str(a).strip()):
                g[1] += 1
                break
        else:
            groups.append([a, 1])
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (groups[i][1], -i))
    return groups[best][0]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation (numpy's default); None when empty."""
    if not values:
        return None
    xs = sorted(float(v) for v in values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Bootstrap CI of mean(b) - mean(a) over paired items (resampling items with replacement).

    Returns {n, mean_a, mean_b, diff, low, high, resamples, seed, confidence}; the interval is the
    percentile interval of the resampled differences.
    """
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap needs equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return {"n": 0, "mean_a": None, "mean_b": None, "diff": None, "low": None, "high": None,
                "resamples": resamples, "seed": seed, "confidence": confidence}
    d = [float(y) - float(x) for x, y in zip(a, b)]
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        stats.append(sum(d[rng.randrange(n)] for _ in range(n)) / n)
    tail = (1.0 - confidence) / 2 * 100
    return {"n": n, "mean_a": sum(map(float, a)) / n, "mean_b": sum(map(float, b)) / n, "diff": sum(d) / n,
            "low": percentile(stats, tail), "high": percentile(stats, 100 - tail),
            "resamples": resamples, "seed": seed, "confidence": confidence}


def breakdown(rows: Sequence[dict], key: str) -> dict[str, dict]:
    """{level: {n, accuracy, format_rate[, working_lines, mean_length]}} over rows that carry `key` (rows need
    correct, format_ok; working_lines and num_tokens are averaged when the rows carry them)."""
    out: dict[str, dict] = {}
    levels = sorted({r[key] for r in rows if r.get(key) is not None}, key=lambda v: (str(type(v)), v))
    for level in levels:
        sel = [r for r in rows if r.get(key) == level]
        out[str(level)] = {"n": len(sel), "accuracy": mean([bool(r["correct"]) for r in sel]),
                           "format_rate": mean([bool(r["format_ok"]) for r in sel])}
        for col, name in (("working_lines", "working_lines"), ("num_tokens", "mean_length")):
            if any(r.get(col) is not None for r in sel):
                out[str(level)][name] = mean([r[col] for r in sel if r.get(col) is not None])
    return out
