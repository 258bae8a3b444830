"""Trainer callbacks that write a run's record and keep its time budget, shared by the SFT warm-up, GRPO and expert
iteration (the stages import them)."""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

from reasontune.models.speed import rss_mb
from reasontune.runs.folder import RunFolder

logger = logging.getLogger(__name__)


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


def generation_cycle(args) -> int:
    """Optimizer steps per GRPO generation: TRL generates once per steps_per_generation x num_iterations
    micro-batches, and an optimizer step takes gradient_accumulation_steps of them (1 for SFT)."""
    iters = int(getattr(args, "num_iterations", 1) or 1)
    ga = int(getattr(args, "gradient_accumulation_steps", 1) or 1)
    spg = int(getattr(args, "steps_per_generation", None) or ga)
    return max(1, -(-iters * spg // ga))


class TimeBudget(TrainerCallback):
    """Stop at the first step boundary after which another step would end past a deadline: `seconds` after
    training begins (grpo.max_seconds) or an absolute `deadline` (a time.perf_counter() value). Waiting for the
    deadline itself overran it by up to a step (40 s on a slow host, measured in the demo). The next step is
    predicted as the longest of the last generation cycle's steps: with num_iterations > 1 a cheap step that
    reuses the rollouts is followed by one that generates, and the last step alone would overrun by a rollout.
    Under grpo.dynamic_sampling a step can be longer than any before it: engines/dynamic.py reads `deadline` (by
    that name) and starts no refill round predicted to end past it. The adapter is still saved."""

    def __init__(self, seconds: float | None = None, deadline: float | None = None):
        self.seconds, self.deadline, self.fired, self.steps = seconds, deadline, False, 0
        self._last: float | None = None  # perf_counter() at the last step boundary (or at train begin)
        self._recent: list[float] = []  # step durations of the last generation cycle

    def on_train_begin(self, args, state, control, **kw):
        self._last = time.perf_counter()
        if self.deadline is None and self.seconds is not None:
            self.deadline = self._last + self.seconds

    def on_step_end(self, args, state, control, **kw):
        self.steps += 1
        now = time.perf_counter()
        step_s = now - self._last if self._last is not None else 0.0
        self._last = now
        self._recent = (self._recent + [step_s])[-generation_cycle(args):]
        nxt = max(self._recent)
        if self.deadline is not None and not self.fired and now + nxt >= self.deadline:
            self.fired = True
            control.should_training_stop = True
            logger.info("time budget: step %d of %d took %.0f s (the cycle's longest %.0f s) and %.0f s are left: "
                        "stopping", state.global_step, state.max_steps, step_s, nxt, max(0.0, self.deadline - now))
        return control
