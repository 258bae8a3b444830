"""The arms of `reasontune demo --compare`: what each trains, sized to one budget of training seconds.

Two axes (issue 38): every arm gets the same training seconds, and every row counts the labels it learned from
(runs/labels.py): worked solutions (SFT examples, GRPO problems whose reference working a reward read) and
reference answers (GRPO's problems, expert iteration's sampled problems). The primer is the recipe's own SFT
warm-up (warmup.examples, warmup.epochs); "all worked solutions" is every training row that has one.

Training seconds, one definition: the seconds inside trainer.train() for SFT and GRPO (GRPO's include its
generation), and for expert iteration the seconds of its rounds (sampling, filtering and the round's SFT: the
sampling is what GRPO's generation is, so leaving it out would give expert iteration free minutes).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from reasontune.config import ConfigError, RunConfig, override

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arm:
    sft: bool  # an SFT stage first (the primer, or more worked solutions: `updates` says which)
    then: str | None  # None, "grpo" or "expert": what trains after it, for the rest of the budget
    help: str


ARMS = {
    # the first three are the compare as it was before issue 38 (still the default)
    "sft_then_grpo": Arm(True, "grpo", "the recipe as written, its warm-up then its GRPO (the demo's own run; its "
                         "training seconds are the budget unless one is given)"),
    "grpo_only": Arm(False, "grpo", "GRPO from the base model with the recipe's rewards"),
    "sft_only": Arm(True, None, "SFT only: more distinct worked solutions first, then more epochs"),
    "primer_only": Arm(True, None, "the primer (the recipe's warm-up examples) for more epochs"),
    "primer_expert": Arm(True, "expert", "the primer, then expert iteration (answers only)"),
    "primer_grpo_answers": Arm(True, "grpo", "the primer, then GRPO with rewards.answers_only"),
    "primer_grpo_reference": Arm(True, "grpo", "the primer, then GRPO whose step_check reads the reference working"),
    "sft_all": Arm(True, None, "SFT on all worked solutions, more epochs as the budget allows"),
    "sft_all_grpo": Arm(True, "grpo", "one epoch of SFT on all worked solutions, then GRPO with the recipe's rewards"),
}
# `demo --compare` without --arms: the three arms it has always run (sft_then_grpo is the demo's own run)
DEFAULT_ARMS = ("sft_then_grpo", "grpo_only", "sft_only")
# issue 38's compare on two axes: `--arms` with these six
LABEL_ARMS = ("primer_only", "primer_expert", "primer_grpo_answers", "primer_grpo_reference", "sft_all",
              "sft_all_grpo")
STEP_CHECK = "step_check"  # the process reward that reads the reference working (rewards/steps.py)
WORK_CHECK = "work_check"  # the label-free one (rewards/workcheck.py), which the reference arm swaps for step_check


def parse_arms(text: str | None) -> tuple[str, ...]:
    """`--arms a,b,...` -> the arm names in order, without repeats; None -> DEFAULT_ARMS. A ConfigError names the
    arms on offer (raised before the demo or a model loads)."""
    if text is None:
        return DEFAULT_ARMS
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in ARMS]
    if bad or not names:
        raise ConfigError(f"--arms {text!r}: {'unknown arm(s) ' + ', '.join(bad) if bad else 'no arm named'}; use a "
                          f"comma-separated subset of {', '.join(ARMS)}")
    return tuple(dict.fromkeys(names))


def plan_arms(plan: dict, cfg: RunConfig, worked_rows: int) -> dict:
    """The label arms' sizes, added to plan_from's: the primer's epochs that fill the budget, all worked rows."""
    primer = max(1, min(cfg.warmup.examples, worked_rows))
    per_example = plan.get("sft_seconds_per_example")
    passes = plan["budget_s"] / per_example if per_example else primer * cfg.warmup.epochs
    return {"primer_examples": primer, "primer_epochs": round(max(cfg.warmup.epochs, passes / primer), 3),
            "sft_all_examples": max(1, worked_rows),
            "sft_all_epochs": round(max(1.0, passes / max(1, worked_rows)), 3)}


def arm_updates(cfg: RunConfig, arm: str, plan: dict) -> dict:
    """The arm's settings over the recipe's (`override` form). The TimeBudget stops every stage at the budget."""
    big = cfg.grpo.max_steps + 1  # no GRPO checkpoint inside an arm: only its adapter is kept
    if arm == "grpo_only":  # sized so the LR schedule fits the run
        return {"grpo.max_steps": plan["grpo_steps"], "grpo.save_steps": plan["grpo_steps"] + 1}
    if arm == "sft_only":
        return {"warmup.examples": plan["sft_examples"], "warmup.epochs": plan["sft_epochs"]}
    if arm == "primer_only":
        return {"warmup.examples": plan["primer_examples"], "warmup.epochs": plan["primer_epochs"]}
    if arm == "sft_all":
        return {"warmup.examples": plan["sft_all_examples"], "warmup.epochs": plan["sft_all_epochs"]}
    if arm == "sft_all_grpo":
        return {"warmup.examples": plan["sft_all_examples"], "warmup.epochs": 1.0, "grpo.save_steps": big}
    if arm == "primer_expert":
        return {"method": "expert_iteration", "rewards.answers_only": True}
    if arm == "primer_grpo_answers":
        return {"rewards.answers_only": True, "grpo.save_steps": big}
    if arm == "primer_grpo_reference":
        return {**reference_rewards(cfg), "grpo.save_steps": big}
    return {"grpo.save_steps": big}  # sft_then_grpo: the recipe as written


def reference_rewards(cfg: RunConfig) -> dict:
    """The recipe's rewards with step_check reading the reference working: step_check in place of the label-free
    work_check (the same role, one process reward per arm), else added (weight 1.0) when the recipe lacks it, and
    rewards.answers_only off."""
    from reasontune.rewards import resolved_rewards

    r = resolved_rewards(cfg.rewards)
    names, weights = [x["name"] for x in r], [x["weight"] for x in r]
    names = [STEP_CHECK if n == WORK_CHECK else n for n in names]
    if STEP_CHECK not in names:
        names, weights = names + [STEP_CHECK], weights + [1.0]
    return {"rewards.names": names, "rewards.weights": weights, "rewards.answers_only": False}


def arm_config(cfg: RunConfig, arm: str, plan: dict, out_dir: str) -> RunConfig:
    """The recipe with the arm's settings, into its own folder. grpo.max_seconds is dropped in every arm but the
    calibrating one: the compare's budget stops them (override() skips None, so it is replaced here)."""
    acfg = override(cfg, {**arm_updates(cfg, arm, plan), "output_dir": out_dir, "overwrite": True})
    if arm != "sft_then_grpo":
        acfg = dataclasses.replace(acfg, grpo=dataclasses.replace(acfg.grpo, max_seconds=None))
    return acfg


def expert_stage(cfg: RunConfig, model, tok, train, run, left: float | None) -> dict:
    """Expert iteration (stages/expert.py) for `left` seconds (None: expert_iteration.rounds); its labels are the
    distinct problems it sampled (answers), none of them worked solutions."""
    from reasontune.runs.labels import expert_labels, total
    from reasontune.stages.expert import expert_iteration
    from reasontune.stages.train import GracefulStop

    if left is not None and left <= 0:
        return {"steps": 0, "rounds": 0, "seconds": 0.0, "stopped_by_budget": True, "labels": total(0, expert_labels(0))}
    ecfg = dataclasses.replace(cfg, grpo=dataclasses.replace(cfg.grpo, max_seconds=left))
    out = expert_iteration(ecfg, run, model, tok, train, GracefulStop(), sft_examples=0)  # the SFT stage counts its own
    return {"steps": out["rounds"], "rounds": out["rounds"], "seconds": out["expert_seconds"],
            "stopped_by_budget": out["stopped_by_time_budget"], "labels": out["labels"]}


def steps_run(stages: dict) -> str:
    """The table's 'steps run': SFT's optimizer steps, GRPO's, expert iteration's rounds."""
    parts = []
    if "sft" in stages:
        parts.append(f"SFT {stages['sft'].get('steps', 'n/a')}")
    if "grpo" in stages:
        parts.append(f"GRPO {stages['grpo'].get('steps', 'n/a')}")
    if "expert" in stages:
        parts.append(f"EI {stages['expert'].get('rounds', 'n/a')} rounds")
    return " + ".join(parts) or "none"
