"""Jobs that run vLLM, each in its own process (tests/test_vllm.py starts them): vLLM's LLM() starts its
workers with spawn, which needs this `__main__` guard, and a process per job frees the engine for sure.

    python tests/vllm_jobs.py eval MODEL ADAPTER|- LIMIT OUT_JSON [DTYPE]   both engines, greedy, same problems
    python tests/vllm_jobs.py stops MODEL LIMIT OUT_JSON            both engines, fp32, at max_seq_length 512 and
                                                                    at a cap that binds (prompt + completion)
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


METRICS = ("accuracy", "format_rate", "mean_length", "stop_rate", "truncation_rate", "engine", "n")


def _evaluate(cfg, folder: str, adapter=None) -> dict:
    """evaluate() with either engine; its metrics, and per greedy completion the text, the sampled ids (EOS
    included: what the engine's Generation holds, captured on their way to the records) and how it ended."""
    from reasontune.stages import evaluate as ev

    ids, real = [], ev._records

    def keep_ids(rows, prompts, gens, kind, *args):
        ids.extend(g.token_ids for samples in gens for g in samples)
        return real(rows, prompts, gens, kind, *args)

    ev._records, t = keep_ids, time.perf_counter()
    try:
        m = ev.evaluate(cfg, out_dir=folder, adapter=adapter, progress=False)
    finally:
        ev._records = real
    recs = ev.read_jsonl(f"{folder}/completions.jsonl")
    return {"metrics": {k: m.get(k) for k in METRICS}, "completions": [r["completion"] for r in recs],
            "token_ids_len": [r["num_tokens"] for r in recs], "token_ids": ids,
            "ended": [[r["stopped"], r["truncated"]] for r in recs], "seconds": time.perf_counter() - t}


def eval_job(model: str, adapter: str, limit: str, out: str, dtype: str = "auto") -> None:
    """Greedy eval with our decode (base and adapter) and with vLLM (adapter through LoRA)."""
    adapter = None if adapter == "-" else adapter
    result = {}
    runs = [("transformers", adapter), ("vllm", adapter)] + ([("transformers_base", None)] if adapter else [])
    for name, ad in runs:
        result[name] = _evaluate(_cfg(model, int(limit), name.split("_")[0], dtype), f"{out}.{name}", ad)
    with open(out, "w") as f:
        json.dump(result, f)


def stops_job(model: str, limit: str, out: str) -> None:
    """Both engines in fp32 on the same problems: at max_seq_length 512 (the budget, EOS and the stop rule end
    the completions) and at a max_seq_length that leaves the shortest prompt 12 tokens (prompt + completion
    capped: vLLM's max_model_len, our decode's max_length)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    result = {"prompt_tokens": [], "eos": tok.eos_token_id}
    for setting in ("free", "capped"):
        result[setting] = {}
        for engine in ("transformers", "vllm"):
            cfg = _cfg(model, int(limit), engine, "float32")
            if setting == "capped":
                cfg = _cap(cfg, min(result["prompt_tokens"]) + 12)
            result[setting][engine] = r = _evaluate(cfg, f"{out}.{setting}.{engine}")
            if not result["prompt_tokens"]:
                from reasontune.stages.evaluate import read_jsonl

                result["prompt_tokens"] = [len(tok(x["prompt"], add_special_tokens=False)["input_ids"])
                                           for x in read_jsonl(f"{out}.{setting}.{engine}/completions.jsonl")]
            r["max_seq_length"] = cfg.model.max_seq_length
    with open(out, "w") as f:
        json.dump(result, f)


def _cap(cfg, max_seq_length: int):
    from reasontune.config import override

    return override(cfg, {"model.max_seq_length": max_seq_length})


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
    {"eval": eval_job, "stops": stops_job, "grpo": grpo_job}[job](*argv)
