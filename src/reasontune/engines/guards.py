"""Numerical guards for a GRPO run: a non-finite loss, gradient or reward never reaches the weights.

How it works (the trainer and this callback share a `NonFiniteGuard`):

* `ReasonTuneGRPOTrainer.training_step` reports a non-finite loss, `_calculate_rewards` reports a
  completion that has no finite reward (every reward function failed or returned NaN/inf for it;
  the rewards wrapper already turns a NaN score into a logged, counted `None`), each with the
  offending sample (`flag`).
* Just before the optimizer steps (`on_pre_optimizer_step`) the guard also checks the gradients.
  If anything was flagged during the step, every gradient is dropped (`p.grad = None`), so the
  optimizer leaves the weights and its moment estimates untouched: the update is skipped.
* At the step end the step is logged (warning + one JSON line in RUN/nonfinite.jsonl). After
  `grpo.max_nonfinite_steps` such steps training stops and `train()` raises `NonFiniteError`
  (status.json says failed).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

NONFINITE_FILE = "nonfinite.jsonl"
_SAMPLE_CHARS = 500


class NonFiniteError(RuntimeError):
    """Too many steps had a non-finite loss, gradient or reward; the run was stopped."""


class NonFiniteGuard(TrainerCallback):
    def __init__(self, max_steps: int = 3, run_dir: str | Path | None = None):
        self.max_steps = max_steps
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.count = 0
        self.tripped = False
        self.events: list[dict] = []  # one per bad step: {"step", "problems": [...]}
        self._pending: list[dict] = []

    # ---- called by the trainer during a step -------------------------------------------------
    def flag(self, kind: str, **detail) -> None:
        """Something non-finite in the current step: `kind` is 'loss', 'reward' or 'gradient'."""
        self._pending.append({"kind": kind, **detail})

    @property
    def step_is_bad(self) -> bool:
        return bool(self._pending)

    # ---- TrainerCallback ---------------------------------------------------------------------
    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        params = [p for p in model.parameters() if p.requires_grad and p.grad is not None] if model else []
        if params and not self._pending and not grads_are_finite(params):
            self.flag("gradient", detail="a gradient is NaN or inf although the loss is finite")
        if self._pending:
            for p in params:
                p.grad = None  # the optimizer skips parameters without a gradient: no update at all

    def on_step_end(self, args, state, control, **kw):
        if not self._pending:
            return
        self.count += 1
        event = {"step": state.global_step, "count": self.count, "problems": self._pending}
        self._pending = []
        self.events.append(event)
        logger.warning("step %d: non-finite %s; update skipped (%d of at most %d such steps): %.800s",
                       state.global_step, "/".join(p["kind"] for p in event["problems"]), self.count,
                       self.max_steps, json.dumps(event["problems"], default=str))
        if self.run_dir is not None:
            with open(self.run_dir / NONFINITE_FILE, "a") as f:
                f.write(json.dumps(event, default=str) + "\n")
        if self.count >= self.max_steps:
            self.tripped = True
            control.should_training_stop = True
            logger.error("stopping: %d steps had a non-finite loss, gradient or reward", self.count)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is not None and "train_runtime" not in logs:
            logs["nonfinite_steps"] = self.count

    def message(self) -> str:
        steps = [e["step"] for e in self.events]
        where = f"; details in {self.run_dir / NONFINITE_FILE}" if self.run_dir else ""
        return (f"{self.count} step(s) had a non-finite loss, gradient or reward (steps {steps}); "
                f"grpo.max_nonfinite_steps={self.max_steps} reached{where}. Check the rewards, lower "
                "grpo.learning_rate, or raise grpo.max_nonfinite_steps")


def find_guard(callbacks) -> NonFiniteGuard | None:
    return next((c for c in callbacks if isinstance(c, NonFiniteGuard)), None)


def grads_are_finite(params) -> bool:
    flags = [torch.isfinite(p.grad).all() for p in params]
    return bool(torch.stack(flags).all()) if flags else True


def is_finite(x) -> bool:
    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x).all())
    return math.isfinite(float(x))


def bad_rows(inputs: dict) -> list[int]:
    """Rows of a prepared GRPO batch holding a NaN/inf in any per-row float tensor."""
    ids = inputs.get("completion_ids")
    n = ids.size(0) if isinstance(ids, torch.Tensor) else None
    bad = None
    for v in inputs.values():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() >= 1 and v.size(0) == n:
            row_bad = ~torch.isfinite(v.reshape(n, -1)).all(dim=1)
            bad = row_bad if bad is None else bad | row_bad
    return [] if bad is None else bad.nonzero().flatten().tolist()


def loss_sample(inputs: dict, decode) -> dict:
    """The offending sample of a non-finite loss: rows with non-finite inputs, else the first row."""
    rows = bad_rows(inputs)
    ids = inputs.get("completion_ids")
    row = rows[0] if rows else 0
    text = decode(ids[row].tolist()) if isinstance(ids, torch.Tensor) and ids.size(0) else ""
    return {"rows": rows or "none with non-finite inputs (the model itself produced it)",
            "sample_row": row, "completion": text[:_SAMPLE_CHARS]}


def reward_problems(rewards_per_func: torch.Tensor, completions: list, offset: int = 0) -> list[int]:
    """Local rows whose reward is not finite: every function gave NaN (no score) or any gave inf."""
    no_score = torch.isnan(rewards_per_func).all(dim=1)
    inf = torch.isinf(rewards_per_func).any(dim=1)
    rows = (no_score | inf).nonzero().flatten().tolist()
    return [r - offset for r in rows if 0 <= r - offset < len(completions)]
