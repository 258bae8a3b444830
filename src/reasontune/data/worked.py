"""The worked solutions a run learns from: which rows SFT takes, and the prompt/completion text it trains on.

Below the stages: the SFT warm-up, the near-duplicate check (stages/overlap.py), the compare and the GGUF
importance matrix (export/imatrix.py) all read the same rows from here, so they agree on what was learned from.
"""

from __future__ import annotations

from reasontune.config import ConfigError, RunConfig


def warmup_examples(ds, cfg: RunConfig, n: int | None):
    """The training rows SFT learns from: the first `n` (None: all) that have a worked solution. The
    near-duplicate check (stages/overlap.py) reads the warm-up's rows from here too."""
    if "worked" not in ds.column_names:
        raise ConfigError(f"SFT needs worked solutions, but dataset {cfg.data.dataset!r} has no 'worked' column "
                          f"(columns: {ds.column_names}); use a source with solutions or --warmup none")
    ds = ds.filter(lambda r: bool(r["worked"]))
    return ds if n is None else ds.select(range(min(n, len(ds))))


def sft_rows(ds, tokenizer, cfg: RunConfig, n: int | None):
    """prompt/completion text pairs from rows that have a worked solution."""
    from reasontune.data.code import sft_parts
    from reasontune.models.prompting import render_prompt, render_target

    ds = warmup_examples(ds, cfg, n)
    eos = tokenizer.eos_token or ""
    # sft_parts: a code row's worked solution is its answer block (the code), with no working
    return ds.map(lambda r: {"prompt": render_prompt(tokenizer, r["prompt"], cfg.format),
                             "completion": render_target(*sft_parts(r), cfg.format, eos)},
                  remove_columns=ds.column_names)


def count_worked(ds) -> int:
    """Rows with a non-empty worked solution (0 when the data has no `worked` column)."""
    if "worked" not in ds.column_names:
        return 0
    return sum(1 for w in ds["worked"] if w is not None and str(w).strip())
