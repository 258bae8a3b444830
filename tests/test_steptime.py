"""A GRPO step's time, broken down (engines/steptime.py): every part is logged per step in metrics.jsonl, the
parts are real measurements (each is zero when its method is not run, and they fit inside the step), and the
same instrument times plain TRL's trainer."""

from __future__ import annotations

import json

import pytest

from reasontune.engines.steptime import PARTS, StepTimes, breakdown

from test_trainer import NEEDS_TRL_CPU_FUSED_HEAD, tiny_cfg


def test_breakdown_derives_the_parts_from_nested_timers():
    # training_step (10 s) wraps the scoring (6 s), which wraps generation (4 s) and rewards (1 s)
    got = breakdown({"train_step": 10.0, "scoring": 6.0, "generation": 4.0, "rewards": 1.0, "optimizer": 0.5,
                     "rows": 8, "rows_skipped": 3})
    assert got == {"time/generation": 4.0, "time/rewards": 1.0, "time/scoring_other": 1.0,
                   "time/forward_backward": 4.0, "time/optimizer": 0.5, "rows/trained": 5, "rows/skipped": 3}
    assert "time/prefill" not in got  # only our decode reports its two halves
    assert breakdown({"prefill": 1.0, "decode": 2.0})["time/decode"] == 2.0


def test_every_grpo_step_logs_its_time_by_part(tmp_path, tiny_model_dir, one_thread):
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    cfg = tiny_cfg(tmp_path, tiny_model_dir, max_steps=2)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    train(cfg, model=model, tokenizer=tok)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if r]
    assert len(rows) == 2
    for r in rows:
        parts = {p: r[f"time/{p}"] for p in PARTS}
        assert all(v > 0 for v in parts.values()), parts
        # generation is prefill + decode plus the bookkeeping around them; the parts fit inside the step
        assert parts["prefill"] + parts["decode"] <= parts["generation"]
        inside = sum(v for p, v in parts.items() if p not in ("prefill", "decode"))
        assert inside <= r["step_time"] * 1.05 + 0.05, (inside, r["step_time"])
        assert r["rows/trained"] + r["rows/skipped"] == 4  # per_device_train_batch_size completions a step


@NEEDS_TRL_CPU_FUSED_HEAD  # plain TRL computes its log-probs with it
def test_the_same_instrument_times_plain_trl(tmp_path, tiny_model_dir, one_thread):
    from trl import GRPOConfig, GRPOTrainer

    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.rewards import build_reward_funcs
    from reasontune.stages.train import prepare_prompts

    cfg = tiny_cfg(tmp_path, tiny_model_dir)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    ds = prepare_prompts(build_datasets(cfg.data, cfg.format)["train"], tok, cfg)
    funcs, _ = build_reward_funcs(cfg.rewards, cfg.format, eos_token=tok.eos_token)
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=1, logging_steps=1, save_strategy="no", report_to="none",
                      use_cpu=True, bf16=False, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok)
    StepTimes().attach(trainer)
    trainer.train()
    row = next(r for r in trainer.state.log_history if "time/generation" in r)
    assert row["time/generation"] > 0 and row["time/forward_backward"] > 0 and row["time/optimizer"] > 0
    assert "time/prefill" not in row  # HF generate: one figure
    assert row["rows/trained"] == 4 and row["rows/skipped"] == 0
