"""Reward throughput: score N synthetic completions under each preset, print completions/second.

    python bench/rewards.py [--n 10000] [--batch 16] [--json]

The completions mix correct, wrong and malformed answers (numbers, fractions, LaTeX, sets,
missing or repeated tags, long rambles). Scored in batches the way TRL calls reward
functions. Then the worst cases the tests feed the rewards (thousands of repeated markers, huge
or deeply nested LaTeX), one at a time: the slowest seconds per preset, and for repeated markers
the recipe's reference regexes against our linear scans (the ratio). The tests assert the
mechanisms (guards, time limits, no backtracking regex); the speed is measured here. With --json
the last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time

from reasontune.config import FormatConfig, RewardsConfig
from reasontune.rewards import build_reward_funcs
from reasontune.rewards.check import _equivalent

FMT = FormatConfig()
R1, S0, S1 = FMT.reasoning_end, FMT.solution_start, FMT.solution_end


def _problem(rng: random.Random) -> tuple[str, str, str]:
    """(gold, an equivalent rendering, a wrong answer)."""
    kind = rng.random()
    if kind < 0.6:
        n = rng.randint(-500, 5000)
        return str(n), rng.choice([str(n), f"{n:,}", f"$\\boxed{{{n}}}$", f"x = {n}"]), str(n + rng.randint(1, 9))
    if kind < 0.8:
        p, q = rng.randint(1, 9), rng.randint(2, 9)
        like = rng.choice([f"{p}/{q}", f"\\frac{{{p}}}{{{q}}}", f"\\dfrac{p}{q}"])
        return f"\\frac{{{p}}}{{{q}}}", like, f"{p + 1}/{q}"
    if kind < 0.9:
        a, b = rng.randint(1, 9), rng.randint(10, 19)
        return f"\\{{{a},{b}\\}}", f"\\{{{b}, {a}\\}}", f"\\{{{a}, {b + 1}\\}}"
    k = rng.randint(2, 9)
    return f"{k}\\sqrt{{2}}", f"\\sqrt{{{2 * k * k}}}", f"{k}\\sqrt{{3}}"


def _completion(rng: random.Random, gold_like: str, wrong: str) -> str:
    work = " ".join(rng.choice(["so", "then", "we", "add", "multiply", "the", "value", "is", str(rng.randint(0, 99))])
                    for _ in range(rng.randint(20, 200)))
    kind = rng.random()
    if kind < 0.35:
        return f"{work}{R1}{S0}{gold_like}{S1}"
    if kind < 0.6:
        return f"{work}{R1}{S0}{wrong}{S1}"
    if kind < 0.7:
        return f"{work}{R1}{S0}{gold_like}"  # never closed
    if kind < 0.8:
        return f"{work}{R1}{S0}{wrong}{S1}{S0}{gold_like}{S1}"  # two blocks
    if kind < 0.9:
        return f"{work} ({work}) " * rng.randint(2, 6)  # ramble, no answer
    return (f"{R1}{S0}" * rng.randint(2, 5)) + gold_like + S1 * 3  # tag spam


def make_data(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    completions, answers = [], []
    for _ in range(n):
        gold, like, wrong = _problem(rng)
        completions.append(_completion(rng, like, wrong))
        answers.append(gold)
    return completions, answers


def bench_preset(preset: str, completions: list[str], answers: list[str], batch: int) -> dict:
    funcs, weights = build_reward_funcs(RewardsConfig(names=[preset]), FMT, "<|endoftext|>",
                                        max_completion_length=1024)
    _equivalent.cache_clear()  # no head start from an earlier preset
    per_func = {f.__name__: 0.0 for f in funcs}
    start = time.perf_counter()
    for i in range(0, len(completions), batch):
        c, a = completions[i : i + batch], answers[i : i + batch]
        prompts = [f"p{j // 4}" for j in range(i, i + len(c))]  # groups of 4, as num_generations=4
        for f in funcs:
            t = time.perf_counter()
            f(c, answer=a, prompts=prompts)
            per_func[f.__name__] += time.perf_counter() - t
    total = time.perf_counter() - start
    return {"completions_per_s": round(len(completions) / total, 1), "seconds": round(total, 3),
            "per_reward_s": {k: round(v, 3) for k, v in per_func.items()}}


WORST = {
    "repeated blocks": (R1 + S0 + "1" + S1 + "x") * 2000,
    "repeated markers": R1 * 3000 + S0 * 3000 + "1" + S1 * 3000 + "x",
    "nested frac": f"w{R1}{S0}" + "\\frac{" * 3000 + "1" + "}{2}" * 3000 + S1,
    "power tower": f"w{R1}{S0}" + "2^{" * 500 + "2" + "}" * 500 + S1,
    "long sqrt sum": f"w{R1}{S0}" + "+".join(f"\\sqrt{{{i}}}" for i in range(5000)) + S1,
}


def bench_worst(preset: str) -> dict:
    """Seconds to score each worst-case completion alone (all rewards of the preset)."""
    funcs, _ = build_reward_funcs(RewardsConfig(names=[preset]), FMT, "<|endoftext|>", max_completion_length=1024)
    out = {}
    for label, text in WORST.items():
        t = time.perf_counter()
        for f in funcs:
            f([text], answer=["1"], prompts=["p"])
        out[label] = round(time.perf_counter() - t, 4)
    return out


def regex_ratio(text: str) -> float:
    """The reference notebook's regexes over our scans, on one repeated-marker completion."""
    from reasontune.rewards.extract import (recipe_format_answer, recipe_format_regex, recipe_number,
                                            recipe_number_regex)

    t = time.perf_counter()
    recipe_format_regex(R1, S0, S1, None).search(text)
    recipe_number_regex(S0).search(text)
    ref = time.perf_counter() - t
    t = time.perf_counter()
    recipe_format_answer(text, FMT, None)
    recipe_number(text, FMT)
    ours = time.perf_counter() - t
    return round(ref / max(ours, 1e-9), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="Synthetic completions.")
    ap.add_argument("--batch", type=int, default=16, help="Completions per reward call.")
    ap.add_argument("--presets", default="recipe,verified", help="Comma-separated presets.")
    ap.add_argument("--json", action="store_true", help="Print one JSON object on the last line.")
    args = ap.parse_args(argv)
    completions, answers = make_data(args.n)
    results = {}
    for preset in args.presets.split(","):
        results[preset] = bench_preset(preset, completions, answers, args.batch)
        r = results[preset]
        print(f"{preset:>10}: {r['completions_per_s']:>10.1f} completions/s  ({r['seconds']:.2f} s for {args.n})",
              file=sys.stderr if args.json else sys.stdout)
    worst = {preset: bench_worst(preset) for preset in args.presets.split(",")}
    ratio = regex_ratio((R1 + S0 + "1" + S1 + "x") * 200)  # the regexes take minutes on the 2000 of WORST
    for preset, w in worst.items():
        label = max(w, key=w.get)
        print(f"{preset:>10}: worst case {w[label]:.3f} s ({label})", file=sys.stderr if args.json else sys.stdout)
    print(f"reference regexes / our scans on 200 repeated answer blocks: {ratio}x",
          file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"n": args.n, "batch": args.batch, "python": platform.python_version(),
                          "machine": platform.machine(), "presets": results, "worst_case_s": worst,
                          "regex_over_scan": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
