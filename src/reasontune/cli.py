"""`reasontune` command line: a thin layer over the Python API.

The top module: nothing imports it. The shared config flags live in cliargs.py, below the stages.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from reasontune.config.args import add_config_args, config_from_args
from reasontune.config import ConfigError, RunConfig, override, parse_set

logger = logging.getLogger("reasontune")


def _emit_config(cfg: RunConfig, as_json: bool) -> None:
    from reasontune.rewards import resolved_rewards

    d = {**cfg.to_dict(), "resolved_rewards": resolved_rewards(cfg.rewards)}  # what the run will score with
    if as_json:
        print(json.dumps(d, sort_keys=True))
    else:
        import yaml

        print(yaml.safe_dump(d, sort_keys=False))


def cmd_train(args) -> int:
    cfg = config_from_args(args, base=_resume_base(args))
    from reasontune.runs.folder import is_main_rank
    from reasontune.runs.validate import validate_run

    # The same checks for --dry-run and a real run, before anything heavy loads. The run folder is rank 0's:
    # other ranks would find the folder rank 0 just created (train() makes them wait for it).
    validate_run(cfg, check_output=is_main_rank(), dry_run=args.dry_run)
    if args.dry_run:
        _emit_config(cfg, args.json)
        return 0
    from reasontune.models import pick_backend

    pick_backend(cfg.model)  # Unsloth, when chosen, must be imported before train.py imports transformers/trl
    from reasontune.stages.train import train

    result = train(cfg)
    print(json.dumps(result.get("summary", {})) if args.json else f"run folder: {cfg.output_dir}")
    return 3 if result.get("summary", {}).get("stopped_by") else 0  # 3: grpo.stop_on stopped it (watch.py)


def _resume_base(args) -> RunConfig | None:
    """`train --resume --output-dir RUN` without --config continues RUN's own saved config."""
    if not getattr(args, "resume", False) or getattr(args, "config", None) or not getattr(args, "output_dir", None):
        return None
    from pathlib import Path

    from reasontune.runs.folder import CONFIG_FILE, load_run_config

    if not (Path(args.output_dir) / CONFIG_FILE).is_file():
        return None  # validate_run says there is no run to resume
    return override(load_run_config(args.output_dir), {"overwrite": False})


def cmd_demo(args) -> int:
    from reasontune.stages.compare_arms import parse_arms
    from reasontune.stages.demo import demo_config, run_demo

    updates = parse_set(args.set)
    recipe, compare_only = getattr(args, "recipe", None), getattr(args, "compare_only", False)
    compare = compare_only or getattr(args, "compare", False)
    # every flag is checked before the demo (or any model) starts: the recipe, its --set, the arms
    demo_config(args.out, args.quick, updates, recipe)
    arms = parse_arms(getattr(args, "arms", None))
    seconds = getattr(args, "compare_seconds", None)
    if not compare and (getattr(args, "arms", None) is not None or seconds is not None):
        raise ConfigError("--arms and --compare-seconds pick the compare's arms and budget: add --compare (or "
                          "--compare-only after a finished demo)")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"--compare-seconds={seconds} is invalid: give the training seconds per arm (> 0)")
    from reasontune.stages.compare_demo import finished_demo, run_compare  # it builds on demo.py, not the reverse

    kw = dict(updates=updates, arms=arms, recipe=recipe, budget_s=seconds)
    if compare_only:  # the demo in --out already ran: only the other arms train
        run_compare(args.out, args.quick, demo_summary=finished_demo(args.out), **kw)
        return 0
    summary = run_demo(out_dir=args.out, quick=args.quick, updates=updates, recipe=recipe)
    if compare:  # the arms under one budget of training seconds: OUT/compare/
        # the demo just ran its recipe from a fresh model: it is the SFT-then-GRPO arm (and the base row), not run twice
        run_compare(args.out, args.quick, demo_summary=summary, **kw)
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

    from reasontune.stages.compare_arms import ARMS, DEFAULT_ARMS  # the config layer only: cheap to import

    p = sub.add_parser("demo", help="the whole loop offline on a CPU with the embedded model")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--recipe", default=None, metavar="PATH",
                   help="the demo's recipe (default recipes/demo.yaml; recipes/demo-worked.yaml is the labelled one: "
                        "1000 worked solutions and step_check with the reference)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a field of the recipe, e.g. --set grpo.max_steps=10 (repeatable)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke-test run (minutes, not a result)")
    p.add_argument("--compare", action="store_true",
                   help="then train the compare's arms (--arms) under one budget of training seconds: OUT/compare/")
    p.add_argument("--compare-only", action="store_true",
                   help="run only the compare's SFT-only and GRPO-only arms against the demo already finished in "
                        "--out (its metrics.json is the SFT-then-GRPO arm); give the --recipe and --set it ran with")
    p.add_argument("--arms", default=None, metavar="A,B,...",
                   help=f"the compare's arms (default {','.join(DEFAULT_ARMS)}): any of {', '.join(ARMS)}")
    p.add_argument("--compare-seconds", type=float, default=None, metavar="S",
                   help="training seconds per arm (default: the demo's own, SFT plus GRPO inside trainer.train())")
    p.set_defaults(func=cmd_demo)

    # Subcommands owned by other modules register themselves; a missing one is skipped.
    for mod in ("reasontune.stages.evaluate", "reasontune.stages.report", "reasontune.data.cli", "reasontune.rewards.cli",
                "reasontune.stages.advise", "reasontune.stages.export", "reasontune.stages.sft", "reasontune.stages.ask"):
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
        from reasontune.engines.guards import NonFiniteError

        if not isinstance(e, NonFiniteError):
            raise
        print(f"reasontune: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
