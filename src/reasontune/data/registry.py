"""The registry of procedural problem generators: a generator module imports this one and registers itself.

Nothing here imports a generator, so there is no cycle: procedural.py (the sampler) imports the built-in
generator modules, and they import this registry. A second generator under a taken name is an error.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reasontune.data.errors import DataError


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str
    worked: str | None = None
    difficulty: int | None = None
    tests: str | None = None  # a code problem's tests (data/code.py's JSON); its answer is then ""


@dataclass(frozen=True)
class Generator:
    name: str
    fn: Callable[[random.Random, int], Problem]
    levels: tuple[int, ...]
    default_levels: tuple[int, ...]
    description: str = ""

    def check_levels(self, levels: Iterable[int] | None) -> tuple[int, ...]:
        chosen = tuple(levels) if levels else self.default_levels
        bad = [lv for lv in chosen if lv not in self.levels]
        if bad:
            raise DataError(
                f"procedural:{self.name} has no difficulty level(s) {bad}: "
                f"valid levels are {list(self.levels)} (set data.difficulty)")
        return chosen


_REGISTRY: dict[str, Generator] = {}


def register(name: str, levels: Iterable[int], default_levels: Iterable[int] | None = None,
             description: str = "") -> Callable:
    """Decorator: add a generator under `name`; a second generator with the same name is an error."""
    levels = tuple(levels)

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"procedural generator {name!r} is already registered")
        _REGISTRY[name] = Generator(name, fn, levels, tuple(default_levels or levels), description)
        return fn

    return deco


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
