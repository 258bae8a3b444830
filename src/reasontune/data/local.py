"""Loading raw Datasets: local files and hub ids, both as `datasets.Dataset` for the adapters."""

from __future__ import annotations

import logging
from pathlib import Path

from reasontune.data.errors import DataError

logger = logging.getLogger(__name__)

EXTENSIONS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Sets shipped inside the package, by name (`--dataset phrased_otherwise`): read like a local file.
# phrased_otherwise: 84 small-number +/- word problems (levels 1-3, like procedural:small_arithmetic's) written
# apart from the generators, in other words and orders; its `phrasing` column names the kind (data/hub.py).
BUNDLED = {"phrased_otherwise": "phrased_otherwise.jsonl"}


def bundled(spec: str) -> str | None:
    """The path of a set shipped with reasontune under the name `spec`, else None."""
    name = BUNDLED.get((spec or "").strip().lower())
    return str(Path(__file__).resolve().parent / name) if name else None


def looks_local(spec: str) -> bool:
    """A spec is a local file when it ends in a supported extension or names an existing file."""
    return Path(spec).suffix.lower() in EXTENSIONS or Path(spec).expanduser().is_file()


def check_local(spec: str) -> Path:
    p = Path(spec).expanduser()
    if not p.is_file():
        raise DataError(f"dataset file {str(p)!r} not found: give an existing .jsonl, .json, .csv or .parquet file")
    if p.suffix.lower() not in EXTENSIONS:
        raise DataError(f"dataset file {str(p)!r} has an unsupported type {p.suffix!r}: "
                        f"use one of {sorted(EXTENSIONS)}")
    return p


def load_local(spec: str):
    """A local file as a Dataset, through the same `datasets` builders a hub set uses."""
    import datasets

    p = check_local(spec)
    try:
        ds = datasets.load_dataset(EXTENSIONS[p.suffix.lower()], data_files=str(p), split="train")
    except Exception as e:  # parse errors of any builder
        raise DataError(f"could not read dataset file {str(p)!r}: {type(e).__name__}: {e}") from e
    logger.info("loaded %d rows from %s (columns %s)", len(ds), p, ds.column_names)
    return ds


def load_hub(hub_id: str, config: str | None, split: str):
    """`datasets.load_dataset(hub_id, config, split=split)` with a clear error."""
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # offline, unknown id, bad config or split
        raise DataError(f"could not load hub dataset {hub_id!r} (config {config!r}, split {split!r}): "
                        f"{type(e).__name__}: {e}") from e
    logger.info("loaded %d rows from %s/%s[%s] (columns %s)", len(ds), hub_id, config, split, ds.column_names)
    return ds
