"""The reward registry: names -> builders, presets, and dotted paths to user code.

A builder takes a `RewardContext` (markers, EOS token, length budget) and returns a TRL
reward function `f(completions, **dataset_columns) -> list[float | None]`. Plain reward
functions are registered with `register(name)`; builders with `register_builder(name)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from reasontune.config import CODE_SANDBOXES, ConfigError, FormatConfig
from reasontune.rewards.check import DEFAULT_TIMEOUT_S

RewardFn = Callable[..., list]
Builder = Callable[["RewardContext"], RewardFn]


@dataclass(frozen=True)
class RewardContext:
    """What a builder may need. `max_completion_length` is only required by `overlong_soft`."""

    fmt: FormatConfig = field(default_factory=FormatConfig)
    eos: str | None = None
    max_completion_length: int | None = None
    overlong_cache: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    code_sandbox: str = CODE_SANDBOXES[0]  # rewards.code_sandbox: where code_tests runs programs


class Registry:
    """Name -> builder. Registering a name twice is an error; so is asking for an unknown one."""

    def __init__(self) -> None:
        self._builders: dict[str, Builder] = {}
        self._docs: dict[str, str] = {}

    def register_builder(self, name: str, builder: Builder | None = None, *, doc: str | None = None):
        """Register `builder(ctx) -> reward_fn` under `name`; usable as a decorator."""

        def add(b: Builder) -> Builder:
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"reward name {name!r} must be a Python identifier (TRL logs it as a metric)")
            if name in self._builders or name in PRESETS:
                raise ValueError(f"reward {name!r} is already registered; pick another name")
            self._builders[name] = b
            self._docs[name] = (doc or (b.__doc__ or "")).strip().split("\n")[0]
            return b

        return add(builder) if builder is not None else add

    def register(self, name: str, fn: RewardFn | None = None, *, doc: str | None = None):
        """Register a plain reward function `fn(completions, **kwargs)`; usable as a decorator."""

        def add(f: RewardFn) -> RewardFn:
            self.register_builder(name, lambda ctx: f, doc=doc or f.__doc__)
            return f

        return add(fn) if fn is not None else add

    def unregister(self, name: str) -> None:
        self._builders.pop(name, None)
        self._docs.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def doc(self, name: str) -> str:
        return self._docs.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def get(self, name: str) -> Builder:
        try:
            return self._builders[name]
        except KeyError:
            raise ConfigError(
                f"unknown reward {name!r}: valid names are {self.names()}, presets {sorted(PRESETS)}, "
                "or a dotted path 'package.module:function'") from None


REGISTRY = Registry()
register = REGISTRY.register
register_builder = REGISTRY.register_builder

# Preset -> member names; PRESET_WEIGHTS gives each member's default weight (0: logged only).
PRESETS: dict[str, list[str]] = {
    "recipe": ["format_exact", "format_approx", "answer_check", "number_check"],
    "verified": ["format_strict", "answer_equiv", "number_strict", "overlong_soft", "repetition_penalty",
                 "length_penalty"],
}
PRESET_WEIGHTS: dict[str, dict[str, float]] = {
    "verified": {"length_penalty": 0.0},
}


def is_dotted_path(name: str) -> bool:
    return ":" in name or "." in name


def load_dotted(path: str) -> Callable:
    """Import 'package.module:attr' (or 'package.module.attr'); ConfigError on any failure."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"reward path {path!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"reward path {path!r}: cannot import module {module_name!r} ({e})") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"reward path {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"reward path {path!r} names a {type(obj).__name__}, not a callable")
    return obj


def expand(names: list[str], weights: list[float] | None) -> list[tuple[str, float, str | None]]:
    """(name, weight, preset or None) for each reward, presets expanded; duplicates are errors."""
    weights = list(weights) if weights is not None else [1.0] * len(names)
    if len(weights) != len(names):
        raise ConfigError(f"rewards.weights={weights!r}: give one weight per reward ({len(names)}: {names})")
    out: list[tuple[str, float, str | None]] = []
    for name, w in zip(names, weights):
        if name in PRESETS:
            member_w = PRESET_WEIGHTS.get(name, {})
            out.extend((m, float(w) * member_w.get(m, 1.0), name) for m in PRESETS[name])
        else:
            out.append((name, float(w), None))
    seen: set[str] = set()
    for name, _, _ in out:
        if name in seen:
            raise ConfigError(f"reward {name!r} is listed twice in rewards.names={names!r} (presets included)")
        seen.add(name)
    return out


def available() -> list[str]:
    """Registered reward names (presets are in PRESETS)."""
    return REGISTRY.names()
