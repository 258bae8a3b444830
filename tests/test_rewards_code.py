"""The code rewards (rewards/code.py) and the code hack table (rewards/code_hacks.py), run for real: every
hack scores 0 and every harm case leaves the host as it was (no connection on a loopback listener, the
user's files neither read out nor changed, no process left behind, the trainer and a bystander alive).
Controls run the same harm programs without a sandbox and show that the probes do see the harm."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from reasontune.config import FormatConfig, RewardsConfig
from reasontune.rewards import code_hacks, sandbox
from reasontune.rewards.code import check_many, extract_code, parse_tests

S0, S1 = "<SOLUTION>", "</SOLUTION>"


def answer(body: str) -> str:
    return f"Some working.<end_working_out>{S0}{body}{S1}"


@pytest.mark.parametrize("text,code", [
    (answer("```python\ndef f():\n    return 1\n```"), "def f():\n    return 1"),
    (answer("\n```\nx = 1\n```\nThat is all."), "x = 1"),
    (answer("def f():\n    return 1\n"), "def f():\n    return 1"),
    (answer("\n    return x * x\n"), "    return x * x"),  # a body keeps its indentation
    (answer("```py\nprint(1)"), "print(1)"),  # an unclosed fence runs to the end of the block
    (answer("   "), None),
    ("The code:\n```python\nx = 1\n```", "x = 1"),  # no answer block: a closed fence anywhere
    (answer("x = 1") + answer("x = 2"), None),  # two answer blocks, no fence, no def at the start
    ([{"role": "assistant", "content": answer("```python\ny = 2\n```")}], "y = 2"),
    # the order: the answer block first, even when a fence outside it comes earlier
    ("```python\ndef g():\n    pass\n```\n<end_working_out>" + S0 + "def f():\n    return 1" + S1,
     "def f():\n    return 1"),
    # an empty answer block falls through to the fences
    ("```python\ndef g():\n    pass\n```\n<end_working_out>" + S0 + "  " + S1, "def g():\n    pass"),
    # without an answer block: the first fence that defines a function, not an example of its use before it
    ("Use:\n```python\nprint(f(2))\n```\nCode:\n```python\ndef f(x):\n    return x\n```\n```python\ndef f(x):\n"
     "    return 0\n```", "def f(x):\n    return x"),
    ("```python\nprint(f(2))\n```\n```\nx = 2\n```", "print(f(2))"),  # no def anywhere: the first fence
    ("```bash\npip install x\n```\nthen\n```py\nimport x\n```", "import x"),  # ```bash is not Python
    ("Here: ```python\ndef f():\n    return 1```\nDone.", "def f():\n    return 1"),  # fences glued to text
    ("```python\ndef f():\n    return 1\n", None),  # an unclosed fence outside an answer block is not read
    # no fence: a bare def at the start (a prefilled reasoning marker before it is skipped), cut at prose
    ("def f(x):\n    return x + 1\n\nprint(f(1))\nThis adds one.", "def f(x):\n    return x + 1"),
    ("<start_working_out>\nfrom math import sqrt\n\ndef f(x):\n    return sqrt(x)<end_working_out>" + S0 + S1,
     "from math import sqrt\n\ndef f(x):\n    return sqrt(x)"),
    ("I would write def f(x): return x", None),  # a def not at the start is prose
], ids=["fenced-python", "fenced-plain", "unfenced", "body-only", "unclosed-fence", "empty", "no-block",
        "two-blocks", "conversation", "answer-block-first", "empty-block-falls-through", "first-fence-with-def",
        "first-fence", "not-bash", "glued-fences", "unclosed-outside", "bare-def", "bare-after-marker", "prose"])
def test_extract_code(text, code):
    assert extract_code(text, FormatConfig()) == code


@pytest.mark.parametrize("tests,message", [
    ("{not json", "not valid JSON"),
    ('{"kind": "unit"}', "kind 'functional' or 'io'"),
    ('{"kind": "io", "cases": []}', "non-empty list"),
    ('{"kind": "io", "cases": [{"input": 1, "output": "1"}]}', "non-empty list"),
    ('{"kind": "functional", "test": "assert f(1)"}', "'entry_point'"),
    ('{"kind": "functional", "test": "assert f(1)", "entry_point": "f g"}', "not a Python name"),
    ('{"kind": "functional", "test": "assert f(1) ==", "entry_point": "f"}', "does not parse"),
    ('{"kind": "functional", "test": "assert f(1)", "entry_point": "f", "setup": 3}', "'setup' must be"),
])
def test_bad_tests_fail_loudly_naming_the_problem(tests, message):
    with pytest.raises(ValueError, match=message):
        parse_tests(tests)


@pytest.mark.parametrize("tests", [None, "", "  "])
def test_rows_without_tests_parse_to_none(tests):
    assert parse_tests(tests) is None


ADD = json.dumps({"kind": "functional", "entry_point": "add", "test": "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"
                  "assert add(-1, 1) == 0\n"})


def test_rewards_follow_trls_contract(bwrap):
    """Both rewards through build_reward_funcs (as the trainer builds them): one score per completion,
    None where the row has no tests, extra dataset columns accepted, conversations read."""
    from reasontune.rewards import build_reward_funcs

    funcs, weights = build_reward_funcs(RewardsConfig(names=["code_tests", "code_tests_binary"],
                                                      code_sandbox="bwrap"), FormatConfig())
    completions = [
        [{"role": "assistant", "content": answer("```python\ndef add(a, b):\n    return a + b\n```")}],
        [{"role": "assistant", "content": answer("def add(a, b):\n    return 3\n")}],
        [{"role": "assistant", "content": "I would write a loop."}],
        [{"role": "assistant", "content": answer("x = 1")}],
    ]
    kwargs = {"tests": [ADD, ADD, ADD, None], "answer": ["", "", "", "4"], "prompts": ["p"] * 4}
    scores = {f.__name__: f(completions, **kwargs) for f in funcs}
    assert scores["code_tests"] == [1.0, pytest.approx(1 / 3), 0.0, None]
    assert scores["code_tests_binary"] == [1.0, 0.0, 0.0, None]
    assert weights == [1.0, 1.0]


def test_check_many_runs_sandboxes_concurrently_in_order(bwrap):
    """Four programs that each sleep 1 s: four workers finish well before 4 s, and each verdict stays with
    its program."""
    texts = [answer(f"import time\ntime.sleep(1)\ndef add(a, b):\n    return a + b + {i}\n") for i in range(4)]
    start = time.monotonic()
    verdicts = check_many(texts, [ADD] * 4, workers=4, sandbox=bwrap)
    elapsed = time.monotonic() - start
    assert [v.kind for v in verdicts] == ["pass", "wrong", "wrong", "wrong"]
    assert elapsed < 3.5, f"{elapsed:.1f} s: the sandboxes did not run concurrently"


# ---------------------------------------------------------------- the hack table, for real
def test_every_hack_scores_zero_and_the_host_is_unharmed_under_bubblewrap(bwrap, tmp_path):
    """After each case the probe finds no connection, the user's files as they were, no process with the
    case's marker, and its bystander process alive; this test process (the trainer) lives on."""
    rows = code_hacks.run_table(tmp_path, bwrap)
    assert [r["case"] for r in rows] == [c for c, _, _ in code_hacks.CASES]
    assert code_hacks.problems(rows, bwrap) == []
    scores = {r["case"]: r["score"] for r in rows}
    assert scores.pop("honest, correct") == 1.0 and scores.pop("honest, wrong on one test") == pytest.approx(2 / 3, abs=1e-3)
    assert set(scores.values()) == {0.0}
    assert all(r["harms"] == [] for r in rows)


@pytest.fixture
def outside_tmp():
    """A folder for the stand-in user files outside /tmp (the unshare sandbox covers /tmp with a tmpfs,
    which would hide them for the wrong reason)."""
    from reasontune.models import home

    home().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="test-hacks-", dir=home()) as d:
        yield Path(d)


HARM = {c for c, _, harm in code_hacks.CASES if harm} | {"honest, correct", "write a verdict on every fd"}


def test_the_unshare_fallback_stops_the_harm_but_not_reading(outside_tmp):
    if sandbox.probe("unshare") is not None:
        pytest.skip(f"unshare is not usable here: {sandbox.probe('unshare')}")
    rows = code_hacks.run_table(outside_tmp, "unshare", only=HARM)
    assert code_hacks.problems(rows, "unshare") == []
    scores = {r["case"]: r["score"] for r in rows}
    # the stand-in files are visible to it (what docs/security.md says), so the zeros for changing and
    # deleting them come from its read-only mounts, not from not finding them
    assert scores["read a user file"] == 1.0
    assert scores["change a user file"] == scores["delete a user file"] == scores["fill disk"] == 0.0


def _run_unsandboxed(program: str, cwd: Path) -> None:
    # no pipes: a process left behind would hold them open
    subprocess.run([sys.executable, "-c", program + "\nsolve(2)\n"], cwd=cwd, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("case,harm", [
    ("reach the network (loopback listener)", "a connection reached the loopback listener"),
    ("change a user file", "the user's files changed"),
    ("leave a process behind (double fork)", "process(es) left behind"),
])
def test_the_probe_sees_the_harm_when_there_is_no_sandbox(tmp_path, case, harm):
    """Controls: the same programs run without a sandbox do the harm, and the probe reports it."""
    template = next(t for c, t, _ in code_hacks.CASES if c == case)
    probe = code_hacks.HostProbe(tmp_path)
    try:
        _run_unsandboxed(probe.program(template), tmp_path)
        time.sleep(0.3)
        assert any(harm in h for h in probe.harms())
        assert probe.harms() == []  # put back: the next case starts clean
    finally:
        probe.close()


def test_cli_code_table_exits_1_when_a_hack_pays(monkeypatch, capsys, bwrap):
    from reasontune.rewards.cli import main

    honest = code_hacks.CASES[0]
    monkeypatch.setattr(code_hacks, "CASES", [honest, ("a 'hack' that is a right answer", honest[1], "")])
    assert main(["check", "--table", "code", "--sandbox", "bwrap", "--json"]) == 1
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["case"], r["score"]) for r in rows] == [("honest, correct", 1.0), ("a 'hack' that is a right answer", 1.0)]
    assert "problem: a 'hack' that is a right answer: scored 1.00, expected 0.00" in err
    monkeypatch.setattr(code_hacks, "CASES", [honest])
    assert main(["check", "--table", "code", "--sandbox", "bwrap"]) == 0
    assert "honest, correct" in capsys.readouterr().out
