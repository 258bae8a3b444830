"""`reasontune data preview`: show what a dataset spec turns into, before any model loads.

`register(subparsers)` adds the `data` command to the main parser; handlers return an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys

from reasontune.config import ConfigError, DataConfig, FormatConfig


def register(subparsers) -> argparse.ArgumentParser:
    data = subparsers.add_parser("data", help="Inspect datasets (preview a spec).",
                                 description="Inspect datasets.")
    sub = data.add_subparsers(dest="data_command", metavar="{preview}")
    sub.required = True
    p = sub.add_parser("preview", help="Print the first rows a dataset spec yields.",
                       description="Print the first training rows that a dataset spec yields: the chat "
                                   "prompt and the reference answer.")
    p.add_argument("--dataset", default=DataConfig().dataset,
                   help="procedural:NAME, rg:TASK, a hub id (owner/name) or a .jsonl/.json/.csv/.parquet file.")
    p.add_argument("--limit", type=int, default=5, help="Rows to show (default 5).")
    p.add_argument("--json", action="store_true", help="One JSON object per line: {prompt, answer, ...}.")
    p.add_argument("--question-column", help="Column holding the question (overrides detection).")
    p.add_argument("--answer-column", help="Column holding the reference answer (overrides detection).")
    p.add_argument("--config-name", help="Hub dataset config, e.g. main for openai/gsm8k.")
    p.add_argument("--split", default="train", help="Split to read from a hub set (default train).")
    p.add_argument("--difficulty", help="Procedural levels, comma-separated, e.g. 1,2,3.")
    p.add_argument("--numeric-only", action="store_true", help="Keep only rows whose answer is a number.")
    p.add_argument("--seed", type=int, default=0, help="Seed for generation and splitting.")
    p.set_defaults(func=preview_command)
    return data


def _config(args) -> DataConfig:
    if args.limit <= 0:
        raise ConfigError(f"--limit={args.limit} is invalid: use a positive integer")
    levels = None
    if args.difficulty:
        try:
            levels = [int(x) for x in args.difficulty.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--difficulty={args.difficulty!r} is invalid: use integers such as 1,2,3") from None
    return DataConfig(dataset=args.dataset, config_name=args.config_name, split=args.split,
                      question_column=args.question_column, answer_column=args.answer_column,
                      numeric_only=args.numeric_only, max_prompt_quantile=None, train_size=args.limit,
                      test_size=0, difficulty=levels, seed=args.seed)


def preview_command(args) -> int:
    try:
        import datasets

        datasets.disable_progress_bars()
        from reasontune.data.prepare import build_datasets

        fmt = FormatConfig()
        ds = build_datasets(_config(args), fmt)["train"]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = ds.select(range(min(args.limit, len(ds))))
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    print(f"dataset {args.dataset}: showing {len(rows)} row(s)")
    print(f"system prompt: {rows[0]['prompt'][0]['content'] if len(rows) else fmt.prompt}")  # a code row's: code_prompt
    for i, row in enumerate(rows):
        extra = ", ".join(f"{k}={row[k]}" for k in ("difficulty", "subject") if k in row and row[k] not in ("", None))
        print(f"\n--- row {i}" + (f" ({extra})" if extra else ""))
        print(f"question: {row['question']}")
        if row.get("worked"):
            print("worked:\n  " + row["worked"].replace("\n", "\n  "))
        print(f"answer: {row['answer']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (tests, `python -m reasontune.data.cli data preview ...`)."""
    parser = argparse.ArgumentParser(prog="reasontune")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
