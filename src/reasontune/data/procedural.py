"""The split-aware sampler that drives the procedural generators (their registry is registry.py).

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
from collections.abc import Iterable

from reasontune.data.answers import question_hash
from reasontune.data.errors import DataError
from reasontune.data.registry import _REGISTRY, Generator, Problem, register, unregister  # noqa: F401

logger = logging.getLogger(__name__)


def names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get(name: str) -> Generator:
    _load_builtins()
    if name not in _REGISTRY:
        valid = ", ".join(f"procedural:{n}" for n in sorted(_REGISTRY))
        raise DataError(f"unknown procedural generator {name!r}: valid names are {valid}")
    return _REGISTRY[name]


# The built-in generators: importing a module registers its generators (once). They import the registry, not
# this module, so the registry learns them without an import cycle; a third-party generator calls
# `reasontune.data.registry.register` the same way.
def _load_builtins() -> None:
    from reasontune.data import arithmetic, codegen, linear, stories  # noqa: F401


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
