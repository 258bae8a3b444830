"""Issue 22's check on a demo folder: no completion with a wrong answer gets full step_check credit.

    python bench/stepcheck_scan.py runs/demo
"""
import json, sys
from pathlib import Path
demo = Path(sys.argv[1])
for stage in ("before", "warmup", "after"):
    p = demo / "evals" / stage / "completions.jsonl"
    if not p.is_file():
        continue
    recs = [json.loads(l) for l in p.read_text().splitlines()]
    sc = [r for r in recs if "step_check" in r.get("scores", {})]
    full_wrong = [r for r in sc if not r["correct"] and (r["scores"]["step_check"] or 0) >= 2.0]
    print(stage, "completions", len(recs), "scored", len(sc), "wrong with full step_check", len(full_wrong))
    for r in full_wrong[:3]:
        print("  ", r["question"], "|", r["completion"][:120].replace("\n", " / "))
