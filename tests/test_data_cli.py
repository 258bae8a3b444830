"""`reasontune data preview`: JSON lines, human output, column flags and clean errors."""

import argparse
import json

import pytest

from reasontune.config import FormatConfig
from reasontune.data import cli


def run(capsys, *argv):
    code = cli.main(["data", "preview", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_preview_json_procedural(capsys):
    code, out, _ = run(capsys, "--dataset", "procedural:arithmetic", "--limit", "4", "--json", "--difficulty", "1,2")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4
    for row in rows:
        assert row["prompt"][0] == {"role": "system", "content": FormatConfig().prompt}
        assert row["prompt"][1]["role"] == "user" and row["prompt"][1]["content"] == row["question"]
        assert row["answer"].isdigit() and row["difficulty"] in (1, 2)
        assert row["worked"].splitlines()[-1].endswith("= " + row["answer"])


def test_preview_json_local_file_with_column_flags(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"task": f"Add {i} and 1.", "target": i + 1}) + "\n" for i in range(6)))
    code, out, _ = run(capsys, "--dataset", str(path), "--limit", "3", "--json",
                       "--question-column", "task", "--answer-column", "target")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["answer"] for r in rows] == [str(int(r["question"].split()[1]) + 1) for r in rows] and len(rows) == 3


def test_preview_human_output(capsys):
    code, out, _ = run(capsys, "--dataset", "procedural:linear", "--limit", "2")
    assert code == 0
    assert "system prompt:" in out and out.count("--- row") == 2 and "question:" in out and "answer:" in out


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nonsense"], "unknown dataset spec 'nonsense'"),
    (["--dataset", "missing/file.parquet"], "dataset file 'missing/file.parquet' not found"),
    (["--dataset", "procedural:arithmetic", "--difficulty", "one"], "--difficulty='one' is invalid"),
    (["--dataset", "procedural:arithmetic", "--limit", "0"], "--limit=0 is invalid"),
])
def test_preview_errors(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and message in err and err.startswith("error: ")


def test_register_adds_data_preview():
    parser = argparse.ArgumentParser(prog="reasontune")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "preview", "--dataset", "gsm8k", "--config-name", "main", "--split", "test"])
    assert args.func is cli.preview_command
    assert (args.dataset, args.config_name, args.split, args.limit, args.json) == ("gsm8k", "main", "test", 5, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["data"])  # the sub-subcommand is required


def test_preview_of_a_task_that_yields_nothing_names_the_task(capsys):
    """rg:propositional_logic publishes no reference answers (any valid conclusion is right), so no row is
    usable: one error naming the task and what to pick instead, not datasets' "Column 'question' doesn't exist"."""
    pytest.importorskip("reasoning_gym")
    code, out, err = run(capsys, "--dataset", "rg:propositional_logic", "--limit", "3")
    assert code == 2 and out == ""
    assert "rg:propositional_logic yields no usable rows" in err and "reference answer" in err
    assert "rg:syllogism" in err and "Column" not in err
