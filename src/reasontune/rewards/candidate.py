"""The candidate's side of the code sandbox: the process that runs model-written code. It runs INSIDE the
sandbox on the standard library alone (`python -I -S candidate.py run REQ_FD REP_FD`), started by the
judge (harness.py) as a fresh interpreter, so none of the judge's memory (tests, nonce) is mapped into it.

Before any model code runs it locks itself down (`lock_down`): rlimits (CPU, address space, processes,
file size, open files, no core files), no capabilities, no new privileges, and a seccomp filter: no
fork/exec, no sockets, no namespaces or mounts, no ptrace or process_vm_*, no signal to another process.
Then it compiles the code and either serves calls to the entry point (functional tests: requests on
REQ_FD, replies on REP_FD) or runs it as __main__ (stdin/stdout tests). Replies carry plain builtin data
only (`encode`: exact types), which the judge decodes; what it sends can never be more than an answer.

The codec and the line reader here are shared with the judge.
"""

from __future__ import annotations

import builtins
import json
import os
import select
import sys
import time

MAX_LINE = 8 << 20  # bytes: a reply (one encoded result) larger than this fails the call
MAX_NODES = 200_000  # containers + scalars in one encoded value
MAX_DEPTH = 64


# ---------------------------------------------------------------- plain data across the process boundary
class NotPlain(TypeError):
    """A value that is not plain builtin data (a subclass, a generator, an object with its own __eq__)."""


def encode(x, budget=None, depth=0):
    """A JSON-able tagged form of `x`; exact builtin types only (`type(x) is int`, not isinstance)."""
    budget = budget if budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise NotPlain("value too large or too deep")
    t = type(x)
    if x is None:
        return ["N"]
    if t is bool:
        return ["B", x]
    if t is int:
        return ["I", hex(x)]  # hex: no int-to-decimal digit limit
    if t is float:
        return ["R", x]
    if t is complex:
        return ["C", x.real, x.imag]
    if t is str:
        return ["S", x]
    if t is bytes:
        return ["Y", x.hex()]
    if t is dict:
        return ["D", [[encode(k, budget, depth + 1), encode(v, budget, depth + 1)] for k, v in x.items()]]
    tags = {list: "L", tuple: "T", set: "E", frozenset: "F"}
    if t in tags:
        return [tags[t], [encode(v, budget, depth + 1) for v in x]]
    raise NotPlain(f"{t.__name__} is not plain builtin data")


def decode(v):
    """The value `encode` tagged; ValueError on anything else."""
    if not isinstance(v, list) or not v or not isinstance(v[0], str):
        raise ValueError("malformed value")
    tag, rest = v[0], v[1:]
    scalars = {"N": lambda: None, "B": lambda: bool(rest[0]), "I": lambda: int(rest[0], 16),
               "R": lambda: float(rest[0]), "C": lambda: complex(rest[0], rest[1]), "S": lambda: str(rest[0]),
               "Y": lambda: bytes.fromhex(rest[0])}
    if tag in scalars:
        return scalars[tag]()
    if tag == "D":
        return {decode(k): decode(val) for k, val in rest[0]}
    kinds = {"L": list, "T": tuple, "E": set, "F": frozenset}
    if tag in kinds:
        return kinds[tag](decode(e) for e in rest[0])
    raise ValueError(f"unknown tag {tag!r}")


def send(fd, obj):
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def read_line(fd, buf, deadline):
    """One newline-terminated line from fd (bytes, without the newline); None at EOF; TimeoutError past
    `deadline` (time.monotonic(); None: wait for ever); ValueError when a line exceeds MAX_LINE."""
    while b"\n" not in buf:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and (left <= 0 or not select.select([fd], [], [], left)[0]):
            raise TimeoutError
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ValueError("line too long")
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


# ---------------------------------------------------------------- the candidate's lockdown
# Syscalls the candidate may not make (x86_64, aarch64 numbers): new processes and programs, sockets,
# namespaces, mounts, tracing, kernel facilities that escape seccomp or the rlimits, signals to others.
_DENY = {
    "x86_64": dict(fork=57, vfork=58, execve=59, execveat=322, socket=41, ptrace=101, process_vm_readv=310,
                   process_vm_writev=311, pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, tkill=200,
                   rt_sigqueueinfo=129, rt_tgsigqueueinfo=297, setsid=112, setpgid=109, unshare=272, setns=308,
                   mount=165, umount2=166, chroot=161, pivot_root=155, bpf=321, perf_event_open=298,
                   io_uring_setup=425, userfaultfd=323, keyctl=250, add_key=248, request_key=249),
    "aarch64": dict(execve=221, execveat=281, socket=198, ptrace=117, process_vm_readv=270,
                    process_vm_writev=271, pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, tkill=130,
                    rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, setsid=157, setpgid=154, unshare=97, setns=268,
                    mount=40, umount2=39, chroot=51, pivot_root=41, bpf=280, perf_event_open=241,
                    io_uring_setup=425, userfaultfd=282, keyctl=219, add_key=217, request_key=218),
}
_SPECIAL = {"x86_64": dict(clone=56, clone3=435, kill=62, tgkill=234),
            "aarch64": dict(clone=220, clone3=435, kill=129, tgkill=131)}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _ENOSYS, _CLONE_THREAD = 1, 38, 0x00010000


def seccomp_program(machine: str, pid: int) -> list[tuple[int, int, int, int]]:
    """The BPF filter as (code, jt, jf, k): deny-listed syscalls fail with EPERM; clone only for threads;
    clone3 says ENOSYS (glibc then falls back to clone); kill/tgkill only to this process itself."""
    deny, special = _DENY[machine], _SPECIAL[machine]
    eperm = (_RET, 0, 0, _ERRNO | _EPERM)
    prog = [(_LD, 0, 0, 4), (_JEQ, 1, 0, _AUDIT_ARCH[machine]), (_RET, 0, 0, _KILL), (_LD, 0, 0, 0)]
    if machine == "x86_64":  # the x32 ABI numbers its syscalls from 0x40000000: refuse them all
        prog += [(_JGE, 0, 1, 0x40000000), eperm]
    for nr in sorted(set(deny.values())):
        prog += [(_JEQ, 0, 1, nr), eperm]
    prog += [(_JEQ, 0, 1, special["clone3"]), (_RET, 0, 0, _ERRNO | _ENOSYS)]
    # each branch below loads args[0] (low 32 bits: offset 16 on little-endian) and always returns
    prog += [(_JEQ, 0, 4, special["clone"]), (_LD, 0, 0, 16), (_JSET, 0, 1, _CLONE_THREAD), (_RET, 0, 0, _ALLOW),
             eperm]
    for name in ("kill", "tgkill"):
        prog += [(_JEQ, 0, 4, special[name]), (_LD, 0, 0, 16), (_JEQ, 0, 1, pid & 0xFFFFFFFF),
                 (_RET, 0, 0, _ALLOW), eperm]
    return prog + [(_RET, 0, 0, _ALLOW)]


def lock_down(limits: dict) -> None:
    """rlimits, then no capabilities, no new privileges and the seccomp filter. Raises OSError if any
    step fails: the candidate must not run half locked down."""
    import ctypes
    import resource

    cpu = max(1, int(limits["cpu_s"] + 0.999))
    mb = 1 << 20
    for res, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_CORE, (0, 0)),
                       (resource.RLIMIT_AS, (limits["memory_mb"] * mb,) * 2),
                       (resource.RLIMIT_FSIZE, (limits["fsize_mb"] * mb,) * 2),
                       (resource.RLIMIT_NPROC, (limits["nproc"],) * 2),
                       (resource.RLIMIT_NOFILE, (limits["nofile"],) * 2)):
        resource.setrlimit(res, value)
    libc = ctypes.CDLL(None, use_errno=True)

    class CapHeader(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    caps = (ctypes.c_uint32 * 6)()  # two zeroed {effective, permitted, inheritable} sets
    if libc.capset(ctypes.byref(CapHeader(0x20080522, 0)), caps) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    machine = os.uname().machine
    if machine not in _DENY:
        raise OSError(0, f"no seccomp table for {machine}")

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    insns = seccomp_program(machine, os.getpid())
    table = (Filter * len(insns))(*[Filter(*i) for i in insns])
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS)")
    prog = Prog(len(insns), table)
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(SECCOMP)")


def make_undumpable() -> None:
    """No ptrace and no /proc/PID/{mem,fd,environ} of this process for anyone without CAP_SYS_PTRACE."""
    import ctypes

    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0


# ---------------------------------------------------------------- role: run (the candidate)
class NoEntryPoint(Exception):
    """The completion neither defines the entry point nor continues the prompt's def with a body."""


def _defines(tree, name: str) -> bool:
    """Whether a module's top level defines `name` (a def, async def or class, or `name = ...`)."""
    import ast

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


def _is_stub(tree, name: str) -> bool:
    """Whether the last top-level def of `name` has no body beyond a docstring, `pass` or `...`."""
    import ast

    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]
    return bool(defs) and all(isinstance(st, ast.Pass)
                              or (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))
                              for st in defs[-1].body)


def program_parts(job) -> list[tuple[str, str]]:
    """(file name, source) to run in order, decided by parsing (in here, inside the sandbox: model code is never
    parsed by the judge). `setup` first. A functional job with a prompt (HumanEval: signature and docstring):
    code that parses on its own and defines the entry point runs after the prompt (its imports and helpers
    stay visible, and the code's def replaces the prompt's stub); any other code continues the prompt as one
    source, prompt + code, as HumanEval's own harness runs a completion (a body under the prompt's def).
    NoEntryPoint when the entry point that would be called is a stub (no body beyond a docstring, `pass` or
    `...`): the completion's own, or the prompt's left as it was. Raises SyntaxError for code that compiles
    neither way."""
    import ast

    code, prompt = job["code"], job.get("prompt") or ""
    parts = [("<setup>", job.get("setup") or "")]
    if job["kind"] != "functional":
        return parts + [("<candidate>", code)]
    entry = job["entry_point"]
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        tree = None
    if tree is not None and (_defines(tree, entry) or not prompt):
        if _is_stub(tree, entry):
            raise NoEntryPoint(f"the completion's {entry!r} is a stub: no body beyond a docstring, pass or ...")
        return parts + ([("<prompt>", prompt)] if prompt else []) + [("<candidate>", code)]
    if not prompt:
        return parts + [("<candidate>", code)]  # does not parse: compiling it says where
    joined = prompt + code
    tree = ast.parse(joined)  # SyntaxError: neither a whole function nor a body of the prompt's
    if _is_stub(tree, entry):
        raise NoEntryPoint(f"the completion defines no function {entry!r} and is no body of the prompt's def")
    return parts + [("<candidate>", joined)]


def _compile(job):
    """(code objects to run in order) or SyntaxError; NoEntryPoint from program_parts."""
    try:
        return [compile(src, name, "exec") for name, src in program_parts(job)]
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise SyntaxError(f"{type(e).__name__}: {e}"[:300]) from None


def _serve(fn, req, rep):
    buf = bytearray()
    while True:
        line = read_line(req, buf, None)
        if line is None:
            return
        try:
            msg = json.loads(line)
            args, kwargs = decode(msg["args"]), decode(msg["kwargs"])
        except Exception as e:  # noqa: BLE001  (a malformed request ends the session)
            return send(rep, {"status": "error", "error": f"bad request: {e}"[:300]})
        try:
            value = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001  (SystemExit included: the candidate's to report)
            send(rep, {"raise": type(e).__name__, "msg": str(e)[:300]})
            continue
        try:
            send(rep, {"ok": encode(value)})
        except NotPlain as e:
            send(rep, {"bad": str(e)[:300]})
        except BaseException as e:  # noqa: BLE001  (a __repr__/iteration that raises)
            send(rep, {"bad": f"{type(e).__name__}: {e}"[:300]})


def role_run(req: int, rep: int) -> None:
    job = json.loads(read_line(req, bytearray(), time.monotonic() + 30))
    if job["kind"] == "functional":  # the judge gave us /dev/null as stderr (devices may be unusable here)
        os.dup2(2, 0)
        os.dup2(2, 1)
    try:
        lock_down(job["limits"])
    except BaseException as e:  # noqa: BLE001
        send(rep, {"status": "lockdown", "error": f"{type(e).__name__}: {e}"[:300]})
        os._exit(70)
    send(rep, {"status": "locked"})  # the last line written before any model code runs
    try:
        parts = _compile(job)
    except SyntaxError as e:
        return send(rep, {"status": "syntax", "error": str(e)})
    except NoEntryPoint as e:
        return send(rep, {"status": "error", "error": str(e)[:300]})
    ns = {"__name__": "__main__" if job["kind"] == "io" else "__candidate__", "__builtins__": builtins}
    try:
        for part in parts:
            exec(part, ns)
    except SystemExit as e:
        if job["kind"] == "io" and e.code in (None, 0):
            return send(rep, {"status": "exit"})
        return send(rep, {"status": "error", "error": f"SystemExit({e.code!r}) before the tests ran"[:300]})
    except BaseException as e:  # noqa: BLE001
        return send(rep, {"status": "error", "error": f"{type(e).__name__}: {e}"[:300]})
    if job["kind"] == "io":
        sys.stdout.flush()
        return send(rep, {"status": "exit"})
    fn = ns.get(job["entry_point"])
    if not callable(fn):
        return send(rep, {"status": "error", "error": f"no function {job['entry_point']!r} defined"})
    send(rep, {"status": "loaded"})
    _serve(fn, req, rep)


if __name__ == "__main__" and sys.argv[1:2] == ["run"]:
    role_run(int(sys.argv[2]), int(sys.argv[3]))
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: the candidate's atexit hooks and finalizers do not run
