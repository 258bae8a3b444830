"""Adaptive curriculum: draw GRPO prompts from the levels whose groups currently teach something.

A GRPO group learns from its answers only when they differ: all right or all wrong gives every
completion the same answer reward, so the answer's advantage is zero. With SmolLM2-135M on the demo's
arithmetic, nearly every group of the hardest levels was all wrong, while the easiest level had
mixed groups: uniform sampling spent most of each step's decode on groups with no answer signal.

`LevelStats` keeps, per value of a dataset column (the `difficulty` level), a moving average of the
fraction of its groups whose answers were mixed. `CurriculumSampler` draws each generation batch's
prompts level by level in proportion to that fraction, never below `floor`, so every level keeps
being tried and comes back once the model starts getting it partly right. It yields indices in the
layout of TRL's RepeatSampler (each prompt `num_generations` times in a row), which GRPO's grouping
relies on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Hashable, Sequence

from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


class LevelStats:
    """Per level: a moving average of the fraction of groups with mixed answers (prior 1.0: untried
    levels look useful, so each is sampled early)."""

    def __init__(self, levels: Sequence[Hashable], floor: float = 0.05, decay: float = 0.9):
        if not levels:
            raise ValueError("a curriculum needs at least one level")
        if not 0.0 < floor <= 1.0 / len(set(levels)):
            raise ValueError(f"floor={floor} must be in (0, 1/number of levels]")
        self.floor, self.decay = floor, decay
        self.mixed = {lv: 1.0 for lv in sorted(set(levels), key=str)}

    def observe(self, level: Hashable, correct: Sequence[bool]) -> None:
        """One group's answers (right or wrong per completion)."""
        if level not in self.mixed:
            return
        is_mixed = float(0 < sum(bool(c) for c in correct) < len(correct))
        self.mixed[level] = self.decay * self.mixed[level] + (1.0 - self.decay) * is_mixed

    def weights(self) -> dict:
        """Sampling probability per level: proportional to the mixed fraction, at least `floor` each."""
        raw = {lv: max(m, 1e-9) for lv, m in self.mixed.items()}
        total = sum(raw.values())
        n = len(raw)
        # floor + (1 - n*floor) * share: sums to 1 and never drops a level below the floor
        return {lv: self.floor + (1.0 - n * self.floor) * r / total for lv, r in raw.items()}


class CurriculumSampler(Sampler):
    """RepeatSampler's index layout, with each prompt's level drawn from `stats.weights()` at the time
    its generation batch is drawn (the DataLoader asks lazily, so the weights follow training)."""

    def __init__(self, levels: Sequence[Hashable], stats: LevelStats, mini_repeat_count: int, batch_size: int,
                 repeat_count: int = 1, seed: int = 0):
        self.levels, self.stats = list(levels), stats
        self.mini_repeat_count, self.batch_size, self.repeat_count = mini_repeat_count, batch_size, repeat_count
        self.num_samples = len(self.levels)
        self.rng = random.Random(seed)
        self.pools: dict = {}
        for i, lv in enumerate(self.levels):
            self.pools.setdefault(lv, []).append(i)
        self._queues: dict = {lv: [] for lv in self.pools}

    def _draw(self, level) -> int:
        q = self._queues[level]
        if not q:  # each level's prompts in a fresh random order, then again
            q.extend(self.pools[level])
            self.rng.shuffle(q)
        return q.pop()

    def __iter__(self):
        for _ in range(self.num_samples // self.batch_size):
            w = self.stats.weights()
            names = [lv for lv in w if lv in self.pools]
            picks = self.rng.choices(names, weights=[w[lv] for lv in names], k=self.batch_size)
            chunk = [self._draw(lv) for lv in picks]
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index

    def __len__(self) -> int:
        return (self.num_samples // self.batch_size) * self.batch_size * self.mini_repeat_count * self.repeat_count


def observe_groups(stats: LevelStats, rows: Sequence[dict], completions: Sequence, group_size: int,
                   column: str, is_right: Callable[[str, dict], bool]) -> None:
    """Feed one generation batch (rows and completions in group order) into `stats`."""
    from reasontune.rewards import completion_text

    for start in range(0, len(rows) - group_size + 1, group_size):
        texts = [completion_text(c) for c in completions[start:start + group_size]]
        row = rows[start]
        stats.observe(row.get(column), [is_right(t, row) for t in texts])


def answer_checker(fmt, code_sandbox: str | None = None) -> Callable[[str, dict], bool]:
    """Right means what evaluation counts as right: for a code row (one with tests) every test passes in the
    sandbox (`code_sandbox`: rewards.code_sandbox, resolved by the caller; the verdict is the one the code
    rewards cached for the same completion, not a second run), for any other row the extracted answer matches
    the row's answer. A code row with no sandbox given is a ValueError, not a wrong answer."""
    from reasontune.data.code import is_code_row
    from reasontune.rewards import grade, rg_columns

    def check(text: str, row: dict) -> bool:
        if is_code_row(row):
            if code_sandbox is None:
                raise ValueError("a code row reached the curriculum without a sandbox to run its tests")
            from reasontune.rewards.code import check_code

            return check_code(text, row["tests"], sandbox=code_sandbox, fmt=fmt).kind == "pass"
        return row.get("answer") is not None and grade(text, str(row["answer"]), fmt, **rg_columns(row))[1]

    return check


def check_column(g, columns: Sequence[str]) -> None:
    """ConfigError unless the training data has grpo.curriculum_column (validate.py calls this before a
    model loads for files and generators; hub data is checked when it arrives)."""
    from reasontune.config import ConfigError

    if g.curriculum != "none" and g.curriculum_column not in columns:
        raise ConfigError(f"grpo.curriculum={g.curriculum} needs a {g.curriculum_column!r} column in the training "
                          f"data (columns: {list(columns)}): set grpo.curriculum_column to one of them, or "
                          "grpo.curriculum to none")


def curriculum_from_config(cfg, train_ds):
    """(column, LevelStats, answer checker) for the trainer under grpo.curriculum: adaptive, else None."""
    from reasontune.config import ConfigError

    g = cfg.grpo
    if g.curriculum == "none":
        return None
    check_column(g, train_ds.column_names)
    levels = train_ds[g.curriculum_column]
    n = len(set(levels))
    if n * g.curriculum_floor > 1:
        raise ConfigError(f"grpo.curriculum_floor={g.curriculum_floor} x {n} levels is over 1: use at most {1 / n:.3g}")
    logger.info("adaptive curriculum over %s: %d levels", g.curriculum_column, n)
    sandbox = None
    if "tests" in train_ds.column_names and any(t and str(t).strip() for t in train_ds["tests"]):
        from reasontune.rewards.sandbox import resolve

        sandbox = resolve(cfg.rewards.code_sandbox)  # code rows: a missing sandbox is refused here, named
    return g.curriculum_column, LevelStats(levels, floor=g.curriculum_floor), answer_checker(cfg.format, sandbox)
