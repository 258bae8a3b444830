"""The verdict on an answer: ours (exact numbers, math_verify), or reasoning-gym's own scorer for
rg:TASK rows whose reference answer is not a number.

Logic tasks have answers our math check cannot compare: "Yes"/"No" (rg:syllogism), a sentence that
assigns roles to people in any order (rg:knights_knaves), a name (rg:zebra_puzzles). For them the task's
own `score_answer(answer, entry)` decides, and only full credit is right: reasoning-gym's partial credit
(0.75 for "Yes." where "Yes" is expected, 0.3+ for half the roles) is not, as everywhere in reasontune.
Rows from rg:TASK carry `rg_task` and `rg_entry` (the generated entry as JSON) for this; a numeric
reference is still checked exactly by ours, which needs no entry.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from reasontune.rewards.check import AnswerCheckError, check_answer, parse_number

logger = logging.getLogger(__name__)

RG_COLUMNS = ("rg_task", "rg_entry")
FULL_CREDIT = 1.0


def rg_columns(row: dict) -> dict:
    """The row's reasoning-gym columns as keyword arguments of `verdict` (empty for other rows)."""
    return {k: row[k] for k in RG_COLUMNS if row.get(k)}


def uses_rg_scorer(gold: Any, rg_task: str | None, rg_entry: str | None) -> bool:
    return bool(rg_task) and bool(rg_entry) and parse_number(None if gold is None else str(gold)) is None


@functools.lru_cache(maxsize=None)
def _scorer(task: str):
    import reasoning_gym

    # score_answer reads the entry (and the default config, as the rows were generated with)
    return reasoning_gym.create_dataset(task, size=1, seed=0).score_answer


def rg_score(pred: str | None, rg_task: str, rg_entry: str) -> float:
    """reasoning-gym's score in [0, 1] for `pred`; a scorer that fails raises AnswerCheckError."""
    try:
        entry = json.loads(rg_entry)
        return float(_scorer(rg_task)(pred, entry))
    except Exception as e:  # a broken entry or a scorer bug: neither right nor wrong
        raise AnswerCheckError(f"reasoning-gym scorer of rg:{rg_task} failed ({type(e).__name__}: {e}) on "
                               f"{pred!r:.200}") from e


def verdict(pred: str | None, gold: Any, timeout_s: float, rg_task: str | None = None,
            rg_entry: str | None = None) -> bool:
    """Is `pred` right? reasoning-gym's scorer (full credit only) where it applies, else `check_answer`.
    Raises AnswerCheckError when the check itself fails (rewards count it as the sample's error)."""
    if uses_rg_scorer(gold, rg_task, rg_entry):
        return pred is not None and rg_score(str(pred).strip(), rg_task, rg_entry) >= FULL_CREDIT
    return check_answer(pred, gold, timeout_s)


def is_right(pred: str | None, gold: Any, timeout_s: float, rg_task: str | None = None,
             rg_entry: str | None = None) -> bool:
    """`verdict` for evaluation: a failed check is logged and counted as not right."""
    try:
        return verdict(pred, gold, timeout_s, rg_task, rg_entry)
    except AnswerCheckError as e:
        logger.warning("%s; counted as not right", e)
        return False
