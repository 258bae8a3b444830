"""num_iterations 2: the old log-probs from the loss's first pass (grpo.old_logps_from_first_pass) are the ones
TRL's extra no-grad forward computes when it generates, and the update is the same, without that forward.

One generation of 8 prompts x 2 feeds two optimizer steps (gradient accumulation 2, two passes). The decode is
scripted, so both runs train on the same completions: some groups mixed (trained), some all equal (skipped)."""

from __future__ import annotations

import pytest
import torch

from test_trainer import lora_state
from test_trainer_eos import _cfg, _scripted_decode


def _run(tmp_path, tiny_model_dir, monkeypatch, *, first_pass: bool, skip: bool):
    from reasontune.data import build_datasets
    from reasontune.engines.trainer import ReasonTuneGRPOTrainer
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts

    cfg = _cfg(tmp_path / f"fp{first_pass}-skip{skip}", tiny_model_dir, extra={"num_iterations": 2},
               per_device_train_batch_size=8, num_generations=2, gradient_accumulation_steps=2, max_steps=2,
               max_completion_length=24, skip_zero_variance=skip, old_logps_from_first_pass=first_pass,
               bf16="false", optim="sgd", learning_rate=0.5)  # SGD: the update is linear in the gradient
    torch.manual_seed(0)  # the same LoRA init in both runs
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    monkeypatch.undo()  # the class's own methods, not an earlier run's spies
    fake, _, generation = _scripted_decode(tok, ["eos", "limit", "eos"])  # pairs: mixed, equal, mixed, ...
    monkeypatch.setattr(generation, "_decode_batch", fake)
    no_grad_calls, olds = [], []
    real_logps, real_loss = (ReasonTuneGRPOTrainer._get_per_token_logps_and_entropies,
                             ReasonTuneGRPOTrainer._compute_loss)

    def logps_spy(self, *a, **k):
        if not torch.is_grad_enabled():
            no_grad_calls.append(1)
        return real_logps(self, *a, **k)

    def loss_spy(self, model, inputs):
        old = inputs.get("old_per_token_logps")
        olds.append(None if old is None else (old.clone(), inputs["completion_mask"].clone(),
                                              inputs["completion_ids"].clone()))
        return real_loss(self, model, inputs)

    monkeypatch.setattr(ReasonTuneGRPOTrainer, "_get_per_token_logps_and_entropies", logps_spy)
    monkeypatch.setattr(ReasonTuneGRPOTrainer, "_compute_loss", loss_spy)
    ds = build_datasets(cfg.data, cfg.format, tok)
    trainer = build_grpo_trainer(cfg, model, tok, prepare_prompts(ds["train"], tok, cfg))
    assert trainer.old_logps_from_first_pass is first_pass
    before = lora_state(model)
    trainer.train()
    return trainer, before, lora_state(model), no_grad_calls, olds


@pytest.mark.parametrize("skip", [True, False], ids=["rows-skipped", "all-rows"])
def test_first_pass_logps_give_trls_old_logps_and_update(tmp_path, tiny_model_dir, monkeypatch, skip):
    on = _run(tmp_path, tiny_model_dir, monkeypatch, first_pass=True, skip=skip)
    off = _run(tmp_path, tiny_model_dir, monkeypatch, first_pass=False, skip=skip)
    trainer, start, end_on, calls_on, olds_on = on
    _, start_off, end_off, calls_off, olds_off = off
    assert trainer.state.global_step == 2
    assert calls_off and not calls_on  # TRL's no-grad forward at generation ran only without the lever
    # first pass: TRL's forward gave the old log-probs (off); none yet with the lever (the ratio is 1 by
    # construction). Second pass: both read old log-probs, and they agree wherever a trained row has a token.
    first_on, second_on = olds_on[:2], olds_on[2:]
    assert first_on == [None, None] and all(o is not None for o in second_on + olds_off)
    compared = 0
    for (lp_on, mask, ids), (lp_off, mask_off, ids_off) in zip(second_on, olds_off[2:]):
        assert torch.equal(ids, ids_off) and torch.equal(mask, mask_off)  # the same rows, in the same order
        sel = mask.bool()
        # TRL's forward ran over the whole generation, padded to its longest prompt, the loss over the micro-batch
        # padded to its own: positions differ by the padding, so fp32 RoPE rounds differently (up to 1e-3 here)
        torch.testing.assert_close(lp_on[sel], lp_off[sel], rtol=0, atol=3e-3)
        compared += int(sel.sum())
    assert compared > 0
    # the loss sees the kept rows only: with skipping, fewer than the generation's 16 (theirs are never read)
    assert (sum(o[1].size(0) for o in second_on) < 16) is skip
    # the same two updates, and they moved the adapter
    assert all(torch.equal(start[k], start_off[k]) for k in start)
    moved = max((end_on[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3
    for k in start:
        torch.testing.assert_close(end_on[k] - start[k], end_off[k] - start[k], rtol=1e-2, atol=1e-5)
