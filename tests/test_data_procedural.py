"""Procedural generators: registry, determinism, disjoint splits, levels and correct answers."""

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasontune.config import DataConfig, FormatConfig
from reasontune.data import DataError, build_datasets, procedural
from reasontune.data.answers import question_hash

from conftest import replay

# level: (allowed step counts, operators that must appear, operators allowed, operand digits)
LEVELS = {
    1: ({1}, set(), {"+", "-"}, (2, 2)),
    2: ({2}, set(), {"+", "-"}, (2, 2)),
    3: ({2, 3}, set(), {"+", "-"}, (3, 3)),
    4: ({3}, {"*"}, {"+", "-", "*"}, (1, 3)),
    5: ({4}, {"*", "/"}, {"+", "-", "*", "/"}, (1, 3)),
}


def check_arithmetic(p, level):
    counts, must, allowed, (lo, hi) = LEVELS[level]
    steps = replay(p.worked)
    assert len(steps) in counts
    ops = {s[1] for s in steps}
    assert must <= ops <= allowed
    assert p.answer == str(steps[-1][3]) and int(p.answer) >= 0
    assert all(s[3] > 0 for s in steps), "intermediate values stay positive"
    numbers = set(re.findall(r"\d+", p.question))
    earlier: set[int] = set()
    for a, op, b, c in steps:
        for operand in (a, b):
            if operand in earlier:  # an intermediate result carried forward
                continue
            assert str(operand) in numbers, f"{operand} not in question {p.question!r}"
            assert lo <= len(str(operand)) <= hi, (operand, p.question)
        earlier.add(c)
    if "*" in ops or "/" in ops:  # multipliers and divisors are one-digit
        assert all(len(str(min(a, b))) == 1 for a, op, b, _ in steps if op == "*")
        assert all(len(str(b)) == 1 for a, op, b, _ in steps if op == "/")
    assert p.difficulty == level and p.question.endswith("?")


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_arithmetic_answers_match_worked_steps(level):
    for i in range(150):
        check_arithmetic(procedural.make_item("arithmetic", 7, "train", i, [level]), level)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), index=st.integers(0, 10**6), level=st.integers(1, 5),
       split=st.sampled_from(["train", "test"]))
def test_arithmetic_property(seed, index, level, split):
    check_arithmetic(procedural.make_item("arithmetic", seed, split, index, [level]), level)


def _eval_side(side: str, v: str, x: int) -> int:
    side = re.sub(rf"(\d+){v}\b", rf"\1*({x})", side)
    side = re.sub(rf"\b{v}\b", f"({x})", side)
    assert re.fullmatch(r"[\d\s()*+-]+", side), side
    return eval(side)  # noqa: S307 - digits and + - * ( ) only


@pytest.mark.parametrize("level, steps", [(1, 1), (2, 2), (3, 3)])
def test_linear_solutions_satisfy_equations(level, steps):
    for i in range(100):
        p = procedural.make_item("linear", 3, "train", i, [level])
        replayed = replay(p.worked)
        assert len(replayed) == steps and p.answer == str(replayed[-1][3])
        m = re.fullmatch(r"(?:Solve for ([xyn]): |Find ([xyn]) if |What value of ([xyn]) satisfies )"
                         r"(.+) = (.+?)[.?]", p.question)
        if m:  # equation form: substitute the answer
            v, left, right = m[1] or m[2] or m[3], m[4], m[5]
            assert _eval_side(left, v, int(p.answer)) == _eval_side(right, v, int(p.answer)), p.question


@pytest.mark.parametrize("name", ["arithmetic", "linear"])
def test_items_are_deterministic(name):
    a = [procedural.make_item(name, 5, "train", i) for i in range(20)]
    b = [procedural.make_item(name, 5, "train", i) for i in range(20)]
    assert a == b
    assert procedural.generate(name, "train", 30, 5) == procedural.generate(name, "train", 30, 5)
    other = [procedural.make_item(name, 6, "train", i) for i in range(20)]
    assert a != other
    assert a[:10] != [procedural.make_item(name, 5, "test", i) for i in range(10)]


def test_generate_splits_are_disjoint_and_distinct():
    train, test = procedural.generate_splits("arithmetic", 400, 100, seed=1)
    assert len(train) == 400 and len(test) == 100
    th, eh = [question_hash(p.question) for p in train], [question_hash(p.question) for p in test]
    assert len(set(th)) == 400 and len(set(eh)) == 100 and not set(th) & set(eh)


@pytest.fixture
def tiny_generator():
    """A generator with only 12 distinct problems, to force collisions."""
    @procedural.register("tiny_test", levels=(1,))
    def tiny(rng: random.Random, level: int):
        n = rng.randint(0, 11)
        return procedural.Problem(f"What is {n} plus one?", str(n + 1), f"{n} + 1 = {n + 1}")
    yield "tiny_test"
    procedural.unregister("tiny_test")


def test_collisions_are_skipped_deterministically(tiny_generator):
    train, test = procedural.generate_splits(tiny_generator, 6, 5, seed=0)
    assert {p.question for p in train}.isdisjoint({p.question for p in test})
    assert len({p.question for p in train}) == 6
    assert (train, test) == procedural.generate_splits(tiny_generator, 6, 5, seed=0)
    with pytest.raises(DataError, match="only 7 distinct train problems"):
        procedural.generate_splits(tiny_generator, 8, 5, seed=0)


def test_registry_rejects_duplicates_and_unknown_names():
    procedural.names()
    with pytest.raises(ValueError, match="already registered"):
        procedural.register("arithmetic", levels=(1,))(lambda rng, level: None)
    with pytest.raises(DataError, match="procedural:arithmetic, procedural:code, procedural:linear"):
        procedural.get("nope")
    with pytest.raises(DataError, match=r"valid levels are \[1, 2, 3, 4, 5\]"):
        procedural.make_item("arithmetic", 0, "train", 0, [6])


def test_build_datasets_procedural():
    fmt = FormatConfig()
    ds = build_datasets(DataConfig(train_size=300, test_size=50, seed=2), fmt)
    train, test = ds["train"], ds["test"]
    assert (len(train), len(test)) == (300, 50)
    assert train.column_names == ["prompt", "question", "answer", "worked", "difficulty"]
    assert set(train["difficulty"]) == {1, 2, 3, 4}  # the default levels
    row = train[0]
    assert row["prompt"] == [{"role": "system", "content": fmt.prompt}, {"role": "user", "content": row["question"]}]
    assert not {question_hash(q) for q in train["question"]} & {question_hash(q) for q in test["question"]}
    again = build_datasets(DataConfig(train_size=300, test_size=50, seed=2), fmt)
    assert again["train"]["question"] == train["question"] and again["test"]["answer"] == test["answer"]


@pytest.mark.parametrize("levels", [[5], [1, 3]])
def test_build_datasets_difficulty_choice(levels):
    ds = build_datasets(DataConfig(train_size=60, test_size=10, difficulty=levels, sample=20), FormatConfig())
    assert set(ds["train"]["difficulty"]) == set(levels) and len(ds["train"]) == 20
    assert set(ds["test"]["difficulty"]) <= set(levels)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_small_arithmetic_keeps_the_plans_on_small_numbers(level):
    """The same operations per level as arithmetic; the question's operands stay small (start <= 20,
    amounts, pack sizes and counts one digit), so the task is the story, not the carrying."""
    counts, must, allowed, _ = LEVELS[level]
    for i in range(150):
        p = procedural.make_item("small_arithmetic", 7, "train", i, [level])
        steps = replay(p.worked)
        ops = {s[1] for s in steps}
        assert len(steps) in counts and must <= ops <= allowed
        assert p.answer == str(steps[-1][3]) and all(s[3] > 0 for s in steps)
        earlier = {c for *_, c in steps[:-1]}
        given_numbers = {int(n) for n in re.findall(r"\d+", p.question)}
        for a, op, b, _ in steps:
            for operand in {a, b} - earlier:
                assert operand in given_numbers and operand <= 20, (operand, p.question)
        assert p.difficulty == level and p.question.endswith("?")


def test_small_arithmetic_is_its_own_source():
    assert procedural.make_item("small_arithmetic", 5, "train", 0) != procedural.make_item("arithmetic", 5, "train", 0)
    train, test = procedural.generate_splits("small_arithmetic", 2000, 200, seed=0)
    assert not {question_hash(p.question) for p in train} & {question_hash(p.question) for p in test}
