"""Where a GRPO step's time goes, logged per optimizer step as `time/...` keys (metrics.jsonl, the report).

It instruments a trainer instance, TRL's own GRPOTrainer as well as ours (bench/grpo_step.py times both sides the
same way), by wrapping four of its methods and listening for the optimizer step:

    time/generation        sampling the completions (TRL: _generate_single_turn), of which, with our decode,
    time/prefill             the prompts' forward pass into the KV cache
    time/decode              the token-by-token loop
    time/rewards           the reward functions (_calculate_rewards)
    time/scoring_other     the rest of _generate_and_score_completions: old/reference log-probs when TRL needs
                           them, tokenizing, padding, advantages
    time/forward_backward  the micro-batches' loss forward and backward (training_step less any scoring in it)
    time/optimizer         optimizer.step (with gradient clipping: TRL clips before it)
    time/refill            with grpo.dynamic_sampling only (dynamic.py): the refill rounds, whose generation,
                           rewards and the rest are also in the three parts above (0 in a step that did not refill)

and the rows: `rows/trained` (completions whose loss ran forward and backward) and `rows/skipped` (zero-advantage
rows the trainer skipped exactly, trainer.py). A step's parts sum to a little less than its `step_time`: the
callbacks, the data loader and the logging are in no part.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict

from transformers import TrainerCallback

PARTS = ("generation", "prefill", "decode", "rewards", "scoring_other", "forward_backward", "optimizer")


class StepTimes(TrainerCallback):
    """Attach with `StepTimes().attach(trainer)`; each optimizer step's figures go to the trainer's metrics, which
    TRL logs (and averages, when logging_steps > 1) with the step."""

    def __init__(self):
        self.acc: dict[str, float] = defaultdict(float)  # this step's seconds and row counts, reset at its end
        self.trainer = None
        self._opt_t = None

    def attach(self, trainer) -> StepTimes:
        self.trainer = trainer
        trainer.step_timings = self.acc  # our decode (engines/generation.py) adds prefill/decode here
        for method, part in (("_generate_single_turn", "generation"), ("_calculate_rewards", "rewards"),
                             ("_generate_and_score_completions", "scoring"), ("training_step", "train_step")):
            setattr(trainer, method, self._timed(getattr(trainer, method), part))
        trainer.compute_loss = self._counted(trainer.compute_loss)
        trainer.add_callback(self)
        return self

    def _timed(self, fn, part: str):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.acc[part] += time.perf_counter() - t0

        return run

    def _counted(self, compute_loss):
        """compute_loss(model, inputs, ...) sees each micro-batch's prepared rows (training_step sees the raw
        generation batch): count them here, before our trainer drops its zero-advantage rows."""
        @functools.wraps(compute_loss)
        def run(model, inputs, *args, **kwargs):
            if model.training and isinstance(inputs, dict) and inputs.get("completion_ids") is not None:
                self.acc["rows"] += int(inputs["completion_ids"].size(0))
            return compute_loss(model, inputs, *args, **kwargs)

        return run

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self._opt_t = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kw):
        if self._opt_t is not None:
            self.acc["optimizer"] += time.perf_counter() - self._opt_t
            self._opt_t = None

    def on_step_end(self, args, state, control, **kw):
        if self.trainer is None or not self.acc:
            return
        figures = breakdown(self.acc)
        metrics = self.trainer._metrics["train"]
        for key, value in figures.items():
            metrics[key].append(value)
        self.acc.clear()


def breakdown(acc: dict[str, float]) -> dict[str, float]:
    """The accumulated seconds of one step -> its `time/...` and `rows/...` figures (the derived parts too)."""
    a = defaultdict(float, acc)
    out = {"time/generation": a["generation"], "time/rewards": a["rewards"],
           # scoring wraps generation and rewards; training_step wraps the scoring of the step that generates
           "time/scoring_other": max(0.0, a["scoring"] - a["generation"] - a["rewards"]),
           "time/forward_backward": max(0.0, a["train_step"] - a["scoring"]),
           "time/optimizer": a["optimizer"],
           "rows/trained": a["rows"] - a["rows_skipped"], "rows/skipped": a["rows_skipped"]}
    if "prefill" in acc or "decode" in acc:
        out["time/prefill"], out["time/decode"] = a["prefill"], a["decode"]
    if "refill" in acc:
        out["time/refill"] = a["refill"]
    return out
