"""The CPU heap policy (models/speed.py): freed pages reused by the next step, or handed back after every step."""

from __future__ import annotations

import gc
import resource

import pytest

from reasontune.models import speed


def _faults_touching(nbytes: int) -> int:
    """Minor page faults taken while allocating and writing `nbytes` (then freed)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buf = bytearray(nbytes)  # calloc'd and written: every page is touched
    buf[::4096] = b"\x01" * len(buf[::4096])
    del buf
    gc.collect()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_reused_heap_serves_a_large_block_again_without_faulting_it_in(monkeypatch):
    """A 64 MiB block is over glibc's largest mmap threshold: by default it is mapped and unmapped, and each
    allocation faults in its 16k pages again. With the heap reused, the second allocation faults almost none."""
    monkeypatch.delenv(speed.HEAP_ENV, raising=False)
    if not speed.reuse_freed_memory():
        pytest.skip("no glibc mallopt here")
    size = 64 * 2**20
    _faults_touching(size)  # the first one grows the heap
    again = _faults_touching(size)
    assert again < size // 4096 // 10, again  # a mapped block would fault ~16k pages


def test_step_trim_follows_the_policy(monkeypatch):
    called = []
    monkeypatch.setattr(speed, "release_freed_memory", lambda: called.append(1) or True)
    monkeypatch.setattr(speed, "_heap_reused", True)
    assert speed.release_step_memory() is False and not called  # the next step reuses the pages
    monkeypatch.setattr(speed, "_heap_reused", False)
    assert speed.release_step_memory() is True and called == [1]


def test_trim_setting_leaves_glibc_defaults(monkeypatch):
    monkeypatch.setenv(speed.HEAP_ENV, "trim")
    monkeypatch.setattr(speed, "_heap_reused", False)
    assert speed.reuse_freed_memory() is False and not speed.heap_is_reused()
