"""rg:TASK: question/answer rows from a reasoning-gym task (procedural, offline, imported lazily).

Each row holds the entry's `question` and `answer`, plus `rg_task` and `rg_entry` (the whole entry as
JSON): a numeric answer is checked by reasontune's verifiers, any other (logic tasks: "Yes", a sentence,
a name) by the task's own `score_answer` on that entry, full credit only (rewards/rgscore.py).
"""

from __future__ import annotations

import difflib
import json
import logging

from reasontune.data.answers import question_hash, to_text
from reasontune.data.errors import DataError

logger = logging.getLogger(__name__)

TEST_SEED_OFFSET = 1_000_003  # the test split draws from a different reasoning-gym seed


def _module():
    try:
        import reasoning_gym
    except ImportError as e:
        raise DataError("rg:TASK needs reasoning-gym: pip install reasoning-gym "
                        "(or pip install 'reasontune[rg]')") from e
    return reasoning_gym


def task_names() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def check_task(task: str) -> None:
    _module()
    valid = task_names()
    if task not in valid:
        close = difflib.get_close_matches(task, valid, n=5)
        hint = f" (did you mean {', '.join('rg:' + c for c in close)}?)" if close else ""
        raise DataError(f"unknown reasoning-gym task {task!r}{hint}; valid tasks: {', '.join(valid)}")


def _rows(task: str, size: int, seed: int) -> list[dict]:
    ds = _module().create_dataset(task, size=size, seed=seed)
    out, generated = [], 0
    for entry in ds:
        generated += 1
        q, a = to_text(entry.get("question")), to_text(entry.get("answer"))
        if q and a:
            out.append({"question": q, "answer": a, "rg_task": task, "rg_entry": _entry_json(task, entry)})
    if generated and not out:
        raise _yields_nothing(task, generated)
    return out


def _entry_json(task: str, entry: dict) -> str:
    """The entry as JSON for the task's scorer; "" (our verifier only) when its metadata is not JSON."""
    try:
        return json.dumps(entry)
    except (TypeError, ValueError) as e:
        logger.warning("rg:%s: an entry is not JSON (%s); its answer is checked by reasontune's verifier only",
                       task, e)
        return ""


def _yields_nothing(task: str, generated: int) -> DataError:
    """Tasks such as propositional_logic accept many right answers and publish none: reasoning-gym checks
    them with its scorer, and reasontune's rewards, eval and warm-up need a reference answer per row."""
    return DataError(f"rg:{task} yields no usable rows: none of its {generated} generated entries has both a "
                     "question and a reference answer (reasoning-gym grades this task's open-ended answers "
                     "without one); pick a task with reference answers, e.g. rg:syllogism or rg:knights_knaves")


def generate_splits(task: str, train_size: int, test_size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test) rows; test uses seed + TEST_SEED_OFFSET; duplicates and test questions leave train."""
    check_task(task)
    test = _distinct(_rows(task, test_size, seed + TEST_SEED_OFFSET), set(), test_size) if test_size else []
    held = {question_hash(r["question"]) for r in test}
    extra = max(10, train_size // 10)
    train = _distinct(_rows(task, train_size + extra, seed), held, train_size)
    if train_size and not train:
        raise DataError(f"rg:{task}: no training rows left (every generated question is also a test question "
                        f"or a duplicate); lower data.test_size or raise data.train_size")
    if len(train) < train_size:
        logger.warning("rg:%s: only %d distinct train rows of %d asked", task, len(train), train_size)
    return train, test


def _distinct(rows: list[dict], exclude: set[str], limit: int) -> list[dict]:
    seen, out = set(exclude), []
    for r in rows:
        h = question_hash(r["question"])
        if h not in seen:
            seen.add(h)
            out.append(r)
        if len(out) == limit:
            break
    return out
