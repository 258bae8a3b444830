"""Old flat import paths kept for one release: `import reasontune.generation` still works, with a DeprecationWarning.

The package was flat until the layers got folders (README, Layout). A finder on sys.meta_path answers an old
module name with the module at its new home (the same object, so a monkeypatch through either name patches
both). Only the names below: a new module has one path. `reasontune.export` is now the export package; its old
functions live in `reasontune.stages.export` (export_run) and `reasontune.export.{merged,gguf}`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED = {
    "reasontune.cliargs": "reasontune.config.args",
    "reasontune.prompting": "reasontune.models.prompting",
    "reasontune.unsloth_backend": "reasontune.models.unsloth",
    "reasontune.speed": "reasontune.models.speed",
    "reasontune.scoring": "reasontune.rewards.scoring",
    "reasontune.generation": "reasontune.engines.generation",
    "reasontune.kvcache": "reasontune.engines.kvcache",
    "reasontune.logps": "reasontune.engines.logps",
    "reasontune.trainer": "reasontune.engines.trainer",
    "reasontune.sft_trainer": "reasontune.engines.sft_trainer",
    "reasontune.curriculum": "reasontune.engines.curriculum",
    "reasontune.guards": "reasontune.engines.guards",
    "reasontune.runfolder": "reasontune.runs.folder",
    "reasontune.metrics": "reasontune.runs.metrics",
    "reasontune.watch": "reasontune.runs.watch",
    "reasontune.validate": "reasontune.runs.validate",
    "reasontune.portable": "reasontune.export.portable",
    "reasontune.llamacpp": "reasontune.export.llamacpp",
    "reasontune.imatrix": "reasontune.export.imatrix",
    "reasontune.train": "reasontune.stages.train",
    "reasontune.sft": "reasontune.stages.sft",
    "reasontune.evaluate": "reasontune.stages.evaluate",
    "reasontune.advise": "reasontune.stages.advise",
    "reasontune.ask": "reasontune.stages.ask",
    "reasontune.demo": "reasontune.stages.demo",
    "reasontune.compare_demo": "reasontune.stages.compare_demo",
    "reasontune.report": "reasontune.stages.report",
    "reasontune.overlap": "reasontune.stages.overlap",
}


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module at its new home, unchanged."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        new = MOVED.get(name)
        if new is None:
            return None
        warnings.warn(f"{name} moved to {new}; the old path goes away in the next release", DeprecationWarning,
                      stacklevel=2)
        return importlib.machinery.ModuleSpec(name, _Alias(new))


def install() -> None:
    """Put the finder on sys.meta_path once (after the normal finders: a real module always wins)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
