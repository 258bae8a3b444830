"""`reasontune demo`: the whole loop offline on a CPU with the embedded SmolLM2-135M.

base eval -> SFT format warm-up -> eval -> GRPO -> eval, then metrics.json, report.md,
report.html, the PEFT adapter (adapter/) and the warm-up's adapter (warmup/adapter/) in the output
folder. The settings live in recipes/demo.yaml (one place; `--recipe` names another, e.g. the labelled
recipes/demo-worked.yaml); --quick shrinks them to a smoke test that proves the plumbing, not a result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from reasontune.config import DataConfig, RunConfig, load_yaml, override

logger = logging.getLogger(__name__)

RECIPES = Path(__file__).resolve().parent.parent / "recipes"  # reasontune/recipes
DEFAULT_RECIPE = "demo.yaml"  # `reasontune demo` without --recipe

# The demo's promise: done in 20 minutes on a 2-core laptop CPU. GRPO gets what is left of it (after
# loading, the evals and the warm-up, keeping room for the final eval), capped by grpo.max_seconds, so
# a slower CPU trains for fewer steps instead of running over. Only the full demo; --quick is tiny.
DEMO_BUDGET_S = 18 * 60  # a minute under 19: this host's speed varies (GRPO steps 18-40 s across sessions)

# The warm-up is also sampled: pass@k at GRPO's rollout temperature is about as far as GRPO can sharpen it
# (GRPO turns answers the policy sometimes samples into answers it gives greedily). The stage compared
# before and after GRPO stays greedy; these samples only measure the room. They are drawn for the first
# WARMUP_SAMPLED_PROBLEMS held-out problems, not all: 8 samples of all 200 cost ~170 s of the 18 minutes on
# a 2-core AVX512 host (~8 GRPO steps of ~30, issue 24); 64 problems (levels mixed: the split is drawn
# uniformly) cost about a third of that and still give pass@8 by level on ~20 problems each.
WARMUP_SAMPLES = 8
WARMUP_SAMPLED_PROBLEMS = 64
# Problems of the harder level training never saw (ood_data_config), greedy, at each stage; written to
# OUT/evals_ood/<stage>, apart from OUT/evals/, whose last stage the report reads as the result.
OOD_PROBLEMS = 100
# The base model is evaluated on the first BASE_EVAL_PROBLEMS problems of each set, not all: it never writes the
# answer block (0.000 on every set in every demo run so far) and writes every completion to the token cap, so its
# full evals cost ~230 s of the 18 minutes on an fp32 host, about ten GRPO steps, to confirm a zero.
BASE_EVAL_PROBLEMS = 64
# Problems phrased unlike the generators (data/phrased_otherwise.jsonl: the number first, the question first,
# units, first person, other names and settings, terse notes; levels 1-3), greedy, at each stage, into
# OUT/evals_phrased/<stage>: whether what training taught carries to other wording. For the arithmetic demos only.
PHRASED = "phrased_otherwise"
PHRASED_FOR = ("procedural:small_arithmetic", "procedural:arithmetic", "procedural:story_arithmetic")

# A measurement runs alone: two cores shared with a helper, CI or a benchmark give fewer GRPO steps (28 a
# run where 56 ran on an idle machine, issue 24). A 1-minute load average above this many runnable tasks per
# core when the demo starts says something else is running.
SHARED_LOAD_PER_CORE = 0.5


def machine_load() -> dict:
    """The load averages (1, 5, 15 min) and the core count, recorded with the demo's figures."""
    import os

    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not on every platform
        return {}
    return {"load_1m": round(one, 2), "load_5m": round(five, 2), "load_15m": round(fifteen, 2),
            "cores": os.cpu_count()}


def warn_if_shared(load: dict) -> bool:
    if load and load["load_1m"] > SHARED_LOAD_PER_CORE * (load["cores"] or 1):
        logger.warning("the machine looks shared: load average %.2f on %d cores before the demo started; its "
                       "times and GRPO step count will be lower than on an idle machine (stop other work to "
                       "measure)", load["load_1m"], load["cores"])
        return True
    return False


QUICK = {"data.train_size": 64, "data.test_size": 8, "eval.limit": 8, "warmup.examples": 8, "warmup.epochs": 1.0,
         "grpo.max_steps": 2, "grpo.max_completion_length": 32}


def recipe_path(recipe: str | Path | None = None) -> Path:
    """The demo's recipe file: None is the shipped recipes/demo.yaml; a path that exists is read as given; a
    shipped recipe's name (`demo-worked.yaml`, or `recipes/demo-worked.yaml` outside the repository) is found in the
    package. Anything else is a ConfigError naming the shipped recipes, raised before a model loads."""
    from reasontune.config import ConfigError

    if recipe is None:
        return RECIPES / DEFAULT_RECIPE
    p = Path(recipe)
    if p.is_file():
        return p
    if p.parent in (Path("."), Path("recipes")) and (RECIPES / p.name).is_file():
        return RECIPES / p.name
    shipped = ", ".join(sorted(f"recipes/{q.name}" for q in RECIPES.glob("demo*.yaml")))
    raise ConfigError(f"--recipe {str(recipe)!r} is not a file: pass a recipe YAML that exists, or a shipped demo "
                      f"recipe ({shipped})")


def demo_config(out_dir: str, quick: bool = False, updates: dict | None = None,
                recipe: str | Path | None = None) -> RunConfig:
    cfg = load_yaml(recipe_path(recipe))
    fixed = {"output_dir": str(Path(out_dir) / "train"), "overwrite": True}
    if quick:
        fixed.update(QUICK)
    cfg = override(cfg, {**fixed, **(updates or {})})
    # One seed for the whole demo: `--set seed=1` draws other problems (train, held-out, the warm-up's
    # examples) as well as another LoRA init and other samples, so seeds are independent repeats.
    if "data.seed" not in (updates or {}):
        cfg = override(cfg, {"data.seed": cfg.seed})
    return cfg


def run_demo(out_dir: str = "runs/demo", quick: bool = False, updates: dict | None = None,
             recipe: str | Path | None = None) -> dict:
    import torch

    from reasontune.data import build_datasets
    from reasontune.stages.evaluate import evaluate
    from reasontune.models import load_model_and_tokenizer
    from reasontune.export.portable import save_adapter
    from reasontune.runs.folder import atomic_write_json
    from reasontune.stages.sft import warmup_sft
    from reasontune.models.speed import peak_rss_mb, release_freed_memory
    from reasontune.stages.train import train

    t0 = time.perf_counter()
    load_start = machine_load()
    shared = warn_if_shared(load_start)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(out_dir, quick, updates, recipe)
    torch.manual_seed(cfg.seed)
    model, tok, backend = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    data = build_datasets(cfg.data, cfg.format, tokenizer=tok)
    ood_cfg = ood_data_config(cfg.data)
    ood = None
    if ood_cfg is not None:
        ood_cfg = replace(ood_cfg, test_size=min(OOD_PROBLEMS, cfg.data.test_size))
        ood = build_datasets(ood_cfg, cfg.format, tokenizer=tok)["test"]
    phrased = phrased_set(cfg, tok)
    stages, timings, peaks, ood_stages, phrased_stages = {}, {}, {}, {}, {}  # peak RSS (MB) of each stage
    sft_out = {}

    def end_stage(name):
        peaks[name] = peak_rss_mb()
        release_freed_memory()  # the next stage starts from what is live, not from this stage's garbage
        peak_rss_mb(reset=True)

    end_stage("load")

    def measure(stage, samples=1, limit=None):
        t = time.perf_counter()
        cap = (lambda n: n) if limit is None else (lambda n: min(n, limit))  # noqa: E731
        ecfg = override(cfg, {"eval.samples": samples, "eval.temperature": cfg.grpo.temperature,
                              "eval.sample_limit": WARMUP_SAMPLED_PROBLEMS, "eval.limit": cap(cfg.eval.limit)})
        stages[stage] = evaluate(ecfg, model=model, tokenizer=tok, dataset=data["test"], out_dir=out / "evals" / stage)
        if ood is not None:
            ood_stages[stage] = evaluate(override(cfg, {"eval.limit": cap(len(ood))}), model=model, tokenizer=tok,
                                         dataset=ood, out_dir=out / "evals_ood" / stage, progress=False)
        if phrased is not None:
            phrased_stages[stage] = evaluate(override(cfg, {"eval.limit": cap(len(phrased))}), model=model,
                                             tokenizer=tok, dataset=phrased, out_dir=out / "evals_phrased" / stage,
                                             progress=False)
        timings[f"eval_{stage}"] = time.perf_counter() - t
        # the greedy part alone (the warm-up's also samples): what the final, greedy eval will cost
        sampled_s = stages[stage]["wall_seconds"] - stages[stage].get("greedy_seconds", stages[stage]["wall_seconds"])
        timings[f"eval_{stage}_greedy"] = timings[f"eval_{stage}"] - sampled_s
        end_stage(f"eval_{stage}")
        logger.info("%s: accuracy %.3f, format %.3f, mean length %.1f", stage, stages[stage]["accuracy"],
                    stages[stage]["format_rate"], stages[stage]["mean_length"])

    measure("before", limit=None if quick else BASE_EVAL_PROBLEMS)
    if cfg.warmup.kind == "sft":
        t = time.perf_counter()
        sft_out = warmup_sft(cfg, model, tok, data["train"], out_dir=str(out))
        timings["warmup"] = time.perf_counter() - t
        # Kept so the warm-up alone can be measured again, e.g. its pass@k: how far GRPO can sharpen it.
        save_adapter(model, tok, out / "warmup" / "adapter", cfg, "the demo's SFT format warm-up")
        end_stage("warmup")
        measure("warmup", samples=WARMUP_SAMPLES)
    grpo_updates = {"warmup.kind": "none"}  # warm-up already ran on this model
    if not quick:
        # the final eval is greedy, on the sets in full: as long as the warm-up's greedy part (the tuned model
        # writes like the warm-up, the base writes to the cap on fewer problems), or the base's without a warm-up
        reserve = timings.get("eval_warmup_greedy", timings["eval_before"])
        left = grpo_seconds_left(time.perf_counter() - t0, reserve)
        if cfg.grpo.max_seconds is None or left < cfg.grpo.max_seconds:
            logger.info("GRPO time budget: %.0f s (what is left of the demo's %d s)", left, DEMO_BUDGET_S)
            grpo_updates["grpo.max_seconds"] = left
    grpo_cfg = override(cfg, grpo_updates)
    t = time.perf_counter()
    result = train(grpo_cfg, model=model, tokenizer=tok, datasets=data)
    timings["grpo"] = time.perf_counter() - t
    end_stage("grpo")
    save_adapter(model, tok, out / "adapter", cfg, "the demo: SFT format warm-up, then GRPO")
    measure("after")
    from reasontune.runs.labels import total as labels_total

    summary = {k: stage_summary(v) for k, v in stages.items()}
    if ood_stages:
        summary["ood"] = {"difficulty": ood_cfg.difficulty, "n": len(ood),
                          **{k: v["accuracy"] for k, v in ood_stages.items()},
                          "stop_rate": {k: v.get("stop_rate") for k, v in ood_stages.items()}}
    if phrased_stages:
        summary[PHRASED] = phrased_summary(phrased_stages)
    summary["turned"] = turned_into_greedy(out)
    try:  # held-out accuracy without the problems whose working training already holds (overlap.py)
        from reasontune.stages.overlap import add_novelty, heldout_marks

        add_novelty(summary, out, heldout_marks(cfg, datasets=data, tokenizer=tok))
    except Exception as e:  # the stages are measured; a failed split must not lose them
        logger.warning("near-duplicate split failed (bench/near_duplicates.py %s computes it again): %s", out, e)
    logger.info("peak RSS by stage (MB): %s", ", ".join(f"{k} {v:.0f}" for k, v in peaks.items() if v))
    summary.update(wall_seconds=time.perf_counter() - t0, timings=timings, peak_rss_mb=peaks, backend=backend,
                   quick=quick, grpo=result["summary"], grpo_steps=result["summary"].get("global_step"),
                   # what `demo --compare` sizes its other arms from (this run is its SFT-then-GRPO arm)
                   warmup_sft={k: sft_out[k] for k in ("steps", "seconds", "examples") if k in sft_out},
                   labels=labels_total(sft_out.get("examples", 0), result["summary"].get("labels")),
                   load_average={"start": load_start, "end": machine_load(), "shared_at_start": shared},
                   recipe=str(recipe_path(recipe)), settings=cfg.to_dict())
    atomic_write_json(out / "metrics.json", summary)
    write_markdown(out, summary)
    try:
        from reasontune.stages.report import build_report

        html = build_report(out)
        logger.info("report: %s", html)
    except Exception as e:  # the numbers are already on disk; a plotting failure must not lose them
        logger.warning("HTML report failed: %s", e)
    logger.info("demo done in %.0f s: %s", summary["wall_seconds"], out)
    return summary


def phrased_set(cfg: RunConfig, tokenizer):
    """The rows of the phrased-otherwise set, when the demo trains an arithmetic generator (at most data.test_size,
    as the OOD set: --quick evaluates a few); else None."""
    if cfg.data.dataset not in PHRASED_FOR or cfg.data.test_size == 0:
        return None
    from reasontune.data import eval_split

    ds = eval_split(replace(cfg.data, dataset=PHRASED), cfg.format, tokenizer)
    if len(ds) <= cfg.data.test_size:
        return ds
    return ds.shuffle(seed=cfg.data.seed).select(range(cfg.data.test_size))  # the file is in order of kind


def phrased_summary(stages: dict) -> dict:
    """metrics.json's `phrased_otherwise`: accuracy at each stage, and by kind of phrasing and by level."""
    first = next(iter(stages.values()))
    return {"n": first["n"], **{k: v["accuracy"] for k, v in stages.items()},
            "by_phrasing": {k: {kind: m["accuracy"] for kind, m in (v.get("by_subject") or {}).items()}
                            for k, v in stages.items()},
            "by_level": {k: {lv: m["accuracy"] for lv, m in (v.get("by_difficulty") or {}).items()}
                         for k, v in stages.items()},
            "stop_rate": {k: v.get("stop_rate") for k, v in stages.items()}}


def ood_data_config(data: DataConfig) -> DataConfig | None:
    """Harder problems than training: the generator's top level when training did not use it; None otherwise."""
    if not data.dataset.startswith("procedural:"):
        return None
    from reasontune.data import procedural

    gen = procedural.get(data.dataset.split(":", 1)[1])
    trained = set(data.difficulty or gen.default_levels)
    top = max(gen.levels)
    if top in trained:
        return None
    return replace(data, difficulty=[top], train_size=1, sample=None)


def stage_summary(m: dict) -> dict:
    """One stage's figures for metrics.json: overall, and by level (accuracy, pass@k when sampled, working
    lines per answer, length)."""
    keep = ("accuracy", "format_rate", "stop_rate", "truncation_rate", "mean_length", "mean_working_lines", "n",
            "pass_at_k", "k")
    out = {k: m[k] for k in keep if m.get(k) is not None}
    if m.get("by_difficulty"):
        out["by_level"] = m["by_difficulty"]
    return out


def turned_into_greedy(out: Path) -> dict | None:
    """Problems the warm-up got wrong greedily and GRPO got right: how many, and how many of those the
    warm-up already sampled right at least once (sharpening) rather than never (new)."""
    from reasontune.stages.evaluate import read_jsonl

    warm = read_jsonl(out / "evals" / "warmup" / "completions.jsonl")
    after = {r["index"]: r for r in read_jsonl(out / "evals" / "after" / "completions.jsonl")
             if r.get("kind", "greedy") == "greedy"}
    if not warm or not after:
        return None
    greedy = {r["index"]: bool(r["correct"]) for r in warm if r.get("kind", "greedy") == "greedy"}
    drawn = {r["index"] for r in warm if r.get("kind") == "sample"}  # the problems the warm-up also sampled
    sampled = {r["index"] for r in warm if r.get("kind") == "sample" and r["correct"]}
    fixed = [i for i, r in after.items() if r["correct"] and not greedy.get(i, False)]
    lost = [i for i, r in after.items() if not r["correct"] and greedy.get(i, False)]
    return {"fixed": len(fixed), "fixed_within_warmup_samples": sum(i in sampled for i in fixed),
            "fixed_among_sampled_problems": sum(i in drawn for i in fixed), "sampled_problems": len(drawn),
            "lost": len(lost)}


def grpo_seconds_left(elapsed: float, eval_seconds: float) -> float:
    """Seconds GRPO may use so the demo ends within DEMO_BUDGET_S: minus the final eval (as long as the
    last one) and saving; never under 60 s, so a slow machine still trains a few steps."""
    return max(60.0, DEMO_BUDGET_S - elapsed - 1.2 * eval_seconds - 30.0)


def _examples(out: Path, k: int = 3) -> list[tuple[dict, dict]]:
    import json

    def rows(stage):
        p = out / "evals" / stage / "completions.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []

    before, after = rows("before"), rows("after")
    pairs = list(zip(before, after))
    # Prefer problems the training fixed; fall back to the first ones.
    fixed = [p for p in pairs if p[1].get("correct") and not p[0].get("correct")]
    return (fixed + [p for p in pairs if p not in fixed])[:k]


def write_markdown(out: Path, s: dict) -> None:
    from reasontune.stages.evaluate import read_json
    from reasontune.stages.overlap import novelty_markdown
    from reasontune.runs.folder import atomic_write_text

    from reasontune.runs.labels import sentence

    learned = sentence(s.get("labels"))
    lines = ["# reasontune demo", "", f"Wall time: {s['wall_seconds']:.0f} s. Backend: {s['backend']}."
             + (f" The tuned model {learned}." if learned else ""), "",
             "Stops on its own: the answer block closed, then EOS within grpo.stop_grace_tokens, sampled by the model "
             "(what a client without our stop rule sees).", "",
             "| stage | accuracy | format rate | stops on its own | mean length | working lines | n |",
             "|---|---|---|---|---|---|---|"]
    for stage in ("before", "warmup", "after"):
        if stage in s:
            m = s[stage]
            lines.append(f"| {stage} | {m['accuracy']:.3f} | {m['format_rate']:.3f} | {_f(m.get('stop_rate'))} | "
                         f"{m['mean_length']:.1f} | {_f(m.get('mean_working_lines'), 2)} | {m['n']} |")
    lines += novelty_markdown(s)
    la = s.get("load_average") or {}
    if la.get("start"):
        lines += ["", f"Load average at start {la['start']['load_1m']} and end {la.get('end', {}).get('load_1m')} "
                  f"on {la['start']['cores']} cores; GRPO steps: {s.get('grpo_steps')}."
                  + (" The machine was shared at the start: these figures are not a clean measurement."
                     if la.get("shared_at_start") else "")]
    lines += _level_table(s)
    if s.get("ood"):
        o = s["ood"]
        lines += ["", f"Out of distribution (difficulty {o['difficulty']}, never trained on, {o['n']} problems, "
                  f"greedy): base {_f(o.get('before'))}, warm-up {_f(o.get('warmup'))}, GRPO {_f(o.get('after'))}."]
    if s.get(PHRASED):
        p = s[PHRASED]
        kinds = p["by_phrasing"].get("after") or {}
        lines += ["", f"Phrased otherwise ({p['n']} problems written apart from the generators, levels 1-3, greedy): "
                  f"base {_f(p.get('before'))}, warm-up {_f(p.get('warmup'))}, GRPO {_f(p.get('after'))}. After GRPO "
                  "by kind: " + ", ".join(f"{k} {_f(v)}" for k, v in sorted(kinds.items())) + "."]
    if s.get("turned"):
        t = s["turned"]
        among = (f"{t['fixed_among_sampled_problems']} of them among the {t['sampled_problems']} problems the warm-up "
                 f"also sampled, {t['fixed_within_warmup_samples']} of those" if t.get("sampled_problems") else
                 f"{t['fixed_within_warmup_samples']} of them")  # older metrics.json: every problem sampled
        lines += ["", f"GRPO turned {t['fixed']} problems the warm-up answered wrong greedily into right greedy "
                  f"answers ({among} within the warm-up's samples), and lost {t['lost']}."]
    warned = (read_json(out / "train" / "status.json") if (out / "train" / "status.json").is_file() else {})
    for w in warned.get("warnings") or []:  # the watcher's (watch.py), during GRPO
        lines += ["", f"Warning at GRPO step {w['step']} ({w['condition']}): {w['message']}"]
    if warned:  # what it checked: a silent report cannot tell "none fired" from "not run" (trends need 2 windows)
        from reasontune.stages.report import watched_lines

        lines += [x for line in watched_lines(warned) for x in ("", line)]
    lines += ["", "## Three problems, before and after", ""]
    for b, a in _examples(out):
        lines += [f"**Q:** {b.get('question', '')}  ", f"reference answer: `{b.get('answer')}`", "",
                  f"*before* ({'right' if b.get('correct') else 'wrong'}):", "```", b.get("completion", "").strip(),
                  "```", f"*after* ({'right' if a.get('correct') else 'wrong'}):", "```",
                  a.get("completion", "").strip(), "```", ""]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _level_table(s: dict) -> list[str]:
    """By level: the warm-up's greedy accuracy and pass@k next to GRPO's greedy accuracy, and the working
    lines per answer before and after GRPO (fewer steps on multi-step problems is collapse)."""
    warm, after = s.get("warmup", {}).get("by_level") or {}, s.get("after", {}).get("by_level") or {}
    if not after:
        return []
    k = s.get("warmup", {}).get("k", "k")
    lines = ["", f"| level | n | warm-up greedy | warm-up pass@{k} | GRPO greedy | working lines warm-up -> GRPO |",
             "|---|---|---|---|---|---|"]
    for level, a in after.items():
        w = warm.get(level, {})
        lines.append(f"| {level} | {a['n']} | {_f(w.get('accuracy'))} | {_f(w.get('pass_at_k'))} | "
                     f"{_f(a.get('accuracy'))} | {_f(w.get('working_lines'), 2)} -> {_f(a.get('working_lines'), 2)} |")
    return lines
