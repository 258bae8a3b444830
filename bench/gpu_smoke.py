"""A prepared GPU check: the transformers backend end to end on a tiny random Qwen3, offline.

    python bench/gpu_smoke.py                 # CUDA when present: GRPO steps, eval, export --merged
    python bench/gpu_smoke.py --device cpu    # the same on a CPU (what a machine without a GPU can show)

Eval runs with `--engine transformers`, then, when vllm imports, again with `--engine vllm` on the same
problems (engines/vllm.py: the adapter through vLLM's LoRA); the report has both and the time ratio
(bench/eval_engines.py is the fuller comparison: 200 problems, greedy and 8 samples).

Prints per-step time and the peak GPU memory (torch.cuda.max_memory_allocated) and exits non-zero on
any failure. Needs no network: the model and its tokenizer are built here (a character-level
tokenizer, the recipe's markers as tokens), the data is procedural:arithmetic.

A machine with torch, transformers, peft and accelerate but not trl, datasets or math-verify: bring
their wheels along in bench/.wheels (gitignored); the script installs them into a temporary folder
first. Download them here, for the target's Python (3.12 below) and platform:

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d bench/.wheels trl==1.16.0 datasets==5.2.0 math-verify==0.9.0 latex2sympy2_extended==1.11.0 \\
        antlr4-python3-runtime==4.13.2 pyarrow==26.0.1 pandas==3.1.1 python-dateutil==4.0.0 six==1.17.0 \\
        dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 fsspec==2026.9.0 pyyaml==6.0.4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "bench" / ".wheels"
NEEDED = ("trl", "datasets", "math_verify", "yaml")
MARKERS = ("<start_working_out>", "<end_working_out>", "<SOLUTION>", "</SOLUTION>")


def ensure_packages(wheels: Path) -> None:
    """Install the carried wheels (no index, no deps) into a temp folder when a package is missing."""
    import importlib.util

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return
    files = sorted(str(p) for p in wheels.glob("*.whl")) if wheels.is_dir() else []
    if not files:
        sys.exit(f"missing {missing} and no wheels in {wheels}: see this script's docstring for the download")
    # "site-packages" in the path matters: dill (datasets' fingerprints) pickles classes of modules outside
    # such a folder by value, and pyarrow's cannot be (PicklingError on MonthDayNano)
    site = Path(tempfile.mkdtemp(prefix="reasontune-")) / "site-packages"
    print(f"installing {len(files)} carried wheels for {missing} into {site}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", str(site), *files], check=True)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()


def tiny_qwen3(out: Path) -> Path:
    """A 2-layer random Qwen3 with a character-level tokenizer that knows the recipe's markers."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    special = ["<pad>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(special + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")  # every character is a token
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.add_tokens(list(MARKERS))
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def smoke_settings(model_dir: Path, run: Path, steps: int, num_iterations: int) -> dict:
    """The run's settings: the tiny model on procedural arithmetic, 8 rows a step (2 prompts x 4)."""
    return {
        "model": {"name": str(model_dir), "backend": "transformers", "max_seq_length": 512},
        "lora": {"r": 8, "alpha": 16},
        "data": {"dataset": "procedural:arithmetic", "train_size": 64, "test_size": 16, "max_prompt_quantile": None},
        "grpo": {"per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 64,
                 "max_steps": steps, "learning_rate": 1e-4, "save_steps": 1000, "optim": "adamw_torch",
                 "extra": {"num_iterations": num_iterations, "epsilon_high": 0.28} if num_iterations > 1 else {}},
        "output_dir": str(run), "seed": 0}


def step_report(rows: list[dict]) -> dict:
    """Per logged GRPO step: its seconds, where they went (engines/steptime.py: the mean of time/... and rows/...),
    and the clip ratio (non-zero only on passes that reuse a generation)."""
    steps = [r for r in rows if "step_time" in r]
    keys = sorted({k for r in steps for k in r if k.startswith(("time/", "rows/"))})
    return {"step_seconds": [round(r["step_time"], 3) for r in steps],
            "step_breakdown": {k: round(sum(r.get(k, 0) for r in steps) / max(len(steps), 1), 3) for k in keys},
            "clip_ratio_region": [r.get("clip_ratio/region_mean") for r in steps]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--num-iterations", type=int, default=1,
                    help="GRPO passes per generation (2: reuse, with epsilon_high 0.28 and the first pass's old log-probs)")
    ap.add_argument("--wheels", type=Path, default=WHEELS)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp folder)")
    a = ap.parse_args(argv)
    ensure_packages(a.wheels)
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    if a.device == "cpu":
        torch.cuda.is_available = lambda: False  # everything downstream asks torch, as on a machine without one
    elif a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    cuda = torch.cuda.is_available()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from reasontune import cli
    from reasontune.config import from_dict
    from reasontune.stages.train import train

    work = a.out or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    model_dir = tiny_qwen3(work / "tiny-qwen3")
    cfg = from_dict(smoke_settings(model_dir, work / "run", a.steps, a.num_iterations))
    t0 = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    summary = train(cfg)["summary"]
    rows = [json.loads(r) for r in (work / "run" / "metrics.jsonl").read_text().splitlines() if r.strip()]
    eval_args = ["eval", "--run", str(work / "run"), "--dataset", "procedural:arithmetic", "--limit", "16"]
    rc_eval = cli.main(eval_args + ["--engine", "transformers", "--out", str(work / "eval")])
    from reasontune.engines import vllm_importable

    has_vllm, why_not = vllm_importable()
    rc_vllm = cli.main(eval_args + ["--engine", "vllm", "--out", str(work / "eval-vllm")]) if has_vllm else None
    rc_export = cli.main(["export", str(work / "run"), "--merged", "--out", str(work / "merged")])
    report = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__, "grpo_steps": summary["global_step"],
        **step_report(rows),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "eval_rc": rc_eval, "export_rc": rc_export,
        "eval": json.loads((work / "eval" / "metrics.json").read_text()) if rc_eval == 0 else None,
        "eval_vllm_rc": rc_vllm if has_vllm else f"not run: {why_not}",
        "eval_vllm": json.loads((work / "eval-vllm" / "metrics.json").read_text()) if rc_vllm == 0 else None,
        "merged_files": sorted(p.name for p in (work / "merged").iterdir()) if rc_export == 0 else None,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    if report["eval"] and report["eval_vllm"]:
        report["eval_seconds_transformers_over_vllm"] = round(
            report["eval"]["wall_seconds"] / max(report["eval_vllm"]["wall_seconds"], 1e-9), 2)
    print("GPU_SMOKE " + json.dumps(report, default=str))
    ok = summary["global_step"] == a.steps and rc_eval == 0 and rc_export == 0 and rc_vllm in (None, 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
