"""llama.cpp's AMX crash: which hosts it hits, how to build around it, and the warning `export --gguf` logs.

ggml's CPU backend has an AMX buffer type: on a CPU with Intel AMX (Sapphire Rapids and later Xeons, many cloud
VMs; `amx_tile amx_int8 amx_bf16` in /proc/cpuinfo) it repacks quantized weights (q8_0, q4_0, the k-quants) into
AMX tiles, and decode then segfaults in `ggml_backend_amx_mul_mat` (ggml-org/llama.cpp issue 20824;
reasontune issue 36: q8_0 and q4_k_m crashed, f16 answered). The AMX path is compiled in when `__AMX_INT8__`
(and `__AVX512VNNI__`) is defined: a `-march=native` build on such a CPU (llama-cpp-python's default,
GGML_NATIVE), or the `sapphirerapids` variant of a GGML_CPU_ALL_VARIANTS build, which ggml's loader picks on an
AMX CPU as the best-scoring libggml-cpu-*.so. NO_AMX_FLAGS keep -march=native's AVX-512 and drop AMX: GCC applies
explicit -mno-* after its expansion of -march=native, and all three are needed (GCC 12:
`-march=sapphirerapids -mno-amx-tile` still defines __AMX_INT8__). The Makefile's .venv-gguf builds with them.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CPUINFO = "/proc/cpuinfo"
AMX_FLAG = "amx_int8"  # what -march=native turns into __AMX_INT8__, the guard of ggml's AMX buffer type
UPSTREAM = "ggml-org/llama.cpp issue 20824 (segfault in ggml_backend_amx_mul_mat)"
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # the Makefile's GGUF_NO_AMX (a test keeps them equal)
CMAKE_ARGS = f"-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='{NO_AMX_FLAGS}' -DCMAKE_CXX_FLAGS='{NO_AMX_FLAGS}'"


def note(pin: str) -> str:
    """What the card, the Modelfile and the export warning tell a user (`pin`: llamacpp.LLAMA_CPP_PIN)."""
    return (f"On CPUs with Intel AMX (Sapphire Rapids and later Xeons: `{AMX_FLAG}` in /proc/cpuinfo), llama.cpp "
            f"builds with its AMX path crash on quantized files (q8_0, k-quants) in decode: {UPSTREAM}. "
            "Workarounds: `llama-cli`/`llama-server --no-repack` (no repacked weights, so no AMX buffer); "
            f"llama-cpp-python built without AMX: `CMAKE_ARGS=\"{CMAKE_ARGS}\" pip install --no-binary "
            f"llama-cpp-python --no-cache-dir --force-reinstall {pin}`; llama.cpp's release builds and Ollama "
            "(GGML_CPU_ALL_VARIANTS) load `libggml-cpu-sapphirerapids.so` on such CPUs, and renaming it makes them "
            "load another CPU variant (reported in ollama/ollama issue 17205; Ollama has no setting for it that we "
            "know of).")


def cpu_flags(path: str | Path | None = None) -> set[str]:
    """The CPU's feature flags (the first `flags` line of `path`, default CPUINFO); empty where there is none (not
    Linux x86, or unreadable)."""
    try:
        text = Path(path or CPUINFO).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return set()


def has_amx(path: str | Path | None = None) -> bool:
    """Whether this CPU has AMX-INT8, the feature a -march=native llama.cpp build takes the AMX path on."""
    return AMX_FLAG in cpu_flags(path)


def build_has_amx(llama_cpp) -> bool:
    """Whether the installed llama.cpp was compiled with AMX (its CPU backend reports `AMX_INT8 = 1` in
    llama_print_system_info: ggml_cpu_has_amx_int8() is `defined(__AMX_INT8__)`, a compile-time fact)."""
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


def warn_if_amx(kind: str, pin: str, path: str | Path | None = None) -> str | None:
    """Log (and return) a warning when this host has AMX and `kind` is a quantized GGUF type; None otherwise.
    Quantizing is safe here (it does not multiply through the AMX buffer); running the file may not be."""
    if kind in ("f32", "f16", "bf16", "auto") or not has_amx(path):
        return None
    msg = (f"this CPU has AMX ({AMX_FLAG} in {path or CPUINFO}), and the {kind} file may crash llama.cpp here. "
           f"{note(pin)}")
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
    if llama_cpp is not None and build_has_amx(llama_cpp):
        msg += " The llama-cpp-python installed here reports AMX_INT8 = 1: rebuild it as above."
    logger.warning("GGUF %s: %s", kind, msg)
    return msg
