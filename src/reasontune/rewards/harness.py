"""The judge of the code sandbox. It runs INSIDE the sandbox on the standard library alone (`python -I -S`:
no site-packages, no environment variables), next to candidate.py:

* it reads the job from stdin (JSON: nonce, code, tests, limits) and closes stdin;
* it starts the candidate as a fresh interpreter (candidate.py), which locks itself down before any model
  code runs;
* it runs the tests here, against a proxy that calls the candidate's entry point over a pipe (functional
  tests), or feeds each case to a fresh candidate on stdin and compares its stdout (stdin/stdout tests);
* it writes `<nonce> <verdict JSON>` on fd 3, the only channel the host reads a verdict from.

Why two processes: in one process the model's code could rewrite the harness, the tests or builtins, or
find the nonce in memory. Here the tests, the expected values and the nonce exist only in the judge, a
non-dumpable process that the candidate cannot trace, signal or read (candidate.py's seccomp filter), and
the candidate is a fresh exec, not a fork, so none of the judge's memory is mapped into it. Results cross
as plain builtin data (exact types), so an object whose __eq__ is always true cannot cross.
"""

from __future__ import annotations

import builtins
import json
import os
import select
import sys
import time

if __package__:  # imported on the host (reasontune.rewards.harness: tests, the sandbox's file list)
    from reasontune.rewards.candidate import NotPlain, decode, encode, make_undumpable, read_line, send
else:  # a script in the sandbox: candidate.py lies next to it (-I keeps the script's folder off sys.path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from candidate import NotPlain, decode, encode, make_undumpable, read_line, send

CANDIDATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "candidate.py")
NULL = -1  # /dev/null, opened by role_judge: the candidates' stdin, stdout and stderr
with open(CANDIDATE, encoding="utf-8") as _f:  # read now: in unshare mode a tmpfs may cover the folder later
    CANDIDATE_SRC = _f.read()


# ---------------------------------------------------------------- role: judge
class CandidateError(Exception):
    """The candidate raised, returned something that is not plain data, or broke the protocol."""


class Stop(BaseException):
    """The candidate timed out or died: no later test can run. BaseException: tests' `except Exception`
    blocks do not swallow it."""


class SandboxBroken(RuntimeError):
    """The candidate could not lock itself down: a host problem, never the candidate's verdict."""


_RAISABLE = {n: c for n, c in vars(builtins).items() if isinstance(c, type) and issubclass(c, Exception)}


class Candidate:
    """One candidate process. Calling the object calls the candidate's entry point in that process."""

    def __init__(self, job: dict, deadline: float, stdin: int | None = None, capture: bool = False):
        req_r, self.req = os.pipe()
        self.rep, rep_w = os.pipe()
        self.stdout, out_w = os.pipe() if capture else (-1, NULL)
        self.deadline, self.buf, self.stopped, self.code = deadline, bytearray(), None, None
        # posix_spawn, not subprocess (whose import is a third of this process's start-up): every fd here
        # is close-on-exec (PEP 446) except the four dup2'ed onto 0-2 and the two pipes made inheritable
        os.set_inheritable(req_r, True)
        os.set_inheritable(rep_w, True)
        try:
            self.pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", CANDIDATE_SRC, "run",
                                                       str(req_r), str(rep_w)], os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, NULL if stdin is None else stdin, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, NULL, 2)])
        finally:
            for fd in (req_r, rep_w) + ((out_w,) if capture else ()):
                os.close(fd)
        send(self.req, job)
        first = self.line()
        if first is None or first.get("status") != "locked":
            raise SandboxBroken(f"the candidate did not lock down: {first}")

    def line(self) -> dict | None:
        """The next reply, None at EOF; a timeout stops the candidate."""
        try:
            raw = read_line(self.rep, self.buf, self.deadline)
        except TimeoutError:
            self.stop("timeout", "wall-clock limit")
        except ValueError:
            self.stop("error", "reply too large")
        if raw is None:
            return None
        try:
            msg = json.loads(raw)
        except ValueError:
            self.stop("error", "unreadable reply")
        return msg if isinstance(msg, dict) else self.stop("error", "unreadable reply")

    def stop(self, kind: str, detail: str):
        self.stopped = self.stopped or (kind, detail)
        self.close()
        raise Stop(*self.stopped)

    def wait(self, timeout: float | None) -> int | None:
        """The exit code (minus the signal number when killed), None if still running after `timeout`."""
        if self.code is None:
            if timeout is not None:
                pidfd = os.pidfd_open(self.pid)
                try:
                    if not select.select([pidfd], [], [], max(timeout, 0))[0]:
                        return None
                finally:
                    os.close(pidfd)
            self.code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.code

    def died(self):
        code = self.wait(self.deadline - time.monotonic())  # rep hit EOF: exiting, or closed its end and runs on
        if code is None:
            self.stop("timeout", "wall-clock limit")
        cpu = code in (-24, -9)  # SIGXCPU at the soft CPU limit, SIGKILL at the hard one
        self.stop("timeout" if cpu else "error", f"the candidate exited (code {code})")

    def __call__(self, *args, **kwargs):
        if self.stopped:
            raise Stop(*self.stopped)
        try:
            send(self.req, {"args": encode(args), "kwargs": encode(kwargs)})
        except NotPlain as e:
            raise CandidateError(f"the test passed an argument that is not plain data: {e}") from None
        except OSError:
            self.died()
        msg = self.line()
        if msg is None:
            self.died()
        if "ok" in msg:
            try:
                return decode(msg["ok"])
            except Exception as e:  # noqa: BLE001
                raise CandidateError(f"undecodable result: {e}") from None
        if "raise" in msg:
            exc = _RAISABLE.get(str(msg["raise"]))
            try:
                err = type(exc.__name__, (exc, CandidateError), {})(str(msg.get("msg", ""))) if exc else None
            except TypeError:  # a layout or constructor that does not combine
                err = None
            raise err or CandidateError(f"{msg['raise']}: {msg.get('msg', '')}")
        raise CandidateError(f"returned non-plain data: {msg.get('bad', msg)}")

    def close(self):
        if self.code is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
            self.wait(None)
        for fd in (self.req, self.rep, self.stdout):
            if fd >= 0:
                os.close(fd)
        self.req = self.rep = self.stdout = -1


class Tally:
    """Per-assert outcome: an assert passes when it ran and never failed."""

    def __init__(self, n: int):
        self.ran, self.failed, self.first, self.detail = [0] * n, [False] * n, None, ""

    def check(self, i: int, value) -> None:
        self.ran[i] += 1
        if not value:
            self.fail(i, "wrong", f"assert {i + 1} failed")

    def error(self, i: int, exc: BaseException) -> None:
        self.ran[i] += 1
        self.fail(i, *self.explain(exc))

    @staticmethod
    def explain(exc: BaseException) -> tuple[str, str]:
        """A candidate's exception is an error; the test's own (comparing None < 3, say) a wrong answer."""
        return "error" if isinstance(exc, CandidateError) else "wrong", f"{type(exc).__name__}: {exc}"[:300]

    def fail(self, i: int | None, kind: str, detail: str) -> None:
        if i is not None:
            self.failed[i] = True
        if self.first is None:
            self.first, self.detail = kind, detail

    def passed(self) -> int:
        return sum(1 for r, f in zip(self.ran, self.failed) if r and not f)


def instrument(src: str):
    """(code, counted asserts, whether the source calls check() itself). `assert T` becomes
    `try: v = T / except Exception as e: __rt__.error(i, e) / else: __rt__.check(i, v)`, so every assert
    runs and is counted; constant asserts (`assert True`) stay as they are, uncounted."""
    import ast  # here: stdin/stdout jobs do not pay for it

    tree = ast.parse(src, "<tests>")
    n = 0
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            for k, st in enumerate(stmts if isinstance(stmts, list) else ()):
                if isinstance(st, ast.Assert) and not isinstance(st.test, ast.Constant):
                    tmpl = ast.parse(f"try:\n    __rt_v = 0\nexcept Exception as __rt_e:\n    __rt__.error({n}, __rt_e)\n"
                                     f"else:\n    __rt__.check({n}, __rt_v)\n").body[0]
                    tmpl.body[0].value = st.test
                    stmts[k], n = ast.fix_missing_locations(ast.copy_location(tmpl, st)), n + 1
    calls_check = any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                      and getattr(s.value.func, "id", None) == "check" for s in tree.body)
    return compile(tree, "<tests>", "exec"), n, calls_check


def judge_functional(job: dict, tests: dict, deadline: float) -> dict:
    code, n, calls_check = instrument(tests["test"])
    total = max(1, n)
    tally = Tally(n)
    try:
        cand = Candidate(dict(job, kind="functional", prompt=tests.get("prompt"), setup=tests.get("setup"),
                              entry_point=tests["entry_point"]), deadline)
    except Stop as stop:  # no time left to start it
        return {"passed": 0, "total": total, "kind": stop.args[0], "detail": stop.args[1]}
    try:
        first = cand.line()
        if first is None:
            cand.died()  # exited while loading: a CPU kill is a timeout, anything else an error
        if first.get("status") != "loaded":
            kind = "syntax" if first.get("status") == "syntax" else "error"
            return {"passed": 0, "total": total, "kind": kind, "detail": first.get("error", f"first reply {first}"[:300])}
        ns = {"__name__": "__tests__"}
        for src in (tests.get("prompt"), tests.get("setup")):
            exec(compile(src or "", "<prompt>", "exec"), ns)
        ns.update({tests["entry_point"]: cand, "candidate": cand, "__rt__": tally})
        ok = False
        try:
            exec(code, ns)
            if callable(ns.get("check")) and not calls_check:
                ns["check"](cand)
            ok = True
        except Exception as e:  # noqa: BLE001  (test code stopped outside an assert)
            tally.fail(None, *tally.explain(e))
    except Stop:
        pass
    finally:
        cand.close()
    if cand.stopped:
        return {"passed": 0, "total": total, "kind": cand.stopped[0], "detail": cand.stopped[1]}
    passed = tally.passed() if n else int(ok)
    if passed == total and ok:
        return {"passed": total, "total": total, "kind": "pass"}
    # passed == total only for "pass": a run that failed after its last assert is not a full score
    return {"passed": min(passed, total - 1), "total": total, "kind": tally.first or "wrong", "detail": tally.detail}


def _same_output(got: bytes, want: str) -> bool:
    def lines(s: str) -> list[str]:
        return [line.rstrip() for line in s.strip().splitlines()]

    return lines(got.decode("utf-8", "replace")) == lines(want)


def judge_case(job: dict, case: dict, deadline: float, limit: int) -> str:
    """One stdin/stdout case in a fresh candidate: pass, syntax, timeout, error or wrong."""
    if time.monotonic() >= deadline:
        return "timeout"
    data, stdin = str(case["input"]).encode(), os.memfd_create("stdin")
    try:
        while data:
            data = data[os.write(stdin, data):]
        os.lseek(stdin, 0, os.SEEK_SET)
        cand = Candidate(dict(job, kind="io"), deadline, stdin=stdin, capture=True)
    except Stop as stop:  # no time left to start it
        return stop.args[0]
    finally:
        os.close(stdin)
    out, fds = bytearray(), {cand.stdout, cand.rep}
    try:
        while fds:
            left = deadline - time.monotonic()
            ready = select.select(list(fds), [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                cand.stop("timeout", "wall-clock limit")
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    fds.discard(fd)
                elif fd == cand.rep:
                    cand.buf += chunk
                else:
                    out += chunk
            if len(out) > limit:
                cand.stop("wrong", "output over the limit")
        code = cand.wait(deadline - time.monotonic())
        if code is None:
            return "timeout"
    except Stop:
        return cand.stopped[0]
    finally:
        cand.close()
    try:
        status = json.loads(cand.buf.split(b"\n", 1)[0])
    except ValueError:
        status = {}
    status = status if isinstance(status, dict) else {}
    if status.get("status") == "syntax":
        return "syntax"
    if code in (-24, -9):
        return "timeout"
    if code != 0 or status.get("status") == "error":
        return "error"
    return "pass" if _same_output(bytes(out), str(case["output"])) else "wrong"


def judge_io(job: dict, tests: dict, deadline: float, limit: int) -> dict:
    kinds = [judge_case(job, case, deadline, limit) for case in tests["cases"]]
    passed = kinds.count("pass")
    first = next((k for k in kinds if k != "pass"), "pass")
    return {"passed": passed, "total": len(kinds), "kind": first}


def private_fs(size_mb: int) -> None:
    """unshare mode, in this process's private mount namespace: every mount read-only, nosuid and nodev
    (mount_setattr, recursive: no writes to the user's files, /proc/sys or /sys, no raw devices), then
    size-limited tmpfs on /tmp, /var/tmp and /dev/shm, /tmp as cwd and HOME; then no capabilities left."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                    ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(0x1 | 0x2 | 0x4, 0, 0, 0)  # MOUNT_ATTR_RDONLY | NOSUID | NODEV
    if libc.syscall(442, ctypes.c_long(-100), b"/", ctypes.c_long(0x8000), ctypes.byref(attr),  # mount_setattr,
                    ctypes.c_long(ctypes.sizeof(attr))) != 0:  # AT_FDCWD, AT_RECURSIVE
        raise SandboxBroken(f"mount_setattr(/, read-only): {os.strerror(ctypes.get_errno())}")
    for target in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(target) and libc.mount(b"tmpfs", target.encode(), b"tmpfs", 2 | 4,  # NOSUID, NODEV
                                                f"size={size_mb}m,mode=1777".encode()) != 0:
            raise SandboxBroken(f"mount tmpfs on {target}: {os.strerror(ctypes.get_errno())}")
    os.chdir("/tmp")
    os.environ["HOME"] = "/tmp"
    if libc.capset(ctypes.byref((ctypes.c_uint32 * 2)(0x20080522, 0)), (ctypes.c_uint32 * 6)()) != 0:
        raise SandboxBroken(f"capset: {os.strerror(ctypes.get_errno())}")


def role_judge() -> None:
    import resource

    global NULL
    make_undumpable()
    job = json.loads(sys.stdin.buffer.read())
    NULL = os.open(os.devnull, os.O_RDWR)  # opened now: unshare mode makes every device node unusable
    os.dup2(NULL, 0)
    for fd in range(3, 256):  # whatever the host or bwrap left open (the verdict pipe too) stays out of
        try:  # the candidates
            os.set_inheritable(fd, False)
        except OSError:
            pass
    nonce, out, tests, limits = job.pop("nonce"), job.pop("verdict_fd"), job.pop("tests"), job["limits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, ((2 * limits["memory_mb"] + 256) << 20,) * 2)
    deadline = time.monotonic() + limits["wall_s"]
    try:
        if job["isolation"] == "unshare":
            private_fs(limits["tmpfs_mb"])
        if tests["kind"] == "functional":
            verdict = judge_functional(job, tests, deadline)
        else:
            verdict = judge_io(job, tests, deadline, limits["output_kb"] << 10)
    except SandboxBroken as e:
        verdict = {"kind": "sandbox", "detail": str(e)}
    os.write(out, f"{nonce} {json.dumps(verdict)}\n".encode())


if __name__ == "__main__":
    role_judge()
