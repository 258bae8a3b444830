"""Issue 9: model output is parsed, never executed (docs/security.md)."""

from __future__ import annotations

import pytest

from reasontune.config import FormatConfig
from reasontune.rewards import extract_answer, is_correct

CALLS = [
    "__import__('os').system('touch {f}')",
    "(lambda: __import__('os').system('touch {f}'))()",
    "x + __import__('os').system('touch {f}')",
    "open('{f}', 'w').write('x')",
    "exec(\"open('{f}', 'w')\")",
]


@pytest.mark.parametrize("template", CALLS)
@pytest.mark.parametrize("wrap", ["{}", "${}$", "\\boxed{{{}}}"])
def test_answer_checking_runs_no_code(template, wrap, tmp_path):
    marker = tmp_path / "pwned"
    answer = wrap.format(template.format(f=marker))
    fmt = FormatConfig()
    completion = f"{fmt.reasoning_start}hmm{fmt.reasoning_end}{fmt.solution_start}{answer}{fmt.solution_end}"
    pred = extract_answer(completion, fmt)
    for gold in ("0", "x", "1/2"):
        assert is_correct(pred, gold) is False
        assert is_correct(answer, gold) is False
    assert not marker.exists()
