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


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_faster(n: int = 512, reps: int = 3) -> bool:
    """Time an (n x n) @ (n x n) matmul in fp32 and bf16 on this CPU; True when bf16 wins by 20%."""
    import torch

    env = os.environ.get("REASONTUNE_CPU_BF16")
    if env in ("0", "1"):
        return env == "1"

    gen = torch.Generator().manual_seed(0)  # never touch the global RNG: sampling must not depend on this probe

    def bench(dtype):
        a = torch.randn(n, n, generator=gen).to(dtype)
        b = torch.randn(n, n, generator=gen).to(dtype)
        a @ b  # warm-up (kernel selection)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        return time.perf_counter() - t

    fp32, bf16 = bench(torch.float32), bench(torch.bfloat16)
    faster = bf16 * 1.2 < fp32
    logger.info("CPU matmul %dx%d: fp32 %.1f ms, bf16 %.1f ms -> bf16 autocast %s",
                n, n, fp32 / reps * 1e3, bf16 / reps * 1e3, "on" if faster else "off")
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
