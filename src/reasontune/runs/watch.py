"""The watcher: reads the metrics a run logs and says, once per condition, what is going wrong and what fixes it.

GRPO's failure modes show in the metrics TRL logs (`frac_reward_zero_std`, `completions/clipped_ratio`,
`rewards/<name>/mean`, `entropy`, `completions/mean_length`) and in reasontune's own (`nonfinite_steps`
from guards.py), but only to someone who knows where to look. `Watch` checks them over a sliding window
of `grpo.watch_window` logged steps; a condition that fires is logged (logging.warning), appended to
RUN/status.json `warnings`, and, when it is named in `grpo.stop_on`, stops the run with a checkpoint.
Trend conditions compare the latest window with the first one, so they need two windows of rows: a run of
17 logged steps at the default window of 10 never checks them. So each check also says when it could not
run (too few logged steps, no reward to read), and RUN/status.json `watched` records, per stage, which
conditions were checked and why the others were not; the report says only what was checked. A run with no
signal from its start (every group scored all alike on each of the first ZERO_SIGNAL_STEPS logged steps)
warns at once, not after a window: an 8-step run on a task the model never solves used to end silent.

Which reward says "right answer" and which says "format" is measured, not guessed from names:
`reward_scales` scores three probe completions of one training row (its right answer in the format, a
wrong answer in the format, an empty completion; for a code row its worked solution as the program, and
`pass`) with the run's own reward functions. A reward whose
score depends on the answer is an answer reward; one that pays a formatted completion over an empty one,
whatever the answer, is a format reward. Its logged mean is then read as a level in [0, 1]: 0 at its
lowest probe score, 1 at its right (or formatted) score. For a reward that only tells right from wrong
the answer level is the fraction of right completions.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from transformers import TrainerCallback

from reasontune.config import WATCH_CONDITIONS
from reasontune.runs.metrics import ZERO_VARIANCE_MAX

logger = logging.getLogger(__name__)

# ---- thresholds: each with its reason ---------------------------------------------------------------
# zero_variance: the window's mean `frac_reward_zero_std` above ZERO_VARIANCE_MAX (0.90, runs/metrics.py, advise's rule too):
# more than 9 groups in 10 give GRPO no gradient, the rule `reasontune advise` applies before training.
ZERO_SIGNAL_STEPS = 3  # ...or every group alike on each of the first 3 logged steps: the loss is exactly 0, the
# policy has not moved since the start, so its next groups are drawn from the same model (no signal to come)
HARD_LEVEL = 0.10  # answer level at or below: the uniform groups are all wrong (a random model scores 0.03)
EASY_LEVEL = 0.90  # answer level at or above: the uniform groups are all right (advise's PASS_AT_1_MAX)
NO_RIGHT_LEVEL = 0.05  # answer level at or below on every step of the window: almost no completion is right.
# A random model's recipe rewards sit at 0.033 (answer_check -2.0 of -2.5..5.0; number_check at its floor).
CLIPPED_MAX = 0.20  # mean clipped ratio at or above: one completion in five is cut at the token limit and
# scored as if it had no answer, whatever it was going to say (TRL #5697: 97-99% cut, rewards ~0).
FORMAT_LEVEL_MIN = 0.50  # format level below this (most samples miss the format: advise's FORMAT_RATE_MIN)...
FORMAT_RISE_MIN = 0.10  # ...and risen by less than this since the first window: the format is not being learnt
ENTROPY_COLLAPSE_FRAC = 0.50  # entropy below half its first window's: the demo's fell 0.10-0.13 -> 0.05-0.06
# over 28 steps while its zero-variance groups rose from 0.15 to 0.35: samples of a group become copies.
ENTROPY_FLOOR = 0.02  # nats per token, whatever the start: 0.6 nats over a 30-token answer (the demo's length),
# so a group's samples are nearly the same sequence
ENTROPY_RISE_FACTOR = 3.0  # entropy above 3x its first window's: GRPO sharpens, so entropy falls in a healthy
# run (the demo's halved); tripling means the updates are breaking the model (verl #781)
LENGTH_SHRINK_FRAC = 0.70  # mean completion length below 70% of its first window's...
ACCURACY_FLAT = 0.05  # ...while the answer level moved less than 5 points: the working is dropped, not the
# waste (the demo's GRPO once learned to answer two-step problems in one line, accuracy unchanged)
# low_learning_rate: LoRA needs about 10x the learning rate of a full fine-tune (Thinking Machines, "LoRA
# Without Regret", 2025, at alpha 32; TRL's guide: GRPO full fine-tune 1e-6, LoRA 1e-5; TRL #2872). The LR is
# rescaled to that alpha-32 convention (PEFT multiplies B @ A by alpha / r, or alpha / sqrt(r) with rsLoRA,
# and the paper found the best LR rank-independent at alpha 32, i.e. a scale of 32 / r) and compared with
# LORA_LR_MIN_X x the full fine-tune LR: 3x is the geometric middle of 1x (a full fine-tune's LR) and 10x.
FULL_FT_LR = {"grpo": 1e-6, "warmup": 2e-5}  # TRL's guide for GRPO; TRL's SFTConfig default for SFT
LORA_LR_MIN_X = 3.0
REF_ALPHA = 32
PROBE_EPS = 1e-6  # probe scores closer than this count as equal

# Conditions each stage checks: the SFT warm-up has no groups, rewards or rollouts.
# Expert iteration logs one row per round (stages/expert.py): its pass rate is an answer level (`rewards/verified`),
# its samples' lengths and cuts are GRPO's keys; it has no groups to score alike and no entropy of its samples.
STAGE_CONDITIONS = {"grpo": WATCH_CONDITIONS, "warmup": ("low_learning_rate", "nonfinite"),
                    "expert_iteration": ("truncation", "no_right_answers", "length_shrink", "nonfinite")}


@dataclass
class RewardScale:
    """How to read a reward's logged mean: `kind` 'answer' or 'format'; level 0 at `low`, 1 at `high`."""

    kind: str
    low: float
    high: float

    def level(self, mean: float) -> float:
        return min(1.0, max(0.0, (mean - self.low) / (self.high - self.low)))


def probe_completions(row: dict, fmt, eos: str | None) -> list[str] | None:
    """[right, wrong, empty] completions of `row` in the format. A code row (one with tests) is right with its
    worked solution as the answer block's program and wrong with `pass` (defines nothing, prints nothing); a
    code row without a worked solution has no right probe: None. Any other row: its answer against -1."""
    from reasontune.data.code import fenced, is_code_row
    from reasontune.models.prompting import render_target

    if is_code_row(row):
        worked = str(row.get("worked") or "").strip()
        if not worked:
            return None
        right, wrong = fenced(worked), fenced("pass")
    else:
        right = str(row["answer"])
        wrong = "-1" if right.strip() != "-1" else "-2"
    return [render_target("", right, fmt, eos or ""), render_target("", wrong, fmt, eos or ""), ""]


def reward_scales(funcs, weights, row: dict, fmt, eos: str | None) -> dict[str, RewardScale]:
    """Probe each reward (weight != 0) with a right, a wrong and an empty completion of `row` (a training row
    with `answer`, or with tests and a worked solution). A reward that raises on the probe is left unread
    (logged), not guessed."""
    comps = probe_completions(row, fmt, eos)
    if comps is None:
        logger.info("watch: the first training row is code without a worked solution: no right program to probe "
                    "the rewards with; their means are not read")
        return {}
    cols = {k: [v] * 3 for k, v in row.items() if k != "prompt"}
    out = {}
    for fn, w in zip(funcs, weights):
        name = getattr(fn, "__name__", str(fn))
        if not callable(fn) or float(w) == 0.0:
            continue
        raw = getattr(fn, "__wrapped__", fn)
        if not str(getattr(raw, "__module__", "")).startswith("reasontune."):
            # a user's reward may have side effects or cost (a judge model, a log): it is not called off the run
            logger.info("watch: reward %r is not reasontune's; its mean is not read", name)
            continue
        try:  # the raw function: a failing probe must not count as a reward error of the run
            right, bad, empty = raw(comps, prompts=[row.get("prompt")] * 3, **cols)
        except Exception as e:
            logger.info("watch: reward %r failed on the probe (%s: %s); its mean is not read", name, type(e).__name__, e)
            continue
        if any(v is None for v in (right, bad, empty)):
            continue
        if right - bad > PROBE_EPS:
            out[name] = RewardScale("answer", min(bad, empty), right)
        elif right - empty > PROBE_EPS:
            out[name] = RewardScale("format", empty, right)
    return out


def trainer_reward_scales(trainer, cfg, tokenizer) -> dict[str, RewardScale]:
    """reward_scales for a built GRPO trainer: its reward functions and weights, its first training row."""
    funcs = list(getattr(trainer, "reward_funcs", []))
    weights = getattr(trainer, "reward_weights", None)
    weights = weights.tolist() if weights is not None else [1.0] * len(funcs)
    if not funcs or len(trainer.train_dataset) == 0:
        return {}
    return reward_scales(funcs, weights, trainer.train_dataset[0], cfg.format,
                         cfg.rewards.eos_token or tokenizer.eos_token)


# ---- the conditions: pure functions of the logged rows --------------------------------------------------
def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


class Window:
    """The rows logged so far and the sliding window over them."""

    def __init__(self, rows: list[dict], size: int, scales: dict[str, RewardScale]):
        self.rows, self.size, self.scales = rows, size, scales

    def values(self, key: str) -> list[float]:
        return [v for v in (_num(r.get(key)) for r in self.rows) if v is not None]

    def last(self, key: str) -> list[float] | None:
        vals = self.values(key)
        return vals[-self.size:] if len(vals) >= self.size else None

    def first_and_last(self, key: str) -> tuple[float, float] | None:
        """Means of the first and the latest window of `key`, once two windows of values exist."""
        vals = self.values(key)
        if len(vals) < 2 * self.size:
            return None
        return _mean(vals[:self.size]), _mean(vals[-self.size:])

    def level(self, row: dict, kind: str) -> float | None:
        return _mean([s.level(_num(row.get(f"rewards/{n}/mean"))) for n, s in self.scales.items()
                      if s.kind == kind and _num(row.get(f"rewards/{n}/mean")) is not None])

    def levels(self, kind: str) -> list[float]:
        return [v for v in (self.level(r, kind) for r in self.rows) if v is not None]


def _needs(w: Window, key: str, steps: int, what: str = "") -> str | None:
    """Why a check cannot run yet: fewer than `steps` logged values of `key` (None: it can)."""
    have = len(w.values(key))
    return None if have >= steps else f"{what}needs {steps} logged steps of {key}, {have} logged"


def _zero_variance(w: Window):
    vals = w.values("frac_reward_zero_std")
    early = len(vals) >= ZERO_SIGNAL_STEPS and min(vals[:ZERO_SIGNAL_STEPS]) >= 1.0
    zs = vals[:ZERO_SIGNAL_STEPS] if early else w.last("frac_reward_zero_std")
    if zs is None:
        ran = f"; the no-signal rule (its first {ZERO_SIGNAL_STEPS} steps) ran" if len(vals) >= ZERO_SIGNAL_STEPS else ""
        return _needs(w, "frac_reward_zero_std", w.size) + ran
    if _mean(zs) <= ZERO_VARIANCE_MAX:
        return None
    p = _mean(w.levels("answer")[:ZERO_SIGNAL_STEPS] if early else w.levels("answer")[-w.size:])
    figures = {"frac_reward_zero_std": round(_mean(zs), 3), "answer_level": None if p is None else round(p, 3),
               "window": len(zs), "first_steps": early}
    head = (f"every group scored all alike on each of the first {ZERO_SIGNAL_STEPS} logged steps: GRPO has had no "
            "signal since the start (loss 0, the policy unchanged)" if early else
            f"{_mean(zs):.0%} of groups scored all alike over the last {w.size} logged steps (above "
            f"{ZERO_VARIANCE_MAX:.0%}): GRPO learns nothing from them")
    if p is None:
        why = ("the task is too hard or too easy for this model (no answer reward was recognised to say which): "
               "run `reasontune advise` to measure pass@k")
    elif p <= HARD_LEVEL:
        why = (f"the task is too hard: the answer rewards sit at {p:.0%} of the way to a right answer. Run "
               "`reasontune advise`; train easier levels (data.difficulty) or --set grpo.curriculum=adaptive; "
               "teach the format first with --set warmup.kind=sft")
    elif p >= EASY_LEVEL:
        why = (f"the task is too easy: the answer rewards sit at {p:.0%} of a right answer. Use harder data "
               "(data.difficulty); `reasontune advise` measures the headroom")
    else:
        why = (f"prompts are either solved by every sample or by none (answer level {p:.0%}): --set "
               "grpo.curriculum=adaptive draws the levels with mixed groups; more samples per group "
               "(grpo.num_generations) or a higher grpo.temperature mix the groups")
    return figures, f"{head}; {why}"


def _truncation(w: Window):
    cs = w.last("completions/clipped_ratio")
    if cs is None:
        return _needs(w, "completions/clipped_ratio", w.size)
    if _mean(cs) < CLIPPED_MAX:
        return None
    m = _mean(cs)
    length = _mean(w.values("completions/max_length")[-w.size:])
    return ({"clipped_ratio": round(m, 3), "max_length": length, "window": w.size},
            f"{m:.0%} of completions were cut at the token limit over the last {w.size} logged steps (at or "
            f"above {CLIPPED_MAX:.0%}): a cut completion has no answer and scores as wrong. Raise "
            "grpo.max_completion_length (and model.max_seq_length), or ask for shorter working")


def _no_reward(w: Window, kind: str) -> str | None:
    if not any(s.kind == kind for s in w.scales.values()):
        return f"no {kind} reward recognised (watch.reward_scales) to read"
    return None


def _no_format(w: Window):
    lv = w.levels("format")
    if len(lv) < 2 * w.size:
        return _no_reward(w, "format") or f"a trend: needs {2 * w.size} logged steps of a format reward, {len(lv)} logged"
    first, now = _mean(lv[:w.size]), _mean(lv[-w.size:])
    if now >= FORMAT_LEVEL_MIN or now - first >= FORMAT_RISE_MIN:
        return None
    return ({"format_level_first": round(first, 3), "format_level_now": round(now, 3), "window": w.size},
            f"the format rewards are not rising: {first:.0%} -> {now:.0%} of a well-formed answer (below "
            f"{FORMAT_LEVEL_MIN:.0%}, up by less than {FORMAT_RISE_MIN:.0%}): the model is not learning the "
            "format. Teach it first with --set warmup.kind=sft, or check the markers (format.*) and the prompt")


def _no_right_answers(w: Window):
    lv = w.levels("answer")
    if len(lv) < w.size:
        return _no_reward(w, "answer") or f"needs {w.size} logged steps of an answer reward, {len(lv)} logged"
    if max(lv[-w.size:]) > NO_RIGHT_LEVEL:
        return None
    return ({"answer_level_max": round(max(lv[-w.size:]), 3), "window": w.size},
            f"the answer rewards stayed at their minimum for {w.size} logged steps (at most "
            f"{max(lv[-w.size:]):.0%} of the way to a right answer): almost no completion is right, so there is "
            "nothing to reinforce. Run `reasontune advise`; use easier levels (data.difficulty), "
            "--set grpo.curriculum=adaptive, a warm-up (--set warmup.kind=sft) or a stronger model")


def _entropy(w: Window, rising: bool):
    fl = w.first_and_last("entropy")
    if fl is None:
        return _needs(w, "entropy", 2 * w.size, "a trend: ")
    first, now = fl
    figures = {"entropy_first": round(first, 4), "entropy_now": round(now, 4), "window": w.size}
    if rising and now > ENTROPY_RISE_FACTOR * first:
        return figures, (f"the entropy rose from {first:.3f} to {now:.3f} nats per token (over "
                         f"{ENTROPY_RISE_FACTOR:g}x its start): the updates are breaking the model. Lower "
                         "grpo.learning_rate, add a KL term (grpo.beta), and check that no reward pays for gibberish")
    if not rising and (now < ENTROPY_COLLAPSE_FRAC * first or now < ENTROPY_FLOOR):
        return figures, (f"the entropy fell from {first:.3f} to {now:.3f} nats per token (below "
                         f"{ENTROPY_COLLAPSE_FRAC:.0%} of its start or {ENTROPY_FLOOR}): the samples of a group "
                         "become copies and stop teaching. Raise grpo.temperature, lower grpo.learning_rate, or "
                         "add a KL term (grpo.beta)")
    return None


def _length_shrink(w: Window):
    fl, lv = w.first_and_last("completions/mean_length"), w.levels("answer")
    if fl is None:
        return _needs(w, "completions/mean_length", 2 * w.size, "a trend: ")
    if len(lv) < 2 * w.size:
        return _no_reward(w, "answer") or f"a trend: needs {2 * w.size} logged steps of an answer reward, {len(lv)} logged"
    (first, now), a0, a1 = fl, _mean(lv[:w.size]), _mean(lv[-w.size:])
    if now >= LENGTH_SHRINK_FRAC * first or abs(a1 - a0) >= ACCURACY_FLAT:
        return None
    return ({"mean_length_first": round(first, 1), "mean_length_now": round(now, 1),
             "answer_level_first": round(a0, 3), "answer_level_now": round(a1, 3), "window": w.size},
            f"completions shrank from {first:.0f} to {now:.0f} tokens (below {LENGTH_SHRINK_FRAC:.0%}) while the "
            f"answer level stayed at {a0:.0%} -> {a1:.0%}: the model is dropping its working, not its waste. "
            "Reward the working (--reward step_check), lower grpo.learning_rate, or check for a length penalty")


def _nonfinite(w: Window):
    row = w.rows[-1] if w.rows else {}
    n, loss = _num(row.get("nonfinite_steps")) or 0, row.get("loss")
    bad_loss = isinstance(loss, float) and not math.isfinite(loss)
    if n <= 0 and not bad_loss:
        return None
    return ({"nonfinite_steps": int(n), "loss": loss if not bad_loss else str(loss)},
            f"{int(n) or 'a'} step(s) had a non-finite loss, gradient or reward (their updates are skipped; "
            "details in RUN/nonfinite.jsonl). Lower the learning rate, try --set grpo.bf16=false, and check the "
            "rewards; grpo.max_nonfinite_steps stops the run")


# Each check: None (checked, silent), (figures, message) (fired), or a str: why it could not run on these rows.
CHECKS = {"zero_variance": _zero_variance, "truncation": _truncation, "no_format": _no_format,
          "no_right_answers": _no_right_answers, "entropy_collapse": lambda w: _entropy(w, False),
          "entropy_rise": lambda w: _entropy(w, True), "length_shrink": _length_shrink, "nonfinite": _nonfinite}
assert set(CHECKS) | {"low_learning_rate"} == set(WATCH_CONDITIONS), "config.WATCH_CONDITIONS and CHECKS differ"


def check_learning_rate(lr: float, r: int, alpha: float, rslora: bool, stage: str):
    """(figures, message) when a LoRA learning rate is far below what LoRA needs, else None."""
    scale = alpha / math.sqrt(r) if rslora else alpha / r
    effective = lr * scale / (REF_ALPHA / r)  # the same update at the paper's alpha-32 convention
    least = LORA_LR_MIN_X * FULL_FT_LR[stage]
    if effective >= least:
        return None
    field = "grpo.learning_rate" if stage == "grpo" else "warmup.learning_rate"
    return ({"learning_rate": lr, "lora_r": r, "lora_alpha": alpha, "rslora": rslora, "at_alpha_32": effective,
             "least": least},
            f"{field}={lr:g} is far below what LoRA needs at r={r}, alpha={alpha:g} ({effective:.2g} at the "
            f"alpha-32 convention, under {LORA_LR_MIN_X:g}x a full fine-tune's {FULL_FT_LR[stage]:g}): LoRA needs "
            f"about 10x a full fine-tune's learning rate. Raise {field} to about "
            f"{10 * FULL_FT_LR[stage] * (REF_ALPHA / r) / scale:.1g}")


def lora_shape(model) -> tuple[int, float, bool] | None:
    """(r, alpha, rslora) of the model's active LoRA adapter, or None for a model without one."""
    cfgs = getattr(model, "peft_config", None) or {}
    active = getattr(model, "active_adapter", "default")
    c = cfgs.get(active if isinstance(active, str) else "default") or next(iter(cfgs.values()), None)
    if c is None or not hasattr(c, "r"):
        return None
    return int(c.r), float(c.lora_alpha), bool(getattr(c, "use_rslora", False))


# ---- the callback ---------------------------------------------------------------------------------------
class Watch(TrainerCallback):
    """Checks every logged row; warns once per condition; stops (with a checkpoint) on those in `stop_on`.

    Every rank sees the same gathered metrics, so every rank takes the same stop decision; only rank 0
    writes RUN/status.json. `scales` (reward_scales) is set once the trainer and its rewards exist.
    `checked`: the conditions evaluated at least once; `not_checked`: why each other one could not be."""

    def __init__(self, window: int, stop_on=(), run=None, stage: str = "grpo", scales=None):
        self.window, self.stop_on, self.run, self.stage = window, tuple(stop_on), run, stage
        self.scales: dict[str, RewardScale] = dict(scales or {})
        self.rows: list[dict] = []
        self.warnings: list[dict] = []  # {"condition", "stage", "step", "message", "figures"}
        self.stopped: dict | None = None  # the warning that stopped the run
        self._stop_at_next_step = False
        self.checked: set[str] = set()
        self.not_checked: dict[str, str] = {c: "no logged step" for c in STAGE_CONDITIONS[stage]}
        self.not_checked["low_learning_rate"] = "the run did not start"

    @property
    def fired(self) -> set[str]:
        return {w["condition"] for w in self.warnings}

    def _ran(self, name: str, why: str | None = None) -> None:
        """Note that `name` was evaluated (why=None) or could not be (why)."""
        if why is None:
            self.checked.add(name)
            self.not_checked.pop(name, None)
        elif name not in self.checked:
            self.not_checked[name] = why

    def coverage(self) -> dict:
        """What status.json `watched` records for this stage: which conditions ran on how many logged steps."""
        order = STAGE_CONDITIONS[self.stage]
        return {"window": self.window, "logged_steps": len(self.rows),
                "checked": [c for c in order if c in self.checked],
                "not_checked": {c: self.not_checked[c] for c in order if c in self.not_checked}}

    def observe(self, logs: dict, step: int) -> list[dict]:
        """Add one logged row; return the warnings it fires (the callback's logic, without a Trainer)."""
        self.rows.append({k: v for k, v in logs.items() if isinstance(v, (int, float)) or v is None})
        w = Window(self.rows, self.window, self.scales)
        out = []
        for name in STAGE_CONDITIONS[self.stage]:
            check = CHECKS.get(name)
            if check is None or name in self.fired:
                continue
            hit = check(w)
            self._ran(name, hit if isinstance(hit, str) else None)
            if isinstance(hit, tuple):
                out.append(self._record(name, step, *hit))
        return out

    def _record(self, condition: str, step: int, figures: dict, message: str) -> dict:
        entry = {"condition": condition, "stage": self.stage, "step": step, "message": message, "figures": figures}
        self.warnings.append(entry)
        logger.warning("watch (%s, step %d): %s [%s]", self.stage, step, message, condition)
        if condition in self.stop_on and self.stopped is None:
            self.stopped = entry
            logger.warning("stopping at step %d with a checkpoint: grpo.stop_on names %s", step, condition)
        return entry

    def _write(self, state, entries: list[dict]) -> None:
        if self.run is not None and state.is_world_process_zero:
            for e in entries:
                self.run.add_warning(e)

    def on_train_begin(self, args, state, control, model=None, **kw):
        shape = lora_shape(model) if model is not None else None
        self._ran("low_learning_rate", "no LoRA adapter: a full fine-tune's learning rate is not checked"
                  if shape is None else None)
        if shape is None or "low_learning_rate" in self.fired:
            return
        hit = check_learning_rate(args.learning_rate, *shape, stage=self.stage)
        if hit is not None:
            self._write(state, [self._record("low_learning_rate", state.global_step, *hit)])
            self._stop_at_next_step = self.stopped is not None

    def on_step_end(self, args, state, control, **kw):
        if self._stop_at_next_step:  # flags set at train begin are reset before the first step
            control.should_save = control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        if self.run is not None and state.is_world_process_zero:
            self.run.set_watched(self.stage, self.coverage())

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "train_runtime" in logs:
            return
        was_stopped = self.stopped is not None
        self._write(state, self.observe(logs, state.global_step))
        if self.stopped is not None and not was_stopped:
            control.should_save = True  # _maybe_log_save_evaluate saves right after on_log
            control.should_training_stop = True
