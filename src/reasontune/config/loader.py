"""Loading a RunConfig: from a dict or a YAML recipe, with dotted overrides (`--set section.field=value`).

The dataclasses and their defaults live in sections.py; this module only reads values into them, so every
field is coerced and validated by its section's `__post_init__` before anything loads a model.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from reasontune.config.sections import SECTIONS, ConfigError, RunConfig


def _build(cls, values: dict, where: str):
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}: valid keys are {sorted(valid)}")
    values = dict(values)
    for f in fields(cls):
        if f.name in values:
            values[f.name] = _coerce(f, values[f.name], where)
    return cls(**values)


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}
# a list field's annotation (sections.py uses `from __future__ import annotations`, so f.type is this text)
_LIST = re.compile(r"^(list|tuple)\[(\w+)(?:, \.\.\.)?\]$")


def _coerce(f, v, where: str):
    """Check a field's type before __post_init__ compares it (a TypeError there names nothing).

    PyYAML reads 5e-6 (no dot) as a string, so numeric strings are accepted for number fields. A list field
    takes a list, a comma-separated string (`--set rewards.names=a,b`: YAML reads `a,b` as one string, which
    a list field would otherwise hold as its characters) or one value (`--set data.difficulty=3`), each
    element checked as a scalar of the element type.
    """
    kind = str(f.type).replace(" | None", "").replace("None | ", "").strip()
    if v is None and "None" in str(f.type):
        return v
    m = _LIST.match(kind)
    if m is None:
        return _scalar(kind, v, f"{where}: {f.name}={v!r}")
    container, elem = m.groups()
    items = [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)):
        items = [items]
    out = [_scalar(elem, x, f"{where}: {f.name}={v!r}: element {x!r}") for x in items]
    return out if container == "list" else tuple(out)


def _scalar(kind: str, v, what: str):
    """`v` as a scalar of type `kind` (int, float, bool, str; others pass unchecked), else ConfigError on `what`."""
    typ = _SCALARS.get(kind)
    if typ is None or isinstance(v, typ) and not (typ is not bool and isinstance(v, bool)):
        return v
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if typ is str and isinstance(v, bool):  # YAML reads `bf16: false` as a bool
        return str(v).lower()
    if typ in (int, float) and isinstance(v, str):
        try:
            return typ(v)
        except ValueError:
            pass
    example = {"int": "an integer such as 8", "float": "a number such as 5e-6", "bool": "true or false",
               "str": "a string"}[kind]
    raise ConfigError(f"{what} is not {example.split(' such')[0]}: use {example}")


def from_dict(d: dict | None) -> RunConfig:
    """Build a RunConfig from a nested dict (a YAML recipe); unknown keys are errors."""
    d = dict(d or {})
    top = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(d) - top)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown} in config: valid are {sorted(top)}")
    kwargs = {}
    for name, value in d.items():
        if name in SECTIONS:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"section '{name}' must be a mapping, got {type(value).__name__}")
            kwargs[name] = _build(SECTIONS[name], value, f"section '{name}'")
        else:
            kwargs[name] = value
    return RunConfig(**kwargs)


def load_yaml(path: str | os.PathLike) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found: pass an existing YAML file to --config")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections (model:, grpo:, ...)")
    return from_dict(d)


def override(cfg: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """Apply dotted overrides {'grpo.max_steps': 10, 'output_dir': 'x'}; None values are ignored.

    Sections are rebuilt, so `__post_init__` validation runs again on the result.
    """
    d = cfg.to_dict()
    for key, value in updates.items():
        if value is None:
            continue
        if "." in key:
            section, name = key.split(".", 1)
            if section not in SECTIONS or name not in {f.name for f in fields(SECTIONS[section])}:
                raise ConfigError(f"unknown setting '{key}': use section.field with a field of {sorted(SECTIONS)}")
            d[section][name] = value
        else:
            if key not in d or key in SECTIONS:
                raise ConfigError(f"unknown setting '{key}'")
            d[key] = value
    return from_dict(d)


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse `--set section.field=VALUE` items; VALUE is read as YAML (so 1e-5, true, [a, b] work; a list
    field also takes a,b: the loader's _coerce splits it)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like section.field=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out
