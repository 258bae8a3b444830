"""GRPO step time: plain TRL GRPOTrainer vs reasontune's trainer, same work, same machine, one command.

    python bench/grpo_step.py [--steps 3] [--json]

Plain TRL keeps TRL's defaults except bf16 (off: emulated bf16 is ~30x slower on CPUs without it).
Each side runs in its own subprocess (so peak RSS is its own) on the embedded SmolLM2-135M with
the same LoRA, data (procedural:arithmetic), rewards (the recipe's four), batch (4 prompts x 8
completions), max_completion_length (64) and seed. Plain TRL keeps every TRL default; reasontune
uses its trainer (stop at the closing marker, zero-advantage skipping, LoRA merged for decoding,
measured autocast). The first step is a warm-up and is not timed.
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


def _setup(side: str, steps: int):
    from transformers import TrainerCallback

    from reasontune.config import from_dict
    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.train import prepare_prompts

    cfg = from_dict({
        "output_dir": f"/tmp/reasontune-bench-{side}", "overwrite": True,
        "lora": {"r": 16, "alpha": 32},
        "data": {"train_size": 256, "test_size": 8},
        "grpo": {"per_device_train_batch_size": SHAPE["prompts"] * SHAPE["generations"],
                 "num_generations": SHAPE["generations"], "max_completion_length": SHAPE["max_completion_length"],
                 "max_steps": steps + 1, "learning_rate": 5e-5, "save_steps": 10_000},
    })
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
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


def run_side(side: str, steps: int) -> dict:
    cfg, model, tok, ds, timer = _setup(side, steps)
    if side == "trl":
        from trl import GRPOConfig, GRPOTrainer

        from reasontune.rewards import build_reward_funcs

        funcs, weights = build_reward_funcs(cfg.rewards, cfg.format, eos_token=tok.eos_token)
        g = cfg.grpo
        args = GRPOConfig(output_dir=cfg.output_dir, per_device_train_batch_size=g.per_device_train_batch_size,
                          num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                          max_steps=g.max_steps, learning_rate=g.learning_rate, logging_steps=1, save_strategy="no",
                          report_to="none", seed=cfg.seed, use_cpu=True, disable_tqdm=True,
                          # TRL defaults bf16=True; on a CPU without native bf16 (this one: 0.8 vs 28
                          # GFLOP/s) that would make the baseline absurdly slow, so the baseline gets fp32.
                          # Everything else (gradient checkpointing on, HF generate, ...) is TRL's default.
                          bf16=False)
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok,
                              callbacks=[timer])
    else:
        from reasontune.train import build_grpo_trainer

        trainer = build_grpo_trainer(cfg, model, tok, ds, callbacks=[timer])
        trainer.args.disable_tqdm = True
    trainer.train()
    times, tokens = timer.times[1:], timer.tokens[1:]  # step 1 warms caches and kernels
    s = sum(times) / len(times)
    return {"side": side, "s_per_step": s, "tokens_per_s": sum(tokens) / sum(times),
            "step_times": times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--side", choices=["trl", "reasontune"], help=argparse.SUPPRESS)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.side:  # child process
        print(json.dumps(run_side(a.side, a.steps)))
        return
    res = {}
    for side in ("trl", "reasontune"):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--side", side, "--steps", str(a.steps)],
                             capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if out.returncode != 0:
            sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
        res[side] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{side:>10}: {res[side]['s_per_step']:.2f} s/step, {res[side]['tokens_per_s']:.0f} completion tok/s, "
              f"peak RSS {res[side]['peak_rss_mb']:.0f} MB (wall {time.perf_counter() - t:.0f} s)", flush=True)
    ratio = res["trl"]["s_per_step"] / res["reasontune"]["s_per_step"]
    print(f"ratio (plain TRL s/step / reasontune s/step): {ratio:.2f}")
    if a.json:
        print(json.dumps({"ratio": ratio, "reasontune_s_per_step": res["reasontune"]["s_per_step"],
                          "trl_s_per_step": res["trl"]["s_per_step"], "steps": a.steps, "shape": SHAPE,
                          "detail": res}))


if __name__ == "__main__":
    main()
