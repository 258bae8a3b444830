"""The run folder: resolved config, status, metrics log, atomic writes.

Layout (HF conventions where they exist):
  RUN/reasontune_config.json   full resolved RunConfig + library versions + resolved_rewards (presets expanded)
  RUN/status.json              {"status": running|stopped|failed|done, "warnings": [watch.py's],
                               "watched": {stage: what the watcher checked}, ...}
  RUN/metrics.jsonl            one JSON object per logged step (reward per component, KL, ...)
  RUN/adapter/                 PEFT adapter (PeftModel.from_pretrained loads it as is)
  RUN/checkpoints/checkpoint-N TRL/HF Trainer checkpoints (resume)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from reasontune.config import ConfigError, RunConfig

CONFIG_FILE = "reasontune_config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"

logger = logging.getLogger(__name__)


def is_main_rank() -> bool:
    """Rank 0, or a single process. accelerate launch / torchrun set RANK before Python starts."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def main_rank_first():
    """Rank 0 runs the body, then the other ranks do (accelerate's main_process_first: a barrier).

    With several processes only rank 0 sets up the run folder (overwrite check, clearing, config,
    status); the other ranks must not look at it before rank 0 is done, or they would find the
    folder rank 0 just created and refuse to clobber it.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("reasontune", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "math-verify"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def holds_run(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / STATUS_FILE).is_file()


def check_output_dir(cfg: RunConfig) -> None:
    """Refuse to clobber a run; check we can write. Cheap: runs before any model loads."""
    out = Path(cfg.output_dir)
    if cfg.overwrite and cfg.resume:
        raise ConfigError(f"overwrite=True and resume=True for output_dir={str(out)!r}: pass --resume to continue "
                          "the run or --overwrite to replace it, not both")
    if holds_run(out) and not (cfg.overwrite or cfg.resume):
        raise ConfigError(f"output_dir={str(out)!r} already holds a run: pass --resume to continue it, "
                          "--overwrite to replace it, or choose another --output-dir")
    if cfg.resume and not holds_run(out):
        raise ConfigError(f"--resume: output_dir={str(out)!r} holds no run to resume; drop --resume")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK) or not _can_create_in(probe):
        raise ConfigError(f"output_dir={str(out)!r} cannot be written ({str(probe)!r} is not a writable "
                          "folder): choose a writable --output-dir")


def _can_create_in(folder: Path) -> bool:
    """Create and delete a temp file: catches read-only mounts that os.access misses (e.g. as root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def start(self, cfg: RunConfig, extra: dict | None = None) -> None:
        from reasontune.rewards import resolved_rewards

        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / CONFIG_FILE, {**cfg.to_dict(), "versions": library_versions(),
                                                    "resolved_rewards": resolved_rewards(cfg.rewards)})
        self.set_status("running", **(extra or {}))

    def set_status(self, status: str, **info) -> None:
        """Replace the status; the watcher's `warnings` and `watched` so far are kept (a resumed run keeps the
        first part's)."""
        st = self.status()
        kept = {"warnings": st.get("warnings") or [], **({"watched": st["watched"]} if st.get("watched") else {})}
        atomic_write_json(self.path / STATUS_FILE, {"status": status, "time": time.time(), **kept, **info})

    def set_watched(self, stage: str, coverage: dict) -> None:
        """Record which watcher conditions `stage` could check (watch.Watch.coverage), keeping every other field;
        after a resume, a condition either part checked counts as checked."""
        st = self.status()
        watched = dict(st.get("watched") or {})
        prev = watched.get(stage) or {}
        checked = [c for c in dict.fromkeys([*prev.get("checked", []), *coverage["checked"]])]
        coverage = {**coverage, "checked": checked,
                    "not_checked": {c: why for c, why in coverage["not_checked"].items() if c not in checked}}
        atomic_write_json(self.path / STATUS_FILE, {**st, "watched": {**watched, stage: coverage}})

    def add_warning(self, warning: dict) -> None:
        """Append one watcher warning to status.json, keeping every other field; a condition already listed
        for the same stage (a resumed run firing it again) is not added twice."""
        st = self.status()
        have = st.get("warnings") or []
        if not any((w.get("condition"), w.get("stage")) == (warning.get("condition"), warning.get("stage"))
                   for w in have):
            atomic_write_json(self.path / STATUS_FILE, {**st, "warnings": [*have, warning]})

    def status(self) -> dict:
        p = self.path / STATUS_FILE
        return json.loads(p.read_text()) if p.is_file() else {}

    def append_metrics(self, row: dict) -> None:
        # One line per write, flushed: a killed run leaves whole lines only (at most the last is lost).
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps(row, sort_keys=True, default=float) + "\n")
            f.flush()

    def metrics(self) -> list[dict]:
        p = self.path / METRICS_FILE
        if not p.is_file():
            return []
        rows = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a hard kill: skip it, keep the rest
                logger.warning("%s line %d is not JSON (a write cut short?); skipped", p, n)
        return rows

    def truncate_metrics(self, max_step: int, stage: str | None = None) -> None:
        """On resume: drop rows of `stage` (None: every stage) logged after the checkpoint we restart
        from, so no step is logged twice. Rows of other stages (an SFT warm-up's) are kept."""
        rows = [r for r in self.metrics()
                if r.get("step", 0) <= max_step or (stage is not None and r.get("stage") != stage)]
        atomic_write_text(self.path / METRICS_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def load_run_config(run_dir: str | os.PathLike) -> RunConfig:
    from reasontune.config import from_dict

    p = Path(run_dir) / CONFIG_FILE
    if not p.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a reasontune run folder (no {CONFIG_FILE})")
    d = json.loads(p.read_text())
    d.pop("versions", None)
    d.pop("resolved_rewards", None)  # derived from d["rewards"]
    return from_dict(d)


def clear_run(path: Path) -> None:
    """Remove what a previous run wrote in `path` (overwrite: true), keeping anything else there."""
    import shutil

    for name in ("checkpoints", "warmup", "adapter", "metrics.jsonl", "status.json", "STOPPED", "nonfinite.jsonl"):
        p = path / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
