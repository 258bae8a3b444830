"""step_check: a verifiable process reward for arithmetic working.

The final answer is one bit per completion; on a problem of three operations a small model that
gets one of them wrong earns the same -4 as one that wrote nonsense. Every line of working of the
form `a op b = c` (or a chain `a - b * c = a - d = e`) can be checked by exact arithmetic, so
this reward scores the working itself. With a reference working (below):

    STEP_SCORE x (reference steps reached by right lines) / max(reference steps, lines with an equation)

and without one, STEP_SCORE x (lines that are correct and grounded) / (lines with an equation).

With a reference, credit grows with the steps of the reference covered, so a complete right chain
earns more than its right first line alone. The old per-line fraction paid a right first line
alone the full 2.0, and every further line, which a 135M model may get wrong, could only lower it:
in the demo GRPO learned to answer two-step problems in one line (two-step problems phrased unlike
our generators went 11/40 -> 0/40). Lines beyond the reference's count dilute the credit, so writing
both operations for a step ("a + b", "a - b") to hit it by chance earns less than committing to the
right one; a line attempted and missed within the reference's count costs nothing. Without a
reference a right line never lowers the fraction, but nothing says how many steps were needed.

A line is grounded when every number on the left of its first `=` is a number of the question
or the result of an earlier correct, grounded line, so `1 + 1 = 2` cannot farm the score. No
equation in the working: 0.0 (nothing to credit).

When the row has a reference working (a `worked` column: procedural generators write one, GSM8K's
solutions have one), a line must also land on the reference path: its value must be one of the
reference's results (the number after each `=`). Without that, a right sum of the wrong operation
was credited: measured in the demo, GRPO learned to add on every problem, subtraction ones
included ("39 + 38 = 77" for "has 39, loses 38"), because addition is the easier arithmetic.
The path check does not credit other valid orders of the same steps; the answer check still does.
A line whose left side is a reference step (its exact value is on the path) but whose stated result
is wrong earns SETUP_CREDIT of a line: the right operation with a slip in the arithmetic. Without it,
"39 - 38 = 17" and "39 + 38 = 77" scored the same 0, every addition problem pulled towards '+', and
GRPO drifted to adding on subtraction problems too (149 of 200 first steps '+' after 26 steps).

Only the working (before the reasoning end marker) is read, and each line is evaluated with
Fractions by a parser that accepts numbers, + - * / x and parentheses only.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Any

from reasontune.rewards.recipe import texts_of
from reasontune.rewards.registry import RewardContext, register_builder

STEP_SCORE = 2.0
SETUP_CREDIT = 0.5  # of a line: the reference step set up, its result miscalculated
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_EXPR_CHARS = re.compile(r"^[\d\s.+\-*/()]+$")
_RESULT = re.compile(r"=\s*(-?\d[\d,]*(?:\.\d+)?)")  # the number after an '=' in a reference working
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not plain arithmetic")


def evaluate(expr: str) -> Fraction | None:
    """The exact value of a plain arithmetic expression ('12 + 3 x 4'), or None when it is not one."""
    expr = expr.strip().replace("×", "*").replace("x", "*").replace("÷", "/").replace(",", "")
    if not expr or len(expr) > 80 or not _EXPR_CHARS.match(expr):
        return None
    try:
        return _value(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def _subvalues(expr: str) -> set[Fraction]:
    """The values of every operation inside a plain arithmetic expression: a chain's '1 + 4 * 25' reaches 100."""
    expr = expr.strip().replace("×", "*").replace("x", "*").replace("÷", "/").replace(",", "")
    out = set()
    try:
        for node in ast.walk(ast.parse(expr, mode="eval")):
            if isinstance(node, ast.BinOp):
                out.add(_value(node))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        pass
    return out


def _numbers(text: str) -> set[Fraction]:
    return {Fraction(n) for n in _NUMBER.findall(text.replace(",", ""))}


def reference_path(worked: str | None) -> set[Fraction] | None:
    """The results of a reference working (the number after each '='), or None when there is none."""
    values = {Fraction(m.replace(",", "")) for m in _RESULT.findall(worked or "")}
    return values or None


def step_score(working: str, question: str, path: set[Fraction] | None = None) -> float:
    """STEP_SCORE x the working's credit. Given a reference `path`: the reference results reached, each by a
    correct, grounded line landing on it (1) or by a grounded line that sets it up with a wrong result
    (SETUP_CREDIT), over max(reference steps, equation lines written). Without a path: the fraction of
    equation lines that are correct and grounded."""
    known = _numbers(question)
    reached: dict[Fraction, float] = {}  # reference result -> the best credit a line earned for it
    right, total = 0, 0
    for line in working.splitlines():
        if "=" not in line:
            continue
        values = [evaluate(part) for part in line.split("=")]
        if values[0] is None:  # prose with an '=' in it: not an equation we can check
            continue
        total += 1
        correct = all(v is not None and v == values[0] for v in values[1:])
        grounded = _numbers(line.split("=")[0]) <= known
        on_path = path is None or values[0] in path
        if correct and grounded and on_path:  # only a checked result may ground a later line
            right += 1
            known.add(values[0])
            if path is not None:  # a chain reaches the steps it computes on the way
                for v in {values[0]}.union(*(_subvalues(p) for p in line.split("="))) & path:
                    reached[v] = 1.0
        elif grounded and path is not None and on_path:
            reached[values[0]] = max(reached.get(values[0], 0.0), SETUP_CREDIT)
    if path is None:
        return STEP_SCORE * right / total if total else 0.0
    return STEP_SCORE * sum(reached.values()) / max(len(path), total, 1)


def working_lines(text: str, reasoning_end: str | None) -> int:
    """Equation lines in a completion's working (before `reasoning_end`): the steps it wrote out. A policy that
    answers multi-step problems in one line has collapsed, whatever its accuracy on one-step problems."""
    working = text.split(reasoning_end)[0] if reasoning_end else text
    return sum(1 for line in working.splitlines() if "=" in line and evaluate(line.split("=")[0]) is not None)


def question_of(prompt: Any) -> str:
    """The last user turn of a chat prompt (or the prompt text itself)."""
    if isinstance(prompt, str):
        return prompt
    for message in reversed(list(prompt or [])):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else str(content)
    return ""


@register_builder("step_check")
def step_check(ctx: RewardContext):
    """Process reward: with a `worked` column, 2.0 x the reference steps reached by working lines 'a op b = c'
    that are right and use the question's numbers or earlier results (half a step for the right step with a
    wrong result), over the larger of the reference's steps and the lines written; without one, 2.0 x the
    fraction of such lines that are right."""

    def reward(completions, question=None, prompts=None, worked=None, **kwargs):
        texts = texts_of(completions)
        source = question if question is not None else prompts
        if source is None or len(source) != len(texts):
            raise ValueError("step_check needs the questions: a 'question' column, or the prompts TRL passes")
        paths = [reference_path(w) for w in worked] if worked is not None else [None] * len(texts)
        end = ctx.fmt.reasoning_end
        return [step_score(t.split(end)[0] if end else t, question_of(q), p)
                for t, q, p in zip(texts, source, paths)]

    return reward
