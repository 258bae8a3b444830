"""Held-out evaluation: greedy pass@1, optional pass@k / maj@k, format and length statistics.

Code rows (a `tests` column, data/code.py) are graded by running their tests in the sandbox
(rewards/code.check_many): right means every test passed, and the verdicts' kinds (pass, wrong, error,
syntax, timeout, no_code) are counted in metrics.json's `code` (greedy) and `sample_code` (sampled).

Writes DIR/metrics.json and DIR/completions.jsonl (atomically). `reasontune eval` is the CLI.
Heavy imports (torch, transformers) happen inside functions: cli.py imports this module to
build its parser.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from reasontune.config import DEFAULT_MAX_NEW_TOKENS, ConfigError, RunConfig
from reasontune.runs.metrics import breakdown, majority_vote, mean, pass_at_k, percentile

logger = logging.getLogger(__name__)


def max_new_tokens_for(cfg: RunConfig) -> int:
    return cfg.eval.max_new_tokens or cfg.grpo.max_completion_length or DEFAULT_MAX_NEW_TOKENS


def sampling_for(cfg: RunConfig) -> dict:
    """Sampled eval's and advise's distribution: eval.temperature with GRPO's top_p and min_p, so pass@k
    measures what GRPO samples from (the Qwen3 recipe trains at min_p 0.1)."""
    return {"temperature": cfg.eval.temperature, "top_p": cfg.grpo.top_p, "min_p": cfg.grpo.min_p}


def _rows(cfg: RunConfig, dataset, tokenizer, split: str, limit: int, trained_on=None) -> list[dict]:
    """The first `limit` rows of the eval split, as plain dicts. Without a dataset, the test split is
    `data.eval_split`: every row of a file or a hub test split, a held-out split otherwise."""
    if dataset is None and split == "test":
        from reasontune.data import eval_split

        dataset = eval_split(cfg.data, cfg.format, tokenizer, max_prompt_quantile=cfg.eval.max_prompt_quantile,
                             trained_on=trained_on)
    elif dataset is None:
        from reasontune.data import build_datasets

        dataset = build_datasets(cfg.data, cfg.format, tokenizer)
    if isinstance(dataset, dict):  # a DatasetDict (a dict subclass) or {"test": rows}
        if split not in dataset:
            raise ConfigError(f"dataset has no {split!r} split (splits: {sorted(dataset.keys())})")
        dataset = dataset[split]
    if hasattr(dataset, "select"):
        return [dict(r) for r in dataset.select(range(min(limit, len(dataset))))]
    return [dict(r) for r in list(dataset)[:limit]]


def _messages(row: dict, cfg: RunConfig):
    """The row's chat prompt (built with its data), else the system prompt its kind gets (a code row's: code_prompt)."""
    if row.get("prompt"):
        return row["prompt"]
    from reasontune.data import row_messages

    return row_messages(row, cfg.format)


def _build_rewards(cfg: RunConfig, tokenizer, max_new: int, code_rows: bool = False):
    """The run's rewards; on code rows, never answer rewards alone: code_tests then (rewards.for_code_rows)."""
    from reasontune.rewards import for_code_rows, run_reward_funcs

    rewards = for_code_rows(cfg.rewards) if code_rows else cfg.rewards
    return run_reward_funcs(replace(cfg, rewards=rewards), tokenizer.eos_token, max_new)[0]


def _records(rows, prompts, gens, kind: str, cfg: RunConfig, funcs) -> list[dict]:
    """One record per completion, graded and scored (scoring.score: the arguments GRPO's rewards get)."""
    from reasontune.engines.generation import stopped_on_own
    from reasontune.rewards import grade, has_format, rg_columns
    from reasontune.rewards.steps import working_lines
    from reasontune.rewards.scoring import label_free, score

    recs, src = [], []
    verdicts = _code_verdicts(rows, gens, cfg)
    for i, (row, prompt, samples) in enumerate(zip(rows, prompts, gens)):
        for j, g in enumerate(samples):
            v = verdicts.get((i, j))
            if v is None:
                pred, correct = grade(g.text, str(row.get("answer")), cfg.format, **rg_columns(row))
            else:
                pred, correct = v["extracted"], v["code"] == "pass"
            rec = {"index": i, "kind": kind, "sample": j, "prompt": prompt, "question": row.get("question"),
                   "answer": str(row.get("answer")), "completion": g.text, "extracted": pred, "correct": correct,
                   "format_ok": bool(has_format(g.text, cfg.format)), "num_tokens": g.num_tokens,
                   "working_lines": working_lines(g.text, cfg.format.reasoning_end),
                   "truncated": g.truncated, "stopped": stopped_on_own(g, cfg.format.solution_end)}
            for col in ("difficulty", "subject"):
                if row.get(col) is not None:
                    rec[col] = row[col]
            if v is not None:
                rec.update(code=v["code"], tests_passed=v["passed"], tests_total=v["total"])
            recs.append(rec)
            src.append((row, g))
    if funcs and recs:
        scores = score(funcs, label_free([r for r, _ in src], cfg.rewards.answers_only), [r["prompt"] for r in recs],
                       [g.text for _, g in src],
                       [g.token_ids for _, g in src])
        for r, s in zip(recs, scores):
            r["scores"] = s
    return recs


def _code_verdicts(rows, gens, cfg: RunConfig) -> dict[tuple[int, int], dict]:
    """{(row index, sample index): verdict} for the completions of code rows, run in the run's sandbox
    (rewards.code_sandbox) with its answer markers, in parallel workers (one per CPU)."""
    from reasontune.data.code import is_code_row

    keys = [(i, j) for i, (row, samples) in enumerate(zip(rows, gens)) if is_code_row(row)
            for j in range(len(samples))]
    if not keys:
        return {}
    from reasontune.rewards.code import check_many, extract_code

    texts = [gens[i][j].text for i, j in keys]
    got = check_many(texts, [rows[i]["tests"] for i, _ in keys], sandbox=cfg.rewards.code_sandbox, fmt=cfg.format)
    return {key: {"code": v.kind, "passed": v.passed, "total": v.total, "extracted": extract_code(t, cfg.format)}
            for key, v, t in zip(keys, got, texts)}


def code_summary(records: list[dict]) -> dict | None:
    """{n, pass_rate, tests_passed (mean fraction), kinds: {verdict kind: count}} over code records; None
    when there are none. The kinds say why the rest failed: wrong output, an error, a syntax error, a
    timeout, or no program found (rewards/code.py's extract_code)."""
    code = [r for r in records if r.get("code") is not None]
    if not code:
        return None
    kinds: dict[str, int] = {}
    for r in code:
        kinds[r["code"]] = kinds.get(r["code"], 0) + 1
    return {"n": len(code), "pass_rate": mean([r["code"] == "pass" for r in code]),
            "tests_passed": mean([r["tests_passed"] / r["tests_total"] for r in code if r.get("tests_total")]),
            "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}


def summarize(greedy: list[dict], sampled: list[dict] | None = None, k: int | None = None) -> dict:
    """Metrics from graded records (see `_records`)."""
    lengths = [r["num_tokens"] for r in greedy]
    out = {"n": len(greedy), "accuracy": mean([r["correct"] for r in greedy]),
           "format_rate": mean([r["format_ok"] for r in greedy]), "mean_length": mean(lengths),
           "mean_working_lines": mean([r.get("working_lines") for r in greedy if r.get("working_lines") is not None]),
           "length_p50": percentile(lengths, 50), "length_p90": percentile(lengths, 90),
           "truncation_rate": mean([r["truncated"] for r in greedy]),
           # closed the answer and ended with EOS within grpo.stop_grace_tokens: how it behaves without our loop
           "stop_rate": mean([r.get("stopped") for r in greedy if r.get("stopped") is not None])}
    names = sorted({n for r in greedy for n in r.get("scores", {})})
    if names:
        out["reward_means"] = {n: mean([r["scores"].get(n) for r in greedy]) for n in names}
    for key, col in (("by_difficulty", "difficulty"), ("by_subject", "subject")):
        if any(r.get(col) is not None for r in greedy):
            out[key] = breakdown(greedy, col)
            if sampled and k:  # how far sampling reaches on each level: about as far as GRPO can sharpen it
                for level, value in _pass_at_by(sampled, col, k).items():
                    out[key].setdefault(level, {})["pass_at_k"] = value
    if sampled and k:
        out.update(_sample_metrics(sampled, k))
    for key, recs in (("code", greedy), ("sample_code", sampled or [])):
        if code_summary(recs) is not None:
            out[key] = code_summary(recs)
    return out


def _pass_at_by(sampled: list[dict], col: str, k: int) -> dict[str, float]:
    """{value of `col`: mean pass@k over the problems with that value}."""
    groups: dict[str, dict[int, list[bool]]] = {}
    for r in sampled:
        if r.get(col) is not None:
            groups.setdefault(str(r[col]), {}).setdefault(r["index"], []).append(bool(r["correct"]))
    return {level: mean([pass_at_k(len(v), sum(v), k) for v in problems.values()])
            for level, problems in groups.items()}


def _sample_metrics(sampled: list[dict], k: int) -> dict:
    from reasontune.rewards import is_correct

    by_problem: dict[int, list[dict]] = {}
    for r in sampled:
        by_problem.setdefault(r["index"], []).append(r)
    ks = sorted({x for x in (1, 2, 4, 8, 16, 32, 64, k) if x <= k})
    pass_at = {str(x): mean([pass_at_k(len(rs), sum(r["correct"] for r in rs), x) for rs in by_problem.values()])
               for x in ks}
    maj = []
    for rs in by_problem.values():
        if rs[0].get("code") is not None:
            continue  # code has no answer to vote on (two programs are not compared as answers)
        vote = majority_vote([r["extracted"] for r in rs], same=lambda a, b: is_correct(b, a))
        # the vote is one of the extracted answers: its grade (reasoning-gym's scorer for rg logic rows) decides
        maj.append(vote is not None and next(r["correct"] for r in rs if r["extracted"] == vote))
    return {"k": k, "pass_at_k": pass_at[str(k)], "pass_at": pass_at, "maj_at_k": mean(maj),
            "sample_accuracy": mean([r["correct"] for r in sampled]),
            "sample_format_rate": mean([r["format_ok"] for r in sampled]),
            "sample_mean_length": mean([r["num_tokens"] for r in sampled]),
            "sample_stop_rate": mean([r.get("stopped") for r in sampled if r.get("stopped") is not None])}


def _stop_dict(r) -> dict:
    """A generation.StopRule as metrics.json records it."""
    return {"marker": r.marker, "grace_tokens": r.grace if r.marker else None}


def write_outputs(out_dir, metrics: dict, records: list[dict]) -> None:
    from reasontune.runs.folder import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "completions.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in records))
    atomic_write_json(out / "metrics.json", metrics)


def evaluate(cfg: RunConfig, model=None, tokenizer=None, dataset=None, out_dir=None, adapter=None,
             split: str = "test", progress: bool = True, trained_on=None) -> dict:
    """Evaluate on the first `cfg.eval.limit` rows of `split`; returns (and writes) the metrics.

    `trained_on` (a run's DataConfig): when it names the dataset evaluated, grade that run's held-out split."""
    import torch

    from reasontune.engines import open_engine
    from reasontune.models.prompting import render_prompt, stop_rule

    from reasontune.data.code import is_code_row
    from reasontune.runs.validate import check_rewards_fit_data, known_code_source

    t0 = time.perf_counter()
    if dataset is None:  # code rewards on a known math set: refused before a model loads
        check_rewards_fit_data(cfg, known_code_source(cfg.data.dataset), stage="eval")
    engine = open_engine(cfg, model, tokenizer, adapter=adapter)  # eval.engine: our decode or vLLM
    tokenizer = engine.tokenizer
    rows = _rows(cfg, dataset, tokenizer, split, cfg.eval.limit, trained_on=trained_on)
    if not rows:
        raise ConfigError(f"no rows to evaluate in the {split!r} split of {cfg.data.dataset!r}")
    code_rows = any(is_code_row(r) for r in rows)
    check_rewards_fit_data(cfg, code_rows, stage="eval")
    prompts = [render_prompt(tokenizer, _messages(r, cfg), cfg.format) for r in rows]
    max_new, e = max_new_tokens_for(cfg), cfg.eval
    common = dict(max_new_tokens=max_new, stop=stop_rule(cfg), batch_size=e.batch_size,
                  progress=progress, autocast_setting=cfg.grpo.bf16, max_length=cfg.model.max_seq_length)
    funcs = _build_rewards(cfg, tokenizer, max_new, code_rows)
    t_gen = time.perf_counter()
    greedy = engine.generate(prompts, temperature=0.0, desc="eval greedy", **common)
    records = _records(rows, prompts, greedy, "greedy", cfg, funcs)
    greedy_s = time.perf_counter() - t0  # the greedy pass alone: what a later greedy eval of this set costs
    sampled, n_sampled = [], (min(len(rows), e.sample_limit or len(rows)) if e.samples > 1 else 0)
    if n_sampled:
        torch.manual_seed(cfg.seed)
        gens = engine.generate(prompts[:n_sampled], **sampling_for(cfg), num_return_sequences=e.samples,
                               desc=f"eval {e.samples} samples", **common)
        sampled = _records(rows[:n_sampled], prompts[:n_sampled], gens, "sample", cfg, funcs)
    gen_s = time.perf_counter() - t_gen
    engine.close()
    metrics = summarize(records, sampled, e.samples if e.samples > 1 else None)
    ntok = sum(r["num_tokens"] for r in records + sampled)
    metrics.update({"model": cfg.model.name, "adapter": str(adapter) if adapter else None, "engine": engine.name,
                    "dataset": cfg.data.dataset, "split": split, "max_new_tokens": max_new,
                    "rewards": [f.__name__ for f in funcs],
                    "temperature": e.temperature if e.samples > 1 else 0.0, "samples": e.samples,
                    "sampled_n": n_sampled, "sampling": sampling_for(cfg) if e.samples > 1 else None,
                    "stop": _stop_dict(common["stop"]),
                    "format": {k: getattr(cfg.format, k) for k in
                               ("reasoning_start", "reasoning_end", "solution_start", "solution_end",
                                "prefill_reasoning", "code_system_prompt") if hasattr(cfg.format, k)},
                    "generated_tokens": ntok, "tokens_per_second": ntok / max(gen_s, 1e-9),
                    "greedy_seconds": greedy_s, "wall_seconds": time.perf_counter() - t0})
    if out_dir is not None:
        write_outputs(out_dir, metrics, records + sampled)
        logger.info("eval: wrote %s/metrics.json and completions.jsonl", out_dir)
    return metrics


# ------------------------------------------------------------------- reading eval folders back
STAGE_ORDER = ["before", "warmup", "sft", "grpo", "after"]  # demo stages, in report order


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        logger.warning("cannot read %s: %s", path, e)
        return {}


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines; a malformed line (e.g. a half-written last line) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines() if Path(path).is_file() else []:
        try:
            rows.append(json.loads(line)) if line.strip() else None
        except json.JSONDecodeError:
            logger.warning("skipping a malformed line in %s", path)
    return rows


def is_eval_dir(p: Path) -> bool:
    return (p / "metrics.json").is_file() and (p / "completions.jsonl").is_file()


def eval_dirs(p: Path) -> dict[str, Path]:
    """Stage name -> eval folder: DIR itself, DIR/eval, DIR/evals/<stage> (ordered before..after)."""
    p = Path(p)
    found: dict[str, Path] = {}
    if is_eval_dir(p):
        found[p.name or "eval"] = p
    if is_eval_dir(p / "eval"):
        found["eval"] = p / "eval"
    if (p / "evals").is_dir():
        for d in sorted((p / "evals").iterdir()):
            if is_eval_dir(d):
                found[d.name] = d
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def resolve_eval_dir(path) -> Path:
    """The evaluation a compare side refers to: the folder itself, else its last stage (e.g. evals/after)."""
    found = eval_dirs(Path(path))
    if not found:
        raise FileNotFoundError(f"{str(path)!r} holds no evaluation (metrics.json + completions.jsonl); "
                                "run `reasontune eval --out DIR` first")
    return list(found.values())[-1]


def primary(records: list[dict]) -> list[dict]:
    """The greedy records (one per problem); all records when none is marked greedy."""
    greedy = [r for r in records if r.get("kind", "greedy") == "greedy"]
    return greedy or records


# ---------------------------------------------------------------------------------- CLI
EVAL_FLAGS = {  # flag -> (dest, type, config key, help); dests are prefixed so cliargs' tables never see them
    "--limit": ("eval_limit", int, "eval.limit", "held-out problems to evaluate"),
    "--samples": ("eval_samples", int, "eval.samples", "completions per problem (>1 adds pass@k, maj@k)"),
    "--temperature": ("eval_temperature", float, "eval.temperature", "sampling temperature for --samples"),
    "--sample-limit": ("eval_sample_limit", int, "eval.sample_limit", "sample only the first N problems"),
    "--max-new-tokens": ("eval_max_new_tokens", int, "eval.max_new_tokens", "generation budget"),
    "--batch-size": ("eval_batch_size", int, "eval.batch_size", "sequences decoded together"),
    "--engine": ("eval_engine", str, "eval.engine", "auto | transformers | vllm: who generates"),
}


METAVARS = {"--limit": "N", "--samples": "K", "--sample-limit": "N", "--temperature": "T", "--max-new-tokens": "N", "--batch-size": "B",
            "--engine": "ENGINE"}


def add_source_args(p) -> None:
    """Model/data flags, --adapter | --run, and the sampling flags: shared by `eval` and `advise`."""
    from reasontune.config.args import add_config_args

    add_config_args(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--adapter", help="PEFT adapter folder (a run's adapter/ also brings its config)")
    src.add_argument("--run", help="reasontune run folder: uses its adapter, model, format and chat template")
    for flag, (dest, typ, _, help_) in EVAL_FLAGS.items():
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help_, metavar=METAVARS[flag])


def register(subparsers) -> None:

    p = subparsers.add_parser("eval", help="evaluate a model or a trained adapter on held-out problems")
    add_source_args(p)
    p.add_argument("--out", help="output folder (default: RUN/eval with --run, else runs/eval)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")
    p.set_defaults(func=cmd_eval)


def _run_config_near(adapter: str | None, run: str | None):
    """(run config or None, adapter folder or None) for --run / --adapter.

    The format comes from the run's reasontune_config.json, or from the adapter folder's own
    reasontune_adapter.json (the demo's adapter/ and warmup/adapter/ have no run config beside them);
    never silently from the recipe's defaults when the folder says otherwise."""
    from reasontune.export.portable import has_run_config, read_format
    from reasontune.runs.folder import CONFIG_FILE, load_run_config

    if run:
        run_dir = Path(run)
        if not (run_dir / "adapter").is_dir():
            raise ConfigError(f"--run {run!r}: no adapter/ folder inside; is the run finished?")
        # the adapter's own record first: it has the completion budget GRPO resolved
        own = read_format(run_dir / "adapter")
        if own is not None and (has_run_config(run_dir / "adapter") or not (run_dir / CONFIG_FILE).is_file()):
            return own, str(run_dir / "adapter")
        return load_run_config(run_dir), str(run_dir / "adapter")
    if adapter:
        a = Path(adapter)
        if not (a / "adapter_config.json").is_file():
            raise ConfigError(f"--adapter {adapter!r}: no adapter_config.json; point at a PEFT adapter folder")
        if (a / CONFIG_FILE).is_file():
            return load_run_config(a), str(a)
        own = read_format(a)
        if own is not None:
            return own, str(a)
        if (a.parent / CONFIG_FILE).is_file():
            return load_run_config(a.parent), str(a)
        logger.warning("--adapter %s: no reasontune_adapter.json or run config beside it; the prompt format "
                       "is the config's (pass --config with the format it was trained with)", adapter)
        return None, str(a)
    return None, None


def config_for_eval(args) -> tuple[RunConfig, str | None]:
    """YAML/defaults < the run's config (model, format, task, GRPO's completion budget, sampling, stop rule) <
    flags and --set items. A --config replaces the run's task and sampling but keeps its model and format."""
    from reasontune.config.args import config_from_args
    from reasontune.config import from_dict, load_yaml

    run_cfg, adapter = _run_config_near(getattr(args, "adapter", None), getattr(args, "run", None))
    base = None
    if run_cfg is not None:
        base = load_yaml(args.config) if args.config else run_cfg
        d = base.to_dict()
        if not args.config:  # sampled eval draws from what GRPO sampled: its temperature (top_p, min_p: sampling_for)
            d["eval"]["temperature"] = run_cfg.grpo.temperature
        d["format"] = run_cfg.to_dict()["format"]
        d["model"]["name"], d["model"]["chat_template"] = run_cfg.model.name, run_cfg.model.chat_template
        base = from_dict(d)
    ns = type(args)(**{**vars(args), "config": None if base is not None else args.config})
    cfg = config_from_args(ns, base=base)
    from reasontune.config import override

    cfg = override(cfg, {key: getattr(args, dest) for dest, _, key, _ in EVAL_FLAGS.values()})
    return cfg, adapter


def cmd_eval(args) -> int:
    cfg, adapter = config_for_eval(args)
    run_cfg, _ = _run_config_near(getattr(args, "adapter", None), getattr(args, "run", None))
    out = args.out or (str(Path(args.run) / "eval") if args.run else "runs/eval")
    metrics = evaluate(cfg, out_dir=out, adapter=adapter, progress=True,
                       trained_on=run_cfg.data if run_cfg is not None else None)
    if args.json:
        print(json.dumps(metrics, sort_keys=True, default=str))
        return 0
    print(f"evaluated {metrics['n']} problems from {cfg.data.dataset} -> {out}")
    for key in ("accuracy", "pass_at_k", "maj_at_k", "format_rate", "mean_length", "length_p50", "length_p90",
                "truncation_rate", "wall_seconds"):
        if metrics.get(key) is not None:
            print(f"  {key:16s} {metrics[key]:.3f}" if isinstance(metrics[key], float) else f"  {key:16s} {metrics[key]}")
    for key, label in (("code", "verdicts"), ("sample_code", "sample verdicts")):  # code rows: why they failed
        if metrics.get(key):
            kinds = ", ".join(f"{kind} {count}" for kind, count in metrics[key]["kinds"].items())
            print(f"  {label:16s} {kinds} (of {metrics[key]['n']})")
    return 0
