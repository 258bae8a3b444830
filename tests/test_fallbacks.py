"""What the recipe and docs/gpu.md promise on a machine without the GPU engines: `use_vllm: true`
without vllm trains with transformers generation after one warning; 4-bit on a CPU is refused, by
`--dry-run` too, with the fix named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reasontune import cli

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_use_vllm_without_vllm_trains_with_one_warning(monkeypatch, tmp_path, tiny_model_dir, caplog, capsys,
                                                       one_thread):
    from reasontune.models import unsloth as unsloth_backend

    monkeypatch.setattr(unsloth_backend, "vllm_available", lambda: False)  # as on a machine without vllm
    run = tmp_path / "run"
    argv = ["train", "--model", str(tiny_model_dir), "--dataset", "procedural:arithmetic", "--max-steps", "1",
            "--output-dir", str(run), "--json",
            "--set", "grpo.use_vllm=true", "--set", "grpo.num_generations=2",
            "--set", "grpo.per_device_train_batch_size=2", "--set", "grpo.max_completion_length=8",
            "--set", "data.train_size=8", "--set", "data.test_size=4", "--set", "lora.r=4"]
    with caplog.at_level(logging.WARNING):
        rc = cli.main(argv)
    assert rc == 0, capsys.readouterr().err[-2000:]
    warnings = [r.getMessage() for r in caplog.records if "vllm" in r.getMessage().lower()]
    assert len(warnings) == 1 and "generating with transformers" in warnings[0], warnings
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert (run / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("dry_run", [True, False])
def test_4bit_on_cpu_refused_with_the_fix(monkeypatch, tmp_path, capsys, dry_run):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["train", "--config", str(RECIPES / "qwen3-4b-base-grpo.yaml"), "--output-dir", str(tmp_path / "r"),
            "--set", "model.load_in_4bit=true"] + (["--dry-run"] if dry_run else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "model.load_in_4bit=True" in err and "--set model.load_in_4bit=false" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written
