"""Hub adapters on small files in each set's exact schema, local files, filters and errors."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reasontune.config import ConfigError, DataConfig, FormatConfig
from reasontune.data import DataError, build_datasets, check_spec, parse_spec
from reasontune.data.answers import question_hash

FMT = FormatConfig()
MSG = pa.struct([("content", pa.string()), ("role", pa.string())])

GSM8K = {
    "schema": pa.schema([("question", pa.string()), ("answer", pa.string())]),
    "row": lambda i: {"question": f"Tom has {i} boxes of 1,000 pens. How many pens? (#{i})",
                      "answer": f"Each box has 1,000 pens.\n{i} boxes have {i}*1000 = <<{i}*1000={i * 1000}>>"
                                f"{i * 1000:,} pens.\n#### {i * 1000:,}"},
    "expect": lambda i: {"answer": str(i * 1000),
                         "worked": f"Each box has 1,000 pens.\n{i} boxes have {i}*1000 = {i * 1000:,} pens."},
}
OPENR1 = {
    "schema": pa.schema([
        ("problem", pa.string()), ("solution", pa.string()), ("answer", pa.string()),
        ("problem_type", pa.string()), ("question_type", pa.string()), ("source", pa.string()),
        ("uuid", pa.string()), ("is_reasoning_complete", pa.list_(pa.bool_())),
        ("generations", pa.list_(pa.string())), ("correctness_math_verify", pa.list_(pa.bool_())),
        ("correctness_llama", pa.list_(pa.bool_())), ("finish_reasons", pa.list_(pa.string())),
        ("correctness_count", pa.int64()), ("messages", pa.list_(MSG))]),
    "row": lambda i: {"problem": f"Find $x$ if $x^2 = {i * i}$ and $x > 0$. Case {i}.",
                      "solution": f"Since $x > 0$, $x = \\sqrt{{{i * i}}} = \\boxed{{{i}}}$.", "answer": str(i),
                      "problem_type": "Algebra", "question_type": "math-word-problem", "source": "olympiads",
                      "uuid": f"u-{i}", "is_reasoning_complete": [True, False],
                      "generations": ["<think>a</think>", "<think>b</think>"],
                      "correctness_math_verify": [True, False], "correctness_llama": None,
                      "finish_reasons": None, "correctness_count": 1,
                      "messages": [{"content": "q", "role": "user"}, {"content": "a", "role": "assistant"}]},
    "expect": lambda i: {"answer": str(i), "subject": "Algebra",
                         "worked": f"Since $x > 0$, $x = \\sqrt{{{i * i}}} = \\boxed{{{i}}}$."},
}
DAPO = {
    "schema": pa.schema([
        ("prompt", pa.string()), ("solution", pa.string()), ("data_source", pa.string()),
        ("source_prompt", pa.list_(MSG)), ("ability", pa.string()),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        ("extra_info", pa.struct([("index", pa.string())]))]),
    "row": lambda i: {"prompt": f"What is the remainder when {i + 100} is divided by 7?",
                      "solution": str((i + 100) % 7), "data_source": "math_dapo",
                      "source_prompt": [{"content": "Solve ... Answer: $Answer", "role": "user"}],
                      "ability": "MATH", "reward_model": {"ground_truth": str((i + 100) % 7), "style": "rule-lighteval/MATH_v2"},
                      "extra_info": {"index": f"idx-{i}"}},
    "expect": lambda i: {"answer": str((i + 100) % 7)},
}
MATH500 = {
    "schema": pa.schema([("problem", pa.string()), ("solution", pa.string()), ("answer", pa.string()),
                         ("subject", pa.string()), ("level", pa.int64()), ("unique_id", pa.string())]),
    "row": lambda i: {"problem": f"Simplify $\\frac{{{2 * i}}}{{{4 * i}}}$ (item {i}).",
                      "solution": f"Divide: $\\frac{{{2 * i}}}{{{4 * i}}} = \\boxed{{\\frac{{1}}{{2}}}}$.",
                      "answer": "\\frac{1}{2}", "subject": "Prealgebra", "level": i % 5 + 1,
                      "unique_id": f"test/prealgebra/{i}.json"},
    "expect": lambda i: {"answer": "\\frac{1}{2}", "subject": "Prealgebra", "difficulty": i % 5 + 1,
                         "worked": f"Divide: $\\frac{{{2 * i}}}{{{4 * i}}} = \\boxed{{\\frac{{1}}{{2}}}}$."},
}
# name: (spec, hub id, config, split, expected extra columns)
SETS = {
    "gsm8k": (GSM8K, "openai/gsm8k", "main", "train", ["worked"]),
    "openr1": (OPENR1, "open-r1/OpenR1-Math-220k", "default", "train", ["worked", "subject"]),
    "dapo": (DAPO, "open-r1/DAPO-Math-17k-Processed", "en", "train", []),
    "math500": (MATH500, "HuggingFaceH4/MATH-500", None, "test", ["worked", "difficulty", "subject"]),
}


def write(path, spec, n):
    rows = [spec["row"](i) for i in range(1, n + 1)]
    table = pa.Table.from_pylist(rows, schema=spec["schema"])
    if str(path).endswith(".parquet"):
        pq.write_table(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))  # as the schema types them
    return rows


def cfg(dataset, **kw):
    kw.setdefault("test_size", 3)
    kw.setdefault("max_prompt_quantile", None)
    return DataConfig(dataset=str(dataset), **kw)


def by_question(ds):
    return {r["question"]: r for r in ds}


@pytest.mark.parametrize("name", list(SETS))
@pytest.mark.parametrize("ext", ["parquet", "jsonl"])
def test_adapter_on_local_file(tmp_path, name, ext):
    spec, _, _, _, extras = SETS[name]
    path = tmp_path / f"{name}.{ext}"
    rows = write(path, spec, 12)
    ds = build_datasets(cfg(path), FMT)
    assert (len(ds["train"]), len(ds["test"])) == (9, 3)
    assert ds["train"].column_names == ["prompt", "question", "answer", *extras]
    got = {**by_question(ds["train"]), **by_question(ds["test"])}
    qcol = "prompt" if name == "dapo" else ("question" if name == "gsm8k" else "problem")
    for i, raw in enumerate(rows, start=1):
        out = got[raw[qcol]]
        for k, v in spec["expect"](i).items():
            assert out[k] == v, (name, k)
        assert out["prompt"][1] == {"role": "user", "content": raw[qcol]}
    assert not {question_hash(q) for q in ds["train"]["question"]} & {question_hash(q) for q in ds["test"]["question"]}


@pytest.mark.parametrize("name", list(SETS))
def test_hub_load_uses_the_same_adapter_path(tmp_path, hub_from_file, name):
    """A hub id loads through datasets.load_dataset(hub_id, config, split=...) and then the same adapter."""
    spec, hub_id, config, split, _ = SETS[name]
    path = tmp_path / f"{name}.parquet"
    write(path, spec, 10)
    calls = hub_from_file(hub_id, path)
    from_hub = build_datasets(cfg(hub_id), FMT)
    assert calls == [(hub_id, config, split)]
    from_file = build_datasets(cfg(path), FMT)
    for part in ("train", "test"):
        assert from_hub[part].to_list() == from_file[part].to_list()


def test_hub_aliases_and_split_errors(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("no load expected"))
    assert parse_spec("gsm8k") == ("hub", "openai/gsm8k")
    assert parse_spec("math-500") == ("hub", "HuggingFaceH4/MATH-500")
    with pytest.raises(DataError, match=r"no config 'nope'.*\['main', 'socratic'\].*--config-name"):
        check_spec(cfg("openai/gsm8k", config_name="nope"))
    with pytest.raises(DataError, match=r"no split 'validation'.*\['train', 'test'\]"):
        check_spec(cfg("openai/gsm8k", split="validation"))


def test_generic_files_csv_json_and_overrides(tmp_path):
    csv = tmp_path / "plain.csv"
    csv.write_text("question,answer\n" + "".join(f"What is {i} + {i}?,{2 * i}\n" for i in range(10)))
    ds = build_datasets(cfg(csv), FMT)
    assert sorted(list(ds["train"]["answer"]) + list(ds["test"]["answer"]), key=int) == [str(2 * i) for i in range(10)]
    js = tmp_path / "custom.json"
    js.write_text(json.dumps([{"q": f"Q{i}?", "a": i, "note": "x"} for i in range(8)]))
    with pytest.raises(DataError, match=r"no question column among \['a', 'note', 'q'\].*--question-column"):
        build_datasets(cfg(js), FMT)
    ds = build_datasets(cfg(js, question_column="q", answer_column="a"), FMT)
    got = {r["question"]: r["answer"] for r in list(ds["train"]) + list(ds["test"])}
    assert got == {f"Q{i}?": str(i) for i in range(8)} and len(ds["train"]) == 5
    with pytest.raises(DataError, match=r"--answer-column 'missing' is not a column; the columns are \['q', 'a', 'note'\]"):
        build_datasets(cfg(js, question_column="q", answer_column="missing"), FMT)


def test_boxed_answer_when_no_answer_column(tmp_path):
    path = tmp_path / "boxed.jsonl"
    rows = [{"problem": f"P{i}", "solution": f"work $\\boxed{{\\frac{{{i}}}{{2}}}}$"} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = build_datasets(cfg(path, test_size=1), FMT)
    got = {r["question"]: r["answer"] for r in list(ds["train"]) + list(ds["test"])}
    assert got == {f"P{i}": f"\\frac{{{i}}}{{2}}" for i in range(6)}


def test_duplicates_numeric_only_and_sample(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"question": f"Question number {i}?", "answer": str(i) if i % 2 else f"\\frac{{{i}}}{{3}}"}
            for i in range(40)]
    rows += [{"question": "  QUESTION   number 1? ", "answer": "1"}, {"question": "", "answer": "3"},
             {"question": "No answer?", "answer": None}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = build_datasets(cfg(path, test_size=5), FMT)
    assert len(ds["train"]) + len(ds["test"]) == 40  # duplicate, empty question, missing answer dropped
    ds = build_datasets(cfg(path, test_size=5, numeric_only=True, sample=7), FMT)
    assert len(ds["train"]) == 7 and len(ds["test"]) == 5
    assert all(a.isdigit() for a in list(ds["train"]["answer"]) + list(ds["test"]["answer"]))


class WordTokenizer:
    """Fake tokenizer: the chat template joins contents, a token is a word."""

    def apply_chat_template(self, conversations, tokenize=False, add_generation_prompt=True):
        assert tokenize is False and add_generation_prompt is True
        return [" ".join(m["content"] for m in c) + " <assistant>" for c in conversations]

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [t.split() for t in texts]}


def test_prompt_length_quantile_uses_tokens_or_characters(tmp_path):
    path = tmp_path / "lengths.jsonl"
    rows = [{"question": f"short q {i}", "answer": str(i)} for i in range(18)]
    rows += [{"question": "w " * 80, "answer": "100"}, {"question": "x" * 900, "answer": "200"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    by_tokens = build_datasets(cfg(path, test_size=0, max_prompt_quantile=0.95), FMT, tokenizer=WordTokenizer())
    by_chars = build_datasets(cfg(path, test_size=0, max_prompt_quantile=0.95), FMT)
    assert set(by_tokens["train"]["answer"]) == {str(i) for i in range(18)} | {"200"}
    assert set(by_chars["train"]["answer"]) == {str(i) for i in range(18)} | {"100"}
    assert len(build_datasets(cfg(path, test_size=0), FMT)["train"]) == 20  # quantile None keeps all


@pytest.mark.parametrize("spec, kw, match", [
    ("foo", {}, r"(?s)unknown dataset spec .foo.*procedural:NAME.*rg:TASK.*owner/name.*\.jsonl"),
    ("procedural:", {}, "unknown dataset spec"),
    ("a/b/c", {}, "unknown dataset spec"),
    ("procedural:nope", {}, "valid names are procedural:arithmetic"),
    ("procedural:arithmetic", {"difficulty": [0, 9]}, r"no difficulty level\(s\) \[0, 9\]"),
    ("{tmp}/missing.jsonl", {}, "dataset file '{tmp}/missing.jsonl' not found"),
])
def test_errors_before_any_data_loads(tmp_path, monkeypatch, spec, kw, match):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("no load expected"))
    spec, match = spec.format(tmp=tmp_path), match.format(tmp=tmp_path)
    with pytest.raises(DataError, match=match) as info:
        build_datasets(DataConfig(dataset=spec, **kw), FMT)
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("rows, kw, match", [
    ([{"question": f"q{i}", "answer": "half"} for i in range(5)], {"numeric_only": True},
     r"no rows left after numeric_only.*5 -> 0.*numeric_only false"),
    ([{"question": f"q{i}", "answer": None} for i in range(5)], {},
     r"no rows left after dropping rows without a question or answer.*--answer-column"),
    ([{"question": f"q{i}", "answer": "1"} for i in range(3)], {"test_size": 3},
     r"3 rows after filtering, too few to hold out test_size=3"),
    ([{"text": "t", "label": 1}], {}, r"no question column among \['label', 'text'\].*--question-column"),
])
def test_errors_after_loading(tmp_path, rows, kw, match):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=match):
        build_datasets(cfg(path, **kw), FMT)


def test_reasoning_gym_task():
    pytest.importorskip("reasoning_gym")
    ds = build_datasets(DataConfig(dataset="rg:basic_arithmetic", train_size=30, test_size=10), FMT)
    assert (len(ds["train"]), len(ds["test"])) == (30, 10)
    assert ds["train"].column_names == ["prompt", "question", "answer", "rg_task", "rg_entry"]  # entry: for its scorer
    assert not {question_hash(q) for q in ds["train"]["question"]} & {question_hash(q) for q in ds["test"]["question"]}
    for row in ds["train"]:  # "Calculate 5 - 3 - 6." -> -4: the answer is the expression's value
        expr = row["question"].split("Calculate", 1)[-1].strip().rstrip(".").rstrip("=")
        if set(expr) <= set("0123456789+-*() "):
            assert int(eval(expr)) == int(row["answer"])  # noqa: S307
    again = build_datasets(DataConfig(dataset="rg:basic_arithmetic", train_size=30, test_size=10), FMT)
    assert again["train"]["question"] == ds["train"]["question"]
    with pytest.raises(DataError, match=r"unknown reasoning-gym task 'chain_summ' \(did you mean rg:chain_sum"):
        build_datasets(DataConfig(dataset="rg:chain_summ"), FMT)


def test_generated_source_that_yields_nothing_is_a_data_error(monkeypatch):
    """Whatever the generator, zero rows is a DataError naming the source (here a reasoning-gym task whose
    entries carry no answer), raised before datasets builds an empty table."""
    pytest.importorskip("reasoning_gym")
    with pytest.raises(DataError, match=r"rg:propositional_logic yields no usable rows: none of its \d+ generated"):
        build_datasets(DataConfig(dataset="rg:propositional_logic", train_size=8, test_size=4), FMT)
    from reasontune.data import procedural

    monkeypatch.setattr(procedural, "generate_splits", lambda *a, **k: ([], []))
    with pytest.raises(DataError, match=r"procedural:arithmetic generated no training rows"):
        build_datasets(DataConfig(dataset="procedural:arithmetic", train_size=8, test_size=4), FMT)


def test_a_non_numeric_level_is_no_level_with_a_warning(tmp_path, caplog):
    """MATH-500's "Level 3" is 3; a level with no number is None (warned), never level 0."""
    import logging

    path = tmp_path / "math500.jsonl"
    rows = [MATH500["row"](i) for i in range(1, 9)]
    for r, level in zip(rows, ["Level 3", "Level ?", "5", None]):
        r["level"] = level
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="reasontune.data.hub"):
        ds = build_datasets(cfg(path, test_size=1), FMT)
    levels = {r["question"]: r["difficulty"] for split in ds.values() for r in split}
    assert [levels[r["problem"]] for r in rows[:4]] == [3, None, 5, None]
    assert "'Level ?' is not a number" in caplog.text


def _fake_hub(monkeypatch, splits: dict):
    """local.load_hub serving in-memory splits; records which split each load asked for."""
    from reasontune.data import local

    asked = []

    def load_hub(hub_id, config, split):
        asked.append(split)
        return datasets.Dataset.from_list(splits[split])

    monkeypatch.setattr(local, "load_hub", load_hub)
    return asked


def _qa(n, tag):
    """Rows in GSM8K's schema (worked solution, then '#### answer'), which plain files also accept."""
    return [{"question": f"{tag} question {i}: what is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
            for i in range(n)]


def test_eval_split_of_a_file_and_a_hub_test_split_is_every_row(tmp_path, monkeypatch):
    from reasontune.data import eval_split

    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _qa(30, "file")))
    rows = eval_split(DataConfig(dataset=str(path), test_size=5), FMT)
    assert len(rows) == 30 and rows[0]["prompt"][1]["content"] == rows[0]["question"]
    asked = _fake_hub(monkeypatch, {"train": _qa(50, "train"), "test": _qa(12, "test")})
    gsm8k = DataConfig(dataset="openai/gsm8k", config_name="main", test_size=5)
    rows = eval_split(gsm8k, FMT)
    assert asked == ["test"] and len(rows) == 12 and all(q.startswith("test ") for q in rows["question"])
    rows = eval_split(gsm8k, FMT, trained_on=gsm8k)  # a run trained on the train split: the test split is unseen
    assert asked == ["test"] * 2 and len(rows) == 12 and all(q.startswith("test ") for q in rows["question"])


def test_eval_split_of_a_train_only_hub_set_or_a_run_is_the_seeded_held_out_split(tmp_path, monkeypatch):
    """Only a train split (or the set a run trained on): the same held-out rows as training's split."""
    from reasontune.data import eval_split

    _fake_hub(monkeypatch, {"train": _qa(40, "train")})
    monkeypatch.setattr(datasets, "get_dataset_split_names", lambda *a, **k: ["train"])
    cfg = DataConfig(dataset="someone/train-only", test_size=6, seed=3)
    rows = eval_split(cfg, FMT)
    assert rows["question"] == build_datasets(cfg, FMT)["test"]["question"] and len(rows) == 6
    path = tmp_path / "f.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _qa(30, "file")))
    run = DataConfig(dataset=str(path), test_size=4, seed=1)
    held = eval_split(DataConfig(dataset=str(path)), FMT, trained_on=run)
    assert held["question"] == build_datasets(run, FMT)["test"]["question"] and len(held) == 4
    math500 = DataConfig(dataset="HuggingFaceH4/MATH-500", test_size=3, seed=2)  # only a test split: trained on it
    _fake_hub(monkeypatch, {"test": [MATH500["row"](i) for i in range(1, 21)]})
    held = eval_split(DataConfig(dataset="HuggingFaceH4/MATH-500"), FMT, trained_on=math500)
    assert held["question"] == build_datasets(math500, FMT)["test"]["question"] and len(held) == 3
    assert len(eval_split(DataConfig(dataset="HuggingFaceH4/MATH-500"), FMT)) == 20  # no run: every row
