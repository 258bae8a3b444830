"""step_check: a verifiable process reward for arithmetic working.

The final answer is one bit per completion; on a problem of three operations a small model that
gets one of them wrong earns the same -4 as one that wrote nonsense. Every line of working of the
form `a op b = c` (or a chain `a - b * c = a - d = e`) can be checked by exact arithmetic, so
this reward scores the working itself. With a reference working (below):

    STEP_SCORE x (reference steps performed by right lines) / max(reference steps, lines with an equation)

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
solutions have one), a line must also perform a reference step: the same operation on the same values
('14 + 8' for the reference's '14 + 8 = 22'; either order for + and x). Matching values only was not
enough: "39 + 38 = 77" for "has 39, loses 38" was credited when 77 was any result of the path (GRPO
learned to add on every problem, because addition is the easier arithmetic), and in the demo's warm-up
samples "18 + 4 = 22 / 22 - 8 = 14" for "has 18, donates 4, gets 8" hit both results of the reference
"18 - 4 = 14 / 14 + 8 = 22" in the other order, with the wrong answer, for full credit. Since a step's
values are the question's numbers or earlier results, the operations also fix the order. Other valid
orders of the same steps are not credited; the answer check still credits them. A reference line whose
left side is not plain arithmetic (GSM8K prose) is matched by its value only.
A line whose own operation is a reference step but whose stated result is wrong earns SETUP_CREDIT of
a line: the right operation with a slip in the arithmetic. Without it, "39 - 38 = 17" and "39 + 38 = 77"
scored the same 0, every addition problem pulled towards '+', and GRPO drifted to adding on subtraction
problems too (149 of 200 first steps '+' after 26 steps).

The reference's last step is the answer, and it is complete when the answer block states the reference
answer (the `answer` column, judged as answer_check judges it): otherwise it earns SETUP_CREDIT at most.
Right working under a missing or wrong answer block got full credit before (7 of 1,600 warm-up samples
in the demo, e.g. "12 + 1 = 13" then "<answer>1</answer>"); now no wrong answer does.

Only the working (before the reasoning end marker) is read, and each line is evaluated with
Fractions by a parser that accepts numbers, + - * / x and parentheses only.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Any, NamedTuple

from reasontune.rewards.check import check_answer
from reasontune.rewards.extract import extract_answer
from reasontune.rewards.recipe import texts_of
from reasontune.rewards.registry import RewardContext, register_builder

STEP_SCORE = 2.0
SETUP_CREDIT = 0.5  # of a line: the reference step set up, its result miscalculated
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_EXPR_CHARS = re.compile(r"^[\d\s.+\-*/()]+$")
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
    expr = _clean(expr)
    if not expr or len(expr) > 80 or not _EXPR_CHARS.match(expr):
        return None
    try:
        return _value(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


class Step(NamedTuple):
    """One step of a reference working: its result, and the operation that made it (None: a value only,
    e.g. GSM8K prose whose left side is not plain arithmetic)."""
    result: Fraction
    op: type | None = None
    left: Fraction | None = None
    right: Fraction | None = None


def _clean(expr: str) -> str:
    return expr.strip().replace("×", "*").replace("x", "*").replace("÷", "/").replace(",", "")


def _operations(expr: str) -> list[tuple[type, Fraction, Fraction, Fraction]]:
    """(op, left value, right value, value) of every operation in a plain arithmetic expression, the outermost
    first: a chain's '1 + 4 * 25' performs (Add, 1, 100, 101) and (Mult, 4, 25, 100)."""
    out = []
    try:
        for node in ast.walk(ast.parse(_clean(expr), mode="eval")):
            if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
                left, right = _value(node.left), _value(node.right)
                out.append((type(node.op), left, right, _OPS[type(node.op)](left, right)))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        pass
    return out


def _performs(step: Step, operation: tuple) -> bool:
    """Whether `operation` (op, left, right, value) is the reference step: the same operation on the same
    values (either order for + and x), or, for a value-only step, the same value."""
    op, left, right, value = operation
    if step.op is None:
        return value == step.result
    pairs = {(left, right), (right, left)} if op in (ast.Add, ast.Mult) else {(left, right)}
    return op is step.op and (step.left, step.right) in pairs


def reference_steps(worked: str | None) -> list[Step] | None:
    """The steps of a reference working, in order: each number after an '=', with the operation on its left
    when that is plain arithmetic ('4 * 25 = 100'; GSM8K's 'sold 48/2 = 24 clips' reads 48/2). None: no step."""
    steps = []
    for line in (worked or "").splitlines():
        parts = line.split("=")
        for before, after in zip(parts, parts[1:]):
            m = re.match(r"\s*(-?\d[\d,]*(?:\.\d+)?)", after)
            if not m:
                continue
            result = Fraction(m.group(1).replace(",", ""))
            expr = re.sub(r"^[^\d(]*", "", re.search(r"[\d\s.,+\-*/x×÷()]*$", before).group(0))
            ops = [o for o in _operations(expr) if o[3] == result][:1]
            steps.append(Step(result, *ops[0][:3]) if ops else Step(result))
    return steps or None


def _numbers(text: str) -> set[Fraction]:
    return {Fraction(n) for n in _NUMBER.findall(text.replace(",", ""))}


def step_score(working: str, question: str, steps: list[Step] | None = None, answered: bool | None = None) -> float:
    """STEP_SCORE x the working's credit. Given the reference `steps`: the steps performed, each by a correct,
    grounded line doing that operation on those values (1) or by a grounded line that sets it up and states a
    wrong result (SETUP_CREDIT), over max(reference steps, equation lines written). The last step is the answer:
    when `answered` is False (the answer block does not state the reference answer) it earns SETUP_CREDIT at
    most, so no wrong answer gets full credit. Without steps: the fraction of equation lines that are correct
    and grounded."""
    known = _numbers(question)
    reached: dict[int, float] = {}  # reference step index -> the best credit a line earned for it
    right, total = 0, 0
    for line in working.splitlines():
        if "=" not in line:
            continue
        parts = line.split("=")
        values = [evaluate(part) for part in parts]
        if values[0] is None:  # prose with an '=' in it: not an equation we can check
            continue
        total += 1
        correct = all(v is not None and v == values[0] for v in values[1:])
        grounded = _numbers(parts[0]) <= known
        own = _operations(parts[0])[:1]  # the line's own operation: the outermost of its left side
        hits = [i for i, s in enumerate(steps or []) if any(_performs(s, o) for o in own)]
        on_path = steps is None or bool(hits)
        if correct and grounded and on_path:  # only a checked result may ground a later line
            right += 1
            known.add(values[0])
            ops = [o for p in parts for o in _operations(p)]  # a chain performs the steps on its way
            reached.update({i: 1.0 for i, s in enumerate(steps or []) if any(_performs(s, o) for o in ops)})
        elif grounded and on_path:
            reached.update({i: max(reached.get(i, 0.0), SETUP_CREDIT) for i in hits})
    if steps is None:
        return STEP_SCORE * right / total if total else 0.0
    last = len(steps) - 1
    if answered is False and last in reached:
        reached[last] = min(reached[last], SETUP_CREDIT)
    return STEP_SCORE * sum(reached.values()) / max(len(steps), total, 1)


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
    """Process reward: with a `worked` column, 2.0 x the reference steps performed by working lines 'a op b = c'
    that are right and use the question's numbers or earlier results (half a step for the right step with a
    wrong result; the last step counts in full only under the right answer), over the larger of the
    reference's steps and the lines written; without one, 2.0 x the fraction of such lines that are right."""

    def reward(completions, question=None, prompts=None, worked=None, answer=None, **kwargs):
        texts = texts_of(completions)
        source = question if question is not None else prompts
        if source is None or len(source) != len(texts):
            raise ValueError("step_check needs the questions: a 'question' column, or the prompts TRL passes")
        steps = [reference_steps(w) for w in worked] if worked is not None else [None] * len(texts)
        # whether each answer block states the reference answer, checked only where a reference working can be
        # capped (None: no steps or no answer column): a row without steps never pays for the answer check
        answers = answer if answer is not None else [None] * len(texts)
        answered = [check_answer(extract_answer(t, ctx.fmt), a) if p is not None and a is not None else None
                    for t, a, p in zip(texts, answers, steps)]
        end = ctx.fmt.reasoning_end
        return [step_score(t.split(end)[0] if end else t, question_of(q), p, ok)
                for t, q, p, ok in zip(texts, source, steps, answered)]

    return reward
