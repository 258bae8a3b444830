"""A run's GGUF exports in llama.cpp, next to transformers on the merged folder.

    python bench/gguf_check.py RUN [--evals RUN/evals/after] [--limit 200] [--types f16,q8_0,q5_k_m,q4_k_m]
                               [--imatrix on|off|both]

RUN is a run folder `reasontune export` takes (the demo's runs/demo, or runs/demo/train). It exports
RUN --merged --dtype float32 and a GGUF per type into RUN/gguf-check, then asks every file the held-out
problems of the eval folder (completions.jsonl: question, answer; metrics.json: max_new_tokens) the way a
client does: a bare user message through create_chat_completion (the file's own chat template), greedy, the
eval's token budget, no stop strings. --imatrix both also writes each llama.cpp quant type without the
importance matrix (model-TYPE-noimatrix.gguf), so the two are measured in one run. Graded with reasontune's rewards.grade. Prints one JSON line per model
and a markdown table: accuracy, the fraction that stopped with EOS before the budget, file size.
Needs llama-cpp-python (make test-gguf builds .venv-gguf with it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from portable_check import check, load_records  # noqa: E402  (the transformers side, as portable_check runs it)


def llama_check(path: Path, recs: list[dict], fmt, max_new: int) -> dict:
    import llama_cpp

    from reasontune.rewards import grade

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, verbose=False, seed=0)
    right = stopped = 0
    texts = []  # the completions, for comparing two files answer by answer (gguf_mix.py)
    t0 = time.perf_counter()
    for r in recs:
        out = llm.create_chat_completion(messages=[{"role": "user", "content": r["question"]}], temperature=0.0,
                                         max_tokens=max_new)
        choice = out["choices"][0]
        texts.append(choice["message"]["content"] or "")
        right += bool(grade(texts[-1], r["answer"], fmt)[1])
        stopped += choice["finish_reason"] == "stop" and out["usage"]["completion_tokens"] < max_new
    n = len(recs)
    return {"model": path.name, "n": n, "accuracy": right / n, "stopped": stopped / n,
            "size_mb": round(path.stat().st_size / 1e6, 1), "seconds": round(time.perf_counter() - t0, 1),
            "texts": texts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder reasontune export takes")
    ap.add_argument("--evals", help="an eval folder (completions.jsonl); default RUN/evals/after or RUN/../evals/after")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--types", default="f16,q8_0,q5_k_m,q4_k_m")
    ap.add_argument("--imatrix", choices=("on", "off", "both"), default="off",
                    help="quantize the llama.cpp types with the importance matrix (export's default), without, or both")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasontune.stages.export import QUANT_TYPES, export_run
    from reasontune.export.portable import read_format

    run = Path(args.run)
    ev = Path(args.evals) if args.evals else next(
        (p for p in (run / "evals" / "after", run.parent / "evals" / "after") if p.is_dir()), None)
    if ev is None:
        ap.error(f"no evals/after next to {run}: pass --evals DIR (a reasontune eval --out folder)")
    recs, metrics = load_records(ev.parent.parent, args.limit, ev.name)
    max_new = int(metrics.get("max_new_tokens") or 64)
    out = run / "gguf-check"
    files = []
    for kind in args.types.split(","):
        for im in {"on": [True], "off": [False], "both": [False, True]}[args.imatrix] if kind in QUANT_TYPES else [True]:
            export_run(run, out, merged=True, gguf=True, dtype="float32", gguf_type=kind, imatrix=im)
            path = out / f"model-{kind}.gguf"
            files.append(path.replace(out / f"model-{kind}-noimatrix.gguf") if args.imatrix == "both" and not im
                         else path)
    fmt = read_format(out).format
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base = check("merged (transformers)", model, tok, recs, fmt, max_new, 16)
    rows = [{"model": "merged folder, transformers fp32", "n": base["n"], "accuracy": base["accuracy"],
             "stopped": base["stopped"],
             "size_mb": round(sum(p.stat().st_size for p in out.glob("*.safetensors")) / 1e6, 1),
             "eval_accuracy": base["eval_accuracy"]}]
    del model
    rows += [llama_check(p, recs, fmt, max_new) for p in files]
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "texts"}))
    print(f"\n| model | accuracy | stopped with EOS | size (MB) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['accuracy']:.3f} | {r['stopped']:.2f} | {r['size_mb']} |")
    print(f"\n{len(recs)} problems of {ev}, greedy, {max_new} tokens; reasontune eval's accuracy on them: "
          f"{rows[0]['eval_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
