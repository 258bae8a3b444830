"""`reasontune demo --compare`: arms of training under one budget of training seconds, each row with its labels.

The arms (stages/compare_arms.py; `--arms` picks them): by default SFT only, GRPO only and SFT then GRPO; issue
38's two axes add the primer alone, primer + expert iteration, primer + GRPO on answers only, primer + GRPO with
the reference step_check, SFT on all worked solutions, and that SFT then GRPO.

Each arm starts from a fresh copy of the base model with a fresh LoRA. The SFT-then-GRPO arm runs
the demo recipe as written and calibrates the others (after `reasontune demo` it is that demo's own run,
read from its metrics.json, so `demo --compare` trains it once, not twice): its wall time is the budget (unless one is
given), its GRPO step time sizes the GRPO-only arm (max_steps = budget / step time, so the LR
schedule fits the run), and its SFT time per example sizes the SFT-only arm (more distinct worked
solutions first, then more epochs). A `TimeBudget` callback stops any arm whose budget is spent, so
no arm trains longer than the budget plus one step. Only training time counts, one definition for every
arm, the demo's included: the seconds inside trainer.train() (SFT's and GRPO's); loading, building the
trainer, the reward probe, saving and evaluation do not. Held-out accuracy is measured on the training
distribution's test split, and out-of-distribution accuracy on harder problems (procedural level 5 when
training used 1-4).

Writes OUT/compare/metrics.json, OUT/compare/table.md and, per arm, OUT/compare/ARM/ (a run
folder: config, status, metrics.jsonl, adapter/, evals/heldout, evals/ood, evals/phrased).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from reasontune.config import RunConfig, override
from reasontune.stages.compare_arms import ARMS, DEFAULT_ARMS, arm_config, expert_stage, plan_arms, steps_run
from reasontune.stages.demo import OOD_PROBLEMS, ood_data_config  # the held-out harder level, the demo's own

logger = logging.getLogger(__name__)


def _fresh(cfg: RunConfig):
    from transformers import set_seed

    from reasontune.models import load_model_and_tokenizer

    set_seed(cfg.seed)  # identical LoRA init in every arm
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    return model, tok


def _sft_stage(cfg: RunConfig, model, tok, train, run, left: float | None) -> dict:
    from reasontune.stages.sft import warmup_sft
    from reasontune.stages.train import TimeBudget

    cb = TimeBudget(seconds=left)  # counted from inside trainer.train(), as the stage's `seconds` are
    out = warmup_sft(cfg, model, tok, train, run=run, out_dir=str(run.path), callbacks=[cb])
    return {**out, "steps": cb.steps, "stopped_by_budget": cb.fired, "batch_size": cfg.warmup.batch_size}


def _grpo_stage(cfg: RunConfig, model, tok, train, run, left: float | None) -> dict:
    from reasontune.engines.guards import NonFiniteGuard
    from reasontune.runs.callbacks import MetricsCallback
    from reasontune.stages.train import TimeBudget, build_grpo_trainer, prepare_prompts

    if left is not None and left <= 0:  # the SFT stage spent the budget: no problem drawn, no label read
        return {"steps": 0, "seconds": 0.0, "stopped_by_budget": True, "labels": None}
    cb, guard = TimeBudget(seconds=left), NonFiniteGuard(cfg.grpo.max_nonfinite_steps, run.path)
    own = TimeBudget(seconds=cfg.grpo.max_seconds)  # the recipe's own GRPO budget (the calibrating arm)
    trainer = build_grpo_trainer(cfg, model, tok, prepare_prompts(train, tok, cfg),
                                 [guard, MetricsCallback(run), cb, own])
    t = time.perf_counter()
    trainer.train()
    from reasontune.runs.labels import grpo_labels

    return {"steps": trainer.state.global_step, "max_steps": cfg.grpo.max_steps, "seconds": time.perf_counter() - t,
            "stopped_by_budget": cb.fired, "stopped_by_max_seconds": own.fired, "nonfinite": guard.tripped,
            "labels": grpo_labels(trainer.reward_funcs, trainer.train_dataset, trainer.args, trainer.state.global_step)}


def run_arm(cfg: RunConfig, arm: str, data, evals: dict, budget_s: float | None, plan: dict, root: Path,
            marks: list | None = None) -> dict:
    """Train one arm from a fresh model within the budget, save its adapter, evaluate it."""
    from reasontune.export.portable import save_adapter
    from reasontune.runs.folder import RunFolder

    acfg = arm_config(cfg, arm, plan, str(root / arm))
    model, tok = _fresh(acfg)
    run = RunFolder(acfg.output_dir)
    run.start(acfg, extra={"arm": arm, "budget_s": budget_s})
    stages, spec = {}, ARMS[arm]
    # the budget is training seconds (trainer.train()'s, each stage's `seconds`): building a trainer is not counted
    if spec.sft:
        stages["sft"] = _sft_stage(acfg, model, tok, data["train"], run, budget_s or None)
    if spec.then:
        left = budget_s - stages.get("sft", {}).get("seconds", 0.0) if budget_s else None
        stage = _grpo_stage if spec.then == "grpo" else expert_stage
        stages[spec.then] = stage(acfg, model, tok, data["train"], run, left)
    wall = sum(s["seconds"] for s in stages.values())  # training seconds, as rows_from_demo counts the demo's
    save_adapter(model, tok, run.path / "adapter", acfg, f"reasontune compare, arm {arm}")
    from reasontune.runs.labels import total

    # the worked solutions SFT trained on, and what GRPO's rewards or expert iteration's check read
    labels = total(stages.get("sft", {}).get("examples_seen", 0), (stages.get(spec.then) or {}).get("labels"))
    result = {"arm": arm, "wall_seconds": wall, "stages": stages, "labels": labels,
              "stopped_by_budget": any(s.get("stopped_by_budget") for s in stages.values()),
              **_evaluate(acfg, model, tok, evals, run.path / "evals", marks)}
    run.set_status("done", wall_seconds=wall, stopped_by_budget=result["stopped_by_budget"], labels=labels)
    logger.info("compare %s: %.0f s, held-out %.3f, OOD %s", arm, wall, result["heldout_accuracy"],
                result.get("ood_accuracy"))
    return result


def _evaluate(cfg: RunConfig, model, tok, evals: dict, out: Path, marks: list | None = None) -> dict:
    from reasontune.stages.evaluate import evaluate, read_jsonl
    from reasontune.stages.overlap import novelty

    res = {}
    for name, ds in evals.items():
        limit = {"eval.limit": len(ds)}  # the OOD set is the demo's OOD_PROBLEMS, all of it
        m = evaluate(override(cfg, limit), model=model, tokenizer=tok, dataset=ds, out_dir=out / name, progress=False)
        if name == "heldout" and marks:  # the demo's split: problems no training row has the working of
            m = {**m, **novelty(read_jsonl(out / name / "completions.jsonl"), marks)}
        res.update(figures(name, m))
    return res


def _marks(cfg: RunConfig, data, tok) -> list | None:
    """The held-out rows' near-duplicate marks (overlap.py), as the demo computes them; None if they fail."""
    from reasontune.stages.overlap import heldout_marks

    try:
        return heldout_marks(cfg, datasets=data, tokenizer=tok)
    except Exception as e:  # the arms are measured without it; a failed split must not lose them
        logger.warning("near-duplicate split failed; the compare reports no novel accuracy: %s", e)
        return None


def figures(name: str, m: dict) -> dict:
    """One eval's row figures from its metrics (evaluate's, or the demo's stage_summary): accuracy, format,
    stops on its own, working lines per answer overall and by level (fewer on multi-step problems is collapse)."""
    levels = m.get("by_difficulty") or m.get("by_level") or {}
    return {f"{name}_accuracy": m["accuracy"], f"{name}_novel_accuracy": m.get("novel_accuracy"),
            f"{name}_novel_n": m.get("novel_n"), f"{name}_format_rate": m.get("format_rate"), f"{name}_n": m.get("n"),
            f"{name}_stop_rate": m.get("stop_rate"), f"{name}_working_lines": m.get("mean_working_lines"),
            f"{name}_working_lines_by_level": {str(k): v.get("working_lines") for k, v in sorted(levels.items())}}


def _no_labels() -> dict:
    """The base model's labels: it learned from nothing."""
    from reasontune.runs.labels import total

    return total(0, None)


def rows_from_demo(s: dict) -> dict:
    """The base row and the SFT-then-GRPO arm from a finished demo's metrics.json summary (`run_demo`'s return):
    same recipe, fresh model, SFT then GRPO; only its training seconds count, as in `run_arm`: trainer.train()'s
    (warmup_sft's `seconds`, train()'s `grpo_seconds`), not the demo's GRPO stage timing, which also holds
    validation, prompt preparation, the trainer's build, the reward probe and the adapter's save."""
    sft = {"steps": s["warmup_sft"]["steps"], "seconds": s["warmup_sft"]["seconds"]}
    grpo = {"steps": s["grpo_steps"], "seconds": s["grpo"]["grpo_seconds"],
            "max_steps": s["settings"]["grpo"]["max_steps"]}
    ood, phrased = s.get("ood") or {}, s.get("phrased_otherwise") or {}

    def row(arm, stage, wall, stages):
        labels = s.get("labels") if stages else _no_labels()
        r = {"arm": arm, "wall_seconds": wall, **figures("heldout", s[stage]), "from_demo": True, "labels": labels}
        if stage in ood:
            r.update({"ood_accuracy": ood[stage], "ood_n": ood.get("n")})
        if stage in phrased:
            r.update({"phrased_accuracy": phrased[stage], "phrased_n": phrased.get("n"),
                      "phrased_stop_rate": (phrased.get("stop_rate") or {}).get(stage)})
        return {**r, "stages": stages} if stages else r

    first = row("sft_then_grpo", "after", sft["seconds"] + grpo["seconds"], {"sft": sft, "grpo": grpo})
    first["stopped_by_budget"] = (grpo["steps"] or 0) < (grpo["max_steps"] or 0)  # the demo's GRPO time budget
    return {"base": row("base", "before", 0.0, None), "sft_then_grpo": first}


def finished_demo(out_dir: str | Path) -> dict:
    """The metrics.json of a demo that finished in OUT (`demo --compare-only` reads it as its SFT-then-GRPO arm),
    or a ConfigError naming the fix; read before any model loads."""
    import json

    from reasontune.config import ConfigError

    path = Path(out_dir) / "metrics.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--compare-only needs a finished demo in {out_dir} and {path} cannot be read ({e}): run "
                          f"`reasontune demo --out {out_dir}` first, or `reasontune demo --compare` for both") from e
    missing = [k for k in ("warmup_sft", "grpo", "settings", "after") if k not in summary]
    if missing:
        raise ConfigError(f"{path} lacks {missing}: it is not a finished demo of this version; run "
                          f"`reasontune demo --out {out_dir}` again")
    return summary


def check_same_settings(demo_settings: dict, cfg: RunConfig) -> None:
    """The demo read as the SFT-then-GRPO arm must have run the recipe the other arms run: a different --set
    would compare two recipes, not three arms of one."""
    import json

    from reasontune.config import ConfigError

    ours = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as metrics.json holds them
    diff = sorted(f"{sec}.{k}" for sec, v in ours.items() if isinstance(v, dict)
                  for k in v if (demo_settings.get(sec) or {}).get(k) != v[k])
    diff += sorted(k for k, v in ours.items() if not isinstance(v, dict) and k != "output_dir"
                   and demo_settings.get(k) != v)
    if diff:
        raise ConfigError(f"the finished demo ran other settings than this compare would ({', '.join(diff)}): pass "
                          "the same --set the demo ran with, or run `reasontune demo --compare` afresh")


def plan_from(first: dict, cfg: RunConfig, budget_s: float | None, worked_rows: int) -> dict:
    """Sizes for the GRPO-only and SFT-only arms from the SFT-then-GRPO arm's timings."""
    budget = budget_s or first["wall_seconds"]
    grpo, sft = first["stages"].get("grpo", {}), first["stages"].get("sft", {})
    step_s = grpo["seconds"] / grpo["steps"] if grpo.get("steps") else None
    steps = max(1, round(budget / step_s)) if step_s else cfg.grpo.max_steps
    per_step = cfg.warmup.batch_size * cfg.warmup.gradient_accumulation_steps
    seen = max(1, sft.get("steps", 0)) * per_step  # examples processed (the last batch may be short)
    per_example = sft.get("seconds", 0.0) / seen if sft else None
    passes = budget / per_example if per_example else cfg.warmup.examples * cfg.warmup.epochs
    examples = int(max(1, min(worked_rows, passes)))
    epochs = max(1.0, passes / max(1, worked_rows)) if passes > worked_rows else 1.0
    plan = {"budget_s": budget, "grpo_step_seconds": step_s, "grpo_steps": steps, "sft_seconds_per_example":
            per_example, "sft_examples": examples, "sft_epochs": round(epochs, 3)}
    return {**plan, **plan_arms(plan, cfg, worked_rows)}


def run_compare(out_dir: str = "runs/demo", quick: bool = False, budget_s: float | None = None,
                include_base: bool = True, updates: dict | None = None, demo_summary: dict | None = None,
                arms: tuple[str, ...] = DEFAULT_ARMS, recipe: str | None = None) -> dict:
    """Run the arms (and a base-model row); write OUT/compare/metrics.json and table.md.

    The SFT-then-GRPO arm (the recipe as written) always has a row: it calibrates the others' sizes.
    budget_s None: the budget is the SFT-then-GRPO arm's training time (with --quick, the quick recipe's).
    demo_summary: a finished demo of the same recipe (its metrics.json); it is the base row and the
    SFT-then-GRPO arm, and only the other arms train.
    """
    from reasontune.stages import demo
    from reasontune.data import build_datasets
    from reasontune.runs.folder import atomic_write_json
    from reasontune.data.worked import count_worked

    cfg = demo.demo_config(out_dir, quick, updates, recipe=recipe)
    if demo_summary is not None:
        check_same_settings(demo_summary["settings"], cfg)
    root = Path(out_dir) / "compare"
    root.mkdir(parents=True, exist_ok=True)
    from reasontune.models import load_tokenizer, resolve_model_path

    tok = load_tokenizer(resolve_model_path(cfg.model), cfg.model, cfg.format)
    data = build_datasets(cfg.data, cfg.format, tokenizer=tok)
    evals = {"heldout": data["test"]}
    ood_cfg = ood_data_config(cfg.data)
    if ood_cfg is not None:
        ood_cfg = replace(ood_cfg, test_size=min(OOD_PROBLEMS, cfg.data.test_size))  # the demo's OOD set
        evals["ood"] = build_datasets(ood_cfg, cfg.format, tokenizer=tok)["test"]
    phrased = demo.phrased_set(cfg, tok)  # the demo's phrased-otherwise rows (None off the arithmetic generators)
    if phrased is not None:
        evals["phrased"] = phrased
    marks = _marks(cfg, data, tok)  # one near-duplicate split for every arm
    rows = {}
    if demo_summary is not None:
        rows.update(rows_from_demo(demo_summary))
    else:
        if include_base:
            model, tok = _fresh(cfg)
            base = _evaluate(cfg, model, tok, evals, root / "base", marks)
            rows["base"] = {"arm": "base", "wall_seconds": 0.0, **base, "labels": _no_labels()}
            del model
        rows["sft_then_grpo"] = run_arm(cfg, "sft_then_grpo", data, evals, budget_s, {}, root, marks)
    plan = plan_from(rows["sft_then_grpo"], cfg, budget_s, count_worked(data["train"]))
    logger.info("compare plan: %s", plan)
    for arm in (a for a in arms if a != "sft_then_grpo"):
        rows[arm] = run_arm(cfg, arm, data, evals, plan["budget_s"], plan, root, marks)
    ood_levels = ood_cfg.difficulty if ood_cfg else None
    summary = {"arms": rows, "plan": plan, "budget_s": plan["budget_s"], "quick": quick,
               "train_difficulty": cfg.data.difficulty, "ood_difficulty": ood_levels, "settings": cfg.to_dict()}
    atomic_write_json(root / "metrics.json", summary)
    write_table(root, summary)
    return summary


def write_table(root: Path, s: dict) -> None:
    from reasontune.runs.folder import atomic_write_text

    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    level = f"level {', '.join(map(str, s['ood_difficulty']))}" if s["ood_difficulty"] else "OOD"
    lines = ["# The compare: the same training seconds, and the labels each arm learned from", "",
             f"Budget: {s['budget_s']:.0f} s of training per arm (inside trainer.train(); expert iteration: its "
             f"rounds). Held-out: training distribution (difficulty {s['train_difficulty']}); {level}: never "
             "trained on (none when training used the top level); phrased otherwise: data/phrased_otherwise.jsonl.",
             "", "Labels: the worked solutions an arm learned from (SFT examples, and GRPO problems whose reference "
             "working a reward read) and the reference answers it read (GRPO's rewards, expert iteration's check; "
             "runs/labels.py).", "",
             f"| arm | labels: worked solutions / answers | training s | held-out | no near-duplicate | {level} | "
             "phrased otherwise | working lines by level | stops on its own | steps run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, r in s["arms"].items():
        by = " / ".join(f"L{k} {f(v)}" for k, v in (r.get("heldout_working_lines_by_level") or {}).items())
        name = f"{arm} (the demo's run)" if r.get("from_demo") and arm != "base" else arm
        novel = f(r.get("heldout_novel_accuracy")) + (f" ({r['heldout_novel_n']})" if r.get("heldout_novel_n") else "")
        lab = r.get("labels")
        lab = f"{lab['worked_solutions']} / {lab['answers']}" if lab else "n/a"
        steps = steps_run(r.get("stages") or {}) + (", stopped by the budget" if r.get("stopped_by_budget") else "")
        lines.append(f"| {name} | {lab} | {r['wall_seconds']:.0f} | {f(r.get('heldout_accuracy'))} | {novel} | "
                     f"{f(r.get('ood_accuracy'))} | {f(r.get('phrased_accuracy'))} | {by or 'n/a'} | "
                     f"{f(r.get('heldout_stop_rate'))} | {steps} |")
    lines += ["", "Arms: " + "; ".join(f"{a}: {ARMS[a].help}" for a in s["arms"] if a in ARMS) + ".",
              "", f"Sizes (from the SFT-then-GRPO arm's timings): {s['plan']}."]
    atomic_write_text(root / "table.md", "\n".join(lines) + "\n")
