"""`reasontune rewards check`: score completions (or a table of reward hacks) under a preset.

    reasontune rewards check --preset verified --completions samples.jsonl --json
    reasontune rewards check --preset recipe --eos '<|endoftext|>'
    reasontune rewards check --table code    # code hacks and harm cases, run for real in the sandbox

Each line of the completions file is a JSON object with `completion` (a string or a list of
messages) and `answer`, plus any other columns of the training row (`question`, `worked`, a logic
task's columns...): every reward gets every column, as GRPO and eval pass them (scoring.py), so
`step_check` checks the working against the row's `worked`. With --json every output line is
{"scores": {...}, "total": x} (plus `case` for the built-in table); otherwise a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reasontune.config import CODE_SANDBOXES, DEFAULT_MAX_NEW_TOKENS, ConfigError, FormatConfig, RewardsConfig


def register(subparsers) -> argparse.ArgumentParser:
    """Add `rewards check` to an argparse subparsers object; returns the `rewards` parser."""
    rewards = subparsers.add_parser("rewards", help="Inspect the reward functions.",
                                    description="Inspect the reward functions.")
    sub = rewards.add_subparsers(dest="rewards_command", metavar="{check}")
    sub.required = True
    check = sub.add_parser("check", help="Score completions, or a built-in table of reward hacks, under a preset.",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--preset", default="recipe",
                       help="A preset (recipe, verified), or reward names / dotted paths separated by commas.")
    check.add_argument("--eos", default=None, help="EOS text allowed after the closing answer marker.")
    check.add_argument("--completions", default=None, metavar="FILE.jsonl",
                       help="JSON lines with 'completion', 'answer' and any other columns of the row; omitted: "
                            "the built-in hacking table.")
    check.add_argument("--json", action="store_true", help="One JSON object per line.")
    check.add_argument("--max-completion-length", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                       help="Token budget for overlong_soft (default: eval's, %(default)s).")
    check.add_argument("--table", choices=("math", "code"), default="math",
                       help="The built-in table: math answers under --preset, or code: programs that hack "
                       "code_tests or attack the host, run in the sandbox (exit 1 if one pays or does harm).")
    check.add_argument("--sandbox", default=CODE_SANDBOXES[0], choices=CODE_SANDBOXES,
                       help="With --table code: rewards.code_sandbox (default %(default)s).")
    check.set_defaults(func=handle_check)
    return rewards


def _read_rows(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--completions {path!r}: file not found")
    rows = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or "completion" not in row or "answer" not in row:
            raise ConfigError(f"{path}:{lineno}: each line needs 'completion' and 'answer' fields")
        rows.append({**row, "answer": str(row["answer"])})  # a dataset's answers are strings
    # every row gets every column (None where a line has none), as a dataset's rows do
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def score_rows(rows: list[dict], names: list[str], eos: str | None = None,
               max_completion_length: int | None = None) -> list[dict]:
    """[{'scores': {name: value or None}, 'total': weighted sum}] for rows with completion/answer, scored as GRPO
    and eval score them (scoring.score: every column of the row but prompt and completion, to every reward).
    The prompt is the row's `prompt`, else its `question`; a file has no token ids (completion_ids=None)."""
    from reasontune.rewards import build_reward_funcs
    from reasontune.rewards.scoring import score

    cfg = RewardsConfig(names=names, on_error="none", eos_token=eos)
    funcs, weights = build_reward_funcs(cfg, FormatConfig(), eos, max_completion_length=max_completion_length)
    prompts = [r.get("prompt") if r.get("prompt") is not None else str(r.get("question") or "") for r in rows]
    out = []
    for scores in score(funcs, rows, prompts, [r["completion"] for r in rows], None):
        total = sum(w * s for w, s in zip(weights, scores.values()) if s is not None)
        out.append({"scores": scores, "total": round(total, 6)})
    return out


def _table(labels: list[str], results: list[dict]) -> str:
    if not results:
        return "(no completions)"
    names = list(results[0]["scores"])
    head = ["case"] + names + ["total"]
    body = [[label] + ["-" if r["scores"][n] is None else f"{r['scores'][n]:+.2f}" for n in names]
            + [f"{r['total']:+.2f}"] for label, r in zip(labels, results)]
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def handle_check(args: argparse.Namespace) -> int:
    """Run `rewards check`; 0 on success, 2 on a bad preset, file or line."""
    from reasontune.rewards.hacks import hacking_cases

    if args.table == "code" and not args.completions:
        return _code_table(args)
    names = [n.strip() for n in args.preset.split(",") if n.strip()]
    try:
        if args.completions:
            rows = _read_rows(args.completions)
            labels = [str(r.get("case", i + 1)) for i, r in enumerate(rows)]
        else:
            rows = hacking_cases(FormatConfig(), args.eos)
            labels = [r["case"] for r in rows]
        results = score_rows(rows, names, args.eos, args.max_completion_length)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        for label, r in zip(labels, results):
            obj = dict(r, case=label) if not args.completions else r
            sys.stdout.write(json.dumps(obj) + "\n")
    else:
        print(_table(labels, results))
    return 0


def _code_table(args: argparse.Namespace) -> int:
    import tempfile

    from reasontune.config.cache import home
    from reasontune.rewards import code_hacks
    from reasontune.rewards.sandbox import resolve

    try:
        isolation = resolve(args.sandbox)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    home().mkdir(parents=True, exist_ok=True)
    # the stand-in user files live where real ones do (not under /tmp, which the unshare sandbox covers)
    with tempfile.TemporaryDirectory(prefix="hack-table-", dir=home()) as root:
        rows = code_hacks.run_table(Path(root), isolation)
    if args.json:
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
    else:
        print(f"sandbox: {isolation}\n{code_hacks.format_table(rows)}")
    loose = sorted(code_hacks.NOT_STOPPED_BY.get(isolation, ()))
    if loose:
        print(f"note: the {isolation} sandbox does not stop: {', '.join(loose)} (docs/security.md)", file=sys.stderr)
    bad = code_hacks.problems(rows, isolation)
    for line in bad:
        print(f"problem: {line}", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: `python -m reasontune.rewards.cli check ...`."""
    parser = argparse.ArgumentParser(prog="reasontune")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["rewards", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
