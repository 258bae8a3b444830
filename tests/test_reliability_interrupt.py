"""Issue 9: SIGTERM mid-run (in GRPO or in the SFT warm-up) -> checkpoint at the next step boundary,
STOPPED, non-zero exit; `reasontune train --resume --output-dir RUN` finishes the run with every step
logged once, and ends with the same adapter as an uninterrupted run of the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

MAX_STEPS = 6
REWARDS = '''
from reasontune.rewards.extract import completion_text


def spread(completions, **kw):
    """Distinct characters: varies between random completions, so every step changes the adapter."""
    return [len(set(completion_text(c))) / 8.0 for c in completions]
'''


def train_args(model_dir, out) -> list[str]:
    return ["train", "--model", str(model_dir), "--output-dir", str(out), "--dataset", "procedural:arithmetic",
            "--set", "data.train_size=16", "--set", "data.test_size=2", "--batch-size", "2",
            "--num-generations", "2", "--max-completion-length", "8", "--max-steps", str(MAX_STEPS),
            "--set", "grpo.save_steps=1000", "--set", "grpo.bf16=false", "--set", "grpo.stop_at_solution_end=false",
            "--learning-rate", "1e-3", "--reward", "rt_int_rewards:spread", "--lora-r", "4", "--set", "lora.alpha=8"]


def launch(argv, tmp, log_name):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(tmp), *sys.path])}
    log = open(tmp / log_name, "w")
    return subprocess.Popen([sys.executable, "-m", "reasontune.cli", *argv], stdout=log, stderr=subprocess.STDOUT,
                            env=env), log


def grpo_steps(run: Path) -> list[int]:
    from reasontune.runs.folder import RunFolder

    return [r["step"] for r in RunFolder(run).metrics() if r.get("stage") == "grpo"]


def wait_for_step(proc, run: Path, step: int, timeout: float) -> None:
    """Poll metrics.jsonl (written line by line) until `step` is logged; fail if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training exited early with {proc.returncode}")
        if any(s >= step for s in grpo_steps(run)):
            return
        time.sleep(0.1)
    pytest.fail(f"step {step} not logged within {timeout}s")


@pytest.fixture
def rewards_dir(tmp_path, monkeypatch):
    (tmp_path / "rt_int_rewards.py").write_text(textwrap.dedent(REWARDS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_sigterm_checkpoints_and_resume_finishes(tiny_model_dir, rewards_dir):
    tmp, run = rewards_dir, rewards_dir / "run"
    proc, log = launch(train_args(tiny_model_dir, run), tmp, "first.log")
    try:
        wait_for_step(proc, run, 2, timeout=90)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    tail = (tmp / "first.log").read_text()[-3000:]
    assert rc == 128 + signal.SIGTERM, tail
    status = json.loads((run / "status.json").read_text())
    stopped_at = status["step"]
    assert status["status"] == "stopped" and 2 <= stopped_at < MAX_STEPS, status
    assert "--resume" in (run / "STOPPED").read_text()
    ckpt = run / "checkpoints" / f"checkpoint-{stopped_at}"  # save_steps=1000: written because of the signal
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == stopped_at
    assert grpo_steps(run) == list(range(1, stopped_at + 1))

    proc, log = launch(["train", "--resume", "--output-dir", str(run)], tmp, "resume.log")
    try:
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert rc == 0, (tmp / "resume.log").read_text()[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["global_step"] == MAX_STEPS
    assert not (run / "STOPPED").exists()
    assert grpo_steps(run) == list(range(1, MAX_STEPS + 1))  # each step once: none repeated, none missing
    assert_same_adapter_as_uninterrupted(tiny_model_dir, run, tmp / "straight")


def assert_same_adapter_as_uninterrupted(model_dir, resumed: Path, straight: Path, extra=()) -> None:
    """Optimizer, scheduler, data position and sampling RNG are all restored: the result is identical."""
    from safetensors.torch import load_file

    from reasontune.cli import build_parser
    from reasontune.config.args import config_from_args
    from reasontune.stages.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the subprocesses ran with one thread too (same float summation order)
    try:
        train(config_from_args(build_parser().parse_args(train_args(model_dir, straight) + list(extra))))
    finally:
        torch.set_num_threads(threads)
    a = load_file(resumed / "adapter" / "adapter_model.safetensors")
    b = load_file(straight / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert any(t.abs().sum() > 0 for k, t in b.items() if "lora_B" in k)  # training moved the adapter
    diff = {k: (a[k] - b[k]).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not diff, f"resumed adapter differs from the uninterrupted one: {diff}"


WARMUP = ["--warmup", "sft", "--set", "warmup.examples=16", "--set", "warmup.batch_size=1", "--set",
          "warmup.epochs=4", "--set", "warmup.learning_rate=1e-3"]


def steps_of(run: Path, stage: str) -> list[int]:
    from reasontune.runs.folder import RunFolder

    return [r["step"] for r in RunFolder(run).metrics() if r.get("stage") == stage]


def test_sigterm_in_the_warm_up_checkpoints_it_and_resume_finishes_both_stages(tiny_model_dir, rewards_dir):
    """train() with an SFT warm-up (the gsm8k and openr1 recipes): a signal during the warm-up stops it at
    the next step boundary with a checkpoint, GRPO does not begin; --resume continues the warm-up from the
    checkpoint, then runs GRPO, and ends with the adapter of an uninterrupted run."""
    tmp, run = rewards_dir, rewards_dir / "run"
    total = 16 * 4  # warm-up steps: examples x epochs at batch 1
    proc, log = launch(train_args(tiny_model_dir, run) + WARMUP, tmp, "first.log")
    try:
        deadline = time.monotonic() + 600  # a safety net on a loaded machine, not a limit
        while not any(s >= 2 for s in steps_of(run, "warmup")):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no warm-up step 2 (exit {proc.poll()}): {(tmp / 'first.log').read_text()[-2000:]}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    tail = (tmp / "first.log").read_text()[-3000:]
    assert rc == 128 + signal.SIGTERM, tail
    status = json.loads((run / "status.json").read_text())
    stopped_at = status["step"]
    assert status["status"] == "stopped" and status["stage"] == "warmup" and 2 <= stopped_at < total, status
    assert "warm-up step" in (run / "STOPPED").read_text() and "--resume" in (run / "STOPPED").read_text()
    ckpt = run / "warmup" / f"checkpoint-{stopped_at}"
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    assert steps_of(run, "warmup") == list(range(1, stopped_at + 1)) and steps_of(run, "grpo") == []

    proc, log = launch(["train", "--resume", "--output-dir", str(run)], tmp, "resume.log")
    try:
        rc = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert rc == 0, (tmp / "resume.log").read_text()[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["global_step"] == MAX_STEPS
    assert steps_of(run, "warmup") == list(range(1, total + 1))  # each warm-up step once
    assert steps_of(run, "grpo") == list(range(1, MAX_STEPS + 1))
    assert_same_adapter_as_uninterrupted(tiny_model_dir, run, tmp / "straight", WARMUP)
