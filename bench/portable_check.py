"""Do a demo's saved models work outside reasontune, exactly as trained?

    python bench/portable_check.py runs/demo [--limit 100] [--merged runs/demo/merged] [--stage warmup]

Loads DEMO/adapter with plain transformers + peft, and the `reasontune export DEMO --merged` folder
(written with --dtype float32 if --merged is not given) with plain transformers, and calls each the
way every client calls a chat model: a bare user message -> the folder's chat template -> greedy
generate, stopping only where the folder's generation config says (EOS). On the held-out problems
of DEMO/evals/after it prints, per folder:
  prompt_match   fraction whose rendered prompt equals the training prompt reasontune eval used
  accuracy       answer-block accuracy, next to reasontune eval's on the same problems
  same_verdict   fraction graded the same (right/wrong) as reasontune eval
  stopped        fraction that ended with EOS before the token limit
  eos_after_answer  fraction whose EOS came right after the closing answer marker (white space between
                 allowed): the model answers once and stops, with no stop string anywhere
  eval_stop_rate reasontune eval's stops-on-its-own on the same problems
reasontune code is used only to grade (rewards.grade, the one definition of a right answer) and to
run the export.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def load_records(demo: Path, limit: int, stage: str) -> tuple[list[dict], dict]:
    ev = demo / "evals" / stage
    recs = [json.loads(line) for line in (ev / "completions.jsonl").read_text().splitlines() if line.strip()]
    recs = [r for r in recs if r.get("kind", "greedy") == "greedy" and r.get("sample", 0) == 0][:limit]
    return recs, json.loads((ev / "metrics.json").read_text())


def generate_all(model, tok, questions: list[str], max_new: int, batch: int) -> list[tuple[str, str, bool]]:
    """(rendered prompt, completion text, stopped with EOS) per question, greedy, left-padded batches."""
    import torch

    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    out = []
    for i in range(0, len(questions), batch):
        texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
                 for q in questions[i:i + batch]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
        for text, row in zip(texts, gen[:, enc["input_ids"].shape[1]:].tolist()):
            stop = next((k for k, t in enumerate(row) if t in eos), None)
            done = row[:stop] if stop is not None else row
            out.append((text, tok.decode(done, skip_special_tokens=True), stop is not None))
    return out


def check(name: str, model, tok, recs: list[dict], fmt, max_new: int, batch: int) -> dict:
    from reasontune.rewards import grade

    got = generate_all(model, tok, [r["question"] for r in recs], max_new, batch)
    verdicts = [grade(text, r["answer"], fmt)[1] for (_, text, _), r in zip(got, recs)]
    n = len(recs)
    after = [s and text.rstrip().endswith(fmt.solution_end) for _, text, s in got]
    return {"folder": name, "n": n,
            "prompt_match": sum(p == r["prompt"] for (p, _, _), r in zip(got, recs)) / n,
            "accuracy": sum(verdicts) / n, "eval_accuracy": sum(bool(r["correct"]) for r in recs) / n,
            "same_verdict": sum(v == bool(r["correct"]) for v, r in zip(verdicts, recs)) / n,
            "stopped": sum(s for _, _, s in got) / n, "eos_after_answer": sum(after) / n,
            "eval_stop_rate": (sum(bool(r["stopped"]) for r in recs) / n) if all("stopped" in r for r in recs) else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", help="a demo output folder (adapter/, evals/after/)")
    ap.add_argument("--limit", type=int, default=100, help="held-out problems to check")
    ap.add_argument("--merged", help="an existing `export --merged` folder (default: export to DEMO/merged-check)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", action="store_true", help="one JSON object per folder")
    ap.add_argument("--stage", choices=("after", "warmup"), default="after",
                    help="after: DEMO/adapter against evals/after; warmup: DEMO/warmup/adapter against evals/warmup")
    args = ap.parse_args(argv)

    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasontune.export.portable import read_format

    demo = Path(args.demo)
    recs, metrics = load_records(demo, args.limit, args.stage)
    run = demo if args.stage == "after" else demo / "warmup"  # the folder holding adapter/
    fmt = read_format(run / "adapter").format
    max_new = int(metrics.get("max_new_tokens") or 64)
    merged = Path(args.merged) if args.merged else run / "merged-check"
    if not args.merged:
        subprocess.run([sys.executable, "-m", "reasontune.cli", "export", str(run), "--merged", "--dtype",
                        "float32", "--out", str(merged)], check=True)
    results = []
    tok = AutoTokenizer.from_pretrained(run / "adapter")
    model = AutoPeftModelForCausalLM.from_pretrained(run / "adapter", dtype=torch.float32).eval()
    results.append(check("adapter (transformers + peft)", model, tok, recs, fmt, max_new, args.batch))
    del model
    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    results.append(check("export --merged (transformers)", model, tok, recs, fmt, max_new, args.batch))
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['folder']:32s} n={r['n']}  prompt_match {r['prompt_match']:.2f}  accuracy {r['accuracy']:.3f} "
                  f"(reasontune eval {r['eval_accuracy']:.3f})  same_verdict {r['same_verdict']:.2f}  "
                  f"stopped {r['stopped']:.2f}  eos_after_answer {r['eos_after_answer']:.2f}  "
                  f"(reasontune eval stop_rate {r['eval_stop_rate']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
