"""`reasontune demo`: the whole loop offline on a CPU with the embedded SmolLM2-135M.

base eval -> SFT format warm-up -> eval -> GRPO -> eval, then metrics.json, report.md,
report.html, the PEFT adapter (adapter/) and the warm-up's adapter (warmup/adapter/) in the output
folder. The settings live in recipes/demo.yaml (one place); --quick shrinks them to a smoke test
that proves the plumbing, not a result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .config import RunConfig, load_yaml, override

logger = logging.getLogger(__name__)

RECIPES = Path(__file__).resolve().parent / "recipes"

# The demo's promise: done in 20 minutes on a 2-core laptop CPU. GRPO gets what is left of it (after
# loading, the evals and the warm-up, keeping room for the final eval), capped by grpo.max_seconds, so
# a slower CPU trains for fewer steps instead of running over. Only the full demo; --quick is tiny.
DEMO_BUDGET_S = 19 * 60

QUICK = {"data.train_size": 64, "data.test_size": 8, "eval.limit": 8, "warmup.examples": 8, "warmup.epochs": 1.0,
         "grpo.max_steps": 2, "grpo.max_completion_length": 32}


def demo_config(out_dir: str, quick: bool = False, updates: dict | None = None) -> RunConfig:
    cfg = load_yaml(RECIPES / "demo.yaml")
    fixed = {"output_dir": str(Path(out_dir) / "train"), "overwrite": True}
    if quick:
        fixed.update(QUICK)
    return override(cfg, {**fixed, **(updates or {})})


def run_demo(out_dir: str = "runs/demo", quick: bool = False, updates: dict | None = None) -> dict:
    import torch

    from .data import build_datasets
    from .evaluate import evaluate
    from .models import load_model_and_tokenizer
    from .portable import save_adapter
    from .runfolder import atomic_write_json
    from .sft import warmup_sft
    from .speed import peak_rss_mb, release_freed_memory
    from .train import train

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(out_dir, quick, updates)
    torch.manual_seed(cfg.seed)
    model, tok, backend = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    data = build_datasets(cfg.data, cfg.format, tokenizer=tok)
    stages, timings, peaks = {}, {}, {}  # peak RSS (MB) of each stage

    def end_stage(name):
        peaks[name] = peak_rss_mb()
        release_freed_memory()  # the next stage starts from what is live, not from this stage's garbage
        peak_rss_mb(reset=True)

    end_stage("load")

    def measure(stage):
        t = time.perf_counter()
        stages[stage] = evaluate(cfg, model=model, tokenizer=tok, dataset=data["test"], out_dir=out / "evals" / stage)
        timings[f"eval_{stage}"] = time.perf_counter() - t
        end_stage(f"eval_{stage}")
        logger.info("%s: accuracy %.3f, format %.3f, mean length %.1f", stage, stages[stage]["accuracy"],
                    stages[stage]["format_rate"], stages[stage]["mean_length"])

    measure("before")
    if cfg.warmup.kind == "sft":
        t = time.perf_counter()
        warmup_sft(cfg, model, tok, data["train"], out_dir=str(out))
        timings["warmup"] = time.perf_counter() - t
        # Kept so the warm-up alone can be measured again, e.g. its pass@k: how far GRPO can sharpen it.
        save_adapter(model, tok, out / "warmup" / "adapter", cfg, "the demo's SFT format warm-up")
        end_stage("warmup")
        measure("warmup")
    grpo_updates = {"warmup.kind": "none"}  # warm-up already ran on this model
    if not quick:
        left = grpo_seconds_left(time.perf_counter() - t0, timings.get("eval_warmup", timings["eval_before"]))
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
    summary = {k: {m: v[m] for m in ("accuracy", "format_rate", "mean_length", "n")} for k, v in stages.items()}
    logger.info("peak RSS by stage (MB): %s", ", ".join(f"{k} {v:.0f}" for k, v in peaks.items() if v))
    summary.update(wall_seconds=time.perf_counter() - t0, timings=timings, peak_rss_mb=peaks, backend=backend,
                   quick=quick, grpo=result["summary"], settings=cfg.to_dict())
    atomic_write_json(out / "metrics.json", summary)
    write_markdown(out, summary)
    try:
        from .report import build_report

        html = build_report(out)
        logger.info("report: %s", html)
    except Exception as e:  # the numbers are already on disk; a plotting failure must not lose them
        logger.warning("HTML report failed: %s", e)
    logger.info("demo done in %.0f s: %s", summary["wall_seconds"], out)
    return summary


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
    from .runfolder import atomic_write_text

    lines = ["# reasontune demo", "", f"Wall time: {s['wall_seconds']:.0f} s. Backend: {s['backend']}.", "",
             "| stage | accuracy | format rate | mean length | n |", "|---|---|---|---|---|"]
    for stage in ("before", "warmup", "after"):
        if stage in s:
            m = s[stage]
            lines.append(f"| {stage} | {m['accuracy']:.3f} | {m['format_rate']:.3f} | {m['mean_length']:.1f} | {m['n']} |")
    lines += ["", "## Three problems, before and after", ""]
    for b, a in _examples(out):
        lines += [f"**Q:** {b.get('question', '')}  ", f"reference answer: `{b.get('answer')}`", "",
                  f"*before* ({'right' if b.get('correct') else 'wrong'}):", "```", b.get("completion", "").strip(),
                  "```", f"*after* ({'right' if a.get('correct') else 'wrong'}):", "```",
                  a.get("completion", "").strip(), "```", ""]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
