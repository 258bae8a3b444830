"""Our trainers lean on TRL's private methods and attributes. A TRL release that renames one, or changes
its parameters, would silently bypass our code (Python just never calls an override whose name TRL no
longer uses). These tests read the installed TRL with `inspect`, so they run under every stack CI
installs (the default trl 1.16 and the GPU stack's trl 1.15: `make test-gpustack`)."""

from __future__ import annotations

import inspect

import pytest
from trl import GRPOConfig, GRPOTrainer, SFTTrainer

from reasontune.engines.sft_trainer import LeanSFTTrainer
from reasontune.engines.trainer import ReasonTuneGRPOTrainer

# Methods our classes add (TRL must not have them: ours would silently replace TRL's).
OWN = {ReasonTuneGRPOTrainer: {"__init__", "_skip_is_exact", "_entropy_needs_grad", "_shared_prompt_runs",
                                "_regroup_is_exact", "_hidden_logps", "_first_pass_is_old_policy", "_token_logps",
                                "_loss_on_rows"},
       LeanSFTTrainer: {"_lean", "_log_metrics"}}
# Attributes of GRPOTrainer our trainer reads; each must be assigned in TRL's GRPOTrainer source.
GRPO_ATTRS = ("_tokenizer", "eos_token_ids", "use_vllm", "use_transformers_continuous_batching", "_metrics",
              "num_generations", "loss_type", "beta", "temperature", "max_completion_length",
              "num_iterations", "_entropy_bonus_enabled", "top_entropy_quantile",
              # engines/dynamic.py (grpo.dynamic_sampling)
              "reward_weights", "scale_rewards", "multi_objective_aggregation", "rollout_func",
              "environment_factories", "tools")
# GRPOConfig fields the trainer and train.grpo_args read or set.
GRPO_FIELDS = ("top_k", "top_p", "min_p", "repetition_penalty", "generation_kwargs", "ds3_gather_for_generation",
               "generation_batch_size", "steps_per_generation", "num_iterations", "use_vllm", "vllm_mode",
               "loss_type", "beta", "vllm_importance_sampling_correction", "vllm_gpu_memory_utilization",
               "max_completion_length", "reward_weights")


def _overrides(cls):
    return sorted(n for n, v in vars(cls).items() if callable(v) and n not in OWN[cls] and not n.startswith("__"))


def _params(fn) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]


@pytest.mark.parametrize("ours, theirs", [(ReasonTuneGRPOTrainer, GRPOTrainer), (LeanSFTTrainer, SFTTrainer)])
def test_every_override_exists_in_trl_with_our_signature(ours, theirs):
    names = _overrides(ours)
    assert names, "no overrides found: the test would check nothing"
    for name in names:
        base = getattr(theirs, name, None)
        assert base is not None, f"TRL's {theirs.__name__} has no {name}: our override would never run"
        mine, trl_params = _params(getattr(ours, name)), inspect.signature(base).parameters
        # We call super() with our parameters by position and name: TRL must take the same ones, in order.
        assert [p.name for p in mine] == list(trl_params)[:len(mine)], (name, list(trl_params))
        for extra in list(trl_params.values())[len(mine):]:  # what we collect in **extra must be optional
            assert extra.default is not inspect.Parameter.empty or extra.kind is extra.VAR_KEYWORD, (name, extra)
    for name in OWN[ours] - {"__init__"}:
        assert not hasattr(theirs, name), f"TRL now defines {name}: our helper of the same name would shadow it"


def test_grpo_trainer_sets_the_attributes_we_read():
    src = inspect.getsource(GRPOTrainer)
    missing = [a for a in GRPO_ATTRS if f"self.{a} =" not in src]
    assert not missing, f"TRL's GRPOTrainer no longer sets {missing}"


def test_grpo_config_has_the_fields_we_use():
    fields = set(GRPOConfig.__dataclass_fields__)
    assert not [f for f in GRPO_FIELDS if f not in fields]


def test_unwrap_model_for_generation_takes_our_arguments():
    from trl.models.utils import unwrap_model_for_generation

    inspect.signature(unwrap_model_for_generation).bind(object(), object(), gather_deepspeed3_params=True)


def test_an_override_missing_from_trl_is_caught(monkeypatch):
    """The check itself can fail: an override TRL does not have is reported."""

    class Renamed(ReasonTuneGRPOTrainer):
        def _generate_single_turn_v2(self, prompt_ids):  # a name TRL does not have
            return None

    OWN[Renamed] = OWN[ReasonTuneGRPOTrainer]
    try:
        with pytest.raises(AssertionError, match="_generate_single_turn_v2"):
            test_every_override_exists_in_trl_with_our_signature(Renamed, GRPOTrainer)
    finally:
        del OWN[Renamed]
