"""Issue 9: atomic writes, run status, the resolved config with library versions, resume bookkeeping."""

from __future__ import annotations

import json
import os

import pytest

from reasontune.runs import folder as runfolder
from reasontune.config import from_dict
from reasontune.runs.folder import RunFolder, atomic_write_json, atomic_write_text, load_run_config


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"v": 1})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runfolder.os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}  # the old content, whole
    assert os.listdir(tmp_path) == ["summary.json"]  # no temp file left behind


def test_atomic_write_text_creates_parents(tmp_path):
    atomic_write_text(tmp_path / "a" / "b" / "report.md", "# hi\n")
    assert (tmp_path / "a" / "b" / "report.md").read_text() == "# hi\n"


def test_start_records_resolved_config_versions_and_status(tmp_path):
    cfg = from_dict({"grpo": {"max_steps": 7}, "output_dir": str(tmp_path / "run")})
    run = RunFolder(cfg.output_dir)
    run.start(cfg)
    saved = json.loads((run.path / runfolder.CONFIG_FILE).read_text())
    assert saved["grpo"]["max_steps"] == 7 and saved["grpo"]["learning_rate"] == cfg.grpo.learning_rate
    assert {"torch", "transformers", "trl", "peft"} <= set(saved["versions"])
    assert run.status()["status"] == "running"
    assert load_run_config(run.path) == cfg  # the full config round-trips
    for status in ("stopped", "failed", "done"):
        run.set_status(status, step=3)
        assert run.status()["status"] == status and run.status()["step"] == 3


def test_truncate_metrics_drops_only_later_rows_of_the_stage(tmp_path):
    run = RunFolder(tmp_path)
    for step in (1, 2, 3):
        run.append_metrics({"step": step, "stage": "warmup", "loss": 1.0})
    for step in (1, 2, 3, 4):
        run.append_metrics({"step": step, "stage": "grpo", "loss": 0.5})
    run.truncate_metrics(2, stage="grpo")
    assert [(r["stage"], r["step"]) for r in run.metrics()] == [
        ("warmup", 1), ("warmup", 2), ("warmup", 3), ("grpo", 1), ("grpo", 2)]
    run.truncate_metrics(0)  # no checkpoint: everything starts over
    assert run.metrics() == []


def test_metrics_survive_a_line_cut_short(tmp_path):
    run = RunFolder(tmp_path)
    run.append_metrics({"step": 1, "stage": "grpo"})
    with open(tmp_path / runfolder.METRICS_FILE, "a") as f:
        f.write('{"step": 2, "sta')  # a hard kill mid-write
    assert [r["step"] for r in run.metrics()] == [1]
