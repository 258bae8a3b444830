"""Every check that can run before a model loads. `train --dry-run` and a real run share it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from reasontune.config import RunConfig

logger = logging.getLogger(__name__)

LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def num_processes() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_local_or_procedural(spec: str) -> bool:
    return spec.startswith(("procedural:", "rg:")) or spec.endswith(LOCAL_SUFFIXES) or Path(spec).exists()


def validate_run(cfg: RunConfig, check_output: bool = True, dry_run: bool = False) -> None:
    """Raise ConfigError naming the field, the value and the fix. Loads no model, no hub data."""
    from reasontune.config import ConfigError
    from reasontune.models import check_model_spec
    from reasontune.rewards import build_reward_funcs

    if cfg.method == "expert_iteration":
        check_expert_iteration(cfg)
    else:  # GRPO's groups must tile its batch; expert iteration has no groups
        cfg.grpo.check_batch(num_processes())
    check_model_spec(cfg.model)
    if check_output:  # cheapest first: a clobbered or unwritable run folder fails before data is read
        from reasontune.runs.folder import check_output_dir

        check_output_dir(cfg)
    try:
        # unknown names fail here, listing valid ones; the real completion budget needs the tokenizer (train.py)
        funcs, _ = build_reward_funcs(cfg.rewards, cfg.format,
                                      max_completion_length=cfg.grpo.max_completion_length or cfg.model.max_seq_length)
    except ConfigError as e:
        raise ConfigError(f"rewards.names={list(cfg.rewards.names)!r}: {e}") from e
    if cfg.rewards.answers_only:
        from reasontune.rewards.scoring import needs_labels

        if bad := needs_labels(funcs):
            raise ConfigError(f"rewards.answers_only=true, but reward(s) {bad} need worked solutions: drop them from "
                              "rewards.names, or set rewards.answers_only=false")
    if is_local_or_procedural(cfg.data.dataset):
        from reasontune.engines.curriculum import check_column
        from reasontune.data import build_datasets

        # Cheap for files and generators: catches missing files, missing columns, empty filters.
        data = build_datasets(cfg.data, cfg.format, tokenizer=None)
        check_column(cfg.grpo, data["train"].column_names)
    else:
        logger.info("dataset %s is a hub id: checked when it loads", cfg.data.dataset)
    check_4bit(cfg)
    # grpo.use_vllm without vllm is not an error: train.grpo_args falls back to transformers generation
    # with one warning (what the recipe and docs/gpu.md promise).


def check_4bit(cfg: RunConfig) -> None:
    """4-bit weights need CUDA (bitsandbytes / Unsloth); refused here so --dry-run says so too."""
    from reasontune.config import ConfigError

    if not cfg.model.load_in_4bit:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("model.load_in_4bit=True needs a CUDA GPU (bitsandbytes 4-bit); on a CPU pass "
                          "--set model.load_in_4bit=false (16-bit LoRA, as the reference recipe)")


def check_expert_iteration(cfg: RunConfig) -> None:
    """What `method: expert_iteration` cannot run with: several processes (its rounds sample and train in one), and
    GRPO's adaptive curriculum (it draws problems in turn, not by level)."""
    from reasontune.config import ConfigError

    if num_processes() > 1:
        raise ConfigError(f"method='expert_iteration' runs in one process, but WORLD_SIZE={num_processes()}: launch "
                          "it without accelerate/torchrun, or use method grpo")
    if cfg.grpo.curriculum != "none":
        raise ConfigError(f"grpo.curriculum={cfg.grpo.curriculum!r} is GRPO's; expert iteration takes the problems in "
                          "turn: set grpo.curriculum=none, or use method grpo")
