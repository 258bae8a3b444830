"""`reasontune advise`: should this model learn this task by RFT (GRPO), SFT, SFT then RFT, or not at all?

It samples K completions for N problems, scores them with the configured rewards (the same
weighted sum GRPO would use), and measures what RFT needs: a verifier, some success (pass@k),
and groups whose rewards differ (GRPO learns nothing from a group that all scores the same).
`decide(facts)` turns those numbers into a recommendation with a pure, table-tested rule;
docs/advise.md explains the thresholds below.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field

from reasontune.config import ConfigError, RunConfig
from reasontune.runs.metrics import ZERO_VARIANCE_MAX

logger = logging.getLogger(__name__)

RECOMMENDATIONS = ("rft", "sft_then_rft", "sft", "neither")

# Thresholds (docs/advise.md gives the reasoning). Comparisons: value < MIN fails, value >= MAX or > MAX fires.
PASS_AT_K_MIN = 0.05  # below: (almost) no group ever holds a correct sample -> nothing for GRPO to reinforce
PASS_AT_1_MAX = 0.90  # at or above: little headroom left for any training
FORMAT_RATE_MIN = 0.50  # below (with worked solutions): teach the format by SFT first, it is cheap
CHECKABLE_MIN = 0.90  # fraction of reference answers a verifier can check, for "has a verifier"
MIN_WORKED_ROWS = 16  # non-empty worked solutions needed to call SFT an option
ZERO_VARIANCE_EPS = 1e-6  # a group's max - min total reward at or below this is "zero variance"
CHECKABLE_SAMPLE = 200  # reference answers inspected for the verifier check
# Plenty of worked solutions: imitate them before RFT. Measured by `demo --compare` (docs/advise.md): at the same
# 769 s of training, SFT on the demo's 2000 solutions reached 0.865 held-out against 0.495 for a 128-solution
# warm-up then GRPO; from a 1000-solution warm-up (greedy 0.77) GRPO added +9.5, level with SFT alone. One task, one
# model: a cut-off between those two points, not a law.
WORKED_ROWS_PLENTY = 1000

# The label axis (issue 38): with reference answers and fewer worked solutions than WORKED_ROWS_PLENTY, `advise`
# recommends a label-free method: LABEL_FREE_METHOD, one of LABEL_FREE_METHODS. Set it from the compare's table
# (`reasontune demo --compare --arms primer_expert,primer_grpo_answers,...`, docs/advise.md): whichever of GRPO on
# answers only and expert iteration measured better at the same training seconds. Measured 2026-12-03 (seed 1, 565 s
# each, the same 128-solution primer): GRPO 0.495 held-out / 0.226 phrased otherwise, expert iteration 0.405 / 0.119.
LABEL_FREE_METHODS = {
    "grpo_answers_only": ("GRPO on the reference answers alone", "reasontune train --set rewards.answers_only=true"),
    "expert_iteration": ("expert iteration: sample, keep the completions whose answer verifies, SFT on them",
                         "reasontune train --method expert_iteration"),
}
LABEL_FREE_METHOD = "grpo_answers_only"
# A primer teaches the format from a few worked solutions before the label-free method: at most this many
# (the "at most 128"; the seed's recipe uses a few dozen).
PRIMER_MAX = 128


@dataclass
class Facts:
    """What `decide` needs. pass@ values and rates are fractions in [0, 1]."""

    pass_at_1: float
    pass_at_k: float
    k: int
    zero_variance_fraction: float
    format_rate: float
    has_worked_solutions: bool
    has_verifier: bool
    worked_rows: int = 0  # non-empty worked solutions in the training split
    answer_rows: int | None = None  # non-empty reference answers in the training split (None: not counted)
    extra: dict = field(default_factory=dict)  # n, checkable_fraction, ... (reported, not decided on)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def decide(facts: Facts | dict) -> tuple[str, list[str], str]:
    """(recommendation, reasons quoting the numbers, the rule that fired). First matching rule wins."""
    f = facts if isinstance(facts, Facts) else Facts(**facts)
    w = f.has_worked_solutions
    worked = "the data has worked solutions" if w else "the data has no worked solutions"
    if not f.has_verifier:
        rule = "no verifier -> " + ("sft (worked solutions)" if w else "neither (no worked solutions)")
        return ("sft" if w else "neither"), [
            "no verifier: RFT needs rewards that check the answer, and the reference answers are not checkable",
            worked + (": SFT can imitate them" if w else ": SFT has no targets either (add solutions or a "
                      "learned reward)")], rule
    if f.pass_at_k < PASS_AT_K_MIN:
        rule = f"pass@k < {PASS_AT_K_MIN} -> " + ("sft_then_rft" if w else "neither (easier curriculum)")
        reasons = [f"pass@{f.k} = {_pct(f.pass_at_k)} < {_pct(PASS_AT_K_MIN)}: almost no group of {f.k} samples "
                   "holds a correct answer, so RFT has nothing to reinforce"]
        reasons.append(worked + (": SFT first, then RFT once pass@k is above the threshold" if w else
                                 ": start from an easier curriculum (lower difficulty) or a stronger model"))
        return ("sft_then_rft" if w else "neither"), reasons, rule
    if f.pass_at_1 >= PASS_AT_1_MAX:
        return "neither", [f"pass@1 = {_pct(f.pass_at_1)} >= {_pct(PASS_AT_1_MAX)}: the model already solves "
                           "the task; little headroom for training"], f"pass@1 >= {PASS_AT_1_MAX} -> neither"
    if f.format_rate < FORMAT_RATE_MIN and w:
        return "sft_then_rft", [
            f"format rate = {_pct(f.format_rate)} < {_pct(FORMAT_RATE_MIN)}: most samples miss the answer format",
            worked + ": a short SFT warm-up teaches the format cheaply, then RFT improves the answers",
            f"pass@{f.k} = {_pct(f.pass_at_k)}, pass@1 = {_pct(f.pass_at_1)}"], \
            f"format_rate < {FORMAT_RATE_MIN} and worked solutions -> sft_then_rft"
    if w and f.worked_rows >= WORKED_ROWS_PLENTY:
        return "sft_then_rft", [
            f"the data has {f.worked_rows} worked solutions (>= {WORKED_ROWS_PLENTY}) and pass@1 = {_pct(f.pass_at_1)}: "
            "imitating them teaches more per minute than RFT does",
            "measured on the demo at equal training time: SFT on 2000 solutions 0.865 held-out, a 128-solution "
            "warm-up then GRPO 0.495 (docs/advise.md); put most of the budget into SFT over all of them "
            "(warmup.examples), then RFT"], \
            f"worked_rows >= {WORKED_ROWS_PLENTY} -> sft_then_rft"
    if f.zero_variance_fraction > ZERO_VARIANCE_MAX:
        zv = (f"{_pct(f.zero_variance_fraction)} of groups have zero reward variance (> {_pct(ZERO_VARIANCE_MAX)}):"
              " GRPO gets no gradient from them")
        if w:
            return "sft_then_rft", [zv, worked + ": SFT first to move the model where its samples differ"], \
                f"zero_variance_fraction > {ZERO_VARIANCE_MAX} and worked solutions -> sft_then_rft"
        return "rft", [zv, "warning: expect slow, noisy RFT; use larger groups (num_generations), a higher "
                       "temperature, or an easier curriculum", worked], \
            f"zero_variance_fraction > {ZERO_VARIANCE_MAX}, no worked solutions -> rft (with a warning)"
    reasons = [f"verifier present, pass@{f.k} = {_pct(f.pass_at_k)} >= {_pct(PASS_AT_K_MIN)} and pass@1 = "
               f"{_pct(f.pass_at_1)} < {_pct(PASS_AT_1_MAX)}: the model sometimes succeeds and has headroom",
               f"{_pct(f.zero_variance_fraction)} of groups have zero reward variance (<= {_pct(ZERO_VARIANCE_MAX)})"]
    if f.format_rate < FORMAT_RATE_MIN:
        reasons.append(f"format rate = {_pct(f.format_rate)} is low, but with no worked solutions the format "
                       "rewards must teach it")
    return "rft", reasons, "verifier, pass@k and reward variance sufficient -> rft"


def label_plan(facts: Facts | dict, recommendation: str) -> dict:
    """How to train on the label axis: {method, how, primer_examples, labels}. With answers and fewer than
    WORKED_ROWS_PLENTY worked solutions, RFT is LABEL_FREE_METHOD (after a primer of at most PRIMER_MAX worked
    solutions when the recommendation is SFT first); with plenty, SFT on all of them, then GRPO."""
    f = facts if isinstance(facts, Facts) else Facts(**facts)
    if LABEL_FREE_METHOD not in LABEL_FREE_METHODS:
        raise ConfigError(f"LABEL_FREE_METHOD={LABEL_FREE_METHOD!r} is not one of {', '.join(LABEL_FREE_METHODS)}")
    answers = "no count of" if f.answer_rows is None else str(f.answer_rows)
    counted = f"{f.worked_rows} worked solutions and {answers} reference answers"
    free, (what, how) = LABEL_FREE_METHOD, LABEL_FREE_METHODS[LABEL_FREE_METHOD]
    if recommendation == "neither":
        return {"method": None, "how": None, "primer_examples": 0, "labels": counted}
    if recommendation == "sft":
        return {"method": "sft", "how": "reasontune sft", "primer_examples": 0, "labels": counted}
    plenty = f.has_worked_solutions and f.worked_rows >= WORKED_ROWS_PLENTY
    if recommendation == "sft_then_rft" and plenty:
        return {"method": "sft_all_then_grpo", "primer_examples": 0, "labels": counted,
                "how": f"reasontune train --warmup sft --set warmup.examples={f.worked_rows}"}
    if recommendation == "sft_then_rft" and f.has_worked_solutions:  # a primer teaches the format, then answers only
        primer = min(f.worked_rows, PRIMER_MAX)
        return {"method": f"primer_then_{free}", "primer_examples": primer, "labels": counted,
                "how": f"{how} --warmup sft --set warmup.examples={primer}  ({what}, after the primer)"}
    return {"method": free, "how": f"{how}  ({what})", "primer_examples": 0, "labels": counted}


# ------------------------------------------------------------------------------ measuring the facts
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{4,}")


def answer_checkable(answer) -> bool:
    """Can a math verifier check this reference answer? A number, or a short math expression that
    math-verify parses. Prose (a word of 4+ letters outside LaTeX commands) counts as open-ended."""
    from reasontune.rewards.check import MAX_CHARS, _as_latex, _math_verify, parse_number
    from reasontune.rewards.timelimit import TimeLimitExceeded, call_with_limit

    if answer is None or not str(answer).strip():
        return False
    s = str(answer).strip()
    if parse_number(s) is not None:
        return True
    if len(s) > MAX_CHARS or _WORD.search(_LATEX_CMD.sub(" ", s)):
        return False
    mv = _math_verify()
    try:
        # math_verify returns [] for what it cannot parse: that is "not checkable", and needs no except
        return bool(call_with_limit(lambda: mv.parse(_as_latex(s), parsing_timeout=None), 1.0))
    except TimeLimitExceeded:
        logger.warning("reference answer %.200r: math_verify did not parse it within 1 s; counted as not "
                       "checkable", s)
        return False
    except Exception as e:  # a math_verify/sympy bug, not a property of the answer: say so
        logger.warning("reference answer %.200r: math_verify failed (%s: %s); counted as not checkable", s,
                       type(e).__name__, e)
        return False


def data_facts(train_ds, n_reward_funcs: int, runs_tests: bool = False) -> dict:
    """worked_rows, has_worked_solutions, checkable_fraction, has_verifier from the training split. A code row
    (one with tests) is checkable when a reward runs its tests (`runs_tests`: code_tests in the rewards)."""
    rows = len(train_ds)
    worked = 0
    if "worked" in train_ds.column_names:
        worked = sum(1 for w in train_ds["worked"] if w is not None and str(w).strip())
    sample = train_ds.select(range(min(CHECKABLE_SAMPLE, rows))) if rows else None
    answers = sample["answer"] if sample is not None else []
    # an rg:TASK row carries its entry: reasoning-gym's own scorer checks it ("Yes", a sentence, a name)
    entries = sample["rg_entry"] if sample is not None and "rg_entry" in sample.column_names else [""] * len(answers)
    tests = sample["tests"] if sample is not None and "tests" in sample.column_names else [None] * len(answers)
    coded = [runs_tests and bool(t and str(t).strip()) for t in tests]
    checkable = (sum(c or bool(e) or answer_checkable(a) for a, e, c in zip(answers, entries, coded)) / len(answers)
                 if answers else 0.0)
    return {"train_rows": rows, "worked_rows": worked, "has_worked_solutions": worked >= min(MIN_WORKED_ROWS, rows)
            and worked > 0, "checkable_fraction": checkable, "reward_funcs": n_reward_funcs,
            "has_verifier": n_reward_funcs > 0 and checkable >= CHECKABLE_MIN,
            "answer_rows": sum(1 for a in train_ds["answer"] if a is not None and str(a).strip()) if rows else 0}


def total_reward(scores: dict, names: list[str], weights: list[float]) -> float:
    """GRPO's reward: the weighted sum over reward functions, a skipped (None) score counting 0 (nansum)."""
    return sum(w * scores[n] for n, w in zip(names, weights) if scores.get(n) is not None)


def group_stats(records: list[dict]) -> dict:
    """zero_variance_fraction over groups (one problem's samples) from records with `total_reward`."""
    groups: dict[int, list[float]] = {}
    for r in records:
        groups.setdefault(r["index"], []).append(r["total_reward"])
    flat = sum(1 for g in groups.values() if max(g) - min(g) <= ZERO_VARIANCE_EPS)
    return {"groups": len(groups), "zero_variance_groups": flat,
            "zero_variance_fraction": flat / len(groups) if groups else 1.0}


def sample_and_score(cfg: RunConfig, engine, tokenizer, rows: list[dict]) -> tuple[dict, list[dict]]:
    """K samples per row at cfg.eval.temperature, graded and scored: (metrics, records). `engine`: from
    engines.open_engine (our decode or vLLM)."""
    import torch

    from reasontune.stages.evaluate import _messages, _records, _sample_metrics, max_new_tokens_for, sampling_for
    from reasontune.models.prompting import render_prompt, stop_rule
    from reasontune.rewards import run_reward_funcs

    generate = engine.generate
    k, max_new = cfg.eval.samples, max_new_tokens_for(cfg)
    funcs, weights = run_reward_funcs(cfg, tokenizer.eos_token, max_new)
    prompts = [render_prompt(tokenizer, _messages(r, cfg), cfg.format) for r in rows]
    common = dict(max_new_tokens=max_new, stop=stop_rule(cfg), batch_size=cfg.eval.batch_size, progress=True,
                  autocast_setting=cfg.grpo.bf16, max_length=cfg.model.max_seq_length)
    torch.manual_seed(cfg.seed)
    gens = generate(prompts, **sampling_for(cfg), num_return_sequences=k, desc=f"advise: {k} samples", **common)
    records = _records(rows, prompts, gens, "sample", cfg, funcs)
    greedy = generate(prompts, temperature=0.0, desc="advise: greedy", **common)
    room = headroom(_records(rows, prompts, greedy, "greedy", cfg, []), records, k)
    names = [f.__name__ for f in funcs]
    for r in records:
        r["total_reward"] = total_reward(r.get("scores", {}), names, weights)
    m = _sample_metrics(records, k)
    out = {"pass_at_1": m["pass_at"]["1"], "pass_at_k": m["pass_at_k"], "k": k, "pass_at": m["pass_at"],
           "format_rate": m["sample_format_rate"], "maj_at_k": m["maj_at_k"], "n": len(rows),
           "reward_weights": dict(zip(names, weights)), "max_new_tokens": max_new,
           "temperature": cfg.eval.temperature, "headroom": room, **group_stats(records)}
    return out, records


def headroom(greedy: list[dict], sampled: list[dict], k: int) -> dict:
    """Greedy accuracy against pass@k, overall and by level (`difficulty`) where the rows have levels.

    GRPO turns answers the policy sometimes samples into answers it gives greedily, so pass@k - greedy is
    about the most a run can add, and a level with pass@k near 0 has nothing to sharpen."""
    from reasontune.stages.evaluate import _pass_at_by
    from reasontune.runs.metrics import breakdown, mean, pass_at_k

    by_problem: dict[int, list[bool]] = {}
    for r in sampled:
        by_problem.setdefault(r["index"], []).append(bool(r["correct"]))
    acc = mean([bool(r["correct"]) for r in greedy]) or 0.0
    top = mean([pass_at_k(len(v), sum(v), k) for v in by_problem.values()]) or 0.0
    out = {"greedy": acc, "pass_at_k": top, "headroom": top - acc, "by_level": {}}
    if any(r.get("difficulty") is not None for r in greedy):
        levels = _pass_at_by(sampled, "difficulty", k)
        for level, b in breakdown(greedy, "difficulty").items():
            p = levels.get(level, 0.0)
            out["by_level"][level] = {"n": b["n"], "greedy": b["accuracy"], "pass_at_k": p,
                                      "headroom": p - b["accuracy"]}
    return out


def advise(cfg: RunConfig, model=None, tokenizer=None, datasets=None, adapter: str | None = None,
           on: str = "train", out_dir=None) -> dict:
    """Measure the facts on `cfg.eval.limit` rows of split `on`, decide, return (and write) the advice."""
    from reasontune.stages.evaluate import _rows

    if cfg.eval.samples < 2:
        raise ConfigError(f"eval.samples={cfg.eval.samples}: advise needs 2 or more samples per problem "
                          "to measure pass@k and reward variance (use --samples 8)")
    from reasontune.engines import open_engine
    from reasontune.runs.validate import check_rewards_fit_data, has_code_rows

    if datasets is None:  # code rows and code rewards must go together: refused before a model loads
        check_rewards_fit_data(cfg, _code_source(cfg), stage="advise")
    engine = open_engine(cfg, model, tokenizer, adapter=adapter)  # eval.engine: our decode or vLLM
    tokenizer = engine.tokenizer
    if datasets is None:
        from reasontune.data import build_datasets

        datasets = build_datasets(cfg.data, cfg.format, tokenizer=tokenizer)
    check_rewards_fit_data(cfg, has_code_rows(datasets["train"]), stage="advise")
    rows = _rows(cfg, datasets, tokenizer, on, cfg.eval.limit)
    if not rows:
        raise ConfigError(f"no rows in the {on!r} split of {cfg.data.dataset!r} to sample from")
    from reasontune.rewards import code_rewards, resolved_rewards

    dfacts = data_facts(datasets["train"], len(resolved_rewards(cfg.rewards)), bool(code_rewards(cfg.rewards)))
    sampled, records = sample_and_score(cfg, engine, tokenizer, rows)
    engine.close()
    facts = Facts(pass_at_1=sampled["pass_at_1"], pass_at_k=sampled["pass_at_k"], k=sampled["k"],
                  zero_variance_fraction=sampled["zero_variance_fraction"], format_rate=sampled["format_rate"],
                  has_worked_solutions=dfacts["has_worked_solutions"], has_verifier=dfacts["has_verifier"],
                  worked_rows=dfacts["worked_rows"], answer_rows=dfacts["answer_rows"])
    rec, reasons, rule = decide(facts)
    result = {"recommendation": rec, "reasons": reasons, "rule": rule, **label_plan(facts, rec),
              **{k: v for k, v in asdict(facts).items() if k != "extra"}, **sampled, **dfacts,
              "model": cfg.model.name, "adapter": adapter, "dataset": cfg.data.dataset, "split": on}
    if out_dir is not None:
        from reasontune.stages.evaluate import write_outputs

        write_outputs(out_dir, result, records)
        logger.info("advise: wrote %s/metrics.json and completions.jsonl", out_dir)
    return result


def _code_source(cfg: RunConfig) -> bool | None:
    """Whether the data are code rows, known before a model loads: a file or generator is built (without a
    tokenizer), a hub set is known by its adapter (None: an unknown hub id, checked once it loads)."""
    from reasontune.runs.validate import has_code_rows, is_local_or_procedural, known_code_source

    if not is_local_or_procedural(cfg.data.dataset):
        return known_code_source(cfg.data.dataset)
    from reasontune.data import build_datasets

    return has_code_rows(build_datasets(cfg.data, cfg.format, tokenizer=None)["train"])


# ---------------------------------------------------------------------------------------------- CLI
DEFAULT_LIMIT, DEFAULT_SAMPLES = 32, 8


def register(subparsers) -> None:
    from reasontune.stages.evaluate import add_source_args

    p = subparsers.add_parser("advise", help="measure pass@k and reward variance; recommend rft, sft_then_rft, "
                              "sft or neither")
    add_source_args(p)
    p.add_argument("--on", choices=["train", "test"], default="train",
                   help="split to sample problems from (default train: where GRPO draws its groups)")
    p.add_argument("--out", help="also write metrics.json and completions.jsonl (with total_reward) here")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(func=cmd_advise)


JSON_KEYS = ("recommendation", "method", "how", "primer_examples", "labels", "pass_at_1", "pass_at_k", "k", "zero_variance_fraction", "format_rate",
             "has_worked_solutions", "has_verifier", "reasons", "rule", "headroom")


def cmd_advise(args) -> int:
    from reasontune.config import override
    from reasontune.stages.evaluate import config_for_eval

    cfg, adapter = config_for_eval(args)
    cfg = override(cfg, {"eval.limit": args.eval_limit or DEFAULT_LIMIT,
                         "eval.samples": args.eval_samples or DEFAULT_SAMPLES})
    result = advise(cfg, adapter=adapter, on=args.on, out_dir=args.out)
    if args.json:
        keys = JSON_KEYS + tuple(k for k in ("n", "pass_at", "maj_at_k", "groups", "zero_variance_groups",
                                             "worked_rows", "train_rows", "checkable_fraction", "temperature",
                                             "max_new_tokens", "model", "adapter", "dataset", "split")
                                 if k in result)
        print(json.dumps({k: result.get(k) for k in keys}, default=str))
        return 0
    print(format_advice(result))
    return 0


def format_advice(r: dict) -> str:
    lines = [f"advise: {r['model']} on {r['dataset']} ({r['n']} problems x {r['k']} samples at T={r['temperature']})",
             f"  pass@1                  {r['pass_at_1']:.3f}", f"  pass@{r['k']:<19d}{r['pass_at_k']:.3f}",
             f"  zero-variance groups    {r['zero_variance_fraction']:.3f} ({r['zero_variance_groups']}/{r['groups']})",
             f"  format rate             {r['format_rate']:.3f}",
             f"  worked solutions        {'yes' if r['has_worked_solutions'] else 'no'} "
             f"({r['worked_rows']}/{r['train_rows']} train rows)",
             f"  verifier                {'yes' if r['has_verifier'] else 'no'} "
             f"({100 * r['checkable_fraction']:.0f}% of answers checkable, {r['reward_funcs']} reward functions)",
             "", f"recommendation: {r['recommendation']}", f"rule: {r['rule']}"]
    if r.get("method"):
        lines[-1:-1] = [f"method: {r['method']} (the data has {r['labels']}): {r['how']}"]
    lines += [f"  - {x}" for x in r["reasons"]]
    return "\n".join(lines + format_headroom(r.get("headroom"), r["k"]))


def format_headroom(h: dict | None, k: int) -> list[str]:
    """The room RFT has: greedy accuracy against pass@k, by level where there are levels."""
    if not h:
        return []
    lines = ["", f"headroom: greedy {h['greedy']:.3f}, pass@{k} {h['pass_at_k']:.3f} (+{h['headroom']:.3f}): GRPO "
             "sharpens answers the model sometimes samples, so greedy accuracy after RFT rarely passes pass@k"]
    for level, v in h.get("by_level", {}).items():
        lines.append(f"  level {level:<4} n={v['n']:<4d} greedy {v['greedy']:.3f}  pass@{k} {v['pass_at_k']:.3f}  "
                     f"headroom {v['headroom']:+.3f}")
    return lines

