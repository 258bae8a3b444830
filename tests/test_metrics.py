"""pass@k, majority vote, percentiles, paired bootstrap and per-level breakdowns on hand-computed cases."""

from __future__ import annotations

import pytest

from reasontune.runs.metrics import breakdown, majority_vote, mean, paired_bootstrap, pass_at_k, percentile


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 0.4), (5, 2, 2, 0.7), (5, 0, 3, 0.0), (5, 5, 5, 1.0), (5, 4, 2, 1.0),  # n - c < k
    (4, 1, 4, 1.0), (10, 3, 5, 1 - 21 / 252), (1, 0, 1, 0.0), (1, 1, 1, 1.0),
])
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, 2, 0), (5, 2, 6), (3, -1, 1)])
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_majority_vote():
    assert majority_vote(["3", "4", "4", None, "3", "4"]) == "4"
    assert majority_vote(["7", "5", "5", "7"]) == "7"  # tie: the answer seen first wins
    assert majority_vote(["5", "7", "7", "5"]) == "5"
    assert majority_vote([None, None]) is None and majority_vote([]) is None
    assert majority_vote([" 4", "4 ", "2"]) == " 4"  # white space does not split a vote
    same = lambda a, b: float(eval(a)) == float(eval(b))  # noqa: E731  (test-only equivalence)
    assert majority_vote(["1/2", "0.3", "0.5", "0.3", "2/4"], same=same) == "1/2"


def test_percentile_and_mean():
    assert percentile([], 50) is None and mean([]) is None
    assert percentile([7], 90) == 7
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 90) == pytest.approx(46.0)  # numpy's linear default
    assert percentile([3, 1, 2], 0) == 1 and percentile([3, 1, 2], 100) == 3
    assert mean([True, False, None, True]) == pytest.approx(2 / 3)


def test_paired_bootstrap_known_inputs():
    same = paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0])
    assert (same["diff"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    flip = paired_bootstrap([0] * 6, [1] * 6)
    assert (flip["diff"], flip["low"], flip["high"]) == (1.0, 1.0, 1.0)
    a = [0, 1] * 20
    b = [1, 1] * 20
    r1, r2 = paired_bootstrap(a, b, seed=3), paired_bootstrap(a, b, seed=3)
    assert r1 == r2  # seeded
    assert r1["diff"] == pytest.approx(0.5) and 0.3 < r1["low"] < 0.5 < r1["high"] < 0.7
    assert paired_bootstrap([], [])["diff"] is None
    with pytest.raises(ValueError):
        paired_bootstrap([1], [1, 0])


def test_breakdown():
    rows = [{"difficulty": 1, "correct": True, "format_ok": True},
            {"difficulty": 1, "correct": False, "format_ok": True},
            {"difficulty": 3, "correct": False, "format_ok": False}, {"correct": True, "format_ok": True}]
    assert breakdown(rows, "difficulty") == {"1": {"n": 2, "accuracy": 0.5, "format_rate": 1.0},
                                             "3": {"n": 1, "accuracy": 0.0, "format_rate": 0.0}}
    assert breakdown(rows, "subject") == {}
