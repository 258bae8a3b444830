"""The shipped recipes and the Unsloth backend, checked without a GPU, a download or unsloth itself."""

from __future__ import annotations

import importlib.abc
import json
import sys
import types
from pathlib import Path

import pytest

import reasontune
from reasontune import cli
from reasontune.config import RECIPE_TARGETS, ConfigError, ModelConfig, from_dict, load_yaml

RECIPES = Path(reasontune.__file__).parent / "recipes"
ACCEL = Path(reasontune.__file__).parent / "accelerate_configs"
RECIPE_PROMPT = ("You are given a problem. Think about the problem and provide your working out. Place it "
                 "between <start_working_out> and <end_working_out>. Then, provide your solution between "
                 "<SOLUTION></SOLUTION>")


@pytest.fixture
def no_model_loads(monkeypatch):
    import transformers

    def refuse(*a, **k):
        raise AssertionError("a dry run must load no model or tokenizer")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


class _ImportWatch(importlib.abc.MetaPathFinder):
    """Records any attempt to import unsloth (or vllm) and makes it fail."""

    def __init__(self):
        self.seen: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("unsloth", "vllm"):
            self.seen.append(name)
            raise ImportError(f"{name} blocked by the test")
        return None


@pytest.fixture
def import_watch(monkeypatch):
    watch = _ImportWatch()
    for name in ("unsloth", "vllm"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [watch, *sys.meta_path])
    return watch


# ---- recipes --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads(path, tmp_path):
    """Each recipe passes the checks a run makes before loading anything: a GRPO batch of whole groups, a
    model spec, rewards that build with the recipe's budget. And a misspelt key in it is refused by name,
    so no recipe setting can be silently ignored."""
    import yaml

    from reasontune.models import check_model_spec
    from reasontune.rewards import build_reward_funcs, resolved_rewards

    cfg = load_yaml(path)
    cfg.grpo.check_batch(1)
    check_model_spec(cfg.model)
    funcs, weights = build_reward_funcs(cfg.rewards, cfg.format, max_completion_length=cfg.model.max_seq_length)
    assert [f.__name__ for f in funcs] == [r["name"] for r in resolved_rewards(cfg.rewards)]
    raw = yaml.safe_load(path.read_text())
    raw["grpo"]["learning_rat"] = raw["grpo"].pop("learning_rate", 1e-6)
    bad = tmp_path / path.name
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="learning_rat"):
        load_yaml(bad)


def test_recipes_folder_is_reachable_from_repo_root():
    root = Path(__file__).resolve().parents[1]
    names = {p.name for p in (root / "recipes").glob("*.yaml")}
    assert {"qwen3-4b-base-grpo.yaml", "gsm8k-grpo.yaml", "openr1-math-grpo.yaml"} <= names


def _dry_run(capsys, *argv) -> dict:
    rc = cli.main(["train", *argv, "--dry-run", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, out
    return json.loads(out[-1])


def test_qwen3_recipe_dry_run_resolves_to_reference(capsys, tmp_path, no_model_loads, import_watch):
    d = _dry_run(capsys, "--config", str(RECIPES / "qwen3-4b-base-grpo.yaml"), "--output-dir", str(tmp_path / "r"))
    m, lo, g = d["model"], d["lora"], d["grpo"]
    assert m["name"] == "Qwen/Qwen3-4B-Base" and m["backend"] == "auto" and m["chat_template"] == "reasoning"
    assert (m["max_seq_length"], m["load_in_4bit"], m["fast_inference"], m["gpu_memory_utilization"]) == \
        (2048, False, True, 0.9)
    assert (lo["r"], lo["alpha"], lo["target_modules"], lo["gradient_checkpointing"]) == (32, 64, RECIPE_TARGETS, True)
    assert d["data"]["dataset"] == "open-r1/DAPO-Math-17k-Processed" and d["data"]["config_name"] == "en"
    assert d["data"]["max_prompt_quantile"] == 0.9
    assert d["format"]["system_prompt"] == RECIPE_PROMPT
    assert [d["format"][k] for k in ("reasoning_start", "reasoning_end", "solution_start", "solution_end")] == \
        ["<start_working_out>", "<end_working_out>", "<SOLUTION>", "</SOLUTION>"]
    assert d["rewards"]["names"] == ["format_exact", "format_approx", "answer_check", "number_check"]
    assert d["warmup"]["epochs"] == 2 and d["warmup"]["learning_rate"] == 2e-4
    expected = dict(temperature=1.0, learning_rate=5e-6, weight_decay=0.01, warmup_ratio=0.1,
                    lr_scheduler_type="linear", optim="adamw_8bit", per_device_train_batch_size=4,
                    gradient_accumulation_steps=1, num_generations=4, max_steps=100, min_p=0.1, use_vllm=True,
                    max_completion_length=None, max_prompt_length=None)
    assert {k: g[k] for k in expected} == expected
    # 1 prompt per step: the batch counts completions, one group of num_generations.
    assert g["per_device_train_batch_size"] // g["num_generations"] == 1
    assert import_watch.seen == []  # the dry run never touched unsloth or vllm
    # resolved, not echoed: the preset-free reward list with its weights, and flags / --set over the YAML
    assert d["resolved_rewards"] == [{"name": n, "weight": 1.0} for n in d["rewards"]["names"]]
    d = _dry_run(capsys, "--config", str(RECIPES / "qwen3-4b-base-grpo.yaml"), "--output-dir", str(tmp_path / "r"),
                 "--max-steps", "7", "--set", "grpo.beta=0.04", "--reward", "verified")
    assert (d["grpo"]["max_steps"], d["grpo"]["beta"], d["grpo"]["learning_rate"]) == (7, 0.04, 5e-6)
    assert "overlong_soft" in [r["name"] for r in d["resolved_rewards"]]


@pytest.mark.parametrize("name,dataset,config_name", [("gsm8k-grpo.yaml", "openai/gsm8k", "main"),
                                                     ("openr1-math-grpo.yaml", "open-r1/OpenR1-Math-220k", "default")])
def test_other_recipes_dry_run(capsys, tmp_path, no_model_loads, name, dataset, config_name):
    d = _dry_run(capsys, "--config", str(RECIPES / name), "--output-dir", str(tmp_path / "r"))
    ref = load_yaml(RECIPES / "qwen3-4b-base-grpo.yaml").to_dict()
    assert (d["data"]["dataset"], d["data"]["config_name"]) == (dataset, config_name)
    assert d["model"] == ref["model"] and d["lora"] == ref["lora"] and d["grpo"] == ref["grpo"]


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.stem: str(load_config_from_file(str(p)).distributed_type) for p in ACCEL.glob("*.yaml")}
    assert kinds == {"multi_gpu": "DistributedType.MULTI_GPU", "zero2": "DistributedType.DEEPSPEED",
                     "zero3": "DistributedType.DEEPSPEED", "fsdp": "DistributedType.FSDP"}


# ---- backend choice -------------------------------------------------------------------------
def test_pick_backend_cpu_never_imports_unsloth(monkeypatch, import_watch):
    import torch

    from reasontune.models import pick_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_backend(ModelConfig(backend="auto")) == ("transformers", "no CUDA device")
    assert pick_backend(ModelConfig(backend="transformers")) == ("transformers", "requested")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        pick_backend(ModelConfig(backend="unsloth"))
    assert import_watch.seen == []


def test_pick_backend_cuda(monkeypatch, import_watch):
    import torch

    from reasontune.models import pick_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    backend, why = pick_backend(ModelConfig(backend="auto"))  # unsloth blocked: falls back, says why
    assert backend == "transformers" and why.startswith("unsloth unavailable")
    with pytest.raises(ConfigError, match="does not import"):
        pick_backend(ModelConfig(backend="unsloth"))
    monkeypatch.setitem(sys.modules, "unsloth", types.ModuleType("unsloth"))
    assert pick_backend(ModelConfig(backend="auto")) == ("unsloth", "CUDA device and unsloth imports")
    assert pick_backend(ModelConfig(backend="transformers"))[0] == "transformers"


# ---- Unsloth calls, with a fake FastLanguageModel ---------------------------------------------
class _FakeModel:
    def __init__(self):
        self.generation_config = types.SimpleNamespace(pad_token_id=None)


def _fake_unsloth(monkeypatch, tok):
    calls = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kw):
            calls["from_pretrained"] = kw
            return _FakeModel(), tok

        @staticmethod
        def get_peft_model(model, **kw):
            calls["get_peft_model"] = kw
            return model

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    return calls


@pytest.mark.parametrize("has_vllm", [True, False])
def test_load_unsloth_passes_the_recipe_kwargs(monkeypatch, tiny_model_dir, has_vllm):
    from transformers import AutoTokenizer

    from reasontune.models import unsloth as unsloth_backend

    cfg = load_yaml(RECIPES / "qwen3-4b-base-grpo.yaml")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "right"
    calls = _fake_unsloth(monkeypatch, tok)
    monkeypatch.setattr(unsloth_backend, "vllm_available", lambda: has_vllm)
    model, tok2 = unsloth_backend.load_unsloth("Qwen/Qwen3-4B-Base", cfg.model, cfg.format, cfg.lora)
    assert calls["from_pretrained"] == dict(model_name="Qwen/Qwen3-4B-Base", max_seq_length=2048,
                                            load_in_4bit=False, fast_inference=has_vllm, max_lora_rank=32,
                                            gpu_memory_utilization=0.9)
    assert calls["get_peft_model"] == dict(r=32, target_modules=RECIPE_TARGETS, lora_alpha=64, lora_dropout=0.0,
                                           bias="none", use_gradient_checkpointing="unsloth", random_state=3407)
    assert tok2.padding_side == "left" and tok2.pad_token is not None
    assert model.generation_config.pad_token_id == tok2.pad_token_id
    text = tok2.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                                    tokenize=False, add_generation_prompt=True)
    assert text.endswith("<start_working_out>")


def test_peft_kwargs_top_layers():
    from reasontune.config import LoraConfig
    from reasontune.models.unsloth import get_peft_kwargs

    assert "layers_to_transform" not in get_peft_kwargs(LoraConfig(), 36)
    assert get_peft_kwargs(LoraConfig(top_layers=2), 36)["layers_to_transform"] == [34, 35]


def test_grpo_overrides_and_grpo_args(monkeypatch):
    from reasontune import models
    from reasontune.stages import train
    from reasontune.models import unsloth as unsloth_backend

    cfg = from_dict({"model": {"fast_inference": True, "gpu_memory_utilization": 0.5}})
    trl_values = {"mask_truncated_completions": False, "epsilon_high": 0.2}  # what Unsloth would change
    monkeypatch.setattr(unsloth_backend, "vllm_available", lambda: False)
    assert unsloth_backend.grpo_overrides(cfg) == trl_values
    monkeypatch.setattr(unsloth_backend, "vllm_available", lambda: True)
    assert unsloth_backend.grpo_overrides(cfg) == {"use_vllm": True, "vllm_mode": "colocate",
                                                   "vllm_gpu_memory_utilization": 0.5, **trl_values}
    assert unsloth_backend.grpo_overrides(from_dict({})) == trl_values
    # train.grpo_args merges the overrides only when the backend is unsloth.
    args = train.grpo_args(cfg, 64)
    assert args.use_vllm is False
    monkeypatch.setattr(models, "pick_backend", lambda m: ("unsloth", "test"))
    args = train.grpo_args(cfg, 64)
    assert args.use_vllm is True and args.vllm_mode == "colocate" and args.vllm_gpu_memory_utilization == 0.5


def test_load_model_routes_to_unsloth_on_cuda(monkeypatch, tiny_model_dir):
    from transformers import AutoTokenizer

    from reasontune import models
    from reasontune.models import unsloth as unsloth_backend

    calls = _fake_unsloth(monkeypatch, AutoTokenizer.from_pretrained(tiny_model_dir))
    monkeypatch.setattr(models, "pick_backend", lambda m: ("unsloth", "test"))
    monkeypatch.setattr(unsloth_backend, "vllm_available", lambda: False)
    cfg = from_dict({"model": {"name": str(tiny_model_dir)}})
    _, _, backend = models.load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    assert backend == "unsloth" and calls["from_pretrained"]["model_name"] == str(tiny_model_dir)
