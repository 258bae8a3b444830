"""Code rewards: run the program in a completion's answer block against the row's tests, in the sandbox.

* `extract_code(text)`: the code in the answer block: its first fenced block (``` or ```python), else
  the whole block; None when there is no single closed, non-empty answer block.
* `check_code(text, tests_json)` -> CodeVerdict(passed, total, kind): kind is pass, syntax, timeout,
  wrong, error or no_code. `check_many(texts, tests_list, workers=N)` runs sandboxes concurrently.
* rewards `code_tests` (passed / total) and `code_tests_binary` (1.0 only when every test passes), TRL's
  contract `f(completions, tests=None, **kwargs)`: None for a row without tests.

The `tests` column is a JSON string: {"kind": "functional", "test", "entry_point", "prompt", "setup"} or
{"kind": "io", "cases": [{"input", "output"}, ...]} (docs/security.md says how each runs).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reasontune.config import FormatConfig
from reasontune.rewards.extract import answer_block, completion_text
from reasontune.rewards.harness import instrument
from reasontune.rewards.registry import RewardContext, register_builder
from reasontune.rewards.sandbox import CodeVerdict, SandboxLimits, resolve, run_program

__all__ = ["CodeVerdict", "SandboxLimits", "check_code", "check_many", "extract_code", "parse_tests"]

_FENCE = re.compile(r"```[ \t]*[\w+#.-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
CACHE_SIZE = 4096  # verdicts kept: code_tests and code_tests_binary score the same batch once
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def extract_code(text: Any, fmt: FormatConfig | None = None) -> str | None:
    """The program in the answer block (fenced or not), indentation kept; None when there is none."""
    text = completion_text(text)
    span = answer_block(text, fmt or FormatConfig())
    if span is None:
        return None
    block = text[span[0]: span[1]]
    m = _FENCE.search(block)
    code = (m.group(1) if m else block).lstrip("\n").rstrip()  # leading spaces stay: a body-only answer
    return code if code.strip() else None


def parse_tests(tests: Any) -> dict | None:
    """The `tests` column as a checked dict; None for a row without tests; ValueError naming the problem."""
    if tests is None or (isinstance(tests, str) and not tests.strip()):
        return None
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError as e:
            raise ValueError(f"tests column is not valid JSON ({e}): {tests[:120]!r}") from None
    if not isinstance(tests, dict) or tests.get("kind") not in ("functional", "io"):
        raise ValueError(f"tests must be a JSON object with kind 'functional' or 'io', got {str(tests)[:120]!r}")
    if tests["kind"] == "io":
        cases = tests.get("cases")
        if not isinstance(cases, list) or not cases or not all(
                isinstance(c, dict) and isinstance(c.get("input"), str) and isinstance(c.get("output"), str)
                for c in cases):
            raise ValueError("io tests need 'cases': a non-empty list of {'input': str, 'output': str}")
        return tests
    for key in ("test", "entry_point"):
        if not isinstance(tests.get(key), str) or not tests[key].strip():
            raise ValueError(f"functional tests need a non-empty string {key!r}")
    if not tests["entry_point"].isidentifier():
        raise ValueError(f"entry_point {tests['entry_point']!r} is not a Python name")
    for key in ("prompt", "setup"):
        if tests.get(key) is not None and not isinstance(tests[key], str):
            raise ValueError(f"functional tests: {key!r} must be a string or null")
    try:
        instrument(tests["test"])  # parsed here (never run) so a broken test fails loudly, not as 0
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"the test source does not parse: {e}") from None
    return tests


def _total(tests: dict) -> int:
    return len(tests["cases"]) if tests["kind"] == "io" else max(1, instrument(tests["test"])[1])


def check_code(completion_text: Any, tests_json: Any, *, limits: SandboxLimits | None = None,
               sandbox: str = "auto", fmt: FormatConfig | None = None) -> CodeVerdict:
    """Run the answer block's program against `tests_json` in the sandbox (`sandbox`: rewards.code_sandbox)."""
    tests = parse_tests(tests_json)
    if tests is None:
        raise ValueError("this row has no tests to run")
    code = extract_code(completion_text, fmt)
    if code is None:
        return CodeVerdict(0, _total(tests), "no_code", "no code in the answer block")
    limits = limits or SandboxLimits()
    isolation = resolve(sandbox)
    key = (code, json.dumps(tests, sort_keys=True), isolation, limits)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    verdict = run_program(code, tests, limits, isolation)
    with _cache_lock:
        _cache[key] = verdict
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return verdict


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def check_many(texts: list, tests_list: list, workers: int | None = None, **kw) -> list[CodeVerdict | None]:
    """check_code for each (text, tests) pair, `workers` sandboxes at a time (default: one per CPU); None
    where a row has no tests. Keyword arguments go to check_code."""
    if len(texts) != len(tests_list):
        raise ValueError(f"{len(texts)} completions but {len(tests_list)} tests")
    parsed = [parse_tests(t) for t in tests_list]  # bad tests fail here, before any program runs

    def one(i: int) -> CodeVerdict | None:
        return None if parsed[i] is None else check_code(texts[i], parsed[i], **kw)

    n = min(workers or default_workers(), max(1, len(texts)))
    if n == 1:
        return [one(i) for i in range(len(texts))]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="sandbox") as pool:
        return list(pool.map(one, range(len(texts))))


def _builder(binary: bool):
    def build(ctx: RewardContext):
        # resolved now, at build time: validate_run builds the rewards before a model loads, so a missing
        # sandbox is a ConfigError naming the fix, not a failure in the first training step
        isolation = resolve(ctx.code_sandbox)

        def reward(completions: list, tests: list | None = None, **kwargs) -> list[float | None]:
            tests = tests if tests is not None else [None] * len(completions)
            verdicts = check_many(completions, tests, sandbox=isolation, fmt=ctx.fmt)
            if binary:
                return [None if v is None else float(v.kind == "pass") for v in verdicts]
            return [None if v is None else v.passed / v.total for v in verdicts]

        reward.__name__ = "code_tests_binary" if binary else "code_tests"
        return reward

    return build


register_builder("code_tests", _builder(False),
                 doc="Fraction of the row's tests that the answer block's program passes, run in the sandbox.")
register_builder("code_tests_binary", _builder(True),
                 doc="1.0 when the answer block's program passes every test of the row (sandboxed), else 0.0.")
