"""Which llama.cpp tensor-type mix keeps a quantized GGUF answering as the f16 file does.

    python bench/gguf_mix.py RUN [RUN ...] [--limit 200] [--kind q4_k_m]

For each run folder (one `reasontune export` takes), exports the merged model once as an f16 GGUF, then
quantizes it with llama.cpp's quantizer in several mixes: llama.cpp's own (`--gguf-type KIND`), with the
run's importance matrix, and with `tensor_types` overrides (`llama-quantize --tensor-type`). Each file
answers the run's held-out problems as a client asks them (bare user messages through the file's chat
template, greedy, the eval's token budget, no stop strings; gguf_check.llama_check). Prints, per run and
mix: accuracy, points against f16, the share of problems whose completion is the f16 file's word for
word (a lower-noise reading of the same thing), and the file size. Needs llama-cpp-python (.venv-gguf).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gguf_check import llama_check  # noqa: E402
from portable_check import load_records  # noqa: E402

# name: (imatrix?, tensor_types)
MIXES = {
    "llama.cpp": (False, None),
    "imatrix": (True, None),
    "ffn_down q6_k": (False, {"ffn_down": "q6_k"}),
    "ffn_down q6_k + imatrix": (True, {"ffn_down": "q6_k"}),
    "ffn_down q5_k": (False, {"ffn_down": "q5_k"}),
    # attention at q8_0 (its 576-wide rows fall back to legacy 5-bit types in llama.cpp's mix)
    "attn q8_0": (False, {r"attn_(q|k|v|output)\.": "q8_0"}),
    # every tensor llama.cpp's mix would give a legacy fallback type, at q8_0 instead
    "fallback q8_0": (False, {r"attn_(q|k|v|output)\.|ffn_(gate|up)\.": "q8_0"}),
    # q5_k_m's fallback for those is Q5_1 (q4_k_m's Q5_0), which measured worse here (docs/export.md)
    "fallback q5_0": (False, {r"attn_(q|k|output)\.|ffn_(gate|up)\.": "q5_0"}),
}


def one_run(run: Path, kind: str, limit: int, mixes: list[str]) -> list[dict]:
    from reasontune.stages.export import export_run, load_merged
    from reasontune.export.imatrix import calibrate
    from reasontune.export.llamacpp import quantize
    from reasontune.export.portable import read_format

    # a demo's train/ folder (its evals sit one up), or a `demo --compare` arm (evals/heldout)
    ev = next(p for p in (run / "evals" / "after", run.parent / "evals" / "after", run / "evals" / "heldout")
              if p.is_dir())
    recs, metrics = load_records(ev.parent.parent, limit, ev.name)
    max_new = int(metrics.get("max_new_tokens") or 64)
    out = run / "gguf-mix"
    export_run(run, out, merged=True, gguf=True, dtype="float32", gguf_type="f16")
    f16 = out / "model-f16.gguf"
    fmt = read_format(out).format
    matrix = None
    if any(MIXES[m][0] for m in mixes):
        model, tok, cfg = load_merged(run)
        matrix, _ = calibrate(run, model, tok, cfg)
        del model
    ref = llama_check(f16, recs, fmt, max_new)
    rows = [{"run": str(run), "mix": "f16", **ref}]
    for name in mixes:
        use_im, types = MIXES[name]
        dst = out / f"model-{kind}-{name.replace(' ', '_').replace('+', 'and')}.gguf"
        quantize(f16, dst, kind, imatrix=matrix if use_im else None, tensor_types=types)
        r = llama_check(dst, recs, fmt, max_new)
        r["same_as_f16"] = sum(a == b for a, b in zip(r["texts"], ref["texts"])) / len(recs)
        rows.append({"run": str(run), "mix": name, **r, "points_vs_f16": round(100 * (r["accuracy"] - ref["accuracy"]), 1)})
        dst.unlink()  # only the figures are kept; the next mix writes its own
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--kind", default="q4_k_m")
    ap.add_argument("--mixes", default=",".join(MIXES), help=f"comma-separated, of: {', '.join(MIXES)}")
    args = ap.parse_args(argv)
    mixes = args.mixes.split(",")
    bad = [m for m in mixes if m not in MIXES]
    if bad:
        ap.error(f"unknown mix {bad}: use {', '.join(MIXES)}")
    rows = []
    for run in args.runs:
        rows += one_run(Path(run), args.kind, args.limit, mixes)
        for r in rows[-len(mixes) - 1:]:
            print(json.dumps({k: v for k, v in r.items() if k != "texts"}), flush=True)
    print(f"\n| run | {args.kind} mix | accuracy | points vs f16 | same completion as f16 | size (MB) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['mix']} | {r['accuracy']:.3f} | {r.get('points_vs_f16', 0.0):+.1f} | "
              f"{r.get('same_as_f16', 1.0):.2f} | {r['size_mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
