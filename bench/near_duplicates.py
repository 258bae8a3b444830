"""Issue 24 item 5 on an existing demo folder: held-out accuracy on the problems whose worked solution no
training problem has (novel), and on the near-duplicates, by stage and level. No model, no rerun: the rows
are rebuilt from the folder's saved config (src/reasontune/stages/overlap.py) and its evals are read back.

    python bench/near_duplicates.py runs/demo [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def table(run_dir: Path) -> dict:
    from reasontune.stages.overlap import demo_run_config, heldout_marks, marks_summary, stage_novelty

    marks = heldout_marks(demo_run_config(run_dir))
    stages = stage_novelty(run_dir, marks)
    if not stages:
        raise SystemExit(f"{run_dir}: no evals/<stage>/completions.jsonl to read (is it a demo folder?)")
    return {"near_duplicates": marks_summary(marks), "stages": stages}


def print_table(t: dict) -> None:
    def f(x):
        return "  n/a" if x is None else f"{x:.3f}"

    nd = t["near_duplicates"]
    print(f"near-duplicates: {nd['near_duplicate']} of {nd['n']} held-out problems "
          f"({nd['near_duplicate_warmup']} of them a warm-up target); "
          + ", ".join(f"level {lv} {v['near_duplicate']}/{v['n']}" for lv, v in nd["by_level"].items()))
    print(f"{'stage':8s} {'level':5s} {'n novel':>7s} {'novel acc':>9s} {'n dup':>5s} {'dup acc':>7s}")
    for stage, s in t["stages"].items():
        for level, row in [("all", s), *s["by_level"].items()]:
            print(f"{stage:8s} {level:5s} {row['novel_n']:7d} {f(row['novel_accuracy']):>9s} "
                  f"{row['near_duplicate_n']:5d} {f(row['near_duplicate_accuracy']):>7s}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a demo folder (metrics.json or train/reasontune_config.json, evals/)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import datasets

    datasets.disable_progress_bars()  # the table is the output
    t = table(args.run)
    print(json.dumps(t, indent=1)) if args.json else print_table(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
