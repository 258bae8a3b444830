"""Code sandbox throughput: programs a second through `check_many`, against plain `python -c` subprocesses.

    python bench/sandbox.py [--n 40] [--workers 2] [--isolation bwrap,unshare,unsafe_local] [--json]

Two programs, each a right answer run against its tests:

* trivial: `def f(x): return x + 1` with one assert;
* humaneval: a HumanEval-sized problem (a prompt with a docstring, a 12-line solution, a check() with
  eight asserts on lists).

Each is run N times (every copy a different comment, so the verdict cache never answers) by `check_many`
with W workers under each isolation, and by the baseline: the same program and its tests in one plain
`python -c` subprocess per run (no isolation, no judge, no seccomp), W at a time. Printed: programs a
second for each, and the sandbox's cost as a ratio to the baseline. Run `uptime` alongside: on a shared
machine the load changes the figures. With --json the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from reasontune.rewards.code import check_many
from reasontune.rewards.sandbox import resolve

TRIVIAL = ("def f(x):\n    return x + 1\n", {"kind": "functional", "entry_point": "f", "test": "assert f(1) == 2\n"})
HUMANEVAL_PROMPT = '''from typing import List


def below_mean_pairs(numbers: List[float], gap: float) -> List[int]:
    """ Indices i (in order) where numbers[i] and numbers[i + 1] are both below the mean of the list and
    differ by less than gap.
    >>> below_mean_pairs([1.0, 1.2, 5.0, 0.5, 0.6], 0.3)
    [0, 3]
    """
'''
HUMANEVAL_CODE = '''from typing import List


def below_mean_pairs(numbers: List[float], gap: float) -> List[int]:
    if len(numbers) < 2:
        return []
    mean = sum(numbers) / len(numbers)
    out = []
    for i in range(len(numbers) - 1):
        a, b = numbers[i], numbers[i + 1]
        if a < mean and b < mean and abs(a - b) < gap:
            out.append(i)
    return out
'''
HUMANEVAL_TEST = '''def check(candidate):
    assert candidate([1.0, 1.2, 5.0, 0.5, 0.6], 0.3) == [0, 3]
    assert candidate([], 1.0) == []
    assert candidate([2.0], 1.0) == []
    assert candidate([1.0, 1.0, 1.0], 0.5) == []
    assert candidate([0.0, 0.1, 9.0, 0.2, 0.25, 0.3], 0.11) == [0, 3, 4]
    assert candidate([5.0, 1.0, 1.05, 7.0], 0.1) == [1]
    assert candidate([0.0, 10.0, 0.0, 10.0], 100.0) == []
    assert candidate([3.0, 2.0, 1.0, 9.0, 9.0], 1.5) == [0, 1]
'''
HUMANEVAL = (HUMANEVAL_CODE, {"kind": "functional", "entry_point": "below_mean_pairs", "prompt": HUMANEVAL_PROMPT,
                              "test": HUMANEVAL_TEST})
FMT_ANSWER = "<end_working_out><SOLUTION>```python\n{code}```</SOLUTION>"


def sandboxed(code: str, tests: dict, n: int, workers: int, isolation: str) -> float:
    """Programs a second through check_many; every run must pass (else the figure would time failures)."""
    texts = [FMT_ANSWER.format(code=f"# run {i} {time.time_ns()}\n{code}") for i in range(n)]
    start = time.perf_counter()
    verdicts = check_many(texts, [json.dumps(tests)] * n, workers=workers, sandbox=isolation)
    elapsed = time.perf_counter() - start
    kinds = {v.kind for v in verdicts}
    if kinds != {"pass"}:
        raise SystemExit(f"{isolation}: expected every run to pass, got {kinds}")
    return n / elapsed


def baseline(code: str, tests: dict, n: int, workers: int) -> float:
    """Programs a second as plain `python -c` subprocesses: prompt + code + test (+ check(entry point))."""
    call = f"\ncheck({tests['entry_point']})\n" if "def check" in tests["test"] else "\n"
    source = f"{tests.get('prompt', '')}\n{code}\n{tests['test']}{call}"

    def one(i: int) -> int:
        return subprocess.run([sys.executable, "-c", f"# run {i}\n{source}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        codes = list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - start
    if set(codes) != {0}:
        raise SystemExit(f"baseline: expected every run to pass, got exit codes {set(codes)}")
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="Runs of each program per setting (default %(default)s).")
    ap.add_argument("--workers", type=int, default=2, help="Concurrent runs (default %(default)s).")
    ap.add_argument("--isolation", default="bwrap,unshare,unsafe_local",
                    help="Comma-separated isolations to measure (each is checked first; one that is not usable "
                    "here is skipped with the reason).")
    ap.add_argument("--json", action="store_true", help="End with one JSON line of the figures.")
    args = ap.parse_args(argv)
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, n={args.n}, workers={args.workers}")
    figures: dict = {"n": args.n, "workers": args.workers, "load_average": os.getloadavg()}
    for name, (code, tests) in {"trivial": TRIVIAL, "humaneval": HUMANEVAL}.items():
        base = baseline(code, tests, args.n, args.workers)
        figures[name] = {"baseline": round(base, 2)}
        print(f"{name:10s} plain python -c        {base:7.1f} programs/s")
        for isolation in args.isolation.split(","):
            try:
                resolve(isolation)
            except Exception as e:  # noqa: BLE001  (not usable here: say why, measure the rest)
                print(f"{name:10s} {isolation:22s} skipped: {e}")
                continue
            rate = sandboxed(code, tests, args.n, args.workers, isolation)
            figures[name][isolation] = round(rate, 2)
            print(f"{name:10s} {isolation:22s} {rate:7.1f} programs/s  ({base / rate:.1f}x the baseline's time)")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
