"""GRPO on a tiny random Llama: the loss is finite, LoRA weights change, and the speed levers
(stop at the closing marker, zero-advantage skipping) keep what is learned unchanged."""

from __future__ import annotations

import math

import pytest
import torch
import trl.trainer.utils as trl_utils

from reasontune.config import from_dict

# TRL's fused LM head is the reference here. trl 1.16 runs it on a CPU; trl 1.15 (the GPU stack,
# make test-gpustack) imports it from Triton only, which CPU torch lacks: no reference to compare with.
NEEDS_TRL_CPU_FUSED_HEAD = pytest.mark.skipif(getattr(trl_utils, "_ChunkedLogProbFunction", 0) is None,
                                              reason="this TRL's fused LM head needs Triton (trl 1.15 on a CPU)")


def tiny_cfg(tmp_path, model_dir, **grpo):
    g = {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 12,
         "max_steps": 2, "learning_rate": 1e-2, "save_steps": 1000, **grpo}
    return from_dict({"model": {"name": str(model_dir)}, "lora": {"r": 4, "alpha": 8},
                      "data": {"train_size": 16, "test_size": 4}, "grpo": g,
                      "output_dir": str(tmp_path / "run"), "seed": 0})


def lora_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_grpo_two_steps_loss_finite_and_lora_changes(tmp_path, tiny_model_dir):
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    cfg = tiny_cfg(tmp_path, tiny_model_dir, skip_zero_variance=False)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    before = lora_state(model)
    out = train(cfg, model=model, tokenizer=tok)
    assert out["summary"]["global_step"] == 2
    assert math.isfinite(out["summary"]["train_loss"])
    after = lora_state(model)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed, "no LoRA parameter changed"
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_config.json").is_file()
    rows = [r for r in (run / "metrics.jsonl").read_text().splitlines() if r]
    assert len(rows) == 2
    assert '"status": "done"' in (run / "status.json").read_text()


def _inputs_with_zero_rows():
    torch.manual_seed(0)
    b, p, c = 6, 5, 7
    prompt_mask = torch.ones(b, p, dtype=torch.long)
    prompt_mask[0, :2] = 0  # left padding on one row
    completion_mask = torch.ones(b, c, dtype=torch.long)
    completion_mask[1, 4:] = 0
    return {
        "prompt_ids": torch.randint(3, 100, (b, p)), "prompt_mask": prompt_mask,
        "completion_ids": torch.randint(3, 100, (b, c)), "completion_mask": completion_mask,
        "advantages": torch.tensor([0.0, 1.0, -1.0, 0.0, 0.0, 0.5]),
        "num_items_in_batch": completion_mask.sum(),
    }


def test_select_rows_drops_zero_advantage_rows_and_padding():
    from reasontune.engines.trainer import _select_rows

    inputs = _inputs_with_zero_rows()
    keep = inputs["advantages"] != 0
    out = _select_rows(inputs, keep)
    assert out["prompt_ids"].shape[0] == 3
    assert torch.equal(out["advantages"], torch.tensor([1.0, -1.0, 0.5]))
    assert torch.equal(out["num_items_in_batch"], inputs["num_items_in_batch"])  # global normaliser untouched
    assert out["prompt_ids"].shape[1] == 5  # kept rows use every prompt column


def test_zero_advantage_skipping_gives_the_same_gradient(tmp_path, tiny_model_dir):
    """DAPO loss, beta 0: dropping zero-advantage rows leaves the LoRA gradient unchanged."""
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts
    from reasontune.data import build_datasets

    cfg = tiny_cfg(tmp_path, tiny_model_dir)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    for n, p in model.named_parameters():  # make LoRA B non-zero so gradients reach A too
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    ds = prepare_prompts(build_datasets(cfg.data, cfg.format)["train"], tok, cfg)
    trainer = build_grpo_trainer(cfg, model, tok, ds)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; we call compute_loss directly
    assert trainer.skip_zero_variance
    inputs = _inputs_with_zero_rows()
    inputs["prompt_ids"] = torch.randint(3, len(tok), inputs["prompt_ids"].shape)
    inputs["completion_ids"] = torch.randint(3, len(tok), inputs["completion_ids"].shape)
    model.train()

    def grads(skip):
        trainer.skip_zero_variance = skip
        model.zero_grad()
        trainer.compute_loss(model, dict(inputs)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full, skipped = grads(False), grads(True)
    assert full.keys() == skipped.keys() and full
    for n in full:
        torch.testing.assert_close(skipped[n], full[n], rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in full.values())


def test_all_zero_advantages_give_zero_gradients(tmp_path, tiny_model_dir):
    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts

    cfg = tiny_cfg(tmp_path, tiny_model_dir)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    ds = prepare_prompts(build_datasets(cfg.data, cfg.format)["train"], tok, cfg)
    trainer = build_grpo_trainer(cfg, model, tok, ds)
    trainer.current_gradient_accumulation_steps = 1
    inputs = _inputs_with_zero_rows()
    inputs["advantages"] = torch.zeros(6)
    model.train()
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None and torch.count_nonzero(g) == 0 for g in lora_grads)


@pytest.mark.parametrize("beta,loss_type,expected", [(0.0, "dapo", True), (0.04, "dapo", False),
                                                     (0.0, "grpo", False), (0.0, "cispo", True)])
def test_skipping_only_when_exact(tmp_path, tiny_model_dir, beta, loss_type, expected):
    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts

    cfg = tiny_cfg(tmp_path, tiny_model_dir, beta=beta, loss_type=loss_type)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    ds = prepare_prompts(build_datasets(cfg.data, cfg.format)["train"], tok, cfg)
    trainer = build_grpo_trainer(cfg, model, tok, ds)
    assert trainer.skip_zero_variance is expected
    if expected:  # and never with several processes: ranks would keep different rows (DDP hangs)
        import types

        real = trainer.accelerator
        try:
            trainer.accelerator = types.SimpleNamespace(num_processes=2)
            assert trainer._skip_is_exact() is False
        finally:
            trainer.accelerator = real


BODY = "12 + 30 = 42\n<end_working_out>\n<SOLUTION>42</SOLUTION>"


def _all_rewards():
    from reasontune.config import FormatConfig, RewardsConfig
    from reasontune.rewards import build_reward_funcs

    funcs, _ = build_reward_funcs(RewardsConfig(names=["recipe", "verified"]), FormatConfig(),
                                  eos_token="<|im_end|>", max_completion_length=64)
    return {f.__name__: f for f in funcs}


@pytest.mark.parametrize("tail", ["", "\n", "  \n", "<|im_end|>", "\n<|im_end|>\n"])
def test_white_space_or_eos_after_the_marker_changes_no_reward(tail):
    for name, f in _all_rewards().items():
        if name not in ("overlong_soft", "length_penalty"):  # these count length, tokens of white space too
            assert f([BODY], answer=["42"]) == f([BODY + tail], answer=["42"]), (name, tail)


@pytest.mark.parametrize("tail, changed", [
    (" and that is it.", {"format_exact", "answer_check", "format_strict"}),  # same line: format_exact's `$`
    ("\n<SOLUTION>42</SOLUTION>", {"format_approx", "format_strict", "answer_equiv", "number_strict",
                                  "repetition_penalty"}),  # a repeated answer block, on the next line
    (" <SOLUTION>41</SOLUTION>", {"format_approx", "answer_check", "format_strict", "answer_equiv", "number_strict",
                                  "repetition_penalty"}),  # (.+?) spans both blocks: answer_check reads "42</S..."
])
def test_text_after_the_marker_changes_rewards(tail, changed):
    """The cases where 'tokens after the answer cannot change any reward' is false: same-line text after the
    closing marker (format_exact's line-end anchor) and a repeated answer block. Completions are no longer cut
    at the marker (the model must sample its own EOS there), so these tails are what teaches it to stop:
    GRPO and eval score them (tests/test_trainer_eos.py)."""
    rewards = _all_rewards()
    differ = {n for n, f in rewards.items() if n != "overlong_soft"
              and f([BODY], answer=["42"]) != f([BODY + tail], answer=["42"])}
    assert differ == changed


@pytest.mark.parametrize("stop", [True, False])
def test_eval_ends_completions_where_grpo_does(tiny_model_dir, tmp_path, stop):
    """The same prompt, the same seed and the same run config: GRPO's rollout (the trainer's own generation)
    and eval's sampled completion are the same ids, ended by the same rule (the marker here is a piece of what
    the tiny model writes anyway, so the rule fires). Eval used to stop at the marker whatever the setting,
    and GRPO used to append an EOS the model never sampled."""
    import torch

    from reasontune.config import override
    from reasontune.engines.generation import generate
    from reasontune.models import load_model_and_tokenizer
    from reasontune.models.prompting import render_prompt, stop_rule
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts
    from reasontune.data import build_datasets

    cfg = override(tiny_cfg(tmp_path, tiny_model_dir, max_completion_length=16, temperature=0.7),
                   {"format.system_prompt": "Solve it.", "eval.temperature": 0.7})
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    prompt = render_prompt(tok, [{"role": "system", "content": "Solve it."},
                                 {"role": "user", "content": "What is 2 + 3?"}], cfg.format)
    torch.manual_seed(1)
    [[free]] = generate(model, tok, [prompt], max_new_tokens=16, temperature=0.7, autocast_setting=cfg.grpo.bf16)
    marker = tok.decode(free.token_ids[2:4])  # written at tokens 2-3 of this seed's sample
    cfg = override(cfg, {"format.solution_end": marker, "grpo.stop_at_solution_end": stop,
                         "grpo.stop_grace_tokens": 2})
    ds = build_datasets(cfg.data, cfg.format, tok)
    trainer = build_grpo_trainer(cfg, model, tok, prepare_prompts(ds["train"], tok, cfg))
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    torch.manual_seed(1)
    [grpo_ids], _ = trainer._generate_single_turn([ids], None, None, 1)
    torch.manual_seed(1)
    [[ev]] = generate(model, tok, [prompt], max_new_tokens=16, temperature=0.7, stop=stop_rule(cfg),
                      autocast_setting=cfg.grpo.bf16)
    assert ev.token_ids == grpo_ids
    assert grpo_ids == (free.token_ids[:6] if stop else free.token_ids)


@NEEDS_TRL_CPU_FUSED_HEAD
@pytest.mark.parametrize("bonus", [False, True])
def test_cpu_logps_match_trls_fused_lm_head(tmp_path, tiny_model_dir, bonus):
    """Our CPU log-prob path (one lm_head matmul + row-wise fp32 log-softmax) gives TRL's numbers:
    the same log-probs, entropies and gradient as its fused LM head, which it bypasses. With an
    entropy bonus (entropy_coef) the entropy is in the loss, and its gradient must match too."""
    from trl import GRPOTrainer

    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts
    from reasontune.data import build_datasets

    cfg = tiny_cfg(tmp_path, tiny_model_dir, bf16="false", extra={"entropy_coef": 0.1} if bonus else {})
    cfg.model.dtype = "float32"  # exact comparison: no bf16 base, whatever this CPU measures
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    ds = prepare_prompts(build_datasets(cfg.data, cfg.format)["train"], tok, cfg)
    trainer = build_grpo_trainer(cfg, model, tok, ds)
    assert trainer._entropy_needs_grad() == bonus
    inputs = _inputs_with_zero_rows()
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    c = inputs["completion_ids"].size(1)
    results = []
    for fn in (trainer._get_per_token_logps_and_entropies,
               lambda *a, **k: GRPOTrainer._get_per_token_logps_and_entropies(trainer, *a, **k)):
        model.zero_grad()
        logps, ent, _ = fn(model, ids, mask, c, compute_entropy=True)
        loss = (logps * inputs["completion_mask"]).sum()
        if bonus:
            assert ent.requires_grad
            loss = loss + (ent * inputs["completion_mask"]).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logps.detach(), ent.detach(), grads))
    (lp1, e1, g1), (lp2, e2, g2) = results
    assert lp1.shape == (6, c) and torch.isfinite(lp1).all()
    torch.testing.assert_close(lp1, lp2, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(e1, e2, atol=1e-4, rtol=1e-4)
    assert g1.keys() == g2.keys() and g1
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-5, rtol=1e-3)


def test_token_logps_is_log_softmax_gather():
    from reasontune.engines.logps import token_logps

    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11).to(torch.bfloat16)
    tgt = torch.randint(0, 11, (3, 5))
    lp, ent = token_logps(logits, tgt, entropy=True)
    ref = logits.float().log_softmax(-1)
    torch.testing.assert_close(lp, ref.gather(-1, tgt[..., None]).squeeze(-1))
    torch.testing.assert_close(ent, -(ref.exp() * ref).sum(-1))
    assert token_logps(logits, tgt)[1] is None


def test_a_preset_is_one_reward_set_in_the_run_folder_grpo_and_eval(tmp_path, tiny_model_dir, capsys):
    """`verified` is one reward set: GRPO computes every member (overlong_soft included), the run folder
    lists them, and `reasontune eval --run` builds the same set. That the members score the same values in
    GRPO and eval is tests/test_trainer_eos.py::test_eval_scores_what_grpo_scored."""
    import json

    from reasontune.cli import main
    from reasontune.rewards import PRESETS
    from reasontune.stages.train import train

    cfg = tiny_cfg(tmp_path, tiny_model_dir, max_steps=1)
    cfg.rewards.names = ["verified"]
    train(cfg)
    run = tmp_path / "run"
    logged = json.loads((run / "reasontune_config.json").read_text())["resolved_rewards"]
    assert [r["name"] for r in logged] == PRESETS["verified"]
    assert {r["name"]: r["weight"] for r in logged}["length_penalty"] == 0.0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    trained = {k.split("/")[1] for k in rows[0] if k.startswith("rewards/") and k.endswith("/mean")}
    assert trained == set(PRESETS["verified"])  # what TRL computed during the step
    assert main(["eval", "--run", str(run), "--limit", "2", "--max-new-tokens", "4", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["rewards"] == [r["name"] for r in logged]
    assert set(metrics["reward_means"]) == trained


def test_dry_run_lists_the_resolved_rewards(tmp_path, tiny_model_dir, capsys):
    import json

    from reasontune.cli import main

    assert main(["train", "--model", str(tiny_model_dir), "--output-dir", str(tmp_path / "r"), "--reward", "verified",
                 "--reward", "step_check", "--reward-weight", "2", "--reward-weight", "0.5", "--dry-run", "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["name"], r["weight"]) for r in d["resolved_rewards"]] == [
        ("format_strict", 2.0), ("answer_equiv", 2.0), ("number_strict", 2.0), ("overlong_soft", 2.0),
        ("repetition_penalty", 2.0), ("length_penalty", 0.0), ("step_check", 0.5)]


def test_max_prompt_length_drops_longer_prompts_and_sets_the_completion_budget(tmp_path, tiny_model_dir, caplog):
    import logging

    from reasontune.config import ConfigError
    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts

    cfg = tiny_cfg(tmp_path, tiny_model_dir, max_completion_length=None)
    cfg.model.max_seq_length = 400
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    ds = prepare_prompts(build_datasets(cfg.data, cfg.format)["train"], tok, cfg)
    lengths = sorted(len(tok(p)["input_ids"]) for p in ds["prompt"])
    limit = lengths[len(lengths) // 2]
    assert lengths[0] <= limit < lengths[-1]  # the data has prompts on both sides of the limit
    cfg.grpo.max_prompt_length = limit
    with caplog.at_level(logging.WARNING, logger="reasontune.stages.train"):
        trainer = build_grpo_trainer(cfg, model, tok, ds)
    kept = [len(tok(p)["input_ids"]) for p in trainer.train_dataset["prompt"]]
    longer = sum(n > limit for n in lengths)
    assert len(kept) == len(lengths) - longer and max(kept) <= limit
    assert f"dropped {longer} of {len(lengths)} training prompts" in caplog.text
    assert trainer.args.max_completion_length == 400 - limit  # the budget left after the declared prompt budget
    cfg.grpo.max_prompt_length = lengths[0] - 1
    with pytest.raises(ConfigError, match="grpo.max_prompt_length"):
        build_grpo_trainer(cfg, model, tok, ds)
