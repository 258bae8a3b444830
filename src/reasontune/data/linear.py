"""procedural:linear: one-variable linear equations with integer solutions.

Levels: 1: x + b = c or x - b = c; 2: a*x + b = c; 3: a*x + b = c*x + d (solution may be negative).
The worked solution has one "p op q = r" line per step, like procedural:arithmetic.
"""

from __future__ import annotations

import random

from reasontune.data.registry import Problem, register

ASK = ["Solve for {v}: {eq}.", "Find {v} if {eq}.", "What value of {v} satisfies {eq}?"]
WORDS_1 = ["I think of a number and {verb} {b}. The result is {c}. What is the number?"]
WORDS_2 = ["I think of a number, multiply it by {a} and {verb} {b}. The result is {c}. What is the number?"]


def _term(coef: int, v: str) -> str:
    return v if coef == 1 else f"{coef}{v}"


def _signed(b: int) -> str:
    return f"+ {b}" if b >= 0 else f"- {-b}"


def _level1(rng: random.Random, v: str) -> Problem:
    x, b = rng.randint(0, 60), rng.randint(1, 60)
    if rng.random() < 0.5:
        c, eq, step, verb = x + b, f"{v} + {b} = {x + b}", f"{x + b} - {b} = {x}", "add"
    else:
        c, eq, step, verb = x - b, f"{v} - {b} = {x - b}", f"{x - b} + {b} = {x}", "subtract"
    if c >= 0 and rng.random() < 0.3:
        return Problem(rng.choice(WORDS_1).format(verb=verb, b=b, c=c), str(x), step)
    return Problem(rng.choice(ASK).format(v=v, eq=eq), str(x), step)


def _level2(rng: random.Random, v: str) -> Problem:
    a, x, b = rng.randint(2, 9), rng.randint(0, 20), rng.randint(-40, 40) or 5
    c = a * x + b
    eq = f"{_term(a, v)} {_signed(b)} = {c}"
    worked = f"{c} {'-' if b >= 0 else '+'} {abs(b)} = {a * x}\n{a * x} / {a} = {x}"
    if b > 0 and rng.random() < 0.3:
        return Problem(rng.choice(WORDS_2).format(a=a, verb="add", b=b, c=c), str(x), worked)
    return Problem(rng.choice(ASK).format(v=v, eq=eq), str(x), worked)


def _level3(rng: random.Random, v: str) -> Problem:
    c_ = rng.randint(1, 8)
    a, x = rng.randint(c_ + 1, 9), rng.randint(-10, 20)
    b = rng.randint(-30, 30)
    d = (a - c_) * x + b
    eq = f"{_term(a, v)} {_signed(b)} = {_term(c_, v)} {_signed(d)}"
    e, f = a - c_, d - b
    worked = f"{a} - {c_} = {e}\n{d} - {b} = {f}\n{f} / {e} = {x}"
    return Problem(rng.choice(ASK).format(v=v, eq=eq), str(x), worked)


@register("linear", levels=(1, 2, 3), description="linear equations in one variable, levels 1-3")
def linear(rng: random.Random, level: int) -> Problem:
    v = rng.choice(["x", "x", "y", "n"])
    return {1: _level1, 2: _level2, 3: _level3}[level](rng, v)
