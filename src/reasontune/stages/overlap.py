"""The near-duplicate check (issue 24, item 5): held-out problems whose worked solution is in training.

The procedural split is disjoint by question text only (procedural.generate_splits), and on small numbers
many stories share their arithmetic: a held-out "Maya has 12 marbles. She finds 3 more." and a training
"Leo starts with 12 coins. He wins 3 in a game." have the same working, `12 + 3 = 15`. The warm-up trained
on that working as a target and GRPO rewarded it, so a right answer there may be recall, not reasoning.
This module rebuilds a run's training rows (the SFT warm-up's and GRPO's) and its held-out rows from its
config, marks each held-out row `near_duplicate` when its normalised working equals a training row's, and
splits each stage's held-out accuracy into the novel rows and the near-duplicates.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path

from reasontune.config import RunConfig
from reasontune.runs.metrics import mean

logger = logging.getLogger(__name__)

# One step of working: `a op b = c`, found anywhere in the text (words around it are ignored).
_STEP = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*([-+*/x×÷−])\s*(\d[\d,]*(?:\.\d+)?)\s*=\s*(\d[\d,]*(?:\.\d+)?)")
_OPS = {"x": "*", "×": "*", "÷": "/", "−": "-"}

Step = tuple[Fraction, str, Fraction, Fraction]


def worked_steps(worked: str | None) -> tuple[Step, ...]:
    """A worked solution normalised to its sequence of (operand, op, operand, result) steps.

    Whitespace, wording, thousands commas and the spelling of the operator (x, ×, ÷, −) are ignored; the
    numbers are compared as exact values (5.0 == 5), and the order of the steps and of the operands is
    kept (the generators write the running total first, in the story's order). For example
        "12 + 3 = 15\\n15 - 4 = 11"  and  "Start: 12+3=15. Then 15 − 4 = 11 left."
    both give ((12, '+', 3, 15), (15, '-', 4, 11)); "12 + 4 = 16\\n16 - 4 = 12" (other numbers) and
    "12 - 3 = 9\\n9 + 4 = 13" (other operations) do not. A working with no step gives (): nothing to
    compare, so such a row is never called a near-duplicate.
    """
    def num(s: str) -> Fraction:
        return Fraction(s.replace(",", ""))

    return tuple((num(a), _OPS.get(op, op), num(b), num(c)) for a, op, b, c in _STEP.findall(worked or ""))


def mark_near_duplicates(heldout: list[dict], training: list[dict]) -> list[bool]:
    """For each held-out row (with a `worked` column), whether a training row has the same normalised working."""
    seen = {worked_steps(r.get("worked")) for r in training} - {()}
    return [bool(key) and key in seen for key in (worked_steps(r.get("worked")) for r in heldout)]


def run_rows(cfg: RunConfig, datasets=None, tokenizer=None) -> dict[str, list[dict]]:
    """The rows a run draws, as the demo and `reasontune train` draw them: {'warmup': the SFT warm-up's
    examples (empty without an SFT warm-up), 'grpo': GRPO's training rows, 'heldout': the evaluated rows}.

    `datasets`: the run's build_datasets output when the caller has it (the demo); else rebuilt from
    cfg.data. GRPO's rows are the whole training split it samples from, not only the prompts its sampler
    reached in the steps the time budget allowed. grpo.max_prompt_length drops longer prompts
    (train.fit_prompts), which needs the tokenizer; without one the rows are the whole split, a superset."""
    from reasontune.stages.evaluate import _rows
    from reasontune.data.worked import warmup_examples

    if datasets is None:
        from reasontune.data import build_datasets

        datasets = build_datasets(cfg.data, cfg.format, tokenizer=tokenizer)
    train = datasets["train"]
    warm = warmup_examples(train, cfg, cfg.warmup.examples) if cfg.warmup.kind == "sft" else []
    grpo = train  # max_prompt_length null: fit_prompts keeps every row (no need to tokenize 2000 prompts)
    if cfg.grpo.max_prompt_length is not None and tokenizer is not None:
        from reasontune.stages.train import fit_prompts, prepare_prompts

        grpo = fit_prompts(prepare_prompts(train, tokenizer, cfg), tokenizer, cfg.grpo.max_prompt_length)[0]
    elif cfg.grpo.max_prompt_length is not None:
        logger.warning("grpo.max_prompt_length=%d without a tokenizer: GRPO's rows are taken as the whole training "
                       "split, a superset of what it trained on (near-duplicates may be over-counted)",
                       cfg.grpo.max_prompt_length)
    heldout = _rows(cfg, datasets, tokenizer, "test", cfg.eval.limit)
    return {"warmup": [dict(r) for r in warm], "grpo": [dict(r) for r in grpo], "heldout": heldout}


def heldout_marks(cfg: RunConfig, datasets=None, tokenizer=None) -> list[dict]:
    """One entry per held-out row, in eval order (a completion record's `index`): index, question,
    difficulty, near_duplicate (its working is a training row's: the warm-up's or GRPO's) and
    near_duplicate_warmup (a warm-up target: the model was taught that exact working)."""
    rows = run_rows(cfg, datasets, tokenizer)
    dup = mark_near_duplicates(rows["heldout"], rows["warmup"] + rows["grpo"])
    warm = mark_near_duplicates(rows["heldout"], rows["warmup"])
    return [{"index": i, "question": r.get("question"), "difficulty": r.get("difficulty"), "near_duplicate": d,
             "near_duplicate_warmup": w} for i, (r, d, w) in enumerate(zip(rows["heldout"], dup, warm))]


def marks_summary(marks: list[dict]) -> dict:
    """How many held-out rows are near-duplicates, overall and by level (metrics.json's near_duplicates)."""
    out = {"n": len(marks), "near_duplicate": sum(m["near_duplicate"] for m in marks),
           "near_duplicate_warmup": sum(m["near_duplicate_warmup"] for m in marks), "by_level": {}}
    for level in sorted({m["difficulty"] for m in marks if m["difficulty"] is not None}):
        sel = [m for m in marks if m["difficulty"] == level]
        out["by_level"][str(level)] = {"n": len(sel), "near_duplicate": sum(m["near_duplicate"] for m in sel)}
    return out


def _split_accuracy(records: list[dict], marks: list[dict]) -> dict:
    novel = [r["correct"] for r in records if not marks[r["index"]]["near_duplicate"]]
    dup = [r["correct"] for r in records if marks[r["index"]]["near_duplicate"]]
    return {"novel_n": len(novel), "novel_accuracy": mean(novel), "near_duplicate_n": len(dup),
            "near_duplicate_accuracy": mean(dup)}


def novelty(records: list[dict], marks: list[dict]) -> dict:
    """Greedy accuracy on the held-out rows with no near-duplicate in training and on the near-duplicates,
    overall and by level, from one stage's completion records (evaluate.py's; joined on `index`).

    A record whose question is not its marked row's means the marks were rebuilt from another config
    (or another version of the generator): an error, not a figure."""
    from reasontune.stages.evaluate import primary

    greedy = primary(records)
    for r in greedy:
        i = r["index"]
        if i >= len(marks) or (r.get("question") is not None and r["question"] != marks[i]["question"]):
            raise ValueError(f"completion record {i} does not match the rebuilt held-out row {i}: the run's "
                             "config does not rebuild its evals (pass the config the run was made with)")
    out = _split_accuracy(greedy, marks)
    levels = sorted({r.get("difficulty") for r in greedy if r.get("difficulty") is not None})
    out["by_level"] = {str(lv): _split_accuracy([r for r in greedy if r.get("difficulty") == lv], marks)
                       for lv in levels}
    return out


def stage_novelty(out: Path, marks: list[dict], stages=("before", "warmup", "after")) -> dict[str, dict]:
    """{stage: novelty(...)} for each stage with OUT/evals/<stage>/completions.jsonl."""
    from reasontune.stages.evaluate import read_jsonl

    found = {}
    for stage in stages:
        recs = read_jsonl(Path(out) / "evals" / stage / "completions.jsonl")
        if recs:
            found[stage] = novelty(recs, marks)
    return found


def demo_run_config(run_dir: Path) -> RunConfig:
    """The config a demo folder was made with: metrics.json's settings (the demo's own config), else the
    GRPO run's reasontune_config.json (written at its start; the warm-up there is 'none', as GRPO ran
    after it, so the warm-up is put back when the folder holds its adapter)."""
    from reasontune.config import from_dict, override
    from reasontune.stages.evaluate import read_json
    from reasontune.runs.folder import load_run_config

    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file() and read_json(run_dir / "metrics.json").get("settings"):
        return from_dict(read_json(run_dir / "metrics.json")["settings"])
    cfg = load_run_config(run_dir / "train")
    if (run_dir / "warmup" / "adapter").is_dir():
        cfg = override(cfg, {"warmup.kind": "sft"})
    return cfg


def add_novelty(summary: dict, out: Path, marks: list[dict]) -> None:
    """Into the demo's metrics: near_duplicates (the counts), and for each stage novel_accuracy, novel_n,
    near_duplicate_accuracy and near_duplicate_n, overall and in each level's entry of its by_level."""
    summary["near_duplicates"] = marks_summary(marks)
    for stage, nov in stage_novelty(out, marks).items():
        if stage not in summary:
            continue
        by_level = nov.pop("by_level")
        summary[stage].update(nov)
        for level, split in by_level.items():
            summary[stage].setdefault("by_level", {}).setdefault(level, {}).update(split)


STAGE_NAMES = {"before": "base", "warmup": "warm-up", "after": "GRPO"}


def novelty_markdown(s: dict) -> list[str]:
    """report.md's rows: held-out accuracy on the problems with no near-duplicate in training, and on the rest."""
    nd = s.get("near_duplicates")
    stages = [st for st in STAGE_NAMES if s.get(st, {}).get("novel_n") is not None]
    if not nd or not stages:
        return []

    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    levels = ", ".join(f"level {lv}: {v['near_duplicate']} of {v['n']}" for lv, v in nd["by_level"].items())
    last = s[stages[-1]]
    return ["", f"A held-out problem is a near-duplicate when a training problem (the warm-up's or GRPO's) has the "
            f"same worked solution: the same steps on the same numbers, in other words. {nd['near_duplicate']} of "
            f"{nd['n']} are ({levels}); the split is disjoint by question text only.", "",
            "| held-out problems | n | " + " | ".join(STAGE_NAMES[st] for st in stages) + " |",
            "|---|---|" + "---|" * len(stages),
            f"| no near-duplicate in training | {last['novel_n']} | "
            + " | ".join(f(s[st]["novel_accuracy"]) for st in stages) + " |",
            f"| near-duplicate of a training problem | {last['near_duplicate_n']} | "
            + " | ".join(f(s[st]["near_duplicate_accuracy"]) for st in stages) + " |"]
