"""The phrased-otherwise set (data/phrased_otherwise.jsonl): every answer recomputed from its worked solution,
every worked line right and built on the story's numbers, every number of the story used, one line per level;
and the set loads by name, with its kinds of phrasing as eval's subjects."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from reasontune.data.local import bundled

KINDS = {"number_first", "question_first", "units", "first_person", "names_and_settings", "terse"}


def rows() -> list[dict]:
    return [json.loads(line) for line in Path(bundled("phrased_otherwise")).read_text().splitlines() if line.strip()]


def numbers(text: str) -> list[Fraction]:
    import re

    return [Fraction(n) for n in re.findall(r"\d+", text)]


@pytest.mark.parametrize("row", rows(), ids=lambda r: r["question"][:40])
def test_every_answer_is_its_worked_solutions_last_result(row):
    from reasontune.rewards.steps import evaluate, reference_steps, step_score

    known, used, result = set(numbers(row["question"])), set(), None
    lines = row["worked"].splitlines()
    for line in lines:
        left, right = line.split("=")
        operands = numbers(left)
        assert set(operands) <= known, f"{line!r}: not built on the story's numbers or earlier results"
        result = evaluate(left)
        assert result == Fraction(right.strip()) and result > 0, f"{line!r}: wrong arithmetic"
        known.add(result)
        used.update(operands)
    assert Fraction(row["answer"]) == result
    assert set(numbers(row["question"])) <= used, "a number of the story is never used (a distractor)"
    assert len(lines) == row["difficulty"] and row["phrasing"] in KINDS
    assert max(numbers(row["question"])) <= 20  # small numbers, like the demo's generator
    # step_check pays the reference working itself in full: right, grounded, on its own path, under its answer
    steps = reference_steps(row["worked"])
    assert step_score(row["worked"], row["question"], steps, answered=True) == pytest.approx(2.0)


def test_the_set_covers_every_kind_and_level_and_no_generator_problem():
    from reasontune.data import procedural
    from reasontune.data.answers import question_hash

    rs = rows()
    assert 60 <= len(rs) <= 100 and len({question_hash(r["question"]) for r in rs}) == len(rs)
    assert set(Counter((r["phrasing"], r["difficulty"]) for r in rs)) == {(k, lv) for k in KINDS for lv in (1, 2, 3)}
    generated = {question_hash(p.question) for name in ("small_arithmetic", "story_arithmetic")
                 for split in ("train", "test") for seed in (0, 1, 2)
                 for p in procedural.generate(name, split, 2000, seed=seed, levels=[1, 2, 3])}
    assert len(generated) > 10_000  # the check saw the generators' problems, not an empty set
    assert not generated & {question_hash(r["question"]) for r in rs}


def test_the_set_loads_by_name_with_its_kinds_as_subjects():
    from reasontune.config import from_dict
    from reasontune.data import eval_split

    cfg = from_dict({"data": {"dataset": "phrased_otherwise"}})
    ds = eval_split(cfg.data, cfg.format)
    assert len(ds) == len(rows()) and set(ds["subject"]) == KINDS and set(ds["difficulty"]) == {1, 2, 3}
    assert all(w for w in ds["worked"])  # step_check reads the reference working in eval, as for the generators


def test_the_demo_evaluates_the_set_for_the_arithmetic_generators_only():
    from dataclasses import replace

    from reasontune.stages.demo import demo_config, phrased_summary, phrased_set

    cfg = demo_config("o")
    assert len(phrased_set(cfg, None)) == len(rows())
    assert phrased_set(replace(cfg, data=replace(cfg.data, dataset="procedural:linear")), None) is None
    few = phrased_set(demo_config("o", quick=True), None)  # --quick: data.test_size of them, of several kinds
    assert len(few) == 8 and len(set(few["subject"])) > 1
    stage = {"n": 84, "accuracy": 0.5, "stop_rate": 1.0, "by_subject": {"terse": {"accuracy": 0.25}},
             "by_difficulty": {"1": {"accuracy": 0.75}}}
    s = phrased_summary({"before": {**stage, "accuracy": 0.0}, "after": stage})
    assert (s["n"], s["before"], s["after"]) == (84, 0.0, 0.5)
    assert s["by_phrasing"]["after"] == {"terse": 0.25} and s["by_level"]["after"] == {"1": 0.75}
