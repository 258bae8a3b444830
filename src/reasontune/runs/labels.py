"""What a run learned from, counted: worked solutions (SFT examples, and GRPO problems whose reference working a
reward read) and reference answers (GRPO problems whose answer a reward read; expert iteration's sampled problems,
whose answers verified its samples). RUN/status.json `labels`, a demo's metrics.json and every compare row hold it.

The project's claim is that a verifier makes labels optional, so every run says which labels it used. Which
rewards read which column is read off the reward functions themselves (a parameter named `worked` or `answer`
in the signature TRL calls), not declared per run kind; with `rewards.answers_only` the `worked` column is gone
from GRPO's rows (rewards/scoring.label_free), so nothing reads it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence


def readers(funcs: Sequence[Callable], column: str) -> list[str]:
    """Names of the rewards whose signature takes `column` (the wrapper's __wrapped__ is followed)."""
    out = []
    for f in funcs:
        try:
            params = inspect.signature(f).parameters
        except (TypeError, ValueError):  # a builtin or C callable: it cannot name the column
            continue
        if column in params or column in getattr(f, "needs_columns", ()):
            out.append(f.__name__)
    return out


def problems_drawn(args, global_step: int, rows: int) -> int:
    """Distinct training problems GRPO drew in `global_step` optimizer steps: TRL's sampler draws each prompt
    num_generations times and reuses a generation num_iterations times, without replacement within an epoch."""
    per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
                / args.num_generations / max(1, getattr(args, "num_iterations", 1) or 1))
    return min(rows, int(round(global_step * per_step)))


def grpo_labels(funcs: Sequence[Callable], train_ds, args, global_step: int) -> dict:
    """The labels GRPO read: its distinct problems' answers and, where a reward reads it, their worked solutions."""
    drawn = problems_drawn(args, global_step, len(train_ds))
    worked_readers = readers(funcs, "worked") if "worked" in train_ds.column_names else []
    answer_readers = readers(funcs, "answer")
    # the share of rows with a worked solution, counted only when a reward reads them
    share = (sum(1 for w in train_ds["worked"] if w is not None and str(w).strip()) / len(train_ds)
             if worked_readers and len(train_ds) else 0.0)
    return {"method": "grpo", "grpo_problems": drawn, "answers": drawn if answer_readers else 0,
            "grpo_worked_read": int(round(drawn * share)), "worked_estimated": 0.0 < share < 1.0,
            "rewards_reading_worked": worked_readers, "rewards_reading_answer": answer_readers}


def expert_labels(problems: int) -> dict:
    """The labels expert iteration read: the reference answer of every distinct problem it sampled (each was read
    to verify the samples), and no worked solution: it trains on the model's own completions that verified."""
    return {"method": "expert_iteration", "expert_problems": int(problems), "answers": int(problems),
            "grpo_worked_read": 0}


def total(sft_examples: int, grpo: dict | None) -> dict:
    """The run's labels: SFT's worked solutions plus what GRPO (or expert iteration: `expert_labels`) read."""
    g = {k: v for k, v in (grpo or {}).items() if k not in ("worked_solutions", "sft_examples")}  # GRPO's own
    return {**g, "worked_solutions": int(sft_examples) + int(g.get("grpo_worked_read", 0)),
            "answers": int(g.get("answers", 0)), "sft_examples": int(sft_examples)}


def sentence(labels: dict | None) -> str:
    """'learned from N worked solutions and M answers' (the report's and the demo's headline)."""
    if not labels:
        return ""
    read = labels.get("grpo_worked_read", 0)
    return (f"learned from {labels['worked_solutions']} worked solutions ({labels['sft_examples']} in SFT"
            + (f", {read} read by GRPO's rewards" if read else "") + f") and {labels['answers']} answers")
