"""`reasontune` command line: a thin layer over the Python API.

Flags default to None so that only flags the user gives override the YAML/dataclass defaults
(a default lives in exactly one place: config.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from .config import ConfigError, RunConfig, from_dict, load_yaml, override, parse_set

logger = logging.getLogger("reasontune")

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


def _emit_config(cfg: RunConfig, as_json: bool) -> None:
    if as_json:
        print(cfg.to_json())
    else:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def cmd_train(args) -> int:
    cfg = config_from_args(args, base=_resume_base(args))
    from .validate import validate_run

    validate_run(cfg, dry_run=args.dry_run)  # the same checks for --dry-run and a real run, before anything heavy loads
    if args.dry_run:
        _emit_config(cfg, args.json)
        return 0
    from .train import train

    result = train(cfg)
    print(json.dumps(result.get("summary", {})) if args.json else f"run folder: {cfg.output_dir}")
    return 0


def _resume_base(args) -> RunConfig | None:
    """`train --resume --output-dir RUN` without --config continues RUN's own saved config."""
    if not getattr(args, "resume", False) or getattr(args, "config", None) or not getattr(args, "output_dir", None):
        return None
    from pathlib import Path

    from .runfolder import CONFIG_FILE, load_run_config

    if not (Path(args.output_dir) / CONFIG_FILE).is_file():
        return None  # validate_run says there is no run to resume
    return override(load_run_config(args.output_dir), {"overwrite": False})


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, quick=args.quick, compare=getattr(args, "compare", False),
             updates=parse_set(args.set))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasontune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="GRPO training (optionally after an SFT warm-up)")
    add_config_args(p, train=True)
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config; load nothing")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="the whole loop offline on a CPU with the embedded model")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a field of recipes/demo.yaml, e.g. --set grpo.max_steps=10 (repeatable)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke-test run (minutes, not a result)")
    p.add_argument("--compare", action="store_true", help="also run SFT-only / GRPO-only / SFT+GRPO")
    p.set_defaults(func=cmd_demo)

    # Subcommands owned by other modules register themselves; a missing one is skipped.
    for mod in ("reasontune.evaluate", "reasontune.report", "reasontune.data.cli", "reasontune.rewards.cli",
                "reasontune.advise", "reasontune.export", "reasontune.sft"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("reasontune"):
                continue
            raise
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"reasontune: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from .guards import NonFiniteError

        if not isinstance(e, NonFiniteError):
            raise
        print(f"reasontune: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
