"""One scoring contract for GRPO, eval, advise and ask: the one TRL's GRPOTrainer applies.

TRL (trl/trainer/grpo_trainer.py, `_calculate_rewards`) calls every reward as
`f(prompts=, completions=, completion_ids=, **columns)`, where `completions` are the completion ids
decoded with special tokens skipped and `columns` are every dataset column but `prompt`. Eval, advise
and ask call the same functions here with the same arguments, so the same completion of the same row
scores the same wherever it is scored: `step_check` sees the row's `worked` column, logic rows their
reasoning-gym columns, and length rewards the sampled ids (generation.Generation.token_ids, no EOS added).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_NOT_COLUMNS = ("prompt", "completion", "completion_ids")  # TRL leaves these out of the keyword arguments
LABEL_COLUMNS = ("worked",)  # worked solutions: what `rewards.answers_only` keeps from every reward


def label_free(ds_or_rows, answers_only: bool):
    """A dataset (or list of row dicts) without the worked-solution column when `answers_only`: the one place
    GRPO's training rows and eval's scored rows lose it, so no reward can read a worked solution."""
    if not answers_only:
        return ds_or_rows
    if hasattr(ds_or_rows, "remove_columns"):
        drop = [c for c in LABEL_COLUMNS if c in ds_or_rows.column_names]
        return ds_or_rows.remove_columns(drop) if drop else ds_or_rows
    return [{k: v for k, v in row.items() if k not in LABEL_COLUMNS} for row in ds_or_rows]


def needs_labels(funcs: Sequence[Callable]) -> list[str]:
    """Names of the rewards that declare (`fn.needs_columns`) a column `answers_only` withholds."""
    return [f.__name__ for f in funcs if set(getattr(f, "needs_columns", ())) & set(LABEL_COLUMNS)]


def reward_columns(rows: Sequence[dict]) -> dict[str, list]:
    """Every column of `rows` but the prompt, as TRL repeats them per completion (keys of the first row)."""
    if not rows:
        return {}
    return {k: [r.get(k) for r in rows] for k in rows[0] if k not in _NOT_COLUMNS}


def score(funcs: Sequence[Callable], rows: Sequence[dict], prompts: Sequence, texts: Sequence[str],
          completion_ids: Sequence[list[int]] | None) -> list[dict]:
    """[{reward name: score or None}] per completion; rows[i] is completion i's dataset row (repeat a row
    for each of its samples), prompts[i] the rendered prompt it continued."""
    if len({len(rows), len(prompts), len(texts)}) != 1:
        raise ValueError(f"score: {len(rows)} rows, {len(prompts)} prompts, {len(texts)} completions")
    columns = reward_columns(rows)
    ids = [list(i) for i in completion_ids] if completion_ids is not None else None
    out: list[dict] = [{} for _ in texts]
    for f in funcs:
        vals = f(prompts=list(prompts), completions=list(texts), completion_ids=ids, **columns)
        for s, v in zip(out, vals):
            s[f.__name__] = None if v is None else float(v)
    return out
