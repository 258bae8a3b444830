"""llama.cpp's AMX crash (issue 36; reasontune/amx.py): the host check reads /proc/cpuinfo's flags, the Makefile
builds the llama.cpp lane with the no-AMX flags into a wheel folder keyed by them, and those flags do turn AMX off
in GCC while keeping AVX-512, even though llama.cpp's -march=native comes after them on the command line.
(The lane's installed build is checked in tests/test_gguf_llamacpp.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reasontune.export import amx

ROOT = Path(__file__).resolve().parents[1]
SPR = ("fpu vme sse4_2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8 "
       "arch_lbr flush_l1d arch_capabilities")  # an Intel Xeon Platinum 8480+ (Sapphire Rapids), abridged
EPYC = "fpu vme sse4_2 avx2 fma bmi2 sha_ni vaes vpclmulqdq rdpid fsrm"  # this project's AMD EPYC hosts


def _cpuinfo(tmp_path, text: str) -> Path:
    p = tmp_path / "cpuinfo"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, amx_host", [
    (f"processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: {SPR}\nvmx flags\t: ept\n", True),
    (f"processor\t: 0\nflags\t\t: {SPR}\n\nprocessor\t: 1\nflags\t\t: {SPR}\n", True),  # one line per CPU
    (f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {EPYC}\n", False),
    (f"flags\t\t: {EPYC} amx_tile\n", False),  # the tile unit alone: no int8 AMX, no __AMX_INT8__, no AMX path
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\n", False),  # aarch64: no `flags` line
    ("model name\t: amx_int8 in the name, not in the flags\n", False),
    ("", False),
])
def test_amx_host_is_read_from_the_cpuinfo_flags(tmp_path, text, amx_host):
    assert amx.has_amx(_cpuinfo(tmp_path, text)) is amx_host


def test_no_cpuinfo_is_no_amx(tmp_path):
    assert amx.cpu_flags(tmp_path / "missing") == set() and not amx.has_amx(tmp_path / "missing")


@pytest.mark.parametrize("kind, warned", [("q8_0", True), ("q4_k_m", True), ("q5_k_m", True), ("f16", False),
                                          ("bf16", False), ("f32", False), ("auto", False)])
def test_the_warning_names_the_bug_and_the_fix_for_quantized_files(tmp_path, caplog, kind, warned):
    import logging

    with caplog.at_level(logging.WARNING, logger="reasontune.export.amx"):
        msg = amx.warn_if_amx(kind, "llama-cpp-python==0.3.36", _cpuinfo(tmp_path, f"flags\t: {SPR}\n"))
    assert (msg is not None) is warned and bool(caplog.records) is warned
    if warned:
        for needed in ("issue 20824", "ggml_backend_amx_mul_mat", "-mno-amx-int8", "--no-repack", "Sapphire Rapids",
                       "llama-cpp-python==0.3.36"):
            assert needed in caplog.text, needed
    assert amx.warn_if_amx(kind, "x", _cpuinfo(tmp_path, f"flags\t: {EPYC}\n")) is None


def _make_var(text: str, name: str) -> str:
    m = re.search(rf"^{name} := (.*)$", text, flags=re.M)
    assert m, f"the Makefile no longer defines {name}"
    return m.group(1)


def test_the_makefile_uses_the_flags_amx_py_documents():
    """One set of flags: the Makefile's (what the lane builds with) and amx.py's (what users are told)."""
    text = (ROOT / "Makefile").read_text()
    assert _make_var(text, "GGUF_NO_AMX") == amx.NO_AMX_FLAGS
    assert _make_var(text, "GGUF_CMAKE_ARGS").replace("$(GGUF_NO_AMX)", amx.NO_AMX_FLAGS) == amx.CMAKE_ARGS


def _dry_run(tmp_path, *overrides) -> str:
    """The commands `make .venv-gguf/.installed` would run (-B: as if nothing were built), in a copy of the
    Makefile so that nothing of this checkout's venvs is read."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    r = subprocess.run(["make", "-n", "-B", "-C", str(tmp_path), ".venv-gguf/.installed", f"HOME={tmp_path}",
                        *overrides], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_lane_builds_llama_cpp_without_amx_into_a_wheel_folder_keyed_by_the_flags(tmp_path):
    """The wheel is built with the no-AMX CMAKE_ARGS, without pip's wheel cache (keyed by the sdist alone, it
    could hand back an AMX build), into a folder named by a hash of the flags, and installed from that folder."""
    cmds = _dry_run(tmp_path)
    build = next(line for line in cmds.splitlines() if "pip wheel" in line)
    assert f'CMAKE_ARGS="{amx.CMAKE_ARGS}"' in build and "--no-cache-dir" in build, build
    wheels = re.search(r"-w (\S+)", build).group(1)
    assert wheels.startswith(f"{tmp_path}/.cache/reasontune/llama-cpp-wheels/")
    install = next(line for line in cmds.splitlines() if "pip install" in line and "llama_cpp_python" in line)
    assert f"{wheels}/llama_cpp_python-0.3.36-" in install
    other = _dry_run(tmp_path, "GGUF_NO_AMX=")  # the flags dropped: another wheel folder, so another build
    assert f"-w {wheels} " not in other and "-w " in other


def _gcc_macros(*flags: str) -> set[str]:
    r = subprocess.run(["gcc", *flags, "-dM", "-E", "-"], input="", capture_output=True, text=True, timeout=60)
    if r.returncode:
        pytest.skip(f"gcc {' '.join(flags)}: {r.stderr.strip()[:200]}")
    return set(re.findall(r"#define (__\w+__) ", r.stdout))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_no_amx_flags_turn_amx_off_and_keep_avx512_in_gcc():
    """On a Sapphire Rapids target (what -march=native is on an AMX host): AMX-INT8 is on by default, the three
    flags turn it off, AVX-512 VNNI/BF16 stay."""
    spr = "-march=sapphirerapids"
    assert "__AMX_INT8__" in _gcc_macros(spr)
    # as GCC's driver hands -march=native to cc1 on an AMX host: the expansion first, then the user's flags
    off = _gcc_macros(spr, "-mamx-tile", "-mamx-int8", "-mamx-bf16", *amx.NO_AMX_FLAGS.split())
    assert not {m for m in off if m.startswith("__AMX")}, off
    assert {"__AVX512F__", "__AVX512VNNI__", "__AVX512BF16__"} <= off


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_an_explicit_flag_before_march_native_wins_over_it():
    """CMake puts CMAKE_C_FLAGS (our -mno-amx-*) before llama.cpp's -march=native; GCC's driver places its
    expansion of -march=native before the user's flags, so ours still win. Checked on this host with the flag
    opposite to what native says here."""
    r = subprocess.run(["gcc", "-march=native", "-###", "-E", "-"], input="", capture_output=True, text=True,
                       timeout=60)
    args = [a.strip('"') for line in r.stderr.splitlines() if "cc1" in line for a in line.split()]
    said = [a for a in args if a in ("-mamx-int8", "-mno-amx-int8")]
    if not said:
        pytest.skip("this gcc's -march=native expansion does not mention amx-int8")
    flag = "-mno-amx-int8" if said[-1] == "-mamx-int8" else "-mamx-int8"  # the opposite of this host's
    assert ("__AMX_INT8__" in _gcc_macros(flag, "-march=native")) is (flag == "-mamx-int8")
