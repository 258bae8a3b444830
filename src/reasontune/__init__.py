"""reasontune: base LLM -> math-and-logic reasoner with GRPO on verifiable rewards.

The CLI is a thin layer over these functions, which a notebook can call directly.
Heavy modules (torch, transformers, trl) load lazily so `reasontune --help` stays fast.
"""

__version__ = "0.1.0"

from reasontune import _moved

_moved.install()  # old flat module paths (reasontune.generation, ...) for one release

_LAZY = {
    "RunConfig": "reasontune.config",
    "load_yaml": "reasontune.config",
    "train": "reasontune.stages.train",
    "evaluate": "reasontune.stages.evaluate",
    "run_demo": "reasontune.stages.demo",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reasontune' has no attribute {name!r}")
