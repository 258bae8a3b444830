"""procedural:code: one-function Python tasks small enough for a 135M model, checked by their tests.

Levels:
  1: one operation on one argument and a constant ("add_three(x) returns x plus 3")
  2: two arguments, or one built-in (max, abs), a parity test or a two-step expression
  3: lists and strings (sum, length, largest, reverse, upper case, count, repeat)
Each problem's tests are MBPP-style asserts on 4 calls (data/code.py's functional JSON), its answer is ""
and its worked solution the reference function. The expected values come from running that reference
function here (our own source, never model output), so the asserts and the reference cannot disagree.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from reasontune.data.code import functional_tests
from reasontune.data.registry import Problem, register

ASK = ["Write a Python function {sig} that returns {desc}.", "Define a Python function {sig} which returns {desc}.",
       "Implement the Python function {sig}: it returns {desc}.", "Write {sig} in Python. It should return {desc}.",
       "Create a Python function named {sig} that returns {desc}."]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
STRINGS = ["cat", "hello", "python", "abc", "level", "data", "code", "sun", "robot", "moon"]
NUMBER_ARGS, LIST_ARGS, STRING_ARGS, PAIRS = ["x", "n", "num", "value"], ["nums", "lst", "numbers"], ["s", "text", "word"], \
    [("a", "b"), ("x", "y"), ("m", "n")]
CASES = 4
SAFE_BUILTINS = {"abs": abs, "len": len, "max": max, "min": min, "sum": sum}


@dataclass(frozen=True)
class Task:
    name: str
    args: tuple[str, ...]
    desc: str                              # what the function returns, in words
    body: str                              # the reference's return expression
    inputs: Callable[[random.Random], tuple]


def _word(k: int) -> str:
    return WORDS[k] if 0 <= k < len(WORDS) else str(k)


def _ints(lo: int, hi: int, n: int = 1):
    return lambda rng: tuple(rng.randint(lo, hi) for _ in range(n))


def _a_list(rng: random.Random) -> tuple:
    return ([rng.randint(-5, 20) for _ in range(rng.randint(1, 5))],)


def _a_string(rng: random.Random) -> tuple:
    return (rng.choice(STRINGS),)


def _level1(rng: random.Random) -> Task:
    v, op = rng.choice(NUMBER_ARGS), rng.choice(["add", "subtract", "times"])
    k = rng.randint(1, 30) if op != "times" else rng.randint(2, 15)
    name, desc, body = {
        "add": (f"add_{_word(k)}", f"{v} plus {k}", f"{v} + {k}"),
        "subtract": (f"subtract_{_word(k)}", f"{v} minus {k}", f"{v} - {k}"),
        "times": (rng.choice([f"times_{_word(k)}", f"multiply_by_{_word(k)}"]), f"{v} times {k}", f"{v} * {k}"),
    }[op]
    return Task(name, (v,), desc, body, _ints(-10, 50))


def _level2(rng: random.Random) -> Task:
    a, b = rng.choice(PAIRS)
    v = rng.choice(NUMBER_ARGS)
    k, c = rng.randint(2, 9), rng.randint(1, 9)
    kinds = [
        (rng.choice(["add", "add_two", "sum_of_two"]), (a, b), f"the sum of {a} and {b}", f"{a} + {b}"),
        (rng.choice(["subtract", "difference"]), (a, b), f"{a} minus {b}", f"{a} - {b}"),
        (rng.choice(["multiply", "product"]), (a, b), f"the product of {a} and {b}", f"{a} * {b}"),
        (rng.choice(["larger", "maximum", "bigger"]), (a, b), f"the larger of {a} and {b}", f"max({a}, {b})"),
        (rng.choice(["smaller", "minimum"]), (a, b), f"the smaller of {a} and {b}", f"min({a}, {b})"),
        (rng.choice(["square", "squared"]), (v,), f"the square of {v}", f"{v} * {v}"),
        (f"times_{_word(k)}_plus_{_word(c)}", (v,), f"{v} times {k} plus {c}", f"{v} * {k} + {c}"),
        (rng.choice(["is_even", "even"]), (v,), f"True if {v} is even, else False", f"{v} % 2 == 0"),
        (rng.choice(["absolute", "abs_value"]), (v,), f"the absolute value of {v}", f"abs({v})"),
    ]
    name, args, desc, body = rng.choice(kinds)
    return Task(name, args, desc, body, _ints(-20, 20, len(args)))


def _level3(rng: random.Random) -> Task:
    lst, s, k = rng.choice(LIST_ARGS), rng.choice(STRING_ARGS), rng.randint(2, 5)
    kinds = [
        (rng.choice(["list_sum", "total"]), (lst,), f"the sum of the numbers in the list {lst}", f"sum({lst})", _a_list),
        (rng.choice(["count_items", "list_length"]), (lst,), f"the number of items in the list {lst}",
         f"len({lst})", _a_list),
        (rng.choice(["largest", "list_max"]), (lst,), f"the largest number in the list {lst}", f"max({lst})", _a_list),
        (rng.choice(["first_item", "head"]), (lst,), f"the first item of the list {lst}", f"{lst}[0]", _a_list),
        (rng.choice(["last_item", "tail_item"]), (lst,), f"the last item of the list {lst}", f"{lst}[-1]", _a_list),
        (rng.choice(["smallest", "list_min"]), (lst,), f"the smallest number in the list {lst}", f"min({lst})",
         _a_list),
        (rng.choice(["string_length", "length"]), (s,), f"the number of characters in the string {s}", f"len({s})",
         _a_string),
        (f"first_{_word(k)}", (lst,), f"the first {k} items of the list {lst}", f"{lst}[:{k}]", _a_list),
        (f"sum_plus_{_word(k)}", (lst,), f"the sum of the numbers in the list {lst} plus {k}", f"sum({lst}) + {k}",
         _a_list),
        (rng.choice(["reverse", "reversed_string"]), (s,), f"the string {s} reversed", f"{s}[::-1]", _a_string),
        (rng.choice(["shout", "to_upper"]), (s,), f"the string {s} in upper case", f"{s}.upper()", _a_string),
        (rng.choice(["last_char", "last_letter"]), (s,), f"the last character of the string {s}", f"{s}[-1]",
         _a_string),
        (f"count_{_word(k)}s", (lst,), f"how many times {k} appears in the list {lst}", f"{lst}.count({k})",
         lambda r: ([r.choice([k, k, 0, 1, 7]) for _ in range(r.randint(1, 6))],)),
        (f"repeat_{_word(k)}_times", (s,), f"the string {s} repeated {k} times", f"{s} * {k}", _a_string),
        (f"scale_by_{_word(k)}", (lst,), f"a list of the numbers in the list {lst}, each times {k}",
         f"[item * {k} for item in {lst}]", _a_list),
    ]
    name, args, desc, body, inputs = rng.choice(kinds)
    return Task(name, args, desc, body, inputs)


def reference(task: Task) -> str:
    return f"def {task.name}({', '.join(task.args)}):\n    return {task.body}"


def asserts(task: Task, rng: random.Random) -> str:
    """CASES distinct calls with their expected values, computed by the reference function."""
    scope: dict = {"__builtins__": SAFE_BUILTINS}
    exec(reference(task), scope)  # our generated reference, not model output
    fn, calls = scope[task.name], []
    for _ in range(20 * CASES):
        args = task.inputs(rng)
        call = f"{task.name}({', '.join(repr(a) for a in args)})"
        if call not in (c for c, _ in calls):
            calls.append((call, fn(*[list(a) if isinstance(a, list) else a for a in args])))
        if len(calls) == CASES:
            break
    return "\n".join(f"assert {call} == {value!r}" for call, value in calls)


@register("code", levels=(1, 2, 3), description="one-function Python tasks checked by tests, levels 1-3")
def code(rng: random.Random, level: int) -> Problem:
    task = {1: _level1, 2: _level2, 3: _level3}[level](rng)
    sig = f"{task.name}({', '.join(task.args)})"
    question = rng.choice(ASK).format(sig=sig, desc=task.desc)
    tests = functional_tests(asserts(task, rng), task.name)
    return Problem(question, "", reference(task), level, tests)
