"""`reasontune rewards check --completions` scores a row as GRPO and eval score it (issue 35, item 6): every
column of the row reaches every reward through scoring.score, so step_check sees `worked`."""

from __future__ import annotations

import argparse
import json

import pytest

from reasontune.config import FormatConfig
from reasontune.rewards.cli import handle_check, register

FMT = FormatConfig()
SEEN: list[dict] = []


def spy(completions, **kwargs):
    """A user's reward (dotted path) that records the keyword arguments it was called with."""
    SEEN.append(kwargs)
    return [1.0] * len(completions)


def check(tmp_path, capsys, rows: list[dict], preset: str) -> list[dict]:
    f = tmp_path / "rows.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["rewards", "check", "--preset", preset, "--completions", str(f), "--json"])
    assert handle_check(args) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def done(working: str, answer: str) -> str:
    return f"{working}{FMT.reasoning_end}{FMT.solution_start}{answer}{FMT.solution_end}"


Q = "Maya has 39 coins. She loses 38 coins. Then she buys 4 bags of 25 coins. How many coins now?"
REF = "39 - 38 = 1\n4 * 25 = 100\n1 + 100 = 101"
WRONG_OP = "39 + 38 = 77\n4 x 25 = 100\n77 + 100 = 177"  # of the reference's three steps, only 4 x 25
WENG = ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she "
        "earn?")
WENG_WORKED = ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10")


@pytest.mark.parametrize("row,step_check", [
    # right sums of the wrong operation: grounded arithmetic pays them all, the reference working one in three
    ({"question": Q, "worked": REF, "answer": "101", "completion": done(WRONG_OP, "177")}, 2.0 / 3),
    ({"question": Q, "answer": "101", "completion": done(WRONG_OP, "177")}, 2.0),
    # GSM8K's first test problem, the `worked` column as the hub holds it
    ({"question": WENG, "worked": WENG_WORKED, "answer": "10", "completion": done("12 / 60 = 0.2\n0.2 * 50 = 10", "10")},
     2.0),
    ({"question": WENG, "worked": WENG_WORKED, "answer": 10, "completion": done("12 / 60 = 0.2\n0.2 * 50 = 10", "9")},
     1.5),  # the last step under a wrong answer: a set-up only; a JSON number as the answer reads as GRPO's string
])
def test_step_check_reads_the_rows_worked_column(tmp_path, capsys, row, step_check):
    (out,) = check(tmp_path, capsys, [row], "step_check")
    assert out["scores"]["step_check"] == pytest.approx(step_check)


def test_every_reward_gets_every_column_as_grpo_passes_them(tmp_path, capsys):
    """The keyword arguments are TRL's (prompts, completion_ids, every column but prompt/completion), also for a
    column only a later line of the file has."""
    SEEN.clear()
    rows = [{"case": "a", "question": Q, "answer": "101", "completion": done(REF, "101"), "difficulty": 3},
            {"case": "b", "question": Q, "answer": "101", "completion": done(REF, "101"), "worked": REF,
             "rg_task": "spell_backward"}]
    check(tmp_path, capsys, rows, "test_rewards_check_columns:spy,step_check")
    (kw,) = SEEN
    assert set(kw) == {"prompts", "completion_ids", "case", "question", "answer", "difficulty", "worked", "rg_task"}
    assert kw["worked"] == [None, REF] and kw["difficulty"] == [3, None] and kw["answer"] == ["101", "101"]
    assert kw["prompts"] == [Q, Q] and kw["completion_ids"] is None
