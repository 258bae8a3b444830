"""Logic tasks end to end: reasoning-gym's rg:syllogism ("Yes"/"No") and rg:knights_knaves (who is a
knight, in any order). Rows carry the entry, the verdict on a non-numeric answer is reasoning-gym's own
scorer (full credit only), number_strict does not apply (None), and data preview, eval and a 2-step train
run on them."""

from __future__ import annotations

import json
import math
import re

import pytest

from reasontune.config import DataConfig, FormatConfig, RewardsConfig, from_dict

pytest.importorskip("reasoning_gym")

FMT = FormatConfig()
TASKS = ("syllogism", "knights_knaves")


def ok(answer: str) -> str:
    """A completion in the strict format with `answer` in the answer block."""
    return f"Some working.{FMT.reasoning_end}{FMT.solution_start}{answer}{FMT.solution_end}"


@pytest.fixture(scope="module")
def rows():
    from reasontune.data import build_datasets

    return {t: list(build_datasets(DataConfig(dataset=f"rg:{t}", train_size=6, test_size=2), FMT)["train"])
            for t in TASKS}


def _roles(answer: str) -> list[tuple[str, str]]:
    return re.findall(r"(\w+) is an? (\w+)", answer)


def _sentence(pairs) -> str:
    clauses = [f"{name} is {'an' if role[0] in 'aeiou' else 'a'} {role}" for name, role in pairs]
    return ", ".join(clauses[:-1]) + ", and " + clauses[-1] + "."


def candidates(task: str, row: dict) -> list[tuple[str, str, bool]]:
    """(kind, completion, right?) for one row: right, right in another form, wrong and malformed answers."""
    a = row["answer"]
    if task == "syllogism":
        flip = "No" if a == "Yes" else "Yes"
        return [("right", ok(a), True), ("right, padded", ok(f"  {a} "), True), ("wrong", ok(flip), False),
                ("malformed: trailing dot (reasoning-gym: 0.75)", ok(a + "."), False),
                ("malformed: lower case", ok(a.lower()), False), ("malformed: both", ok("Yes or No"), False),
                ("malformed: no answer block", f"I think {a}.", False)]
    terms = json.loads(row["rg_entry"])["metadata"]["knight_knave_terms"]
    pairs = _roles(a)
    other = {terms["knight"]: terms["knave"], terms["knave"]: terms["knight"]}
    flipped = [(pairs[0][0], other[pairs[0][1]])] + pairs[1:]
    return [("right", ok(a), True),
            ("right, other order and case", ok(_sentence(reversed(pairs)).lower()), True),
            ("wrong: one role flipped (reasoning-gym: partial)", ok(_sentence(flipped)), False),
            ("malformed: names only", ok(", ".join(n for n, _ in pairs)), False),
            ("malformed: unclosed block", f"Working.{FMT.reasoning_end}{FMT.solution_start}{a}", False)]


@pytest.mark.parametrize("task", TASKS)
def test_our_verdicts_match_reasoning_gyms_scorer(task, rows):
    """The table: for right, wrong and malformed answers, our grade, answer_equiv and the recipe's answer_check
    agree with score_answer == 1.0 on the same entry (partial credit is not right), and neither number
    reward applies."""
    import reasoning_gym

    from reasontune.rewards import build_reward_funcs, extract_answer, grade, rg_columns

    funcs, _ = build_reward_funcs(RewardsConfig(names=["answer_equiv", "number_strict", "answer_check",
                                                      "number_check"]), FMT)
    equiv, number, recipe_answer, recipe_number = funcs
    scorer = reasoning_gym.create_dataset(task, size=1, seed=0)
    table = [(row, *c) for row in rows[task] for c in candidates(task, row)]
    assert len(table) >= 6 * 5
    for row, kind, completion, right in table:
        entry = json.loads(row["rg_entry"])
        pred, verdict = grade(completion, row["answer"], FMT, **rg_columns(row))
        theirs = pred is not None and scorer.score_answer(pred.strip(), entry) == 1.0
        assert verdict is right and theirs is right, (task, kind, row["answer"], pred)
        kw = {"answer": [row["answer"]], "rg_task": [row["rg_task"]], "rg_entry": [row["rg_entry"]]}
        expected = 5.0 if right else (-2.0 if pred is None else -1.5)
        assert equiv([completion], **kw) == [expected], (task, kind)
        assert number([completion], **kw) == [None]  # not a numeric task: not applicable, not a flat 0
        assert recipe_number([completion], **kw) == [None]  # was -2.5 without a digit, 0.0 with one
        assert (recipe_answer([completion], **kw) == [5.0]) is right, (task, kind)


def test_a_numeric_rg_answer_is_still_checked_exactly_and_a_broken_entry_is_an_error():
    from reasontune.rewards import build_reward_funcs, errors, reset_errors
    from reasontune.rewards.rgscore import verdict

    entry = json.dumps({"question": "q", "answer": "12", "metadata": {}})
    assert verdict("12.0", "12", 1.0, "basic_arithmetic", entry) is True  # ours: exact rationals
    (equiv,), _ = build_reward_funcs(RewardsConfig(names=["answer_equiv"]), FMT)
    reset_errors()
    out = equiv([ok("Yes")], answer=["Yes"], rg_task=["syllogism"], rg_entry=["{not json"])
    assert out == [None] and errors["answer_equiv"] == 1  # counted, never a silent score


@pytest.mark.parametrize("task", TASKS)
def test_data_preview_shows_prompt_and_answer(task, capsys):
    from reasontune.data import cli

    assert cli.main(["data", "preview", "--dataset", f"rg:{task}", "--limit", "2", "--json"]) == 0
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(shown) == 2
    for r in shown:
        assert r["prompt"][0]["content"] == FMT.prompt and r["prompt"][1]["content"] == r["question"]
        assert r["answer"] == json.loads(r["rg_entry"])["answer"] and r["rg_task"] == task


def test_eval_grades_logic_answers(rows, tiny_model_dir):
    """evaluate's records on rg:knights_knaves: an answer in another order is right, a flipped role wrong;
    the rewards it logs see the same entry (answer_equiv 5.0 / -1.5, number_strict None)."""
    from types import SimpleNamespace

    from reasontune.stages.evaluate import _build_rewards, _records

    cfg = from_dict({"rewards": {"names": ["verified"]}, "data": {"dataset": "rg:knights_knaves"}})
    row = rows["knights_knaves"][0]
    table = candidates("knights_knaves", row)
    gens = [[SimpleNamespace(text=c, num_tokens=8, truncated=False, stopped=True, token_ids=[1] * 8) for _, c, _ in table]]
    funcs = _build_rewards(cfg, SimpleNamespace(eos_token="</s>"), 64)
    recs = _records([row], ["p"], gens, "greedy", cfg, funcs)
    assert [r["correct"] for r in recs] == [right for _, _, right in table]
    assert [r["scores"]["answer_equiv"] for r in recs][:3] == [5.0, 5.0, -1.5]
    assert all(r["scores"]["number_strict"] is None for r in recs)


@pytest.mark.parametrize("task", TASKS)
def test_cli_eval_and_two_step_train_run_on_logic_tasks(task, tiny_model_dir, tmp_path, capsys, monkeypatch):
    """`reasontune eval` and a 2-step `reasontune train` on the tiny model: both finish, and GRPO's
    answer reward receives each row's reasoning-gym task and entry (TRL passes dataset columns)."""
    import reasontune.rewards.verified as verified
    from reasontune.cli import main

    seen = []
    original = verified.answer_equiv_score

    def spy(text, gold, ctx, rg_task=None, rg_entry=None):
        seen.append((rg_task, json.loads(rg_entry)["answer"] == gold if rg_entry else None))
        return original(text, gold, ctx, rg_task, rg_entry)

    monkeypatch.setattr(verified, "answer_equiv_score", spy)
    common = ["--model", str(tiny_model_dir), "--dataset", f"rg:{task}", "--set", "data.train_size=8",
              "--set", "data.test_size=4"]
    assert main(["eval", *common, "--limit", "4", "--max-new-tokens", "4", "--out", str(tmp_path / "e"),
                 "--set", "rewards.names=[verified]", "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["n"] == 4 and m["dataset"] == f"rg:{task}" and "answer_equiv" in m["rewards"]
    assert len(seen) == 4 and set(seen) == {(task, True)}
    seen.clear()
    run = tmp_path / "run"
    assert main(["train", *common, "--output-dir", str(run), "--max-steps", "2", "--batch-size", "4",
                 "--num-generations", "2", "--max-completion-length", "8", "--reward", "verified", "--json"]) == 0
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["global_step"] == 2, status
    # 2 steps x 4 completions, plus the watcher's probe of the first row (watch.reward_scales: its right,
    # wrong and empty completions through answer_equiv), every call with the row's own task and entry
    assert len(seen) == 2 * 4 + 3 and set(seen) == {(task, True)}
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert all(math.isfinite(r["rewards/answer_equiv/mean"]) for r in logged if "rewards/answer_equiv/mean" in r)


def test_advise_counts_logic_answers_as_checkable(rows):
    """advise's "is there a verifier?": rg logic rows are checked by reasoning-gym's scorer, so they count,
    though "Yes" or a sentence is not something math-verify parses."""
    import datasets

    from reasontune.stages import advise

    ds = datasets.Dataset.from_list(rows["knights_knaves"])
    facts = advise.data_facts(ds, 4)
    assert facts["checkable_fraction"] == 1.0 and facts["has_verifier"]
    assert advise.data_facts(ds.remove_columns(["rg_task", "rg_entry"]), 4)["checkable_fraction"] == 0.0
