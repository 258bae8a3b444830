"""The Unsloth backend against Unsloth's real API (unsloth 2026.10.9), without a GPU or unsloth itself.

The parameter lists below are data copied from the released wheel, not Unsloth's code:
  unsloth-2026.10.9-py3-none-any.whl (sha256 feb40b99bc4f8c543a36cbd0fe6e1410d6e4ac16bd4d0c731f607adce3d63bb0)
  FastLanguageModel.from_pretrained: unsloth/models/loader.py line 1241 (named parameters; its **kwargs
    go to the model loader, so a name missing here is a typo that Unsloth would not catch either)
  FastLlamaModel.get_peft_model (FastLanguageModel.get_peft_model wraps it): unsloth/models/llama.py line 4569
The fake `unsloth` rejects every other keyword, and records what was imported before it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from reasontune.config import from_dict, load_yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

FROM_PRETRAINED_2026_10_9 = (
    "model_name", "max_seq_length", "dtype", "load_in_4bit", "load_in_8bit", "load_in_16bit", "full_finetuning",
    "token", "device_map", "device_map_planner_kwargs", "rope_scaling", "fix_tokenizer", "trust_remote_code",
    "use_gradient_checkpointing", "resize_model_vocab", "revision", "use_exact_model_name", "offload_embedding",
    "float32_mixed_precision", "fast_inference", "gpu_memory_utilization", "float8_kv_cache", "random_state",
    "max_lora_rank", "disable_log_stats", "qat_scheme", "load_in_fp8", "unsloth_tiled_mlp", "text_only",
    "on_model_resolved")
GET_PEFT_MODEL_2026_10_9 = (
    "r", "target_modules", "lora_alpha", "lora_dropout", "bias", "layers_to_transform", "layers_pattern",
    "finetune_last_n_layers", "use_gradient_checkpointing", "random_state", "max_seq_length", "use_rslora",
    "modules_to_save", "init_lora_weights", "loftq_config", "temporary_location", "qat_scheme",
    "target_parameters", "ensure_weight_tying", "offload_layers", "checkpoint_skip_layers")

# A fake `unsloth` package for a subprocess: logs the import (and which of transformers/trl/peft were
# already imported), rejects keywords the real signatures lack, and stops the run at from_pretrained
# (what follows needs a GPU).
FAKE_UNSLOTH = '''
import json, os, sys
def _log(**kw):
    with open(os.environ["FAKE_UNSLOTH_LOG"], "a") as f:
        f.write(json.dumps(kw) + "\\n")
_log(event="import", already=[m for m in ("transformers", "trl", "peft") if m in sys.modules])
class FastLanguageModel:
    @staticmethod
    def from_pretrained(**kw):
        _log(event="from_pretrained", kwargs=sorted(kw), unknown=sorted(set(kw) - set(%r)))
        raise RuntimeError("fake unsloth: stopping before the GPU part")
'''
# The subprocess must believe it has a GPU, or the backend is never Unsloth.
FAKE_CUDA = "import torch\ntorch.cuda.is_available = lambda: True\n"


def _strict_call(names):
    def call(*args, **kw):
        unknown = set(kw) - set(names)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        return kw
    return call


@pytest.mark.parametrize("vllm", [True, False])
@pytest.mark.parametrize("overrides", [{}, {"model.load_in_4bit": True, "model.dtype": "bfloat16",
                                           "lora.top_layers": 4, "lora.gradient_checkpointing": False}])
def test_recipe_kwargs_fit_unsloths_real_signatures(monkeypatch, vllm, overrides):
    from reasontune.models import unsloth as unsloth_backend
    from reasontune.config import override

    cfg = override(load_yaml(RECIPES / "qwen3-4b-base-grpo.yaml"), overrides)
    monkeypatch.setattr(unsloth_backend, "vllm_available", lambda: vllm)
    _strict_call(FROM_PRETRAINED_2026_10_9)(**unsloth_backend.from_pretrained_kwargs("m", cfg.model, cfg.lora))
    _strict_call(GET_PEFT_MODEL_2026_10_9)(object(), **unsloth_backend.get_peft_kwargs(cfg.lora, 36))


def test_strict_fake_rejects_an_unknown_keyword():
    with pytest.raises(TypeError, match="lora_rank"):
        _strict_call(FROM_PRETRAINED_2026_10_9)(model_name="m", lora_rank=8)  # a real kwarg is max_lora_rank


def test_cli_imports_unsloth_before_transformers(tmp_path, tiny_model_dir):
    """The backend is chosen (and Unsloth imported) before train.py imports transformers and trl."""
    import reasontune

    fake = tmp_path / "site"
    (fake / "unsloth").mkdir(parents=True)
    (fake / "unsloth" / "__init__.py").write_text(FAKE_UNSLOTH % (FROM_PRETRAINED_2026_10_9,))
    (fake / "sitecustomize.py").write_text(FAKE_CUDA)
    log = tmp_path / "unsloth.jsonl"
    src = Path(reasontune.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{src}", "FAKE_UNSLOTH_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-m", "reasontune.cli", "train", "--model", str(tiny_model_dir),
                           "--dataset", "procedural:arithmetic", "--backend", "unsloth", "--max-steps", "1",
                           "--output-dir", str(tmp_path / "run")],
                          env=env, capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert events and events[0]["event"] == "import", proc.stderr[-2000:]
    assert events[0]["already"] == [], f"imported before unsloth: {events[0]['already']}"
    loads = [e for e in events if e["event"] == "from_pretrained"]
    assert loads and loads[0]["unknown"] == [], (loads, proc.stderr[-2000:])
    assert "fake unsloth: stopping" in proc.stderr


def test_grpo_settings_unsloth_would_change_are_passed(monkeypatch):
    """Unsloth's GRPOConfig changes loss_type/beta defaults, turns vLLM importance-sampling correction off,
    and under an explicit dapo turns on mask_truncated_completions and epsilon_high 0.28 (models/rl.py of
    2026.10.9). Every one of them is passed explicitly with our config's (or TRL's) value."""
    import trl

    import importlib

    from reasontune import models

    train = importlib.import_module("reasontune.stages.train")  # the module (reasontune.stages.train is also a lazy function)

    seen = {}

    class RecordingConfig:  # stands in for Unsloth's patched GRPOConfig: keeps what it is given
        def __init__(self, **kw):
            seen.update(kw)

    monkeypatch.setattr(trl, "GRPOConfig", RecordingConfig)
    monkeypatch.setattr(models, "pick_backend", lambda m: ("unsloth", "test"))
    cfg = from_dict({"grpo": {"loss_type": "dapo", "beta": 0.0, "vllm_importance_sampling_correction": True}})
    train.grpo_args(cfg, 64)
    assert {k: seen.get(k, "missing") for k in ("loss_type", "beta", "vllm_importance_sampling_correction",
                                                  "mask_truncated_completions", "epsilon_high")} == {
        "loss_type": "dapo", "beta": 0.0, "vllm_importance_sampling_correction": True,
        "mask_truncated_completions": False, "epsilon_high": 0.2}


def test_cpu_levers_are_off_under_unsloths_trainer(monkeypatch, tmp_path, tiny_model_dir, caplog, one_thread):
    """Unsloth replaces trl.GRPOTrainer with UnslothGRPOTrainer; our generation, log-prob and loss levers
    must hand over to it (here a recording stand-in), and the values in effect are logged."""
    import importlib.util

    import trl

    import reasontune.engines.trainer as real
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    calls = []

    class UnslothGRPOTrainer(trl.GRPOTrainer):
        def _generate_single_turn(self, *a, **kw):
            calls.append("generate")
            return super()._generate_single_turn(*a, **kw)

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                               batch_size=None, compute_entropy=False, **kw):
            # Unsloth has its own; TRL's CPU path is not what runs under it (and trl 1.15's fails on a CPU)
            from reasontune.engines.logps import token_logps

            calls.append("logps")
            c = logits_to_keep
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -c - 1:-1]
            lp, ent = token_logps(logits / self.temperature, input_ids[:, -c:], compute_entropy)
            return lp, ent, None

        def _compute_loss(self, *a, **kw):
            calls.append("loss")
            return super()._compute_loss(*a, **kw)

    monkeypatch.setattr(trl, "GRPOTrainer", UnslothGRPOTrainer)
    spec = importlib.util.spec_from_file_location("reasontune._trainer_under_unsloth", real.__file__)
    copy = importlib.util.module_from_spec(spec)
    copy.__package__ = "reasontune"
    spec.loader.exec_module(copy)  # trainer.py as it is built after `import unsloth`
    monkeypatch.setattr(real, "ReasonTuneGRPOTrainer", copy.ReasonTuneGRPOTrainer)

    cfg = from_dict({"model": {"name": str(tiny_model_dir)}, "lora": {"r": 4, "alpha": 8},
                     "data": {"train_size": 8, "test_size": 4},
                     "grpo": {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 8,
                              "max_steps": 1, "save_steps": 1000},
                     "output_dir": str(tmp_path / "run"), "seed": 0})
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    with caplog.at_level(logging.INFO, logger="reasontune"):
        train(cfg, model=model, tokenizer=tok)
    assert {"generate", "logps", "loss"} <= set(calls), calls
    assert "loss_type=dapo beta=0.0" in caplog.text and "vllm_importance_sampling_correction=True" in caplog.text
    assert "Unsloth's patched trainer" in caplog.text


def test_under_unsloth_detection():
    from reasontune.engines.trainer import ReasonTuneGRPOTrainer, under_unsloth

    assert not under_unsloth(ReasonTuneGRPOTrainer)
    assert under_unsloth(types.new_class("UnslothGRPOTrainer", (object,)))
