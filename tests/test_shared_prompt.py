"""The group's prompt once per micro-batch (engines/shared_prompt.py): the GRPO loss and every LoRA gradient equal
the unshared path's, on a tiny random Llama and on SmolLM2, in fp32 and under bf16 autocast; and the micro-batches
grouped by prompt (trainer.group_by_prompt) hold the same rows."""

from __future__ import annotations

import contextlib

import pytest
import torch

from reasontune.config import from_dict


@pytest.fixture(scope="module")
def sharp_tiny_dir(smol_dir, tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer, initialised wide (0.2, not 0.02) so that attention is
    not near uniform: a wrong position or a wrong key then moves the loss well past bf16 rounding."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smol_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True, initializer_range=0.2)
    out = tmp_path_factory.mktemp("sharp-tiny")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _cfg(tmp_path, model_dir, bf16: str, dtype: str = "float32"):
    g = {"per_device_train_batch_size": 12, "num_generations": 4, "max_completion_length": 12, "max_steps": 1,
         "learning_rate": 1e-3, "save_steps": 1000, "skip_zero_variance": False, "bf16": bf16}
    # fp32 weights on every host (an AMX host loads bf16 under "auto"): bf16 is the autocast's alone here;
    # bf16 weights are test_bf16_weights_are_as_close_to_fp32_shared_or_not
    return from_dict({"model": {"name": str(model_dir), "dtype": dtype},
                      "lora": {"r": 4, "alpha": 8}, "data": {"train_size": 16, "test_size": 4}, "grpo": g,
                      "output_dir": str(tmp_path / "run"), "seed": 0})


def _trainer(cfg):
    """(trainer, model, tokenizer) for `cfg`, with LoRA B non-zero, so gradients reach A and the adapter shapes the
    keys."""
    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts

    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    trainer = build_grpo_trainer(cfg, model, tok, prepare_prompts(build_datasets(cfg.data, cfg.format)["train"],
                                                                  tok, cfg))
    return trainer, model, tok


def _inputs(vocab: int, pad: int):
    """3 prompts (9, 12 and 7 tokens, left-padded to 14: two columns no prompt uses) x 4 copies in a shuffled
    order, completions of 3 to 10 tokens right-padded to 12 (two columns no completion uses)."""
    g = torch.Generator().manual_seed(0)
    lengths, width, c = (9, 12, 7), 14, 12
    prompts = [torch.randint(3, vocab, (n,), generator=g) for n in lengths]
    order = torch.randperm(12, generator=g) % 3  # each prompt 4 times, interleaved
    prompt_ids = torch.full((12, width), pad)
    prompt_mask = torch.zeros(12, width, dtype=torch.long)
    completion_ids = torch.randint(3, vocab, (12, c), generator=g)
    completion_mask = torch.zeros(12, c, dtype=torch.long)
    for i, k in enumerate(order.tolist()):
        prompt_ids[i, width - lengths[k]:] = prompts[k]
        prompt_mask[i, width - lengths[k]:] = 1
        completion_mask[i, :3 + i % 8] = 1
    completion_ids = completion_ids.masked_fill(completion_mask == 0, pad)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.randn(12, generator=g),
            "num_items_in_batch": completion_mask.sum()}


def _loss_and_grads(trainer, model, inputs, shared: bool):
    """(loss, {LoRA parameter: gradient}, batch sizes of the forwards that ran) with the shared prompt on/off."""
    sizes = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: sizes.append(kw["input_ids"].size(0)), with_kwargs=True)
    trainer.shared_prompt = shared
    model.zero_grad()
    try:
        loss = trainer.compute_loss(model, dict(inputs))
        loss.backward()
    finally:
        hook.remove()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}
    return loss.detach(), grads, sizes


def _logps(trainer, model, inputs, shared: bool):
    """Per-token (log-probs, entropies), each (B, C) and 0 on padding, as the loss gets them (its autocast)."""
    from reasontune.models.speed import autocast

    trainer.shared_prompt = shared
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad(), autocast(model.device, trainer.autocast_setting):
        lp, ent, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, inputs["completion_ids"].size(1),
                                                                compute_entropy=True)
    return lp, ent


@pytest.mark.parametrize("which, bf16, buckets", [("tiny", "false", 1), ("tiny", "false", 0), ("tiny", "true", 0),
                                                  ("smol", "false", 0), ("smol", "true", 0)])
def test_shared_prompt_loss_and_lora_grads_equal_the_unshared_path(which, bf16, buckets, tmp_path, request,
                                                                   monkeypatch):
    """buckets 0: every completion length its own bucket (BUCKET_COST_TOKENS 0), 1: all in one."""
    from reasontune.engines import shared_prompt
    from reasontune.models.speed import cpu_bf16_is_faster

    if which == "smol" and bf16 == "true" and not cpu_bf16_is_faster():
        pytest.skip("bf16 is emulated on this CPU (~30x slower): only the tiny model runs under it")
    model_dir = request.getfixturevalue("sharp_tiny_dir" if which == "tiny" else "smol_dir")
    monkeypatch.setattr(shared_prompt, "BUCKET_COST_TOKENS", 0 if buckets == 0 else 10**6)
    trainer, model, tok = _trainer(_cfg(tmp_path, model_dir, bf16))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; we call compute_loss directly
    assert trainer.shared_prompt  # on by default on a CPU
    model.train()
    inputs = _inputs(len(tok), tok.pad_token_id)
    # the log-probs the loss is made of (on the first pass the DAPO loss's value is -sum(A) / N whatever they are:
    # the ratio is exp(logp - logp.detach()) = 1; only its gradient sees them)
    (lp0, ent0), (lp1, ent1) = _logps(trainer, model, inputs, False), _logps(trainer, model, inputs, True)
    if bf16 == "false":
        torch.testing.assert_close(lp1, lp0, rtol=0, atol=1e-4)
        torch.testing.assert_close(ent1, ent0, rtol=0, atol=1e-4)
    else:  # bf16 rounds the two paths' shapes differently (0.06 to 0.29 nats apart, by host): set each against fp32
        with _autocast_off(trainer):
            ref_lp, ref_ent = _logps(trainer, model, inputs, False)
        _no_worse({"lp": lp1, "ent": ent1}, {"lp": lp0, "ent": ent0}, {"lp": ref_lp, "ent": ref_ent})
    loss0, ref, sizes0 = _loss_and_grads(trainer, model, inputs, shared=False)
    loss1, got, sizes1 = _loss_and_grads(trainer, model, inputs, shared=True)
    assert sizes0[-1:] == [12] and sizes1[0] == 3  # the prompts ran once each, then the 12 completions
    # completions of 3 .. 10 tokens: one bucket, or one per length (3 .. 6 twice, 7 .. 10 once)
    assert sizes1[1:] == ([12] if buckets else [2, 2, 2, 2, 1, 1, 1, 1])
    assert ref.keys() == got.keys() and len(ref) > 0
    top = max(g.abs().max().item() for g in ref.values())
    assert top > 0
    if bf16 == "false":  # rounding only
        torch.testing.assert_close(loss1, loss0, rtol=1e-4, atol=1e-5 * loss0.abs().item())
        for n in ref:
            torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-5 * top, msg=lambda m, n=n: f"{n}: {m}")
    else:  # bf16 autocast: the two paths round their matmuls in different places; fp32 is the measure
        with _autocast_off(trainer):
            _, fp32, _ = _loss_and_grads(trainer, model, inputs, shared=False)
        _no_worse(got, ref, fp32)


@contextlib.contextmanager
def _autocast_off(trainer):
    setting, trainer.autocast_setting = trainer.autocast_setting, "false"
    try:
        yield
    finally:
        trainer.autocast_setting = setting


def _no_worse(shared: dict, unshared: dict, fp32: dict):
    """The shared path's error against fp32, summed over the tensors, is at most 1.25x the unshared path's."""
    err = [sum((t[k].float() - fp32[k].float()).abs().sum().item() for k in fp32) for t in (shared, unshared)]
    assert 0 < err[1] and err[0] <= 1.25 * err[1], f"shared {err[0]:.4g} against unshared {err[1]:.4g}"


@pytest.mark.parametrize("lengths, fixed, want", [
    ([5, 3, 5, 9], 0, [[1], [0, 2], [3]]),  # free buckets: one per length
    ([5, 3, 5, 9], 10**6, [[1, 0, 2, 3]]),  # costly buckets: one, sorted by length
    ([20, 64, 21, 63, 22, 64], 10, [[0, 2, 4], [3, 1, 5]]),  # two lengths apart: two buckets
    ([7], 64, [[0]]),
    ([], 64, []),
])
def test_length_buckets(lengths, fixed, want):
    from reasontune.engines.shared_prompt import length_buckets

    got = length_buckets(lengths, fixed)
    assert got == want
    assert sorted(r for b in got for r in b) == list(range(len(lengths)))


def test_distinct_rows_finds_first_rows_and_inverse():
    from reasontune.engines.shared_prompt import distinct_rows

    ids = torch.tensor([[0, 5, 6], [1, 2, 3], [0, 5, 6], [0, 5, 6], [7, 7, 7]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]])  # row 3: same ids, no padding
    first, inverse = distinct_rows(ids, mask)
    assert first.numel() == 4
    assert torch.equal(ids[first][inverse], ids) and torch.equal(mask[first][inverse], mask)
    assert sorted(first.tolist()) == [0, 1, 3, 4]


def test_group_by_prompt_keeps_every_row_and_groups_them():
    from reasontune.engines.trainer import group_by_prompt

    torch.manual_seed(0)
    prompts = torch.randint(3, 50, (4, 5))
    rows = torch.randperm(16) % 4  # 4 prompts x 4 rows, shuffled as TRL shuffles them
    batches = [{"prompt_ids": prompts[rows[i:i + 4]], "prompt_mask": torch.ones(4, 5, dtype=torch.long),
                "completion_ids": torch.arange(i, i + 4)[:, None].repeat(1, 3), "advantages": torch.randn(4),
                "num_items_in_batch": torch.tensor(48), "old_per_token_logps": None}
               for i in range(0, 16, 4)]
    out = group_by_prompt(batches)
    assert len(out) == 4 and all(b["prompt_ids"].size(0) == 4 for b in out)
    assert all(b["old_per_token_logps"] is None and int(b["num_items_in_batch"]) == 48 for b in out)
    for b in out:  # every micro-batch one prompt
        assert (b["prompt_ids"] == b["prompt_ids"][:1]).all()

    def rows_of(bs):
        return sorted((tuple(b["prompt_ids"][j].tolist()), int(b["completion_ids"][j, 0]), float(b["advantages"][j]))
                      for b in bs for j in range(4))

    assert rows_of(out) == rows_of(batches)  # the same rows, each with its own completion and advantage


def test_grouped_micro_batches_give_the_same_step_gradient(tmp_path, sharp_tiny_dir):
    """One GRPO step of 8 rollouts (4 prompts x 2) in 2 micro-batches of 4: with the shared prompt on, each
    micro-batch holds 2 whole groups (TRL's shuffle mixes them), and the accumulated gradient the optimizer gets
    equals the one with it off (TRL's micro-batches, the unshared forward)."""
    from transformers import TrainerCallback

    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts

    class Grads(TrainerCallback):
        def __init__(self):
            self.grads = None

        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    def step(shared: bool):
        cfg = from_dict({"model": {"name": str(sharp_tiny_dir), "dtype": "float32"}, "lora": {"r": 4, "alpha": 8},
                         "data": {"train_size": 16, "test_size": 4}, "seed": 0, "output_dir": str(tmp_path / str(shared)),
                         "grpo": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "num_generations": 2,
                                  "max_completion_length": 8, "max_steps": 1, "save_steps": 1000, "bf16": "false",
                                  "skip_zero_variance": False, "shared_prompt": shared}})
        torch.manual_seed(0)  # LoRA A is drawn from the global RNG
        model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05)
        grads, seen = Grads(), []
        trainer = build_grpo_trainer(cfg, model, tok, prepare_prompts(build_datasets(cfg.data, cfg.format)["train"],
                                                                      tok, cfg), callbacks=[grads])
        assert trainer.group_micro_batches is shared
        real = trainer.compute_loss  # the instance's (steptime.py wraps it there)

        def spy(model, inputs, *a, **k):
            seen.append(len({tuple(r) for r in inputs["prompt_ids"].tolist()}))
            return real(model, inputs, *a, **k)

        trainer.compute_loss = spy
        # a random tiny model scores the same on every reward: draw the rewards instead (the same in both runs)
        g = torch.Generator().manual_seed(1)
        trainer._calculate_rewards = lambda inputs, prompts, *a: torch.randn(len(prompts), len(trainer.reward_funcs),
                                                                             generator=g)
        trainer.train()
        return grads.grads, seen

    (on, seen_on), (off, seen_off) = step(True), step(False)
    assert seen_on == [2, 2] and len(seen_off) == 2  # whole groups per micro-batch
    assert on.keys() == off.keys() and on
    top = max(g.abs().max().item() for g in off.values())
    assert top > 0
    for n in off:
        torch.testing.assert_close(on[n], off[n], rtol=1e-4, atol=1e-5 * top)


def test_bf16_weights_are_as_close_to_fp32_shared_or_not(tmp_path, sharp_tiny_dir):
    """bf16 weights (model.dtype auto on an AMX CPU): the shared and unshared paths round differently (0.34 nats
    apart at most on SmolLM2, measured), so each is set against the fp32 model: the shared path's error is no
    larger than the unshared one's."""
    lps = {}
    for dtype, bf16 in (("float32", "false"), ("bfloat16", "true")):
        trainer, model, tok = _trainer(_cfg(tmp_path / dtype, sharp_tiny_dir, bf16, dtype))
        assert next(model.parameters()).dtype == getattr(torch, dtype)
        inputs = _inputs(len(tok), tok.pad_token_id)
        lps[dtype] = [_logps(trainer, model, inputs, shared)[0] for shared in (False, True)]
    torch.testing.assert_close(lps["float32"][1], lps["float32"][0], rtol=0, atol=1e-4)
    _no_worse({"lp": lps["bfloat16"][1]}, {"lp": lps["bfloat16"][0]}, {"lp": lps["float32"][0]})
