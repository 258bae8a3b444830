"""`reasontune eval` on code rows: graded by running their tests in the sandbox (never by answer matching),
pass@1 / pass@k, and the failure kinds in metrics.json, completions.jsonl and the printed summary."""

from __future__ import annotations

import json

import pytest

from reasontune.config import from_dict, override

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["pass", "wrong", "syntax", "no_code", "error"]  # what completion i of the greedy pass is written to be


def _cfg(model_dir, **extra):
    cfg = from_dict({"model": {"name": str(model_dir)}, "data": {"dataset": "procedural:code", "train_size": 8,
                                                                 "test_size": 5, "difficulty": [1]}})
    return override(cfg, {"eval.limit": 5, "eval.samples": 1, "eval.max_new_tokens": 8, **extra})


def _completion(kind: str, worked: str, fmt) -> str:
    code = {"pass": worked, "wrong": worked.replace("return ", "return 1 + "), "syntax": "def f(:\n    return",
            "error": worked.replace("return ", "return undefined_name + ")}.get(kind)
    if code is None:
        return " I do not know."
    return f" plan\n{fmt.reasoning_end}\n{fmt.solution_start}```python\n{code}\n```{fmt.solution_end}"


def _fake_generate(monkeypatch, rows, cfg, sample_kinds=None):
    """Greedy completion i is KINDS[i]; sampled completions of problem i follow sample_kinds[i]."""
    import reasontune.engines.generation as gen
    from reasontune.engines.generation import Generation

    def fake(model, tok, prompts, *, num_return_sequences=1, **kw):
        out = []
        for p in prompts:
            i = next(i for i, r in enumerate(rows) if r["question"] in p)
            kinds = [KINDS[i]] if num_return_sequences == 1 else sample_kinds[i]
            out.append([Generation(_completion(k, rows[i]["worked"], cfg.format), [1], 1, False) for k in kinds])
        return out

    monkeypatch.setattr(gen, "generate", fake)


def _rows(cfg):
    from reasontune.data import build_datasets

    return build_datasets(cfg.data, cfg.format)["test"].to_list()


def test_code_rows_are_graded_by_their_tests_with_failure_kinds(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    import reasontune.rewards as rewards
    from reasontune.stages.evaluate import evaluate

    cfg = _cfg(tiny_model_dir, **{"eval.samples": 2})
    rows = _rows(cfg)
    _fake_generate(monkeypatch, rows, cfg, sample_kinds=[["pass", "wrong"], ["wrong", "wrong"], ["pass", "pass"],
                                                         ["no_code", "syntax"], ["error", "pass"]])
    monkeypatch.setattr(rewards, "grade", lambda *a, **k: pytest.fail("a code row was graded as an answer"))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    m = evaluate(cfg, model=object(), tokenizer=tok, dataset={"test": rows}, out_dir=tmp_path, progress=False)
    assert m["accuracy"] == pytest.approx(1 / 5)  # greedy pass@1: every test passed
    assert m["code"] == {"n": 5, "pass_rate": pytest.approx(0.2), "tests_passed": pytest.approx(0.2),
                         "kinds": {k: 1 for k in KINDS}}
    assert m["sample_code"]["kinds"] == {"pass": 4, "wrong": 3, "no_code": 1, "syntax": 1, "error": 1}
    # per problem: 1 of 2, 0, 2 of 2, 0, 1 of 2 right -> pass@1 (0.5 + 0 + 1 + 0 + 0.5) / 5, pass@2 3/5
    assert m["pass_at"] == {"1": pytest.approx(0.4), "2": pytest.approx(0.6)} and m["maj_at_k"] is None
    recs = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()]
    greedy = [r for r in recs if r["kind"] == "greedy"]
    assert [r["code"] for r in greedy] == KINDS and [r["correct"] for r in greedy] == [True] + [False] * 4
    assert [(r["tests_passed"], r["tests_total"]) for r in greedy] == [(4, 4), (0, 4), (0, 4), (0, 4), (0, 4)]
    assert greedy[0]["extracted"] == rows[0]["worked"] and greedy[3]["extracted"] is None
    assert json.loads((tmp_path / "metrics.json").read_text())["code"]["kinds"] == {k: 1 for k in KINDS}


@pytest.mark.parametrize("names,want", [(None, ["code_tests"]), (["code_tests_binary", "format_strict"],
                                                                   ["code_tests_binary", "format_strict"])])
def test_code_rows_are_scored_by_code_rewards_never_the_default_math_ones(tiny_model_dir, monkeypatch, names, want):
    """No rewards configured (the default is the math recipe's four): eval scores code rows with code_tests (the
    fraction of tests passed), not answer_check and number_check against an empty reference; configured code
    rewards are kept as they are."""
    from transformers import AutoTokenizer

    from reasontune.stages.evaluate import evaluate

    cfg = _cfg(tiny_model_dir, **({"rewards.names": names} if names else {}))
    rows = _rows(cfg)
    _fake_generate(monkeypatch, rows, cfg)
    m = evaluate(cfg, model=object(), tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
                 dataset={"test": rows}, progress=False)
    assert m["rewards"] == want and sorted(m["reward_means"]) == sorted(want)
    passed = "code_tests_binary" if names else "code_tests"  # greedy: one of five programs passes all 4 tests
    assert m["reward_means"][passed] == pytest.approx(0.2)


def test_a_math_row_beside_code_rows_is_still_graded_as_an_answer(tiny_model_dir, monkeypatch):
    from transformers import AutoTokenizer

    import reasontune.engines.generation as gen
    from reasontune.stages.evaluate import evaluate
    from reasontune.engines.generation import Generation

    cfg = _cfg(tiny_model_dir)
    code_row = _rows(cfg)[0]
    math_row = {"question": "What is 2 + 2?", "answer": "4", "worked": "2 + 2 = 4", "tests": None}
    fmt = cfg.format
    texts = {math_row["question"]: f" 2 + 2 = 4\n{fmt.reasoning_end}\n{fmt.solution_start}4{fmt.solution_end}",
             code_row["question"]: _completion("pass", code_row["worked"], fmt)}
    monkeypatch.setattr(gen, "generate", lambda model, tok, prompts, **kw: [
        [Generation(next(t for q, t in texts.items() if q in p), [1], 1, False)] for p in prompts])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    m = evaluate(cfg, model=object(), tokenizer=tok, dataset={"test": [math_row, code_row]}, progress=False)
    assert m["accuracy"] == 1.0 and m["code"]["n"] == 1 and m["code"]["kinds"] == {"pass": 1}


def test_cli_eval_prints_the_code_verdicts(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from reasontune.cli import main

    cfg = _cfg(tiny_model_dir)
    _fake_generate(monkeypatch, _rows(cfg), cfg)
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(tiny_model_dir), "--dataset", "procedural:code", "--limit", "5",
                 "--set", "data.test_size=5", "--set", "data.train_size=8", "--set", "data.difficulty=[1]",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy         0.200" in printed
    assert "  verdicts         pass 1, wrong 1, syntax 1, no_code 1, error 1 (of 5)" in printed
    assert json.loads((out / "metrics.json").read_text())["code"]["n"] == 5
