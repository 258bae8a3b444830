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
    if is_local_or_procedural(cfg.data.dataset):
        from reasontune.engines.curriculum import check_column
        from reasontune.data import build_datasets

        # Cheap for files and generators: catches missing files, missing columns, empty filters.
        data = build_datasets(cfg.data, cfg.format, tokenizer=None)
        check_column(cfg.grpo, data["train"].column_names)
        # before the rewards are built: code rewards on rows without tests fail on the data, not on a sandbox
        check_rewards_fit_data(cfg, has_code_rows(data["train"]))
    else:
        logger.info("dataset %s is a hub id: checked when it loads", cfg.data.dataset)
        check_rewards_fit_data(cfg, known_code_source(cfg.data.dataset))
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
    check_4bit(cfg)
    check_dynamic_sampling(cfg)
    # grpo.use_vllm without vllm is not an error: train.grpo_args falls back to transformers generation
    # with one warning (what the recipe and docs/gpu.md promise).


def check_dynamic_sampling(cfg: RunConfig) -> None:
    """grpo.dynamic_sampling refills through reasontune's trainer (engines/dynamic.py): Unsloth's patched trainer
    and its vLLM engine are refused here, before a model loads (the grpo section alone cannot see the model's)."""
    from reasontune.config import ConfigError
    from reasontune.models import pick_backend

    if not cfg.grpo.dynamic_sampling or cfg.method != "grpo":
        return
    if pick_backend(cfg.model)[0] == "unsloth":  # imports nothing off CUDA
        raise ConfigError(f"grpo.dynamic_sampling=true with model.backend={cfg.model.backend!r} (Unsloth here): "
                          "Unsloth's patched trainer generates and scores its own way (its vLLM engine too); set "
                          "model.backend: transformers, or grpo.dynamic_sampling: false")


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


def has_code_rows(ds) -> bool:
    """Whether a split holds code rows: a `tests` column with at least one row's tests (data/code.py)."""
    from reasontune.data.code import is_code_row

    return "tests" in ds.column_names and any(is_code_row({"tests": t}) for t in ds["tests"])


def known_code_source(spec: str) -> bool | None:
    """Whether a hub dataset spec is a code set, known from its adapter without loading it (humaneval, mbpp,
    open-r1's coding problems: True; gsm8k and the other math sets: False); None for a hub id no adapter knows."""
    from reasontune.data import hub

    adapter = hub.by_hub_id(spec)
    return None if adapter is None else adapter.row is not None


def check_loaded_data(cfg: RunConfig, train_ds) -> None:
    """The checks validate_run leaves to the data's arrival: a hub set's rows against the rewards."""
    if not is_local_or_procedural(cfg.data.dataset):
        check_rewards_fit_data(cfg, has_code_rows(train_ds))


def check_rewards_fit_data(cfg: RunConfig, code_rows: bool | None, *, stage: str = "train") -> None:
    """ConfigError when rewards that run a row's tests (code_tests, code_tests_binary) meet data without tests:
    they would score None for every row, and GRPO would learn nothing, silently. `code_rows` None: not known yet
    (a hub id no adapter knows); stages call this again when the data has loaded.

    Code rows with no reward that runs their tests: the answer rewards compare against an empty reference
    answer. `train` warns (format rewards and a warm-up can still teach the format), `advise` refuses (its
    verdict would be read off rewards that cannot tell a right program), `eval` is fine (it grades code rows by
    their tests whatever the rewards)."""
    from reasontune.config import ConfigError
    from reasontune.rewards import code_rewards

    if code_rows is None:
        return
    code = code_rewards(cfg.rewards)
    if code and not code_rows:
        raise ConfigError(
            f"rewards {code} run each row's tests, but the {stage} data {cfg.data.dataset!r} has no code rows (no "
            "`tests` column with tests): use a code set (--dataset humaneval, mbpp, procedural:code, or a file with "
            "question and tests columns: docs/code.md), or drop them from rewards.names (--reward ...)")
    if code_rows and not code and stage in ("train", "advise"):
        msg = (f"the data {cfg.data.dataset!r} holds code rows (checked by tests) but no reward runs them "
               f"(rewards.names={list(cfg.rewards.names)}): add --reward code_tests, or the answer rewards compare "
               "each program with an empty reference answer")
        if stage == "advise":
            raise ConfigError(f"advise: {msg}")
        logger.warning(msg)
