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

A line is grounded when every number on the left of its first `=` is a number of the question, a number
the reference working brings in (an operand no earlier reference step made: GSM8K's 60 minutes in an hour,
7 days, 100 percent), or the result of an earlier correct, grounded line, so `1 + 1 = 2` cannot farm the
score. For "Weng earns $12 an hour ... 50 minutes" the right `12 / 60 = 0.2` / `0.2 * 50 = 10` scored 0.0
while only the question's numbers grounded it: 60 is not in the question, and nothing built on it was
grounded either. No equation in the working: 0.0 (nothing to credit).

When the row has a reference working (a `worked` column: procedural generators write one, GSM8K's
solutions have one), a line must also perform a reference step: the same operation on the same values
('14 + 8' for the reference's '14 + 8 = 22'; either order for + and x). Matching values only was not
enough: "39 + 38 = 77" for "has 39, loses 38" was credited when 77 was any result of the path (GRPO
learned to add on every problem, because addition is the easier arithmetic), and in the demo's warm-up
samples "18 + 4 = 22 / 22 - 8 = 14" for "has 18, donates 4, gets 8" hit both results of the reference
"18 - 4 = 14 / 14 + 8 = 22" in the other order, with the wrong answer, for full credit. Since a step's
values are the question's numbers or earlier results, the operations also fix the order. Other valid
orders of the same steps are not credited; the answer check still credits them. A reference equation whose
left side is prose, or does not make its result, is matched by its value only.
A line whose own operation is a reference step but whose stated result is wrong earns SETUP_CREDIT of
a line: the right operation with a slip in the arithmetic. Without it, "39 - 38 = 17" and "39 + 38 = 77"
scored the same 0, every addition problem pulled towards '+', and GRPO drifted to adding on subtraction
problems too (149 of 200 first steps '+' after 26 steps).

The reference's last step is the answer, and it is complete when the answer block states the reference
answer (the `answer` column, judged as answer_check judges it): otherwise it earns SETUP_CREDIT at most.
Right working under a missing or wrong answer block got full credit before (7 of 1,600 warm-up samples
in the demo, e.g. "12 + 1 = 13" then "<answer>1</answer>"); now no wrong answer does.

Only the working (before the reasoning end marker) is read. References and the model's lines are read by
one reader, as GSM8K, MATH and OpenR1 write them (`_equations`): calculator notes `<<a*b=c>>`, `$` and
units around a result ('= $0.2 per minute'), `1,000`, `20%` (0.2, or 20 in a result stated in percent),
LaTeX (frac, cdot, times, div), and chained lines (`1 + 4 * 25 = 1 + 100 = 101` is one equation: its
steps are 4 * 25 and 1 + 100, not a step "1"). Algebra ('2x + 3 = 7') is not an equation. Each side is
evaluated with Fractions by a parser that accepts numbers, + - * / x and parentheses only.
"""

from __future__ import annotations

import ast
import re
from decimal import Decimal
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


# ---- reading working as written (GSM8K, MATH, OpenR1, the model's own lines) -------------------------------
# GSM8K: 'Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.' then '#### 10'; MATH and OpenR1: LaTeX between
# dollars ('$\frac{1}{2} \cdot 4 = 2$'). A line is made plain (calculator notes, LaTeX, currency, thousands
# separators, 'x' for times) and split at its '='s; the arithmetic that ends the text before an '=' and the
# arithmetic that starts the text after it are the two sides, and a side that is nothing but arithmetic
# continues a chain ('1 + 4 * 25 = 1 + 100 = 101' is one equation of three sides, not a step "1").
_CALC_NOTE = re.compile(r"(=\s*\$?\s*)?<<([^<>=]*)=[^<>]*>>")  # GSM8K's <<a*b=c>>, after a visible '=' or not
_TEX = [(re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"((\1)/(\2))"),
        (re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}"), r" \1 "),
        (re.compile(r"\\boxed\s*\{([^{}]*)\}"), r"\1"), (re.compile(r"\\(?:cdot|times)(?![A-Za-z])"), "*"),
        (re.compile(r"\\div(?![A-Za-z])"), "/"), (re.compile(r"\\(?:left|right)(?![A-Za-z])"), ""),
        (re.compile(r"\\[!,;: ]"), ""), (re.compile(r"\\([$%])"), r"\1")]
_PLAIN = str.maketrans({"$": " ", "{": "(", "}": ")", "·": "*", "×": "*", "∗": "*", "÷": "/", "−": "-"})
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TIMES = re.compile(r"(?<=[\d)])\s*x\s*(?=[\d(.])")  # '0.2 x 50', '4x25'; the x of '2x + 3' stays a letter
_RUN_END = re.compile(r"[\d\s.+\-*/()%]*$")  # the characters arithmetic is written with
_RUN_START = re.compile(r"^[\d\s.+\-*/()%]*")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_ALGEBRA = re.compile(r"(?:[+\-*/^]|\d\s*[A-Za-z]|(?<![A-Za-z])[A-Za-z]\)?)$")  # '2x +', '3 + 2x', 'f(x)'


def _plain(line: str) -> str:
    """A line of working with its arithmetic in plain characters."""
    line = _CALC_NOTE.sub(lambda m: m.group(1) or f" {m.group(2)} = ", line)
    for pattern, repl in _TEX:
        line = pattern.sub(repl, line)
    line = re.sub(r"[<>!]=|==", " ? ", line.translate(_PLAIN))  # comparisons are not equations
    return _TIMES.sub("*", _THOUSANDS.sub("", line))


def _read(expr: str, percent_as_fraction: bool = True) -> str:
    """`expr` without '%': 20% as 0.2, or as 20 (a result stated in percent: '100% - 20% = 80%')."""
    if percent_as_fraction:
        return _PERCENT.sub(lambda m: f"{Decimal(m.group(1)) / 100:f}", expr)
    return expr.replace("%", "")


def _tail(seg: str) -> tuple[int, str] | None:
    """(where it starts, the expression) of the longest arithmetic that ends `seg` (the left of an '=')."""
    start = _RUN_END.search(seg).start()
    for i in range(start, len(seg)):
        fresh = i == start or not (seg[i - 1].isdigit() or seg[i - 1] == ".")
        if fresh and seg[i] in "0123456789(-" and evaluate(_read(seg[i:])) is not None:
            return i, seg[i:].strip()
    return None


def _head(seg: str) -> str | None:
    """The longest arithmetic that starts `seg` (the right of an '='): '0.2' of ' 0.2 per minute.'"""
    run = _RUN_START.match(seg).group(0)
    for end in range(len(run), 0, -1):
        if run[end - 1] in "0123456789)%" and evaluate(_read(run[:end])) is not None:
            return run[:end].strip()
    return None


def _equations(line: str) -> list[list[str]]:
    """The equations a line states, each the chain of its sides ('12/60', '0.2'). A left side that runs into
    algebra ('2x + 3 = 7', 'x = 5') states none; a side of prose alone ('Total = 15') leaves the value alone."""
    segs, chains, cur, blocked = _plain(line).split("="), [], [], False
    for i, seg in enumerate(segs):
        head = None if i == 0 or blocked else _head(seg)
        if head is not None:
            cur.append(head)
        elif i:
            cur = _close(chains, cur)
        if i == len(segs) - 1 or (head is not None and seg.strip() == head):
            continue  # the last side, or a side that is all arithmetic: the chain goes on
        cur, tail = _close(chains, cur), _tail(seg)
        if tail is None:  # prose, or a left side ending in a variable ('so x', '3 + 2x', 'f(x)')
            blocked = bool(_ALGEBRA.search(seg.rstrip()))
        else:  # the arithmetic runs on into letters or an operator: '2x + 3', '\sqrt(16)'
            before = seg[:tail[0]]
            blocked = before.rstrip()[-1:] in tuple("+-*/^") or before[-1:].isalpha()
        cur = [tail[1]] if tail and not blocked else []
    _close(chains, cur)
    return chains


def _close(chains: list, cur: list) -> list:
    if cur:
        chains.append(cur)
    return []


def _chain_values(chain: list[str]) -> tuple[list[Fraction | None], list[str]]:
    """The values of a chain's sides and the sides read without '%': 20% reads as 0.2, or as 20 where the result
    is stated in percent and that reading makes the chain hold ('40/50 * 100 = 80%')."""
    readings = (False, True) if "%" in chain[-1] else (True,)
    for fraction in readings:
        exprs = [_read(e, fraction) for e in chain]
        values = [evaluate(e) for e in exprs]
        if None not in values and len(set(values)) == 1:
            return values, exprs
    exprs = [_read(e) for e in chain]
    return [evaluate(e) for e in exprs], exprs


def _inner_first(expr: str) -> list[tuple]:
    return list(reversed(_operations(expr)))  # ast.walk is outermost first: a step's operands come before it


def reference_steps(worked: str | None) -> list[Step] | None:
    """The steps of a reference working, in order: every operation of an equation that holds ('1 + 4 * 25 = 1 +
    100 = 101': 4 * 25, then 1 + 100), or the stated value alone when its left side is prose or does not make it
    (GSM8K's 'Altogether 48+24 = 1,072' keeps 1072). None: no step."""
    steps: list[Step] = []
    for line in (worked or "").splitlines():
        ops, values = [], []
        for chain in _equations(line):
            vals, exprs = _chain_values(chain)
            holds = len(chain) > 1 and None not in vals and len(set(vals)) == 1
            found = [o for e in exprs for o in _inner_first(e)] if holds else []
            ops += [o for i, o in enumerate(found) if o not in ops and o not in found[:i]]  # a chain repeats its ops
            if not found and vals[-1] is not None:
                values.append(vals[-1])
        made = {o[3] for o in ops}
        steps += [Step(o[3], *o[:3]) for o in ops]
        steps += [Step(v) for v in dict.fromkeys(values) if v not in made]
    return steps or None


def _givens(steps: list[Step] | None) -> set[Fraction]:
    """The numbers the reference brings in: operands that no earlier step made (60 minutes, 7 days, 100%)."""
    made, out = set(), set()
    for s in steps or []:
        if s.op is not None:
            out |= {v for v in (s.left, s.right) if v not in made}
        made.add(s.result)
    return out


def _numbers(text: str) -> set[Fraction]:
    """The numbers of a text; '20%' is both 20 and 0.2."""
    text = _THOUSANDS.sub("", text)
    return {Fraction(n) for n in _NUMBER.findall(text)} | {Fraction(n) / 100 for n in _PERCENT.findall(text)}


def step_score(working: str, question: str, steps: list[Step] | None = None, answered: bool | None = None) -> float:
    """STEP_SCORE x the working's credit. Given the reference `steps`: the steps performed, each by a correct,
    grounded equation doing that operation on those values (1) or by a grounded one that sets it up and states a
    wrong result (SETUP_CREDIT), over max(reference steps, equations written). The last step is the answer:
    when `answered` is False (the answer block does not state the reference answer) it earns SETUP_CREDIT at
    most, so no wrong answer gets full credit. Without steps: the fraction of equations that are correct and
    grounded. Grounded: every number on the left is the question's, one the reference brings in, or an earlier
    checked result."""
    known = _numbers(question) | _givens(steps)
    reached: dict[int, float] = {}  # reference step index -> the best credit an equation earned for it
    right, total = 0, 0
    for chain in (c for line in working.splitlines() for c in _equations(line) if len(c) > 1):
        values, exprs = _chain_values(chain)
        total += 1
        correct = None not in values and len(set(values)) == 1
        grounded = _numbers(exprs[0]) <= known
        own = _operations(exprs[0])[:1]  # the equation's own operation: the outermost of its left side
        hits = [i for i, s in enumerate(steps or []) if any(_performs(s, o) for o in own)]
        on_path = steps is None or bool(hits)
        if correct and grounded and on_path:  # only a checked result may ground a later line
            right += 1
            known.add(values[0])
            ops = [o for e in exprs for o in _operations(e)]  # a chain performs the steps on its way
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
    """Lines with an equation in a completion's working (before `reasoning_end`): the steps it wrote out. A policy that
    answers multi-step problems in one line has collapsed, whatever its accuracy on one-step problems."""
    working = text.split(reasoning_end)[0] if reasoning_end else text
    return sum(1 for line in working.splitlines() if any(len(c) > 1 for c in _equations(line)))


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
    that are right and use the question's numbers, those the reference brings in, or earlier results (half a step
    for the right step with a wrong result; the last step counts in full only under the right answer), over the
    larger of the reference's steps and the lines written; without one, 2.0 x the fraction of such lines that
    are right."""

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
