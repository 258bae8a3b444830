"""Jobs that run vLLM, each in its own process (tests/test_vllm.py starts them): vLLM's LLM() starts its
workers with spawn, which needs this `__main__` guard, and a process per job frees the engine for sure.

    python tests/vllm_jobs.py eval MODEL ADAPTER|- LIMIT OUT_JSON [DTYPE]   both engines, greedy, same problems
    python tests/vllm_jobs.py grpo MODEL RUN_DIR OUT_JSON           2 GRPO steps with grpo.use_vllm
"""

from __future__ import annotations

import json
import logging
import sys
import time


def _cfg(model: str, limit: int, engine: str, dtype: str = "auto", **eval_kw):
    """DTYPE float32 also turns our decode's bf16 autocast off (grpo.bf16), so both engines compute in fp32."""
    from reasontune.config import from_dict

    return from_dict({"model": {"name": model, "max_seq_length": 512, "dtype": dtype},
                      "grpo": {"bf16": "false" if dtype == "float32" else "auto"},
                      "data": {"dataset": "procedural:arithmetic", "train_size": 8, "test_size": limit, "seed": 0},
                      "eval": {"limit": limit, "engine": engine, "max_new_tokens": 32, **eval_kw}})


def eval_job(model: str, adapter: str, limit: str, out: str, dtype: str = "auto") -> None:
    """Greedy eval with our decode (base and adapter) and with vLLM (adapter through LoRA)."""
    from reasontune.stages.evaluate import evaluate, read_jsonl

    adapter = None if adapter == "-" else adapter
    result = {}
    runs = [("transformers", adapter), ("vllm", adapter)] + ([("transformers_base", None)] if adapter else [])
    for name, ad in runs:
        t = time.perf_counter()
        folder = f"{out}.{name}"
        m = evaluate(_cfg(model, int(limit), name.split("_")[0], dtype), out_dir=folder, adapter=ad, progress=False)
        result[name] = {"metrics": {k: m.get(k) for k in ("accuracy", "format_rate", "mean_length", "engine", "n")},
                        "completions": [r["completion"] for r in read_jsonl(f"{folder}/completions.jsonl")],
                        "token_ids_len": [r["num_tokens"] for r in read_jsonl(f"{folder}/completions.jsonl")],
                        "seconds": time.perf_counter() - t}
    with open(out, "w") as f:
        json.dump(result, f)


def grpo_job(model: str, run_dir: str, out: str) -> None:
    """2 GRPO steps with TRL's vLLM colocate generation; records, after every optimizer step, one merged
    LoRA weight of the policy, and at the end the same weight inside vLLM's engine."""
    import torch
    from transformers import TrainerCallback

    from reasontune.stages import train as train_mod
    from reasontune.config import from_dict

    seen: list[list[float]] = []
    trainers = []

    def merged_q(model) -> torch.Tensor:  # top layer's q_proj, LoRA folded in: (q_dim, hidden)
        layer = model.base_model.model.model.layers[-1].self_attn.q_proj
        return (layer.base_layer.weight + layer.get_delta_weight("default")).detach().float()

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen.append(merged_q(model).flatten()[:256].tolist())

        def on_step_end(self, args, state, control, model=None, **kw):
            seen.append(merged_q(model).flatten()[:256].tolist())

    build = train_mod.build_grpo_trainer

    def build_and_keep(cfg, model, tokenizer, train_ds, callbacks=()):
        t = build(cfg, model, tokenizer, train_ds, list(callbacks) + [Record()])
        trainers.append(t)
        return t

    train_mod.build_grpo_trainer = build_and_keep
    cfg = from_dict({"model": {"name": model, "max_seq_length": 256}, "output_dir": run_dir, "overwrite": True,
                     "data": {"dataset": "procedural:arithmetic", "train_size": 8, "test_size": 4},
                     "lora": {"r": 4, "top_layers": None},
                     "rewards": {"names": ["vllm_jobs:length_reward"], "weights": [1.0]},
                     "grpo": {"use_vllm": True, "vllm_mode": "colocate", "num_generations": 4,
                              "per_device_train_batch_size": 4, "max_completion_length": 12, "max_steps": 2,
                              "learning_rate": 0.05, "warmup_ratio": 0.0, "temperature": 1.0}})
    summary = train_mod.train(cfg)
    trainer = trainers[0]
    llm = trainer.vllm_generation.llm
    vmodel = llm.llm_engine.model_executor.driver_worker.model_runner.model
    qkv = dict(vmodel.named_parameters())[f"model.layers.{len(vmodel.model.layers) - 1}.self_attn.qkv_proj.weight"]
    with open(out, "w") as f:
        json.dump({"summary": summary["summary"], "use_vllm": bool(trainer.use_vllm), "seen": seen,
                   "vllm": qkv.detach().float().flatten()[:256].tolist()}, f)


def length_reward(completions, **kw):
    """A reward that differs within a group (characters written): the groups have advantages, so the
    LoRA moves every step."""
    return [float(len(c if isinstance(c, str) else c[0]["content"])) / 10.0 for c in completions]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job, *argv = sys.argv[1:]
    {"eval": eval_job, "grpo": grpo_job}[job](*argv)
