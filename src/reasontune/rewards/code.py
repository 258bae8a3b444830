"""Code rewards: run the program a completion gives against the row's tests, in the sandbox.

* `extract_code(text)`: the program a completion gives, read from (the first that finds code wins) the answer
  block, else a closed ```python fence anywhere, else a bare `def` at the start (its docstring has the order);
  None when none finds any.
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

__all__ = ["CODE_REWARDS", "CodeVerdict", "SandboxLimits", "check_code", "check_many", "extract_code", "parse_tests"]

_FENCE = re.compile(r"```[ \t]*[\w+#.-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
CACHE_SIZE = 4096  # verdicts kept: code_tests and code_tests_binary score the same batch once
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def extract_code(text: Any, fmt: FormatConfig | None = None) -> str | None:
    """The program a completion gives, indentation kept (a body-only answer keeps its leading spaces); None when
    it gives none. Read in this order, the first that finds non-blank code winning:

    1. the answer block (exactly one closed block between the solution markers): its first fenced block
       (``` or ```python; unclosed, it runs to the block's end), else the whole block;
    2. a closed fenced block anywhere (tagged python, python3, py or untagged; ```bash and the like are
       skipped): the first one with a top-level `def`/`class` line, else the first one. The first, not the
       last: small models write the function, then an example of its use;
    3. a bare program at the very start (after an optional reasoning-start marker): from a first line that
       starts `def`, `async def`, `class`, `import`, `from` or `@`, up to the first unindented line that
       starts none of those (nor `#`), and never past a format marker.

    The judge only reads text here: whether code is a whole function or a body that continues the prompt is
    decided inside the sandbox (candidate.py's `program_parts`)."""
    fmt = fmt or FormatConfig()
    text = completion_text(text)
    span = answer_block(text, fmt)
    if span is not None:
        block = text[span[0]: span[1]]
        m = _FENCE.search(block)
        code = (m.group(1) if m else block).lstrip("\n").rstrip()
        if code.strip():
            return code
    blocks = [b for info, b in fenced_blocks(text) if info in _PYTHON_TAGS and b.strip()]
    if blocks:
        code = next((b for b in blocks if _DEFINES.search(b)), blocks[0])
        return code.lstrip("\n").rstrip()
    return _bare_program(text, fmt)


_PYTHON_TAGS = ("", "python", "python3", "py")
_DEFINES = re.compile(r"^(?:async[ \t]+def|def|class)[ \t]", re.MULTILINE)
_OPENING = re.compile(r"```[ \t]*([\w+#.-]*)[ \t]*$")  # a fence that opens at the end of its line
_BARE_START = ("def ", "async def ", "class ", "import ", "from ", "@")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(tag, body) of each closed ``` fence, in order; the tag lower-cased ("" untagged). A fence opens at the
    end of a line ("Here it is: ```python") and closes at a line that is ``` alone or ends with ``` (code with
    the fence glued on: "    return x```"); an unclosed last fence is not a block."""
    blocks, tag, body = [], None, []
    for line in text.split("\n"):
        if tag is None:
            m = _OPENING.search(line)
            if m:
                tag, body = m.group(1).lower(), []
        elif line.rstrip().endswith("```"):
            rest = line.rstrip()[:-3]
            blocks.append((tag, "\n".join(body + ([rest] if rest.strip() else []))))
            tag = None
        else:
            body.append(line)
    return blocks


def _bare_program(text: str, fmt: FormatConfig) -> str | None:
    """Step 3 of extract_code: a program written without fence or markers at the start of the completion."""
    cut = min([i for i in (text.find(m) for m in (fmt.reasoning_end, fmt.solution_start, fmt.solution_end))
               if i >= 0] or [len(text)])
    head = text[:cut].lstrip()
    if head.startswith(fmt.reasoning_start):
        head = head[len(fmt.reasoning_start):].lstrip()
    if not head.startswith(_BARE_START):
        return None
    lines = head.split("\n")
    end = next((i for i, ln in enumerate(lines) if i and ln.strip() and not ln[0].isspace()
                and not ln.startswith(_BARE_START + ("#",))), len(lines))
    code = "\n".join(lines[:end]).rstrip()
    return code or None


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
    """Run the completion's program (extract_code) against `tests_json` in the sandbox (`sandbox`:
    rewards.code_sandbox)."""
    tests = parse_tests(tests_json)
    if tests is None:
        raise ValueError("this row has no tests to run")
    code = extract_code(completion_text, fmt)
    if code is None:
        return CodeVerdict(0, _total(tests), "no_code",
                           "no code: no answer block, closed python fence or def at the start")
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


CODE_REWARDS = ("code_tests", "code_tests_binary")  # the names registered below: they need a tests column
register_builder("code_tests", _builder(False),
                 doc="Fraction of the row's tests that the completion's program (extract_code) passes, sandboxed.")
register_builder("code_tests_binary", _builder(True),
                 doc="1.0 when the completion's program (extract_code) passes every test of the row, else 0.0.")
