"""GRPO step time: plain TRL GRPOTrainer vs reasontune's trainer, same work, same machine, one command.

    python bench/grpo_step.py [--steps 3] [--json] [--no-warm] [--no-shared-prompt]

Each side runs in its own subprocess (so peak RSS is its own) on the embedded SmolLM2-135M with
the same LoRA adapter, data (procedural:arithmetic), rewards (the recipe's four), batch (4 prompts
x 8 completions), max_completion_length (64) and seed.

- Both sides start from the same format-warmed adapter (the demo's SFT warm-up, run once in a
  third subprocess first): an untrained base never writes the answer marker, so a bench on it
  measures a situation no real GRPO run spends its time in. --no-warm starts from a fresh LoRA.
  --no-shared-prompt sets grpo.shared_prompt false on reasontune's side (the lever measured off).
- Plain TRL is what a TRL user writes: `from_pretrained` (fp32 weights for this checkpoint) and
  `GRPOConfig` defaults (gradient checkpointing on, HF generate). The one exception is bf16: TRL
  defaults it to True, which we keep only where bf16 measured faster on this CPU (speed.py); on a
  CPU that emulates bf16 it is ~30x slower, which would flatter reasontune.
- reasontune uses its loader (bf16 frozen base where bf16 measured faster, fp32 LoRA) and its
  trainer (stop at the closing marker, finished rows leave the decode batch, zero-advantage
  skipping, no gradient checkpointing).
The first step warms caches and kernels and is not timed.

Besides the ratio of the two, each side's step is set against its own arithmetic (step_flops: the FLOPs its
rollout and loss need at the least, the group's prompt counted once) at the matmul rate this CPU shows in the
same run (matmul_rate, bf16 where TRL gets bf16): "the step takes Nx that" is how far a side is from the limit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time

SHAPE = dict(prompts=4, generations=8, max_completion_length=64)


WARM_DIR = "/tmp/reasontune-bench-warm"


def _config(side: str, steps: int):
    from reasontune.config import from_dict

    return from_dict({
        "output_dir": f"/tmp/reasontune-bench-{side}", "overwrite": True,
        "lora": {"r": 16, "alpha": 32},
        "data": {"train_size": 256, "test_size": 8},
        "grpo": {"shared_prompt": os.environ.get("REASONTUNE_BENCH_SHARED_PROMPT", "1") == "1",
                 "per_device_train_batch_size": SHAPE["prompts"] * SHAPE["generations"],
                 "num_generations": SHAPE["generations"], "max_completion_length": SHAPE["max_completion_length"],
                 "max_steps": steps + 1, "learning_rate": 5e-5, "save_steps": 10_000},
        "warmup": {"kind": "sft", "examples": 64, "epochs": 2, "learning_rate": 1e-3, "batch_size": 8},
    })


def warm_adapter() -> dict:
    """The demo's format warm-up on a fresh LoRA, saved to WARM_DIR for both sides to load."""
    from transformers import set_seed

    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.sft import warmup_sft

    cfg = _config("warm", 0)
    set_seed(cfg.seed)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    out = warmup_sft(cfg, model, tok, build_datasets(cfg.data, cfg.format)["train"], out_dir=WARM_DIR)
    model.save_pretrained(WARM_DIR)
    tok.save_pretrained(WARM_DIR)
    return {"side": "warm", **out}


def _load(side: str, cfg, warm: bool):
    """reasontune: our loader. trl: what a plain script does (from_pretrained defaults, then PEFT)."""
    from reasontune.models import load_model_and_tokenizer, load_tokenizer, peft_config, resolve_model_path

    if side == "reasontune":
        model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=None if warm else cfg.lora,
                                                 adapter=WARM_DIR if warm else None)
        return model, tok
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(cfg.model)
    tok = load_tokenizer(path, cfg.model, cfg.format)  # same prompt rendering on both sides
    model = AutoModelForCausalLM.from_pretrained(path)
    if warm:
        return PeftModel.from_pretrained(model, WARM_DIR, is_trainable=True), tok
    return get_peft_model(model, peft_config(cfg.lora, model.config.num_hidden_layers)), tok


def _setup(side: str, steps: int, warm: bool):
    from transformers import TrainerCallback, set_seed

    from reasontune.data import build_datasets
    from reasontune.stages.train import prepare_prompts

    cfg = _config(side, steps)
    set_seed(cfg.seed)
    model, tok = _load(side, cfg, warm)
    ds = prepare_prompts(build_datasets(cfg.data, cfg.format)["train"], tok, cfg)

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.tokens, self._t = [], [], None

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                self.tokens.append(logs["completions/mean_length"] * SHAPE["prompts"] * SHAPE["generations"])

    return cfg, model, tok, ds, Timer()


def run_side(side: str, steps: int, warm: bool) -> dict:
    if side == "warm":
        return warm_adapter()
    cfg, model, tok, ds, timer = _setup(side, steps, warm)
    if side == "trl":
        from trl import GRPOConfig, GRPOTrainer

        from reasontune.rewards import build_reward_funcs
        from reasontune.models.speed import cpu_bf16_is_faster

        funcs, weights = build_reward_funcs(cfg.rewards, cfg.format, eos_token=tok.eos_token)
        g = cfg.grpo
        args = GRPOConfig(output_dir=cfg.output_dir, per_device_train_batch_size=g.per_device_train_batch_size,
                          num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                          max_steps=g.max_steps, learning_rate=g.learning_rate, logging_steps=1, save_strategy="no",
                          report_to="none", seed=cfg.seed, use_cpu=True, disable_tqdm=True,
                          # TRL defaults bf16=True: kept where bf16 is native, off where it is
                          # emulated (~30x slower). Everything else (gradient checkpointing on, HF
                          # generate, ...) is TRL's default.
                          bf16=cpu_bf16_is_faster())
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok,
                              callbacks=[timer])
        from reasontune.engines.steptime import StepTimes

        StepTimes().attach(trainer)  # the same breakdown our trainer logs (build_grpo_trainer attaches it)
    else:
        from reasontune.stages.train import build_grpo_trainer

        trainer = build_grpo_trainer(cfg, model, tok, ds, callbacks=[timer])
        trainer.args.disable_tqdm = True
    shape = _model_shape(model, tok, ds)
    trainer.train()
    times, tokens = timer.times[1:], timer.tokens[1:]  # step 1 warms caches and kernels
    s = sum(times) / len(times)
    skipped = [r.get("skipped_rows_frac") for r in trainer.state.log_history[1:] if "skipped_rows_frac" in r]
    return {"side": side, "s_per_step": s, "tokens_per_s": sum(tokens) / sum(times), "step_times": times,
            "mean_completion_tokens": sum(tokens) / len(tokens) / (SHAPE["prompts"] * SHAPE["generations"]),
            "skipped_rows_frac": sum(skipped) / len(skipped) if skipped else None,
            "breakdown": _breakdown(trainer.state.log_history[1:]),
            "weights_dtype": str(next(model.parameters()).dtype), "trl_bf16": bool(trainer.args.bf16), "shape": shape,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _model_shape(model, tok, ds) -> dict:
    """What the arithmetic of a step needs: the body's weights (every matmul a token goes through but the LM
    head), the head's, the share of layers a backward pass goes through (from the lowest LoRA layer up) and the
    prompts' mean length in tokens."""
    import re

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings().weight
    emb = base.get_input_embeddings().weight
    frozen = [(n, p) for n, p in base.named_parameters() if "lora_" not in n]
    body = sum(p.numel() for n, p in frozen if p.dim() == 2 and p is not emb and p is not head)
    layers = base.config.num_hidden_layers
    lora = {int(m.group(1)) for n, _ in base.named_parameters() if "lora_" in n
            for m in [re.search(r"layers\.(\d+)\.", n)] if m}
    prompt_tokens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in ds["prompt"][:256]]
    return {"body_params": body, "head_params": head.numel(), "layers": layers,
            "backward_share": (layers - min(lora)) / layers if lora else 1.0,
            "prompt_tokens": sum(prompt_tokens) / len(prompt_tokens)}


def step_flops(shape: dict, completion_tokens: float, rows_trained: float) -> dict:
    """FLOPs one step needs at the least (2 per weight per token for a matmul), with the group's prompt once:
    prefill (each distinct prompt once, the head at its last position), decode (every completion token through
    body and head), the loss forward of the trained rows (their groups' prompts once, their completions through
    body and head) and its backward: the frozen base needs only the gradient by its input (the same matmuls as
    the forward again, from the lowest LoRA layer up; LoRA's own weight gradients are rank r, negligible), the
    head's likewise. `completion_tokens` is per completion, `rows_trained` per step."""
    body, head, p = shape["body_params"], shape["head_params"], shape["prompt_tokens"]
    prompts, rows = SHAPE["prompts"], SHAPE["prompts"] * SHAPE["generations"]
    groups = rows_trained / SHAPE["generations"]
    prefill = prompts * (2 * body * p + 2 * head)
    decode = rows * completion_tokens * 2 * (body + head)
    fwd = groups * p * 2 * body + rows_trained * completion_tokens * 2 * (body + head)
    bwd = (groups * p * 2 * body + rows_trained * completion_tokens * 2 * body) * shape["backward_share"] \
        + rows_trained * completion_tokens * 2 * head
    return {"prefill": prefill, "decode": decode, "loss_forward": fwd, "loss_backward": bwd,
            "total": prefill + decode + fwd + bwd}


def matmul_rate(dtype_name: str, reps: int = 20) -> float:
    """FLOP/s of this CPU on a matmul the size of one of the model's (a 512-token block through a 576 x 1536
    MLP weight, SmolLM2-135M), the best of `reps` calls after two warm-ups."""
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 576, generator=g).to(dtype), torch.randn(576, 1536, generator=g).to(dtype)
    best = float("inf")
    for i in range(reps + 2):
        t = time.perf_counter()
        a @ b
        if i >= 2:
            best = min(best, time.perf_counter() - t)
    return 2 * 512 * 576 * 1536 / best


def _print_limit(res: dict) -> dict:
    """The ratio of each side's s/step to its step's own arithmetic at the matmul rate measured now."""
    dtype = "bfloat16" if res["trl"]["trl_bf16"] else "float32"  # the bench gives TRL bf16 where bf16 is faster
    rate = matmul_rate(dtype)
    out = {"matmul_dtype": dtype, "matmul_flops_per_s": rate}
    for side in ("trl", "reasontune"):
        r = res[side]
        trained = r["breakdown"].get("rows/trained", SHAPE["prompts"] * SHAPE["generations"])
        f = step_flops(r["shape"], r["mean_completion_tokens"], trained)
        limit = f["total"] / rate
        out[side] = {"flops": f, "limit_s": limit, "times_limit": r["s_per_step"] / limit}
        print(f"{side:>10}: the step's arithmetic {f['total'] / 1e12:.2f} TFLOP (prefill {f['prefill'] / 1e12:.2f}, "
              f"decode {f['decode'] / 1e12:.2f}, loss fwd {f['loss_forward'] / 1e12:.2f}, bwd "
              f"{f['loss_backward'] / 1e12:.2f}) at {rate / 1e12:.2f} TFLOP/s ({dtype} matmul, measured now): "
              f"{limit:.2f} s; the step takes {out[side]['times_limit']:.1f}x that")
    return out


def _breakdown(rows: list[dict]) -> dict:
    """Mean seconds (rows: mean count) per timed step of each time/... and rows/... key (engines/steptime.py)."""
    keys = sorted({k for r in rows for k in r if k.startswith(("time/", "rows/"))})
    return {k: sum(r[k] for r in rows if k in r) / max(1, sum(1 for r in rows if k in r)) for k in keys}


def _print_breakdown(res: dict) -> None:
    keys = sorted({k for side in ("trl", "reasontune") for k in res[side]["breakdown"]},
                  key=lambda k: (k.startswith("rows/"), k))
    print(f"{'per step':>24} {'plain TRL':>10} {'reasontune':>10}")
    for k in keys:
        a, b = (res[side]["breakdown"].get(k) for side in ("trl", "reasontune"))
        unit = "" if k.startswith("rows/") else " s"
        print(f"{k:>24} {'-' if a is None else f'{a:.2f}':>10} {'-' if b is None else f'{b:.2f}':>10}{unit}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-warm", action="store_true", help="start both sides from a fresh LoRA, not the warmed adapter")
    p.add_argument("--no-shared-prompt", action="store_true", help="grpo.shared_prompt false on reasontune's side")
    p.add_argument("--side", choices=["warm", "trl", "reasontune"], help=argparse.SUPPRESS)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warm = not a.no_warm
    if a.side:  # child process
        print(json.dumps(run_side(a.side, a.steps, warm)))
        return
    res = {}
    for side in (["warm"] if warm else []) + ["trl", "reasontune"]:
        t = time.perf_counter()
        cmd = [sys.executable, __file__, "--side", side, "--steps", str(a.steps)] + (["--no-warm"] if not warm else [])
        env = {**os.environ, "TQDM_DISABLE": "1", "REASONTUNE_BENCH_SHARED_PROMPT": "0" if a.no_shared_prompt else "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
        res[side] = json.loads(out.stdout.strip().splitlines()[-1])
        if side == "warm":
            print(f"warm-up adapter: {res[side]['examples']} worked solutions, loss {res[side]['loss']:.3f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
            continue
        r = res[side]
        skip = "" if r["skipped_rows_frac"] is None else f", {r['skipped_rows_frac']:.0%} rows skipped"
        print(f"{side:>10}: {r['s_per_step']:.2f} s/step ({', '.join(f'{x:.1f}' for x in r['step_times'])}), "
              f"{r['tokens_per_s']:.0f} completion tok/s, {r['mean_completion_tokens']:.1f} tokens/completion{skip}, "
              f"weights {r['weights_dtype']}, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(wall {time.perf_counter() - t:.0f} s)", flush=True)
    ratio = res["trl"]["s_per_step"] / res["reasontune"]["s_per_step"]
    _print_breakdown(res)
    limit = _print_limit(res)
    print(f"ratio (plain TRL s/step / reasontune s/step): {ratio:.2f}")
    if a.json:
        print(json.dumps({"ratio": ratio, "limit": limit, "shared_prompt": not a.no_shared_prompt,
                          "reasontune_s_per_step": res["reasontune"]["s_per_step"], "trl_s_per_step": res["trl"]["s_per_step"], "steps": a.steps, "shape": SHAPE,
                          "warm_adapter": warm, "detail": res}))


if __name__ == "__main__":
    main()
