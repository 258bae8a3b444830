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
    from reasontune.stages.demo import run_demo

    updates = parse_set(args.set)
    if getattr(args, "compare_only", False):  # the demo in --out already ran: only the other two arms train
        from reasontune.stages.compare_demo import finished_demo, run_compare

        run_compare(args.out, args.quick, updates=updates, demo_summary=finished_demo(args.out))
        return 0
    summary = run_demo(out_dir=args.out, quick=args.quick, updates=updates)
    if getattr(args, "compare", False):  # SFT only / GRPO only / SFT then GRPO under one budget: OUT/compare/
        from reasontune.stages.compare_demo import run_compare  # it builds on demo.py, so demo.py does not call it

        # the demo just ran SFT then GRPO from a fresh model: it is that arm (and the base row), not run twice
        run_compare(args.out, args.quick, updates=updates, demo_summary=summary)
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
    p.add_argument("--compare-only", action="store_true",
                   help="run only the compare's SFT-only and GRPO-only arms against the demo already finished in "
                        "--out (its metrics.json is the SFT-then-GRPO arm); give the --set it ran with")
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
