"""Issue 9: a non-finite loss, gradient or reward skips the update, is logged with the offending
sample, and stops the run after `grpo.max_nonfinite_steps` such steps."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from reasontune.engines.guards import NONFINITE_FILE, NonFiniteError, NonFiniteGuard

REWARDS = '''
from reasontune.rewards.extract import completion_text


def spread(completions, **kw):
    """Distinct characters: varies between random completions, so the gradient is not zero."""
    return [len(set(completion_text(c))) / 8.0 for c in completions]


def nan_reward(completions, **kw):
    return [float("nan")] * len(completions)
'''


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "rt_num_rewards.py").write_text(textwrap.dedent(REWARDS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "rt_num_rewards"




def tiny_cfg(model_dir, out, reward: str, **grpo):
    from reasontune.config import from_dict

    g = {"per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 4, "max_steps": 3,
         "save_steps": 1000, "bf16": "false", "learning_rate": 1e-3, "stop_at_solution_end": False, **grpo}
    return from_dict({"model": {"name": str(model_dir)}, "data": {"train_size": 16, "test_size": 2},
                      "lora": {"r": 4, "alpha": 8}, "rewards": {"names": [reward]}, "grpo": g,
                      "output_dir": str(out)})


def nan_loss_on(monkeypatch, calls):
    """Make the loss NaN on the given compute_loss calls (1-based): NaN gradients follow."""
    from reasontune.engines.trainer import ReasonTuneGRPOTrainer

    orig, seen = ReasonTuneGRPOTrainer.compute_loss, {"n": 0}

    def compute_loss(self, *a, **k):
        seen["n"] += 1
        loss = orig(self, *a, **k)
        return loss * float("nan") if seen["n"] in calls else loss

    monkeypatch.setattr(ReasonTuneGRPOTrainer, "compute_loss", compute_loss)


def events(out) -> list[dict]:
    return [json.loads(line) for line in (out / NONFINITE_FILE).read_text().splitlines()]


def test_nan_loss_step_is_skipped_and_the_run_goes_on(tiny_model_dir, tmp_path, reward_module, monkeypatch,
                                                      one_thread):
    from reasontune.runs.folder import RunFolder
    from reasontune.stages.train import train

    nan_loss_on(monkeypatch, {2})
    out = tmp_path / "run"
    train(tiny_cfg(tiny_model_dir, out, f"{reward_module}:spread"))
    run = RunFolder(out)
    assert run.status()["status"] == "done"
    (ev,) = events(out)
    assert ev["step"] == 2 and ev["problems"][0]["kind"] == "loss" and math.isnan(ev["problems"][0]["loss"])
    assert isinstance(ev["problems"][0]["completion"], str)  # the offending sample is logged
    rows = {r["step"]: r for r in run.metrics() if r["stage"] == "grpo"}
    assert [rows[s]["nonfinite_steps"] for s in (1, 2, 3)] == [0, 1, 1]
    from safetensors.torch import load_file

    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in adapter.values())  # NaN gradients never reached the weights
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # the other steps did train


def test_too_many_nan_steps_stop_the_run(tiny_model_dir, tmp_path, reward_module, monkeypatch, one_thread):
    from reasontune.models import load_model_and_tokenizer
    from reasontune.runs.folder import RunFolder
    from reasontune.stages.train import train

    nan_loss_on(monkeypatch, set(range(1, 100)))
    out = tmp_path / "run"
    cfg = tiny_cfg(tiny_model_dir, out, f"{reward_module}:spread", max_steps=6, max_nonfinite_steps=2)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    with pytest.raises(NonFiniteError, match="grpo.max_nonfinite_steps=2 reached"):
        train(cfg, model=model, tokenizer=tok)
    status = RunFolder(out).status()
    assert status["status"] == "failed" and "NonFiniteError" in status["error"]
    assert [e["step"] for e in events(out)] == [1, 2]
    assert not (out / "adapter").exists()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(torch.equal(p, torch.zeros_like(p)) for p in lora_b)  # no update was applied
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_reward_is_logged_with_the_sample_and_stops_the_cli(tiny_model_dir, tmp_path, reward_module,
                                                                 one_thread, capsys):
    from reasontune.cli import main
    from reasontune.rewards import error_counts, reset_errors

    reset_errors()
    out = tmp_path / "run"
    rc = main(["train", "--model", str(tiny_model_dir), "--output-dir", str(out), "--reward", f"{reward_module}:nan_reward",
               "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "4", "--max-steps", "4",
               "--set", "data.train_size=16", "--set", "grpo.bf16=false", "--set", "grpo.max_nonfinite_steps=1"])
    assert rc == 1
    assert "reasontune: error: 1 step(s) had a non-finite loss, gradient or reward" in capsys.readouterr().err
    (ev,) = events(out)
    problem = ev["problems"][0]
    assert ev["step"] == 1 and problem["kind"] == "reward" and problem["of_rows"] == 2
    assert math.isnan(problem["rewards"][0]) and isinstance(problem["completion"], str)
    assert error_counts().get("nan_reward", 0) >= 2  # the wrapper counted each NaN score as an error
    assert json.loads((out / "status.json").read_text())["status"] == "failed"


def test_guard_drops_non_finite_gradients():
    from transformers import TrainerControl, TrainerState

    model = torch.nn.Linear(2, 1)
    model.weight.grad = torch.tensor([[1.0, float("inf")]])
    model.bias.grad = torch.tensor([0.5])
    guard, state, control = NonFiniteGuard(max_steps=1), TrainerState(), TrainerControl()
    guard.on_pre_optimizer_step(None, state, control, model=model)
    assert model.weight.grad is None and model.bias.grad is None
    state.global_step = 1
    guard.on_step_end(None, state, control)
    assert guard.tripped and control.should_training_stop
    assert guard.events[0]["problems"][0]["kind"] == "gradient"


def test_guard_leaves_finite_steps_alone():
    from transformers import TrainerControl, TrainerState

    model = torch.nn.Linear(2, 1)
    model.weight.grad = torch.ones(1, 2)
    guard, control = NonFiniteGuard(max_steps=1), TrainerControl()
    guard.on_pre_optimizer_step(None, TrainerState(), control, model=model)
    guard.on_step_end(None, TrainerState(), control)
    assert model.weight.grad is not None and guard.count == 0 and not control.should_training_stop
