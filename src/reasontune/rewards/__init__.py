"""Verifiable rewards for GRPO: the recipe's four (faithful) and a `verified` preset that fixes them.

Public API (used by the trainer and the evaluator):

* `build_reward_funcs(cfg, fmt, eos_token=None)` -> (reward functions, weights) for TRL.
* `run_reward_funcs(cfg, eos_token, max_completion_length)`: the one reward set of a run, built the same
  way for train, eval and advise; `resolved_rewards(cfg.rewards)`: its names and weights (presets expanded).
* `extract_answer(text, fmt)`, `is_correct(pred, gold)`, `has_format(text, fmt)`.
* `grade(text, gold, fmt)` -> (extracted answer, right?): what evaluation counts as right.
* `code_rewards(cfg.rewards)`: the rewards that run a row's tests (code_tests, code_tests_binary);
  `is_code_run(cfg)`: whether a run has one, so trained on code rows with the code system prompt;
  `for_code_rows(cfg.rewards)`: the rewards that score code rows (code_tests when none of cfg's runs tests).
* `available()`, `PRESETS`, `register(name)` / `register_builder(name)` for new rewards.
* `errors` / `error_counts()`: failed samples per reward (see `wrap`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

from reasontune.config import ConfigError, FormatConfig, RewardsConfig
from reasontune.rewards import code as _code  # noqa: F401  (registers code_tests, code_tests_binary)
from reasontune.rewards import recipe as _recipe  # noqa: F401  (registers the recipe rewards)
from reasontune.rewards import steps as _steps  # noqa: F401  (registers step_check)
from reasontune.rewards import verified as _verified  # noqa: F401  (registers the verified rewards)
from reasontune.rewards import workcheck as _workcheck  # noqa: F401  (registers work_check)
from reasontune.rewards.check import DEFAULT_TIMEOUT_S, is_correct, parse_number
from reasontune.rewards.extract import completion_text, extract_answer, has_format
from reasontune.rewards.registry import (
    PRESET_WEIGHTS,
    PRESETS,
    REGISTRY,
    RewardContext,
    available,
    expand,
    is_dotted_path,
    load_dotted,
    register,
    register_builder,
)
from reasontune.rewards.rgscore import RG_COLUMNS, is_right, rg_columns
from reasontune.rewards.wrap import error_counts, errors, reset_errors, wrap_reward

logger = logging.getLogger(__name__)


def grade(text: str, gold: str, fmt: FormatConfig, rg_task: str | None = None,
          rg_entry: str | None = None) -> tuple[str | None, bool]:
    """(the answer extracted from `text`, whether it equals `gold`): the one definition of a right answer,
    shared by evaluation and the training curriculum. rg:TASK rows pass their `rg_columns(row)`: a
    non-numeric reference is then judged by reasoning-gym's own scorer (full credit only)."""
    pred = extract_answer(text, fmt)
    return pred, bool(pred is not None and is_right(pred, gold, DEFAULT_TIMEOUT_S, rg_task, rg_entry))


__all__ = [
    "PRESETS", "PRESET_WEIGHTS", "REGISTRY", "RewardContext", "available", "build_reward_funcs",
    "code_rewards", "for_code_rows", "is_code_run", "resolved_rewards", "run_reward_funcs",
    "completion_text", "error_counts", "errors", "extract_answer", "grade", "has_format", "is_correct",
    "parse_number", "RG_COLUMNS", "rg_columns", "register", "register_builder", "reset_errors", "wrap_reward",
]


def _build_one(name: str, ctx: RewardContext) -> tuple[Callable, str]:
    """The raw reward function for a registered name or a dotted path, and its metric name."""
    if name in REGISTRY or not is_dotted_path(name):
        return REGISTRY.get(name)(ctx), name
    fn = load_dotted(name)
    metric = getattr(fn, "__name__", None) or name.replace(":", ".").rsplit(".", 1)[-1]
    return fn, metric


def build_reward_funcs(
    cfg: RewardsConfig,
    fmt: FormatConfig,
    eos_token: str | None = None,
    *,
    max_completion_length: int | None = None,
    overlong_cache: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[list[Callable], list[float]]:
    """TRL reward functions and their weights for `cfg.names` (presets expanded).

    Each function is wrapped by `wrap_reward` (errors counted, `cfg.on_error` applied) and
    has `__name__` set to the reward's name. `eos_token` falls back to `cfg.eos_token`.
    `overlong_soft` needs `max_completion_length`, from a preset too: without it the set would
    differ from the one another stage builds (ConfigError). Unknown names raise ConfigError
    listing the valid ones.
    """
    eos = eos_token if eos_token is not None else cfg.eos_token
    ctx = RewardContext(fmt=fmt, eos=eos or None, max_completion_length=max_completion_length,
                        overlong_cache=overlong_cache, timeout_s=timeout_s, code_sandbox=cfg.code_sandbox)
    funcs: list[Callable] = []
    weights: list[float] = []
    seen: set[str] = set()
    for name, weight, preset in expand(list(cfg.names), cfg.weights):
        try:
            fn, metric = _build_one(name, ctx)
        except ConfigError as e:
            raise ConfigError(f"{e} (reward {name!r} of preset {preset!r})" if preset else str(e)) from None
        if metric in seen:
            raise ConfigError(f"two rewards would both be logged as {metric!r}; rename one of them")
        seen.add(metric)
        funcs.append(wrap_reward(fn, metric, cfg.on_error))
        weights.append(weight)
    return funcs, weights


def resolved_rewards(cfg: RewardsConfig) -> list[dict]:
    """[{'name', 'weight'}] of every reward a run scores with, presets expanded (what the run folder,
    `train --dry-run` and eval's metrics list). Names are as configured (dotted paths unchanged)."""
    return [{"name": name, "weight": weight} for name, weight, _ in expand(list(cfg.names), cfg.weights)]


def code_rewards(cfg: RewardsConfig) -> list[str]:
    """The rewards of `cfg` (presets expanded) that run a row's tests: they need code rows (a `tests` column)."""
    return [name for name, _, _ in expand(list(cfg.names), cfg.weights) if name in _code.CODE_REWARDS]


def is_code_run(cfg) -> bool:
    """Whether a run (a RunConfig) scores code (a reward that runs tests): it trained on code rows, whose prompt is
    format.code_prompt (check_rewards_fit_data refuses such rewards on data without them), and its answers are code."""
    return bool(code_rewards(cfg.rewards))


def for_code_rows(cfg: RewardsConfig) -> RewardsConfig:
    """The rewards that score code rows: `cfg` when one of them runs the rows' tests, else code_tests alone (the
    default config's answer rewards would compare each program with an empty reference answer)."""
    if code_rewards(cfg):
        return cfg
    logger.info("code rows and no reward that runs tests (rewards.names=%s): scoring with %s", list(cfg.names),
                _code.CODE_REWARDS[0])
    return replace(cfg, names=[_code.CODE_REWARDS[0]], weights=None)


def run_reward_funcs(cfg, eos_token: str | None, max_completion_length: int) -> tuple[list[Callable], list[float]]:
    """The reward set of a run (a RunConfig), built one way for train, eval and advise: the run's EOS
    (rewards.eos_token, else the tokenizer's) and the completion budget the stage generates with."""
    return build_reward_funcs(cfg.rewards, cfg.format, eos_token=cfg.rewards.eos_token or eos_token,
                              max_completion_length=max_completion_length)
