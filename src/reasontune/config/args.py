"""The config flags every command shares (model, data, output, seed; the training knobs), and
turning them into a RunConfig.

Below the stage modules: `cli.py` and the stages that register their own subcommands (eval, sft,
advise) import this module, so the command line stays the top and nothing imports `cli.py`.
Flags default to None so that only flags the user gives override the YAML/dataclass defaults
(a default lives in exactly one place: config.py).
"""

from __future__ import annotations

import argparse

from reasontune.config import RunConfig, from_dict, load_yaml, override, parse_set

# flag -> dotted config key. One table, shared by train / eval / demo / sft / advise.
COMMON_FLAGS = {
    "--model": ("model.name", str, "hub id, local folder, .gguf file, or smollm2-135m"),
    "--backend": ("model.backend", str, "auto | unsloth | transformers"),
    "--dataset": ("data.dataset", str, "hub id, local file, procedural:NAME or rg:TASK"),
    "--config-name": ("data.config_name", str, "hub dataset config"),
    "--split": ("data.split", str, "dataset split"),
    "--question-column": ("data.question_column", str, "column holding the question"),
    "--answer-column": ("data.answer_column", str, "column holding the reference answer"),
    "--output-dir": ("output_dir", str, "run folder"),
    "--seed": ("seed", int, "global seed"),
}
TRAIN_FLAGS = {
    "--max-steps": ("grpo.max_steps", int, "optimizer steps"),
    "--learning-rate": ("grpo.learning_rate", float, "learning rate"),
    "--num-generations": ("grpo.num_generations", int, "completions per prompt"),
    "--batch-size": ("grpo.per_device_train_batch_size", int, "completions per device per step"),
    "--max-completion-length": ("grpo.max_completion_length", int, "completion token budget"),
    "--warmup": ("warmup.kind", str, "none | sft: formatting warm-up before GRPO"),
    "--method": ("method", str, "grpo | expert_iteration: what trains after the warm-up"),
    "--lora-r": ("lora.r", int, "LoRA rank"),
}


def add_config_args(p: argparse.ArgumentParser, train: bool = False) -> None:
    p.add_argument("--config", help="YAML recipe (see recipes/)")
    for flag, (_, typ, help_) in {**COMMON_FLAGS, **(TRAIN_FLAGS if train else {})}.items():
        p.add_argument(flag, type=typ, default=None, help=help_)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set grpo.beta=0.04 (repeatable)")
    if train:
        p.add_argument("--reward", action="append", default=None, help="reward name, preset or pkg.mod:fn (repeatable)")
        p.add_argument("--reward-weight", action="append", type=float, default=None, help="one per --reward")


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """YAML (if --config) < dataclass defaults, then flags, then --set items."""
    cfg = load_yaml(args.config) if getattr(args, "config", None) else (base or from_dict({}))
    table = {**COMMON_FLAGS, **TRAIN_FLAGS}
    updates = {}
    for flag, (key, _, _) in table.items():
        dest = flag.lstrip("-").replace("-", "_")
        if hasattr(args, dest):
            updates[key] = getattr(args, dest)
    if getattr(args, "reward", None):
        updates["rewards.names"] = args.reward
    if getattr(args, "reward_weight", None):
        updates["rewards.weights"] = args.reward_weight
    for flag in ("overwrite", "resume"):
        if getattr(args, flag, False):
            updates[flag] = True
    updates.update(parse_set(getattr(args, "set", [])))
    return override(cfg, updates)
