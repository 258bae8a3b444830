"""GRPO keeps the model's own stop, and GRPO and eval score a completion the same way.

The trainer returns exactly the sampled ids (no EOS appended after the closing marker: that token was then
never sampled, nothing held the model's EOS there, and the demo's tuned model stopped writing it). A
completion that goes on past the marker is scored with what it wrote there. Eval builds the same text
from the same ids and calls the same rewards with the same columns (scoring.py)."""

from __future__ import annotations

import json
import math
import re

from reasontune.config import from_dict

MARKER_CUT_TAIL = " and and"


def _cfg(tmp_path, tiny_model_dir, **grpo):
    g = {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 32, "max_steps": 1,
         "save_steps": 1000, "skip_zero_variance": False, "stop_grace_tokens": 2, **grpo}
    return from_dict({"model": {"name": str(tiny_model_dir)}, "lora": {"r": 4, "alpha": 8},
                      "data": {"train_size": 16, "test_size": 4}, "output_dir": str(tmp_path / "run"), "seed": 0,
                      "rewards": {"names": ["recipe", "step_check", "overlong_soft"]}, "grpo": g})


def _scripted_decode(tok, kinds):
    """A stand-in for the decode loop: per row, one of the ways a completion ends, built from its prompt's own
    numbers (a line of right arithmetic on the question's first two numbers, which may or may not be the
    reference's step: step_check tells those apart only with the `worked` column)."""
    from reasontune.engines import generation

    eos_id = tok.eos_token_id

    def body(prompt_ids):
        q = tok.decode(prompt_ids).rsplit("user", 1)[-1]
        a, b = [int(x) for x in re.findall(r"\d+", q)[:2]]
        return f"{a} + {b} = {a + b}\n<end_working_out>\n<SOLUTION>{a + b}</SOLUTION>"

    calls = []

    def fake(model, rows, pad_id, *, max_new_tokens, sampling, eos: set, stop, bar=None, timings=None):
        outs = []
        for i, prompt in enumerate(rows):
            kind = kinds[i % len(kinds)]
            ids = tok.encode(body(prompt), add_special_tokens=False)
            if kind == "eos":  # the model closes its answer and writes EOS itself
                outs.append((ids + [eos_id], "eos"))
            elif kind == "dot":  # `>.`: the token that completes the marker carries more text, then EOS
                outs.append((tok.encode(body(prompt) + ".", add_special_tokens=False) + [eos_id], "eos"))
            elif kind == "marker":  # writes on past the marker: the rule cuts it after the grace tokens
                tail = tok.encode(MARKER_CUT_TAIL, add_special_tokens=False)
                out = ids + tail
                assert not any(stop(i, out[:n]) for n in range(1, len(ids) + 1)), "cut before the grace tokens"
                assert stop(i, out), "the rule must end a row 2 tokens past the marker"
                outs.append((out, "marker"))
            else:  # runs to the budget
                outs.append(([tok.encode(" and", add_special_tokens=False)[0]] * max_new_tokens, "limit"))
        calls.append(outs)
        return outs

    return fake, calls, generation


def test_grpo_returns_the_sampled_ids_and_clipped_counts_rows_without_eos(tmp_path, tiny_model_dir, monkeypatch):
    """Two rows end with their own EOS, one is cut two tokens past the marker, one runs to the budget: TRL gets
    the ids as sampled (the EOS rows' length includes their EOS, nothing is added to the others) and counts
    the two rows without EOS as clipped."""
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    from reasontune.config import override
    from reasontune.export.portable import read_format

    # a null budget (the hub recipes'): GRPO samples up to max_seq_length - the longest prompt
    cfg = override(_cfg(tmp_path, tiny_model_dir, max_completion_length=None), {"model.max_seq_length": 160})
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    fake, calls, generation = _scripted_decode(tok, ["eos", "marker", "eos", "limit"])
    monkeypatch.setattr(generation, "_decode_batch", fake)
    train(cfg, model=model, tokenizer=tok)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["completions/clipped_ratio"] == 0.5
    eos_lengths = [len(ids) for outs in calls for ids, how in outs if how == "eos"]
    assert row["completions/mean_terminated_length"] == sum(eos_lengths) / len(eos_lengths)
    # format_exact pays only the rows that end at the marker: the cut row wrote on past it
    assert row["rewards/format_exact/mean"] == 3.0 * 2 / 4
    # the adapter records the budget GRPO resolved (what eval --run then generates with)
    budget = max(len(ids) for outs in calls for ids, how in outs if how == "limit")
    assert read_format(tmp_path / "run" / "adapter").grpo.max_completion_length == budget


def test_eval_scores_what_grpo_scored(tmp_path, tiny_model_dir, monkeypatch):
    """The scores GRPO computed for a batch, and eval's scores for the same completions of the same rows, are
    the same values: step_check sees the `worked` column in both, the text after a `>.` marker token is
    scored in both, and the length reward counts the same ids."""
    from reasontune.stages.evaluate import _records
    from reasontune.engines.generation import to_generation
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts
    from reasontune.data import build_datasets
    from reasontune.engines.trainer import ReasonTuneGRPOTrainer

    cfg = _cfg(tmp_path, tiny_model_dir, per_device_train_batch_size=8, num_generations=2)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    fake, calls, generation = _scripted_decode(tok, ["eos", "dot", "marker", "limit"])
    monkeypatch.setattr(generation, "_decode_batch", fake)
    seen = []
    real = ReasonTuneGRPOTrainer._calculate_rewards

    def spy(self, inputs, prompts, completions, completion_ids_list):
        rewards = real(self, inputs, prompts, completions, completion_ids_list)
        seen.append((inputs, prompts, completion_ids_list, rewards.tolist()))
        return rewards

    monkeypatch.setattr(ReasonTuneGRPOTrainer, "_calculate_rewards", spy)
    ds = build_datasets(cfg.data, cfg.format, tok)
    trainer = build_grpo_trainer(cfg, model, tok, prepare_prompts(ds["train"], tok, cfg))
    trainer.train()
    inputs, prompts, ids, grpo_scores = seen[0]
    names = [f.__name__ for f in trainer.reward_funcs]
    rows = [{k: v for k, v in r.items()} for r in inputs]
    gens = [[to_generation(tok, i, "eos" if i[-1] == tok.eos_token_id else "limit")] for i in ids]
    recs = _records(rows, prompts, gens, "greedy", cfg, _eval_funcs(cfg, tok, trainer))
    assert "worked" in rows[0] and "step_check" in names
    differ = []
    for r, g_scores in zip(recs, grpo_scores):
        for name, g in zip(names, g_scores):
            e = r["scores"][name]
            # TRL keeps rewards in a float32 tensor: equal up to its rounding
            if not ((e is None and math.isnan(g)) or (e is not None and math.isclose(e, g, rel_tol=1e-6))):
                differ.append((name, r["completion"], g, e))
    assert not differ, differ
    # the batch does tell the cases apart: a right line off the reference path earns no full step credit
    steps = [s[names.index("step_check")] for s in grpo_scores]
    assert len(set(steps)) > 1


def _eval_funcs(cfg, tok, trainer):
    """The reward set eval builds for this run (its own construction, not the trainer's objects)."""
    from reasontune.rewards import run_reward_funcs

    return run_reward_funcs(cfg, tok.eos_token, trainer.args.max_completion_length)[0]


def test_first_pass_ratio_is_exactly_one_with_num_iterations_2(tmp_path, tiny_model_dir):
    """num_iterations 2 under bf16 autocast: TRL computes the old log-probs when it generates, and the loss's
    first pass over the same rollouts, with the same weights, must give the same numbers (ratio exactly 1).
    The old log-probs used to run outside the autocast the loss runs under."""
    import torch

    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts
    from reasontune.engines.trainer import ReasonTuneGRPOTrainer

    # TRL's own old log-probs forward at generation (where the first pass cannot give them: tests/test_old_logps.py)
    cfg = _cfg(tmp_path, tiny_model_dir, extra={"num_iterations": 2}, bf16="true", max_completion_length=8,
               per_device_train_batch_size=4, gradient_accumulation_steps=1, old_logps_from_first_pass=False)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    ds = build_datasets(cfg.data, cfg.format, tok)
    trainer = build_grpo_trainer(cfg, model, tok, prepare_prompts(ds["train"], tok, cfg))
    calls = []
    real = ReasonTuneGRPOTrainer._get_per_token_logps_and_entropies

    def spy(self, *a, **k):
        out = real(self, *a, **k)
        calls.append((torch.is_grad_enabled(), out[0].detach().clone()))
        return out

    ReasonTuneGRPOTrainer._get_per_token_logps_and_entropies = spy
    try:
        trainer.train()
    finally:
        ReasonTuneGRPOTrainer._get_per_token_logps_and_entropies = real
    old = next(lp for grad, lp in calls if not grad)  # at generation: no grad
    first = next(lp for grad, lp in calls if grad)  # the loss's first pass
    assert old.shape == first.shape
    # TRL shuffles the rollouts before the passes over them: match rows, each exactly
    unmatched = [r for r in first if not any(torch.equal(r, o) for o in old)]
    assert not unmatched, min((r - o).abs().max().item() for r in unmatched for o in old)
