"""The code sandbox (rewards/sandbox.py on the host; harness.py and candidate.py inside): the codec that
carries results, the seccomp filter, the assert counting, the verdict channel, the isolation check, and
programs run for real under bubblewrap (functional and stdin/stdout tests, every verdict kind)."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time

import pytest

from reasontune.config import ConfigError, FormatConfig, RewardsConfig
from reasontune.rewards import candidate, harness, sandbox
from reasontune.rewards.sandbox import SandboxError, SandboxLimits, run_program

FAST = SandboxLimits(cpu_s=1.0, wall_s=2.0, memory_mb=256)


# ---------------------------------------------------------------- the codec
def _same(a, b) -> bool:
    """Equal, with the same exact types all the way down (NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 3 ** 5000, 2.5, -0.0, float("inf"), float("nan"), 1 + 2j, "", "héllo\n\udcff",
    b"\x00\xff", [1, [2, (3, "x")]], (), {"a": 1, (1, 2): [None]}, {1, 2, 3}, frozenset({"a"}), [[[]]],
])
def test_codec_round_trips_plain_data(value):
    back = candidate.decode(json.loads(json.dumps(candidate.encode(value))))
    assert _same(back, value)


class _Int(int):
    pass


class _Str(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


def _deep(n):
    v = []
    for _ in range(n):
        v = [v]
    return v


@pytest.mark.parametrize("value", [_Int(3), _Str("x"), object(), (i for i in range(3)), len, [1, _Int(2)],
                                   {"k": object()}, _deep(100), list(range(300_000))],
                         ids=["int-subclass", "str-subclass-eq", "object", "generator", "builtin-function",
                              "nested-subclass", "dict-of-object", "too-deep", "too-many-nodes"])
def test_codec_refuses_what_is_not_plain(value):
    with pytest.raises(candidate.NotPlain):
        candidate.encode(value)


@pytest.mark.parametrize("raw", [[], ["Z"], "x", ["L", [["Q"]]], ["I", "zz"], ["E", [["L", []]]]])
def test_decode_rejects_malformed(raw):
    with pytest.raises((ValueError, TypeError)):
        candidate.decode(raw)


# ---------------------------------------------------------------- counting asserts
@pytest.mark.parametrize("src,n,calls_check", [
    ("def check(candidate):\n    assert candidate(1) == 2\n    assert True\n    assert candidate(2) == 3\n", 2, False),
    ("assert f(1) == 1\nassert f(2) == 4\n", 2, False),
    ("def check(c):\n    for i in range(9):\n        assert c(i) == i\n", 1, False),
    ("def check(c):\n    if c(1):\n        assert c(2)\n    else:\n        assert c(3)\n", 2, False),
    ("def check(c):\n    assert c(1)\ncheck(f)\n", 1, True),
    ("def check(c):\n    c(1)\n", 0, False),
])
def test_instrument_counts_asserts(src, n, calls_check):
    _, got_n, got_calls = harness.instrument(src)
    assert (got_n, got_calls) == (n, calls_check)


# ---------------------------------------------------------------- the seccomp filter
PROMPT = "from typing import List\n\n\ndef sq(x: int) -> int:\n    \"\"\"x squared\"\"\"\n"


@pytest.mark.parametrize("code,names", [
    ("def sq(x):\n    return x * x\n", ["<setup>", "<prompt>", "<candidate>"]),  # whole: after the prompt
    ("import math\n\ndef sq(x):\n    return math.pow(x, 2)\n", ["<setup>", "<prompt>", "<candidate>"]),
    ("sq = lambda x: x * x\n", ["<setup>", "<prompt>", "<candidate>"]),
    ("    return x * x\n", ["<setup>", "<candidate>"]),  # a body: prompt + code, one source
], ids=["def", "imports-then-def", "assigned", "body"])
def test_program_parts_decides_whole_or_body_by_parsing(code, names):
    parts = candidate.program_parts({"kind": "functional", "code": code, "prompt": PROMPT, "entry_point": "sq"})
    assert [n for n, _ in parts] == names
    if names[-1] == "<candidate>" and len(parts) == 2:
        assert parts[1][1] == PROMPT + code  # HumanEval's harness: prompt + completion
    ns = {}
    for name, src in parts:
        exec(compile(src, name, "exec"), ns)  # our own test strings, not model output
    assert ns["sq"](3) == 9


@pytest.mark.parametrize("code,error", [
    ("def other(x):\n    return x * x\n", candidate.NoEntryPoint),  # the stub would stay: refused
    ("import math\n", candidate.NoEntryPoint),
    ('def sq(x):\n    """x squared"""\n', candidate.NoEntryPoint),  # the model copied the stub: not a function
    ("def sq(x):\n    pass\n", candidate.NoEntryPoint),
    ("def sq(x) return x", SyntaxError),
    ("  return x\n    y", SyntaxError),
])
def test_program_parts_refuses_code_that_defines_no_entry_point(code, error):
    with pytest.raises(error):
        candidate.program_parts({"kind": "functional", "code": code, "prompt": PROMPT, "entry_point": "sq"})


def test_program_parts_without_a_prompt_runs_the_code_alone():
    job = {"kind": "functional", "code": "x = 1", "prompt": "", "setup": "import os", "entry_point": "f"}
    assert candidate.program_parts(job) == [("<setup>", "import os"), ("<candidate>", "x = 1")]
    io = dict(job, kind="io", prompt=PROMPT)
    assert candidate.program_parts(io) == [("<setup>", "import os"), ("<candidate>", "x = 1")]
    with pytest.raises(candidate.NoEntryPoint, match="stub"):  # MBPP-style: no prompt, a stub all the same
        candidate.program_parts(dict(job, code="def f(a):\n    ...\n"))


@pytest.mark.parametrize("machine", sorted(candidate._DENY))
def test_seccomp_program_is_well_formed(machine):
    prog = candidate.seccomp_program(machine, 1234)
    assert prog[0] == (candidate._LD, 0, 0, 4)  # the architecture is checked first
    assert prog[-1] == (candidate._RET, 0, 0, candidate._ALLOW)
    for i, (code, jt, jf, _) in enumerate(prog):
        if code & 0x07 == 0x05:  # BPF_JMP: both targets inside the program
            assert i + 1 + max(jt, jf) < len(prog)
    denied = {k for code, _, _, k in prog if code == candidate._JEQ}
    for name in ("execve", "socket", "ptrace", "unshare", "mount"):
        assert candidate._DENY[machine][name] in denied


LOCKDOWN_PROBE = r"""
import importlib.util, json, os, socket, subprocess, sys, threading
spec = importlib.util.spec_from_file_location("cand", sys.argv[1])
cand = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cand)
cand.lock_down({"cpu_s": 5, "memory_mb": 512, "fsize_mb": 1, "nproc": 64, "nofile": 64})
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = e.errno
attempt("fork", os.fork)
attempt("socket", socket.socket)
attempt("subprocess", lambda: subprocess.run(["true"]))
attempt("kill_pid_1", lambda: os.kill(1, 0))
attempt("kill_all", lambda: os.kill(-1, 0))
attempt("kill_self", lambda: os.kill(os.getpid(), 0))
t = threading.Thread(target=lambda: out.setdefault("thread", "ran"))
t.start(); t.join()
attempt("big_file", lambda: open("big", "wb").write(b"x" * (2 << 20)))
print(json.dumps(out))
"""


def test_lockdown_refuses_processes_sockets_and_signals(tmp_path):
    """candidate.lock_down in a throwaway interpreter: fork, exec, sockets and signals to others fail with
    EPERM; threads and signals to itself still work; RLIMIT_FSIZE caps a file."""
    r = subprocess.run([sys.executable, "-c", LOCKDOWN_PROBE, str(candidate.__file__)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"fork": 1, "socket": 1, "subprocess": 1, "kill_pid_1": 1, "kill_all": 1, "kill_self": "ok",
                   "thread": "ran", "big_file": 27}  # EPERM everywhere; EFBIG for the file


# ---------------------------------------------------------------- the verdict channel
NONCE = "ab" * 16


@pytest.mark.parametrize("raw,ok", [
    (f'{NONCE} {{"passed": 1, "total": 1, "kind": "pass"}}\n', True),
    ('{"passed": 1, "total": 1, "kind": "pass"}\n', False),  # no nonce
    (f'{"cd" * 16} {{"passed": 1, "total": 1, "kind": "pass"}}\n', False),  # another nonce
    (f'{NONCE} {{"passed": 2, "total": 1, "kind": "pass"}}\n', False),  # more passed than run
    (f'{NONCE} {{"passed": true, "total": 1, "kind": "pass"}}\n', False),  # not an int
    (f'{NONCE} {{"passed": 1, "total": 1, "kind": "great"}}\n', False),  # unknown kind
    (f'{NONCE} not json\n', False),
])
def test_verdict_needs_the_nonce_and_a_valid_body(raw, ok):
    assert (sandbox._parse_verdict(raw.encode(), NONCE) is not None) == ok


def _fake_judge(monkeypatch, script: str) -> None:
    """Replace the sandbox command with a stand-in judge (reads the job on stdin, like the real one)."""
    monkeypatch.setattr(sandbox, "_command", lambda isolation, limits: [sys.executable, "-c", script])


def test_a_failed_lockdown_is_raised_not_scored(monkeypatch):
    _fake_judge(monkeypatch, "import json, os, sys\njob = json.load(sys.stdin)\n"
                "os.write(job['verdict_fd'], (job['nonce'] + ' {\"kind\": \"sandbox\", \"detail\": \"x\"}\\n').encode())")
    with pytest.raises(SandboxError, match="lock the program down"):
        run_program("x = 1", {"kind": "io", "cases": [{"input": "", "output": ""}]}, FAST, "unsafe_local")


def test_a_judge_without_a_verdict_is_an_error_and_logged(monkeypatch, caplog):
    _fake_judge(monkeypatch, "import sys\nsys.stdin.read()\nprint('{\"passed\": 1, \"total\": 1, \"kind\": \"pass\"}')\n"
                "sys.exit(3)")
    with caplog.at_level(logging.WARNING, logger="reasontune.rewards.sandbox"):
        v = run_program("x = 1", {"kind": "io", "cases": [{"input": "", "output": ""}]}, FAST, "unsafe_local")
    assert (v.passed, v.kind) == (0, "error")
    assert "gave no verdict" in caplog.text


def test_the_wall_limit_kills_the_whole_process_group(monkeypatch):
    marker = f"rt-wall-{os.getpid()}"
    _fake_judge(monkeypatch, "import subprocess, sys, time\nsys.stdin.read()\n"
                f"subprocess.Popen(['sleep', '60', '{marker}'])\ntime.sleep(60)")
    monkeypatch.setattr(sandbox, "STARTUP_S", 0.5)
    start = time.monotonic()
    v = run_program("x = 1", {"kind": "io", "cases": [{"input": "", "output": ""}]},
                    SandboxLimits(wall_s=0.5), "unsafe_local")
    assert v.kind == "timeout" and time.monotonic() - start < 10
    time.sleep(0.2)
    left = [p for p in os.listdir("/proc") if p.isdigit() and marker.encode() in _cmdline(p)]
    assert left == []


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


# ---------------------------------------------------------------- choosing the isolation
def test_no_isolation_is_refused_naming_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox, "_resolved", {})
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="apt-get install -y bubblewrap.*unsafe_local"):
        sandbox.resolve("auto")
    from reasontune.rewards import build_reward_funcs

    with pytest.raises(ConfigError, match="bubblewrap"):  # what validate_run does before a model loads
        build_reward_funcs(RewardsConfig(names=["code_tests"]), FormatConfig())


def test_unsafe_local_is_an_explicit_opt_in_and_warns(monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "_resolved", {})
    with caplog.at_level(logging.WARNING, logger="reasontune.rewards.sandbox"):
        assert sandbox.resolve("unsafe_local") == "unsafe_local"
    assert "WITHOUT isolation" in caplog.text


@pytest.mark.parametrize("kwargs,field", [({"code_sandbox": "docker"}, "rewards.code_sandbox")])
def test_config_rejects_an_unknown_sandbox(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        RewardsConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"memory_mb": 10}, {"wall_s": 0}, {"nofile": 3}])
def test_limits_are_validated(kwargs):
    with pytest.raises(ConfigError, match="sandbox limit"):
        SandboxLimits(**kwargs)


def test_bwrap_shows_only_system_dirs_python_and_the_harness():
    cmd = sandbox._bwrap_command(SandboxLimits())
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in cmd
    assert cmd[cmd.index("--cap-drop") + 1] == "ALL"
    assert "--bind" not in cmd and "--proc" not in cmd  # nothing writable from the host, no /proc
    sources = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--ro-bind"]
    python_prefix = os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))
    allowed = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", os.path.realpath(sys.base_prefix),
               python_prefix, str(sandbox.HARNESS), str(sandbox.CANDIDATE))
    assert all(s in allowed for s in sources), sources
    assert os.getcwd() not in sources and os.path.expanduser("~") not in sources


# ---------------------------------------------------------------- programs run for real
SQ_TESTS = {"kind": "functional", "entry_point": "sq", "prompt": "def sq(x):\n    '''x squared'''\n",
            "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
                    "    assert candidate(-2) == 4\n"}


@pytest.mark.parametrize("code,expected", [
    ("def sq(x):\n    return x * x\n", (3, 3, "pass")),
    ("    return x * x\n", (3, 3, "pass")),  # a body that continues the prompt
    ("def sq(x):\n    return x * abs(x)\n", (2, 3, "wrong")),
    ("def sq(x) return x", (0, 3, "syntax")),
    ("def sq(x):\n    return 1 / 0\n", (0, 3, "error")),
    ("def other(x):\n    return x * x\n", (0, 3, "error")),  # sq would be the prompt's stub: refused
    ("import time\ntime.sleep(60)\ndef sq(x):\n    return x * x\n", (0, 3, "timeout")),  # hangs while loading
    ("def sq(x):\n    while True:\n        pass\n", (0, 3, "timeout")),
    ("def sq(x):\n    return [x * x] if x < 0 else x * x\n", (2, 3, "wrong")),
], ids=["pass", "body-only", "one-wrong", "syntax", "raises", "prompt-stub-only", "sleep", "spin", "wrong-type"])
def test_functional_verdicts(bwrap, code, expected):
    v = run_program(code, SQ_TESTS, FAST, bwrap)
    assert (v.passed, v.total, v.kind) == expected, v.detail


def test_tests_see_the_prompts_helpers_and_the_candidates_exception_types(bwrap):
    """HumanEval/32 calls a helper defined in the prompt; a test may expect the candidate's ValueError."""
    tests = {"kind": "functional", "entry_point": "root", "prompt": "def poly(x):\n    return x - 3\n",
             "test": "def check(candidate):\n    assert poly(candidate(1)) == 0\n    try:\n        candidate(-1)\n"
                     "        raised = False\n    except ValueError:\n        raised = True\n    assert raised\n"}
    code = "def root(x):\n    if x < 0:\n        raise ValueError('negative')\n    return 3\n"
    v = run_program(code, tests, FAST, bwrap)
    assert (v.passed, v.total, v.kind) == (2, 2, "pass"), v.detail
    v = run_program("def rooot(x):\n    return 3\n", tests, FAST, bwrap)
    assert (v.passed, v.kind) == (0, "error") and "no function 'root'" in v.detail


IO_TESTS = {"kind": "io", "cases": [{"input": "3\n", "output": "9\n"}, {"input": "4\n", "output": "16"},
                                    {"input": "-1\n", "output": "1\n"}]}


@pytest.mark.parametrize("code,expected", [
    ("print(int(input()) ** 2)", (3, 3, "pass")),
    ("n = int(input())\nprint(n * n if n > 0 else -1)", (2, 3, "wrong")),
    ("print(int(input()) ** 2)\nimport sys\nsys.exit(0)", (3, 3, "pass")),
    ("print(", (0, 3, "syntax")),
    ("print(int(input()) ** 2)\nraise SystemExit(2)", (0, 3, "error")),
    ("import time\ntime.sleep(60)", (0, 3, "timeout")),
], ids=["pass", "one-wrong", "exit-0", "syntax", "exit-2", "sleep"])
def test_stdin_stdout_verdicts(bwrap, code, expected):
    v = run_program(code, IO_TESTS, FAST, bwrap)
    assert (v.passed, v.total, v.kind) == expected, v.detail
