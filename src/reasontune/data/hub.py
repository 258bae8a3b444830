"""Schema adapters: map a raw Dataset (from the hub or a local file) onto question/answer rows.

The same `adapt()` runs whatever loaded the Dataset, so a local file in a hub set's schema goes
through exactly the code path of a hub load. Output columns: `question`, `answer`, and when the
set has them `worked`, `difficulty`, `subject`. Code schemas (HumanEval, MBPP, open-r1's stdin/stdout
problems; data/code.py) map whole rows to `question`, `answer` (""), `worked` and `tests`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from reasontune.data import code
from reasontune.data.answers import gsm8k_answer, gsm8k_worked, reference_answer, to_text
from reasontune.data.errors import DataError

logger = logging.getLogger(__name__)

COLUMN_FLAGS = "--question-column/--answer-column (data.question_column/data.answer_column)"


def _strip(v) -> str | None:
    return to_text(v)


@dataclass(frozen=True)
class Adapter:
    name: str
    hub_id: str | None
    question: str
    answer: str                                # reference-answer column
    answer_rule: Callable = _strip
    worked: str | None = None
    worked_rule: Callable = _strip
    extras: dict = field(default_factory=dict)  # output column -> input column
    signature: frozenset = frozenset()          # columns that identify the schema
    configs: tuple = (None,)
    splits: tuple = ("train",)
    aliases: tuple = ()
    row: Callable | None = None                 # code schemas: fn(raw row, question column) -> output row
    offline: Callable | None = None             # () -> raw Dataset without the hub, used for the aliases

    def matches(self, columns) -> bool:
        return bool(self.signature) and self.signature <= set(columns)


ADAPTERS = [
    # data/phrased_otherwise.jsonl (local.BUNDLED): its kind of phrasing is the `subject` eval breaks down by
    Adapter("phrased_otherwise", None, "question", "answer", worked="worked",
            extras={"difficulty": "difficulty", "subject": "phrasing"},
            signature=frozenset({"question", "answer", "worked", "difficulty", "phrasing"})),
    Adapter("math500", "HuggingFaceH4/MATH-500", "problem", "answer", worked="solution",
            extras={"subject": "subject", "difficulty": "level"},
            signature=frozenset({"problem", "solution", "answer", "subject", "level", "unique_id"}),
            splits=("test",), aliases=("math-500", "math500")),
    Adapter("openr1", "open-r1/OpenR1-Math-220k", "problem", "answer", worked="solution",
            extras={"subject": "problem_type"},
            signature=frozenset({"problem", "solution", "answer", "uuid", "generations"}),
            configs=("default", "extended", "all"), aliases=("openr1-math", "openr1")),
    Adapter("dapo", "open-r1/DAPO-Math-17k-Processed", "prompt", "solution",
            signature=frozenset({"prompt", "solution", "data_source", "reward_model"}),
            configs=("en", "cn", "all"), aliases=("dapo-math", "dapo")),
    Adapter("gsm8k", "openai/gsm8k", "question", "answer", answer_rule=gsm8k_answer,
            worked="answer", worked_rule=gsm8k_worked,
            signature=frozenset({"question", "answer"}), configs=("main", "socratic"),
            splits=("train", "test"), aliases=("gsm8k",)),
    Adapter("humaneval", "openai/openai_humaneval", "prompt", "", row=code.humaneval_row,
            signature=frozenset({"prompt", "test", "entry_point"}), splits=("test",),
            aliases=("humaneval", "openai_humaneval"), offline=code.load_humaneval),
    Adapter("mbpp", "google-research-datasets/mbpp", "text", "", row=code.mbpp_row,
            signature=frozenset({"test_list"}), configs=("full", "sanitized"),
            splits=("train", "test", "validation", "prompt"), aliases=("mbpp",)),
    Adapter("openr1-code", "open-r1/verifiable-coding-problems-python", "problem_statement", "",
            row=code.openr1_code_row, signature=frozenset({"verification_info"}), configs=("default",),
            aliases=("verifiable-coding-problems-python", "openr1-code")),
    Adapter("code", None, "question", "", row=code.native_row, signature=frozenset({"question", "tests"})),
]
CODE_COLUMNS = ["question", "answer", "worked", "tests"]

QUESTION_CANDIDATES = ["question", "problem", "prompt", "query", "input", "instruction"]
ANSWER_CANDIDATES = ["answer", "final_answer", "ground_truth", "target", "solution", "output"]


def by_hub_id(spec: str) -> Adapter | None:
    for a in ADAPTERS:
        if spec == a.hub_id or spec.lower() in a.aliases:
            return a
    return None


def detect(columns, sample: dict | None = None) -> Adapter | None:
    """The known schema whose signature columns are all present (gsm8k also needs a `####`)."""
    for a in ADAPTERS:
        if not a.matches(columns):
            continue
        if a.name == "gsm8k" and not (sample and "####" in str(sample.get("answer") or "")):
            continue
        return a
    return None


def generic(columns, where: str) -> Adapter:
    """An adapter for an unknown schema, from common column names."""
    q = next((c for c in QUESTION_CANDIDATES if c in columns), None)
    if q is None:
        raise DataError(f"{where}: no question column among {sorted(columns)}; name one with "
                        f"--question-column (data.question_column)")
    a = next((c for c in ANSWER_CANDIDATES if c in columns and c != q), None)
    if a is None:
        raise DataError(f"{where}: no answer column among {sorted(columns)}; name one with "
                        f"--answer-column (data.answer_column)")
    # A `solution` column that is not the answer is a worked solution. When it is the answer
    # (no answer column), reference_answer takes its last \boxed{} (or the text when unboxed).
    worked = "solution" if "solution" in columns and a != "solution" else None
    return Adapter("generic", None, q, a, answer_rule=reference_answer, worked=worked)


def resolve(columns, sample: dict | None, where: str, known: Adapter | None = None,
            question_column: str | None = None, answer_column: str | None = None) -> Adapter:
    """The adapter for these columns, with the user's column overrides applied and checked."""
    columns = list(columns)
    for flag, col in (("--question-column", question_column), ("--answer-column", answer_column)):
        if col is not None and col not in columns:
            raise DataError(f"{where}: {flag} {col!r} is not a column; the columns are {columns}")
    adapter = known if known and known.matches(columns) else detect(columns, sample)
    if adapter is None:
        if question_column and answer_column:
            adapter = Adapter("custom", None, question_column, answer_column, answer_rule=reference_answer)
        else:
            try:
                adapter = generic(columns, where)
            except DataError:
                if known is not None:
                    missing = sorted(known.signature - set(columns))
                    raise DataError(f"{where}: the {known.hub_id} schema needs columns {missing}, which are "
                                    f"missing; the columns are {columns}; name them with {COLUMN_FLAGS}") from None
                raise
    if question_column:
        adapter = _replace(adapter, question=question_column)
    if answer_column:
        adapter = _replace(adapter, answer=answer_column, answer_rule=reference_answer)
    logger.info("%s: schema %s (question=%r, answer=%r, worked=%r)", where, adapter.name,
                adapter.question, adapter.answer, adapter.worked)
    return adapter


def _replace(adapter: Adapter, **kw) -> Adapter:
    import dataclasses

    return dataclasses.replace(adapter, **kw)


def _question_text(value) -> str | None:
    """A question cell: text, or chat messages (the last user turn is the question)."""
    if isinstance(value, list):
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        return to_text(users[-1]) if users else None
    return to_text(value)


def adapt(ds, adapter: Adapter):
    """Map a raw Dataset to question/answer(/worked/difficulty/subject) columns.

    Rows with no question or no answer get None and are dropped later by the preparation.
    """
    import datasets

    if adapter.row is not None:  # a code schema: the row's tests come from several columns
        features = datasets.Features({n: datasets.Value("string") for n in CODE_COLUMNS})
        return ds.map(lambda ex: adapter.row(ex, adapter.question), remove_columns=ds.column_names,
                      features=features, desc=f"adapting ({adapter.name})")
    used = {adapter.question, adapter.answer, adapter.worked, *adapter.extras.values()} - {None}
    ds = ds.select_columns([c for c in ds.column_names if c in used])

    def row(ex):
        out = {"question": _question_text(ex.get(adapter.question)),
               "answer": adapter.answer_rule(ex.get(adapter.answer))}
        if adapter.worked:
            out["worked"] = adapter.worked_rule(ex.get(adapter.worked)) or ""
        for dst, src in adapter.extras.items():
            v = ex.get(src)
            out[dst] = _as_int(v) if dst == "difficulty" else (to_text(v) or "")
        return out

    names = ["question", "answer"] + (["worked"] if adapter.worked else []) + list(adapter.extras)
    features = datasets.Features({n: datasets.Value("int64" if n == "difficulty" else "string") for n in names})
    # Explicit features: without them `map` keeps a same-named input column's type (an int `answer`).
    return ds.map(row, remove_columns=ds.column_names, features=features, desc=f"adapting ({adapter.name})")


def _as_int(v) -> int | None:
    """A difficulty level as an int ("Level 3" -> 3). A level with no digits ("Level ?") or none at all
    is None: no level, never level 0, which would put the row into the easiest bucket."""
    try:
        return int(v)
    except (TypeError, ValueError):
        digits = "".join(ch for ch in str(v) if ch.isdigit())
        if digits:
            return int(digits)
        logger.warning("difficulty level %.80r is not a number: the row gets no level (None)", v)
        return None
