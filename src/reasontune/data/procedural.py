"""Registry of procedural problem generators and the split-aware sampler that drives them.

A generator is `fn(rng: random.Random, level: int) -> Problem`. Item `index` of `split` under
`seed` is drawn from `random.Random(f"{seed}-{split}-{index}")`, so every item is reproducible
on its own. The test split is generated first; a train item whose normalised question hash is
already in the test split (or earlier in train) is skipped, deterministically, so the two
splits never share a problem.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reasontune.data.answers import question_hash
from reasontune.data.errors import DataError

logger = logging.getLogger(__name__)


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


def names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> Generator:
    _load_builtins()
    if name not in _REGISTRY:
        valid = ", ".join(f"procedural:{n}" for n in sorted(_REGISTRY))
        raise DataError(f"unknown procedural generator {name!r}: valid names are {valid}")
    return _REGISTRY[name]


def _load_builtins() -> None:
    # Importing the modules registers their generators (once).
    from reasontune.data import arithmetic, codegen, linear  # noqa: F401


def make_item(name: str, seed: int, split: str, index: int, levels: Iterable[int] | None = None) -> Problem:
    """Item `index` of `split` under `seed`: a pure function of its arguments."""
    gen = get(name)
    chosen = gen.check_levels(levels)
    rng = random.Random(f"{seed}-{split}-{index}")
    level = rng.choice(chosen)
    problem = gen.fn(rng, level)
    if problem.difficulty is None:
        problem = dataclasses.replace(problem, difficulty=level)
    return problem


def generate(name: str, split: str, n: int, seed: int, levels: Iterable[int] | None = None,
             exclude: set[str] | None = None) -> list[Problem]:
    """`n` distinct problems of `split`, skipping any whose question hash is in `exclude`."""
    gen = get(name)
    chosen = gen.check_levels(levels)
    seen = set(exclude or ())
    out: list[Problem] = []
    index, skipped, limit = 0, 0, 50 * n + 1000
    while len(out) < n:
        if index >= limit:
            raise DataError(
                f"procedural:{name} produced only {len(out)} distinct {split} problems of {n} asked "
                f"(levels {list(chosen)}): lower data.train_size/test_size or add levels")
        p = make_item(name, seed, split, index, chosen)
        index += 1
        h = question_hash(p.question)
        if h in seen:
            skipped += 1
            continue
        seen.add(h)
        out.append(p)
    if skipped:
        logger.info("procedural:%s %s: skipped %d duplicate or held-out problems", name, split, skipped)
    return out


def generate_splits(name: str, train_size: int, test_size: int, seed: int,
                    levels: Iterable[int] | None = None) -> tuple[list[Problem], list[Problem]]:
    """(train, test): test is generated first, and train never repeats a test question."""
    test = generate(name, "test", test_size, seed, levels)
    held = {question_hash(p.question) for p in test}
    train = generate(name, "train", train_size, seed, levels, exclude=held)
    return train, test
