"""Datasets for reasontune: procedural generators, hub adapters, local files, reasoning-gym.

`build_datasets(cfg.data, cfg.format, tokenizer)` returns a DatasetDict with `train` and `test`
splits whose rows hold `prompt` (system + user chat messages), `question`, `answer` and, when
the source has them, `worked`, `difficulty`, `subject`. Heavy imports (`datasets`) load lazily.
"""

from reasontune.data.errors import DataError

_LAZY = {
    "build_datasets": "reasontune.data.prepare",
    "eval_split": "reasontune.data.prepare",
    "check_spec": "reasontune.data.prepare",
    "parse_spec": "reasontune.data.prepare",
    "load_adapted": "reasontune.data.prepare",
    "prompt_lengths": "reasontune.data.prepare",
    "chat_messages": "reasontune.data.prepare",
    "row_messages": "reasontune.data.prepare",
    "last_boxed": "reasontune.data.answers",
    "is_number": "reasontune.data.answers",
    "question_hash": "reasontune.data.answers",
}

__all__ = ["DataError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reasontune.data' has no attribute {name!r}")
