"""The host side of the code sandbox: run one model-written program against its tests, isolated.

Each program gets a judge process (harness.py) inside an isolation layer, and the judge runs the
model's code in a second, locked-down process (candidate.py). Isolation, best first:

* bwrap (bubblewrap): new user, pid, network, ipc, uts and cgroup namespaces, no capabilities; a read-only
  root that holds only read-only binds of the system libraries and the Python install, a size-limited tmpfs
  /tmp (cwd and HOME) and /dev/shm, a minimal read-only /dev, no /proc; `--die-with-parent`, `--new-session`.
* unshare: network, pid and mount namespaces (util-linux `unshare`; `--map-root-user` when not root); the
  judge mounts a size-limited tmpfs on /tmp (cwd and HOME). The user's files stay visible: see
  docs/security.md.
* unsafe_local (opt-in only): a plain subprocess in a fresh temporary folder.

In every mode the candidate locks itself down (rlimits, seccomp; candidate.py), the host kills the whole
process group at the wall limit, and the verdict comes back on a pipe of its own, prefixed with a
per-run random nonce that only the judge knows (never stdout).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reasontune.config.sections import CODE_SANDBOXES, ConfigError, _check, _f

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
HARNESS, CANDIDATE = HERE / "harness.py", HERE / "candidate.py"
BOX_DIR = "/opt/reasontune"  # where bwrap shows the two harness files
STARTUP_S = 5.0  # the host's kill comes this long after the judge's own wall limit (start-up under load)
KINDS = ("pass", "syntax", "timeout", "wrong", "error", "no_code")
ISOLATIONS = ("bwrap", "unshare", "unsafe_local")
MAX_VERDICT = 1 << 16
FIX = ("install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap; Fedora: dnf install bubblewrap), "
       "or set rewards.code_sandbox=unsafe_local to run model-written code with rlimits and seccomp only, "
       "without isolation (see docs/security.md)")


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program in it): training must not go on scoring with it."""


@dataclass(frozen=True)
class CodeVerdict:
    """What running one program against its tests gave. passed == total only when kind is 'pass'."""

    passed: int
    total: int
    kind: str
    detail: str = field(default="", compare=False)


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: float = _f(4.0, "CPU seconds of the candidate process (RLIMIT_CPU: SIGXCPU, SIGKILL one second later).")
    wall_s: float = _f(10.0, "Wall-clock seconds for one program and all its tests, counted by the judge; the "
                       f"host kills the whole sandbox {STARTUP_S:g} s after that.")
    memory_mb: int = _f(1024, "Address space of the candidate (RLIMIT_AS); the judge gets twice this + 256 MB.")
    nproc: int = _f(32, "RLIMIT_NPROC of the candidate (threads count; new processes are refused by seccomp).")
    fsize_mb: int = _f(16, "Largest file the candidate may write (RLIMIT_FSIZE).")
    nofile: int = _f(64, "Open files of the candidate (RLIMIT_NOFILE).")
    tmpfs_mb: int = _f(64, "Size of the sandbox's /tmp (cwd and HOME): a tmpfs, memory not disk.")
    output_kb: int = _f(1024, "stdout read per stdin/stdout case; more fails the case.")

    def __post_init__(self):
        for name in ("cpu_s", "wall_s", "memory_mb", "nproc", "fsize_mb", "nofile", "tmpfs_mb", "output_kb"):
            value = getattr(self, name)
            _check(value > 0, f"sandbox limit {name}", value, "use a positive number")
        _check(self.memory_mb >= 64, "sandbox limit memory_mb", self.memory_mb,
               "use at least 64 MB: the interpreter itself needs ~30 MB of address space")
        _check(self.nofile >= 16, "sandbox limit nofile", self.nofile, "use at least 16 open files")


# ---------------------------------------------------------------- the command for each isolation
def _python() -> str:
    return os.path.realpath(sys.executable)


def _bwrap_command(limits: SandboxLimits) -> list[str]:
    cmd = ["bwrap", "--unshare-all", "--unshare-user", "--cap-drop", "ALL", "--die-with-parent", "--new-session"]
    bound: list[str] = []
    for d in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(d):  # merged /usr: /lib -> usr/lib
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
            bound.append(d)
    for prefix in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix),
                          os.path.dirname(os.path.dirname(_python()))}):
        if not any(prefix == b or prefix.startswith(b + "/") for b in bound):
            cmd += ["--ro-bind", prefix, prefix]  # the Python install only (not the venv: -S skips it)
            bound.append(prefix)
    cmd += ["--ro-bind", str(HARNESS), f"{BOX_DIR}/harness.py", "--ro-bind", str(CANDIDATE), f"{BOX_DIR}/candidate.py",
            # bwrap's /dev is a tmpfs of half the RAM: read-only, with a size-limited /dev/shm on it
            "--dev", "/dev", "--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp", "--remount-ro", "/",
            "--chdir", "/tmp", "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "LANG", "C.UTF-8"]
    return cmd + [_python(), "-I", "-S", f"{BOX_DIR}/harness.py"]


def _command(isolation: str, limits: SandboxLimits) -> list[str]:
    if isolation == "bwrap":
        return _bwrap_command(limits)
    judge = [_python(), "-I", "-S", str(HARNESS)]
    if isolation == "unshare":
        userns = [] if os.geteuid() == 0 else ["--map-root-user"]
        return ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", *userns, *judge]
    return judge


def _env(home: str) -> dict:
    return {"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


# ---------------------------------------------------------------- one run
def _parse_verdict(raw: bytes, nonce: str) -> dict | None:
    """The judge's verdict: the line that starts with the nonce and holds a well-formed verdict."""
    for line in raw.decode("utf-8", "replace").splitlines():
        head, _, body = line.partition(" ")
        if head != nonce:
            continue
        try:
            v = json.loads(body)
        except ValueError:
            continue
        if isinstance(v, dict) and v.get("kind") == "sandbox":
            return v
        if (isinstance(v, dict) and v.get("kind") in KINDS and type(v.get("passed")) is int
                and type(v.get("total")) is int and 0 <= v["passed"] <= v["total"]):
            return v
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_program(code: str, tests: dict, limits: SandboxLimits | None = None,
                isolation: str = "bwrap") -> CodeVerdict:
    """Run `code` against `tests` (the parsed `tests` column) in the sandbox; the verdict. SandboxError when
    the sandbox itself fails. Every outcome of the program (hang, crash, limit) is a verdict, never raised."""
    limits = limits or SandboxLimits()
    nonce = secrets.token_hex(16)
    r, w = os.pipe()
    work = tempfile.mkdtemp(prefix="reasontune-box-") if isolation == "unsafe_local" else None
    job = {"nonce": nonce, "verdict_fd": w, "code": code, "tests": tests, "limits": asdict(limits),
           "isolation": isolation}
    timed_out = False
    try:
        proc = subprocess.Popen(_command(isolation, limits), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, pass_fds=(w,), start_new_session=True, cwd=work or "/",
                                env=_env(work or "/tmp"))
        os.close(w)
        w = -1
        try:
            _, err = proc.communicate(json.dumps(job).encode(), timeout=limits.wall_s + STARTUP_S)
        except subprocess.TimeoutExpired:
            timed_out, err = True, b""
        _kill_group(proc)  # also what a candidate left in the group
        os.set_blocking(r, False)
        try:
            raw = os.read(r, MAX_VERDICT)
        except BlockingIOError:
            raw = b""
    except OSError as e:
        raise SandboxError(f"could not start the {isolation} sandbox: {e}") from e
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
        if work:
            shutil.rmtree(work, ignore_errors=True)
    v = _parse_verdict(raw, nonce)
    if v is not None and v["kind"] == "sandbox":
        raise SandboxError(f"the {isolation} sandbox failed to lock the program down: {v.get('detail')}")
    if v is None:
        if not timed_out:
            logger.warning("the %s sandbox gave no verdict (exit %s): %s", isolation, proc.returncode,
                           err.decode("utf-8", "replace")[-600:])
        total = len(tests.get("cases", ())) or 1
        return CodeVerdict(0, total, "timeout" if timed_out else "error", "no verdict from the judge")
    return CodeVerdict(v["passed"], v["total"], v["kind"], str(v.get("detail", ""))[:300])


# ---------------------------------------------------------------- which isolation works here
_PROBE_CODE = "def probe(x):\n    return x + 1\n"
_PROBE_TESTS = {"kind": "functional", "test": "assert probe(1) == 2\n", "entry_point": "probe"}
_resolved: dict[str, str] = {}
_lock = threading.Lock()


def probe(isolation: str) -> str | None:
    """None when a program runs and passes its test under `isolation` here; else why not."""
    if isolation == "bwrap" and not shutil.which("bwrap"):
        return "bwrap is not installed"
    if isolation == "unshare" and not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    try:
        v = run_program(_PROBE_CODE, _PROBE_TESTS, SandboxLimits(wall_s=30.0), isolation)
    except SandboxError as e:
        return str(e)
    return None if v.kind == "pass" else f"a probe program gave {v.kind} ({v.detail})"


def resolve(setting: str = "auto") -> str:
    """The isolation `setting` (rewards.code_sandbox) gives on this machine, checked once by running a
    probe program, and logged. ConfigError naming the fix when nothing usable is there."""
    _check(setting in CODE_SANDBOXES, "rewards.code_sandbox", setting, f"use one of {', '.join(CODE_SANDBOXES)}")
    with _lock:
        if setting in _resolved:
            return _resolved[setting]
        tries = ISOLATIONS[:2] if setting == "auto" else (setting,)
        reasons = {}
        for isolation in tries:
            reasons[isolation] = probe(isolation)
            if reasons[isolation] is None:
                break
        else:
            why = "; ".join(f"{k}: {v}" for k, v in reasons.items())
            raise ConfigError(f"rewards.code_sandbox={setting!r}: no sandbox for model-written code works here "
                              f"({why}). Fix: {FIX}")
        _resolved[setting] = isolation
    if isolation == "unsafe_local":
        logger.warning("code rewards run model-written programs WITHOUT isolation (rewards.code_sandbox="
                       "unsafe_local): rlimits and seccomp only; they can read and change your files")
    elif isolation == "unshare":
        why = f"bubblewrap was not usable ({reasons['bwrap']})" if "bwrap" in reasons else "as configured"
        logger.warning("code sandbox: unshare (network, pid, mount namespaces, read-only files, rlimits, seccomp), "
                       "%s: programs can still read your files. Fix: %s", why, FIX)
    else:
        logger.info("code sandbox: bubblewrap (namespaces, read-only system binds, rlimits, seccomp)")
    return isolation
