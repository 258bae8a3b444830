"""Run-time speed decisions, made by measurement rather than assumption.

bf16 on a CPU is 4x faster than fp32 on one machine (AMX/AVX512-BF16) and 30x slower on
another (AVX2 only, where it is emulated). So we time a small matmul in both and pick.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time

logger = logging.getLogger(__name__)


# oneDNN (PyTorch's CPU matmul kernels) caches a compiled primitive for every input shape it meets, 1024
# by default. GRPO meets a new shape at almost every decode step and micro-batch, and the cached primitives
# held hundreds of MB: a 3-step demo-config probe peaked at 2.67-2.73 GB RSS with the default against
# 2.32-2.42 GB with 64, at the same speed (8 was slower: primitives rebuilt). See bound_kernel_cache.
ONEDNN_CACHE_CAPACITY = 64


def bound_kernel_cache() -> None:
    """Cap oneDNN's primitive cache at ONEDNN_CACHE_CAPACITY unless the user set it. oneDNN reads the
    variable when it builds its first primitive, so this must run before the process's first CPU matmul
    (model loading calls it); later, it changes nothing."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_faster(n: int = 512, reps: int = 7) -> bool:
    """Time an (n x n) @ (n x n) matmul in fp32 and bf16 on this CPU; True when bf16 wins by 20%.

    The two dtypes are timed interleaved and each keeps its fastest call, after two warm-up calls: one
    decision sets the whole run's speed (measured on an AVX512-BF16 host: GRPO steps 31 s in bf16 against
    70 s in fp32), and the old probe (3 back-to-back calls per dtype, one warm-up, summed) read bf16 at
    2.1 ms against fp32 1.7 ms once at a demo's start on a host where bf16 takes 0.35 ms: a slow first
    calls' burst or a neighbour's load landed on one dtype only."""
    import torch

    env = os.environ.get("REASONTUNE_CPU_BF16")
    if env in ("0", "1"):
        return env == "1"

    gen = torch.Generator().manual_seed(0)  # never touch the global RNG: sampling must not depend on this probe
    bound_kernel_cache()  # this may be the process's first matmul
    pairs = {dt: (torch.randn(n, n, generator=gen).to(dt), torch.randn(n, n, generator=gen).to(dt))
             for dt in (torch.float32, torch.bfloat16)}
    best = {dt: float("inf") for dt in pairs}
    for i in range(reps + 2):
        for dt, (a, b) in pairs.items():
            t = time.perf_counter()
            a @ b
            if i >= 2:  # the first two calls pick and warm the kernels
                best[dt] = min(best[dt], time.perf_counter() - t)
    fp32, bf16 = best[torch.float32], best[torch.bfloat16]
    faster = bf16 * 1.2 < fp32
    logger.info("CPU matmul %dx%d (fastest of %d): fp32 %.2f ms, bf16 %.2f ms -> bf16 autocast %s",
                n, n, reps, fp32 * 1e3, bf16 * 1e3, "on" if faster else "off")
    return faster


def autocast_dtype(device, setting: str = "auto"):
    """The autocast dtype for compute on `device`, or None for plain fp32.

    setting: 'auto' (measure on CPU; bf16 on CUDA when supported), 'true' or 'false'.
    """
    import torch

    if setting == "false":
        return None
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if setting == "true":
        return torch.bfloat16
    return torch.bfloat16 if cpu_bf16_is_faster() else None


@contextlib.contextmanager
def autocast(device, setting: str = "auto"):
    """torch.autocast for the measured dtype, or a no-op. LoRA weights and optimizer state stay fp32."""
    import torch

    dtype = autocast_dtype(device, setting)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


@functools.lru_cache(maxsize=None)
def decode_threads(reps: int = 7) -> int:
    """Threads for token-by-token decoding on a CPU, by measurement.

    Decoding multiplies a few rows by each weight matrix: OpenMP's fork/join costs more than the
    work, and on a 2-vCPU VM one thread measured 2.8x faster than two for SmolLM2 at batch 32,
    while prefill and training still prefer every core. So decode and prefill use different counts.
    """
    import torch

    env = os.environ.get("REASONTUNE_DECODE_THREADS")
    if env:
        return max(1, int(env))
    full = torch.get_num_threads()
    if full <= 1:
        return 1
    gen = torch.Generator().manual_seed(0)
    a, w = torch.randn(32, 576, generator=gen), torch.randn(576, 1536, generator=gen)
    # Interleaved, each count keeps its fastest burst after two warm-up rounds, as cpu_bf16_is_faster: the old
    # probe timed one count's 20 calls, then the other's, so a burst of load (or the first calls' warm-up)
    # landed on one side only. It picked 1 thread in every demo of one session and 2 in the next on the same
    # host, where 2 threads gave GRPO steps of 15-18 s against ~20 s (issue 24).
    best = {1: float("inf"), full: float("inf")}
    for i in range(reps + 2):
        for n in best:
            with threads(n):
                t = time.perf_counter()
                for _ in range(5):
                    a @ w
                if i >= 2:
                    best[n] = min(best[n], (time.perf_counter() - t) / 5)
    one, many = best[1], best[full]
    pick = 1 if one < many else full
    logger.info("decode matmul 32x576x1536 (fastest of %d): 1 thread %.2f ms, %d threads %.2f ms -> decode with %d",
                reps, one * 1e3, full, many * 1e3, pick)
    return pick


@contextlib.contextmanager
def threads(n: int | None):
    """Temporarily run torch CPU ops on `n` threads (None: unchanged)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def lora_inputs_uncast(model, autocast_on: bool | None = None):
    """Under autocast, keep PEFT from casting each LoRA's input to the adapter's fp32 dtype.

    PEFT casts x to lora_A's dtype (fp32) and autocast casts it straight back to bf16 for the matmul:
    the result is bit for bit the same (bf16 -> fp32 -> bf16 is exact), but each LoRA module saved its
    own bf16 copy of its input for the backward pass, beside the one its base layer saved: autograd kept
    641 MB for a demo micro-batch of 8 x 155 tokens with the casts, 559 MB without. Without autocast (plain fp32,
    or bf16 weights without autocast) the cast is needed, so it stays. autocast_on: whether the forward
    runs under autocast; None asks torch here (HF's Trainer enables it inside model.forward instead).
    """
    import torch

    if autocast_on is None:
        autocast_on = torch.is_autocast_enabled(next((p.device.type for p in model.parameters()), "cpu"))
    if not autocast_on:
        yield
        return
    try:
        from peft.helpers import disable_input_dtype_casting
    except ImportError:  # no PEFT, no LoRA casts
        yield
        return
    with disable_input_dtype_casting(model):
        yield


HEAP_ENV = "REASONTUNE_CPU_HEAP"  # "reuse" (default) or "trim": the per-step policy below
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h> mallopt parameters
_heap_reused = False


def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def reuse_freed_memory() -> bool:
    """Serve every allocation from glibc's heap and keep freed pages there for the next one (mallopt:
    M_MMAP_MAX 0, M_TRIM_THRESHOLD at its largest); True when in effect. For CPU training: call before the
    model loads.

    glibc gives each block over its mmap threshold (at most 32 MiB) its own mmap and unmaps it on free, and
    the per-step trims unmapped the rest: every GRPO step page-faulted its whole working set in again (~7 GB
    for a 32-row micro-batch; 5.9M minor faults and 45 s of system time in 3 loss passes). Kept on the heap, a
    32-row loss pass measured 11.1 s against 18.1 s (2-core EPYC, fp32), at the same peak RSS. The pages stay
    with the process until a stage ends (release_freed_memory) instead of after every step. REASONTUNE_CPU_HEAP=trim
    keeps glibc's defaults and trims after every step."""
    global _heap_reused
    if os.environ.get(HEAP_ENV, "reuse") == "trim":
        return False
    libc = _libc()
    try:
        ok = libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except AttributeError:  # not glibc
        ok = False
    _heap_reused = _heap_reused or ok
    return ok


def heap_is_reused() -> bool:
    return _heap_reused


def release_step_memory() -> bool:
    """The trim after a GRPO decode or step: only where the heap is not kept for reuse (reuse_freed_memory),
    else nothing (the next step reuses the pages). True when it trimmed."""
    return False if _heap_reused else release_freed_memory()


def release_freed_memory() -> bool:
    """Hand memory that Python and torch have freed back to the OS (glibc malloc_trim).

    Called between stages (eval, warm-up, GRPO), and after every GRPO decode and step where the heap is not
    kept for reuse (release_step_memory): glibc keeps freed heap pages, so each stage (or step) would start from the last one's high-water
    mark. Cheap (once per stage). Fixing glibc's mmap threshold at 1 MiB instead cut the peak further
    (4.4 -> 3.1 GB) but made every large allocation a fresh mmap, and a GRPO step measured 41-48 s
    instead of 17. A no-op returning False off glibc.
    """
    import gc

    gc.collect()
    libc = _libc()
    try:
        return libc is not None and bool(libc.malloc_trim(0))
    except AttributeError:
        return False


def peak_rss_mb(reset: bool = False) -> float | None:
    """This process's peak RSS in MB since the last reset (Linux VmHWM), or since it started.

    reset=True starts a new window after reading (writing 5 to /proc/self/clear_refs), so each demo
    stage reports its own peak. Elsewhere: the lifetime peak from getrusage, or None.
    """
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        if reset:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        return kb / 1024
    except (OSError, StopIteration, ValueError):
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        except (ImportError, OSError):
            return None


def rss_mb() -> float | None:
    """Current RSS in MB (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None
