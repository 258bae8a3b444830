"""Trainer callbacks that write a run's record, shared by the SFT warm-up and GRPO (both stages import them)."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from reasontune.models.speed import rss_mb
from reasontune.runs.folder import RunFolder


class MetricsCallback(TrainerCallback):
    """Every logged step -> RUN/metrics.jsonl, with the wall time of the step."""

    def __init__(self, run: RunFolder, stage: str = "grpo"):
        self.run, self.stage, self._t = run, stage, None

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self._last = time.perf_counter() - self._t if self._t else None

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "train_runtime" in logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "stage": self.stage, **logs}
        if getattr(self, "_last", None) is not None:
            row["step_time"] = self._last
        row["rss_mb"] = rss_mb()  # a slow climb here is fragmentation; a jump is a bigger batch
        self.run.append_metrics(row)
