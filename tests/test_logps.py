"""logps.hidden_logps: the same log-probs, entropies and gradients as materialised logits."""

import contextlib

import pytest
import torch
import trl.trainer.utils as trl_utils

from reasontune.engines import logps as L

# TRL's fused LM head is the reference here. trl 1.16 runs it on a CPU; trl 1.15 (the GPU stack,
# make test-gpustack) imports it from Triton only, which CPU torch lacks: no reference to compare with.
NEEDS_TRL_CPU_FUSED_HEAD = pytest.mark.skipif(getattr(trl_utils, "_ChunkedLogProbFunction", 0) is None,
                                              reason="this TRL's fused LM head needs Triton (trl 1.15 on a CPU)")


@pytest.mark.parametrize("keep", [0, 2**20])  # the backward recomputes the logits, or reads the forward's
@pytest.mark.parametrize("chunk,temperature", [(4, 1.0), (7, 0.7), (1000, 1.3)])
def test_hidden_logps_matches_full_logits(monkeypatch, chunk, temperature, keep):
    monkeypatch.setattr(L, "CHUNK", chunk)  # several chunks, a ragged last one, and a single one
    monkeypatch.setattr(L, "KEEP_LOGPS_BYTES", keep)
    torch.manual_seed(0)
    b, c, h, v = 3, 5, 8, 13
    hidden = torch.randn(b, c, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64)
    tgt = torch.randint(0, v, (b, c))
    g = torch.randn(b, c, dtype=torch.float64)

    lp, ent = L.hidden_logps(hidden, weight, tgt, temperature, entropy=True)
    (grad,) = torch.autograd.grad((lp * g).sum(), hidden, retain_graph=True)

    ref_h = hidden.detach().clone().requires_grad_(True)
    ref = (ref_h @ weight.T / temperature).log_softmax(-1)  # (b, c, v)
    ref_lp = ref.gather(-1, tgt[..., None]).squeeze(-1)
    (ref_grad,) = torch.autograd.grad((ref_lp * g).sum(), ref_h, retain_graph=True)
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-5, rtol=1e-5)  # the softmax runs in fp32
    torch.testing.assert_close(ent.double(), -(ref.exp() * ref).sum(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)
    assert L.hidden_logps(hidden, weight, tgt)[1] is None

    # An entropy bonus in the loss (TRL's entropy_coef): the entropy's gradient, alone and with the log-probs'
    ge = torch.randn(b, c, dtype=torch.float64)
    ref_ent = -(ref.exp() * ref).sum(-1)
    for with_lp in (False, True):
        loss = (ent * ge).sum() + ((lp * g).sum() if with_lp else 0)
        ref_loss = (ref_ent * ge).sum() + ((ref_lp * g).sum() if with_lp else 0)
        (grad,) = torch.autograd.grad(loss, hidden, retain_graph=True)
        (ref_grad,) = torch.autograd.grad(ref_loss, ref_h, retain_graph=True)
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)


def test_hidden_logps_refuses_a_trainable_head():
    w = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match="frozen"):
        L.hidden_logps(torch.randn(1, 2, 3), w, torch.zeros(1, 2, dtype=torch.long))


def test_head_swap_is_restored_and_frozen_head_checks(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    head = model.get_output_embeddings()
    assert L.frozen_head(model) is None  # trainable: the plain path must be used
    head.weight.requires_grad_(False)
    assert L.frozen_head(model) is head
    ids = torch.tensor([[1, 2, 3]])
    with L.head_as_identity(model):
        out = model(input_ids=ids).logits
    assert out.shape == (1, 3, model.config.hidden_size)
    assert model.get_output_embeddings() is head
    torch.testing.assert_close(model(input_ids=ids).logits, head(out))


def test_hidden_logps_stats_top1():
    torch.manual_seed(1)
    hidden, weight = torch.randn(2, 6, 4), torch.randn(9, 4)
    z = hidden @ weight.T
    tgt = z.argmax(-1)
    tgt[0, :3] = (tgt[0, :3] + 1) % 9  # three positions whose target is not the top-1 token
    lp, ent, top1 = L.hidden_logps_stats(hidden, weight, tgt)
    assert top1.tolist() == [[0, 0, 0, 1, 1, 1], [1] * 6]
    torch.testing.assert_close(lp, z.log_softmax(-1).gather(-1, tgt[..., None]).squeeze(-1))
    torch.testing.assert_close(ent, L.hidden_logps(hidden, weight, tgt, entropy=True)[1])


@NEEDS_TRL_CPU_FUSED_HEAD
def test_lean_sft_loss_matches_trls_fused_head(tmp_path, tiny_model_dir):
    """LeanSFTTrainer's CPU loss (completion positions only, chunked) equals TRL SFTTrainer's fused-head
    loss on the same batch: the value, the LoRA gradients and the logged token accuracy."""
    from trl import SFTConfig, SFTTrainer

    from reasontune.config import from_dict
    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.data.worked import sft_rows
    from reasontune.engines.sft_trainer import LeanSFTTrainer

    cfg = from_dict({"model": {"name": str(tiny_model_dir), "dtype": "float32"}, "lora": {"r": 4, "alpha": 8},
                     "data": {"train_size": 8, "test_size": 2}, "output_dir": str(tmp_path / "run")})
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    data = sft_rows(build_datasets(cfg.data, cfg.format)["train"], tok, cfg, 4)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=4, report_to="none",
                     use_cpu=True, bf16=False, completion_only_loss=True, max_length=256)
    results = []
    for cls in (LeanSFTTrainer, SFTTrainer):
        trainer = cls(model=model, args=args, train_dataset=data, processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        assert (batch["labels"] == -100).any() and (batch["attention_mask"] == 0).any()  # prompt and padding
        model.train()
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, trainer._metrics["train"]["mean_token_accuracy"][-1]))
    (l1, g1, a1), (l2, g2, a2) = results
    assert torch.isfinite(l1) and g1 and g1.keys() == g2.keys()
    torch.testing.assert_close(l1, l2, atol=1e-5, rtol=1e-5)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-6, rtol=1e-4)
    assert a1 == pytest.approx(a2)



def test_lora_inputs_uncast_changes_no_number_under_autocast(tiny_model_dir):
    """Skipping PEFT's fp32 cast of each LoRA input (autocast casts it straight back to bf16) must give
    bit-identical losses and LoRA gradients; without autocast the context changes nothing."""
    import torch

    from reasontune.config import LoraConfig
    from reasontune.models import add_lora
    from reasontune.models.speed import lora_inputs_uncast
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16),
                     LoraConfig(r=4, alpha=8, dropout=0.0))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)  # B = 0 would make every LoRA gradient but B's zero
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)
    ids = torch.randint(5, 200, (2, 12))

    def loss_and_grads(uncast):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with lora_inputs_uncast(model) if uncast else contextlib.nullcontext():
                flags = {m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")}
                loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return flags, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    flags_off, loss_a, grads_a = loss_and_grads(True)
    flags_on, loss_b, grads_b = loss_and_grads(False)
    assert flags_off == {False} and flags_on == {True}  # the context really switched the casts off
    assert torch.equal(loss_a, loss_b) and grads_a.keys() == grads_b.keys() and grads_a
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a)
    with lora_inputs_uncast(model):  # no autocast: PEFT's cast is needed and stays on
        assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))


@pytest.mark.parametrize("post", [L.LogitPost(softcap=2.0), L.LogitPost(scale=0.25), L.LogitPost(3.0, 1.5)])
def test_hidden_logps_applies_the_logit_post_processing(monkeypatch, post):
    """Softcap and scale inside the chunked head: log-probs, entropies and both gradients as materialised
    logits z = cap * tanh(scale * h W^T / cap) / T give them."""
    monkeypatch.setattr(L, "CHUNK", 4)
    torch.manual_seed(0)
    b, c, h, v, temperature = 2, 5, 8, 13, 0.7
    hidden = torch.randn(b, c, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64) * 2  # logits of a few units: the softcap bends them
    tgt = torch.randint(0, v, (b, c))
    g, ge = torch.randn(b, c, dtype=torch.float64), torch.randn(b, c, dtype=torch.float64)
    lp, ent = L.hidden_logps(hidden, weight, tgt, temperature, entropy=True, post=post)
    (grad,) = torch.autograd.grad((lp * g).sum() + (ent * ge).sum(), hidden)
    ref_h = hidden.detach().clone().requires_grad_(True)
    z = ref_h @ weight.T * post.scale
    if post.softcap is not None:
        z = torch.tanh(z / post.softcap) * post.softcap
    ref = (z / temperature).log_softmax(-1)
    ref_lp, ref_ent = ref.gather(-1, tgt[..., None]).squeeze(-1), -(ref.exp() * ref).sum(-1)
    (ref_grad,) = torch.autograd.grad((ref_lp * g).sum() + (ref_ent * ge).sum(), ref_h)
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-5)


def _tiny(kind, tok, out):
    """A tiny random model of an architecture whose forward post-processes its logits, saved with the SmolLM2
    tokenizer; head weights scaled up so that logits are a few units and the post-processing matters."""
    from transformers import (CohereConfig, CohereForCausalLM, Gemma2Config, Gemma2ForCausalLM, GraniteConfig,
                              GraniteForCausalLM, LlamaConfig, LlamaForCausalLM)

    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, head_dim=8,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    cls, cfg = {"gemma2": (Gemma2ForCausalLM, lambda: Gemma2Config(final_logit_softcapping=3.0, **common)),
                "granite": (GraniteForCausalLM, lambda: GraniteConfig(logits_scaling=4.0, **common)),
                "cohere": (CohereForCausalLM, lambda: CohereConfig(logit_scale=0.3, **common)),
                # a config naming a softcap its architecture never applies: our head would disagree
                "llama_named_softcap": (LlamaForCausalLM, lambda: LlamaConfig(final_logit_softcapping=0.5, **common)),
                }[kind]
    torch.manual_seed(0)
    model = cls(cfg())
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _trainer(tmp_path, model_dir, lora_targets=("q_proj", "v_proj")):
    from reasontune.config import from_dict
    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import build_grpo_trainer, prepare_prompts

    cfg = from_dict({"model": {"name": str(model_dir), "dtype": "float32"},
                     "lora": {"r": 4, "alpha": 8, "target_modules": list(lora_targets)},
                     "data": {"train_size": 8, "test_size": 2},
                     "grpo": {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 8,
                              "max_steps": 1, "bf16": "false", "temperature": 0.7},
                     "output_dir": str(tmp_path / "run"), "seed": 0})
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    return build_grpo_trainer(cfg, model, tok, prepare_prompts(build_datasets(cfg.data, cfg.format)["train"], tok,
                                                              cfg)), model


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(3, 1000, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    return ids, mask


@pytest.mark.parametrize("kind", ["gemma2", "granite", "cohere"])
def test_own_cpu_logps_apply_the_models_logit_post_processing(tmp_path, smol_dir, kind, caplog):
    """GRPO's own CPU log-probs on Gemma-2 (final_logit_softcapping), Granite (logits_scaling) and Cohere
    (logit_scale): log_softmax(model(...).logits / T) at the labels, the model's own logits being the reference;
    and our path is the one used (no fallback). Before logit_post, Gemma-2's softcap bent the hidden states the
    identity head passed through (log-probs up to 38 nats off here); the two scales passed through the matmul
    unharmed, by linearity, and stay right now that the head's input is taken before them."""
    from transformers import AutoTokenizer

    trainer, model = _trainer(tmp_path, _tiny(kind, AutoTokenizer.from_pretrained(smol_dir), tmp_path / kind))
    assert L.frozen_head(model, any_post=True) is not None and not L.logit_post(model).identity
    ids, mask = _batch()
    c = 6
    with caplog.at_level("WARNING", logger="reasontune.engines.trainer"):
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, c)
    assert trainer._own_head_refused is None and "own CPU log-probs off" not in caplog.text
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -c - 1:-1].float() / trainer.temperature
    want = logits.log_softmax(-1).gather(-1, ids[:, -c:, None]).squeeze(-1)
    torch.testing.assert_close(logps.detach(), want, atol=1e-4, rtol=1e-4)


def test_logits_our_head_cannot_reproduce_go_to_trls_path_with_the_reason(tmp_path, smol_dir, caplog, monkeypatch):
    """A config that names a post-processing its forward does not apply (or one a forward applies unnamed):
    the one-row check refuses our path, logs why, and TRL's log-probs are returned."""
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    trainer, model = _trainer(tmp_path, _tiny("llama_named_softcap", AutoTokenizer.from_pretrained(smol_dir),
                                              tmp_path / "m"))
    calls = []
    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies",
                        lambda self, *a, **k: calls.append(1) or ("trl", None, None))
    ids, mask = _batch()
    with caplog.at_level("WARNING", logger="reasontune.engines.trainer"):
        assert trainer._get_per_token_logps_and_entropies(model, ids, mask, 6)[0] == "trl"
        trainer._get_per_token_logps_and_entropies(model, ids, mask, 6)
    assert calls == [1, 1] and "off the model's logits" in trainer._own_head_refused
    assert caplog.text.count("own CPU log-probs off") == 1  # checked and logged once


def test_row_skipping_is_off_when_a_router_aux_loss_is_on(tmp_path, smol_dir, caplog):
    """Qwen3-MoE (router_aux_loss_coef 0.001 by default): TRL adds the router's load-balancing loss over every
    row of the micro-batch, so dropping zero-advantage rows would change it: skipping is off, and says why."""
    from transformers import AutoTokenizer, Qwen3MoeConfig, Qwen3MoeForCausalLM

    tok = AutoTokenizer.from_pretrained(smol_dir)
    cfg = Qwen3MoeConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         num_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    assert cfg.router_aux_loss_coef > 0
    torch.manual_seed(0)
    Qwen3MoeForCausalLM(cfg).save_pretrained(tmp_path / "moe")
    tok.save_pretrained(tmp_path / "moe")
    with caplog.at_level("INFO", logger="reasontune.engines.trainer"):
        trainer, _ = _trainer(tmp_path, tmp_path / "moe")
    assert trainer.aux_loss_enabled and trainer.skip_zero_variance is False
    assert "router's auxiliary loss" in caplog.text


@pytest.mark.parametrize("entropy", [False, True])
def test_hidden_logps_at_scores_only_the_valid_positions(entropy):
    """hidden_logps_at equals hidden_logps where `valid` holds and is 0 elsewhere, with the same gradient
    through the valid positions (the head runs on those alone)."""
    from reasontune.engines.logps import hidden_logps, hidden_logps_at

    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 8, requires_grad=True)
    weight = torch.randn(13, 8)
    tgt = torch.randint(0, 13, (3, 5))
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    lp, ent = hidden_logps(hidden, weight, tgt, 0.7, entropy)
    got, gent = hidden_logps_at(hidden, weight, tgt, valid, 0.7, entropy)
    torch.testing.assert_close(got, lp.masked_fill(~valid, 0.0))
    assert (gent is None) == (not entropy)
    if entropy:
        torch.testing.assert_close(gent, ent.masked_fill(~valid, 0.0))
    w = torch.randn(3, 5)
    (g_ref,) = torch.autograd.grad((lp * w * valid).sum() + ((ent * valid).sum() if entropy else 0), hidden)
    (g_got,) = torch.autograd.grad((got * w).sum() + (gent.sum() if entropy else 0), hidden)
    torch.testing.assert_close(g_got, g_ref)
    assert (g_got[~valid] == 0).all()


def test_column_head_gives_the_models_logits_and_is_put_back(tiny_model_dir):
    """Decoding's W h^T head (logps.column_head) returns the model's own logits, for one position and many, and
    the model's head is its own again after the block."""
    from transformers import AutoModelForCausalLM

    from reasontune.engines.logps import _ColumnHead, column_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    head = model.get_output_embeddings()
    ids = torch.randint(3, 100, (3, 7))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with column_head(model):
            assert isinstance(model.get_output_embeddings(), _ColumnHead)
            got = model(input_ids=ids).logits
            last = model(input_ids=ids, logits_to_keep=1).logits
    assert model.get_output_embeddings() is head
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, want[:, -1:], rtol=1e-5, atol=1e-5)
