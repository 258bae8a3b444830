"""`reasontune advise`: the decision rule (table-driven, every branch and boundary), the measured facts
on scripted completions, and the CLI end to end on the tiny random Llama."""

from __future__ import annotations

import json

import pytest

from reasontune.stages import advise as A
from reasontune.config import from_dict, override


pytestmark = pytest.mark.usefixtures("one_thread")


def facts(**kw) -> A.Facts:
    """A healthy RFT case; each test row changes only what it is about."""
    base = dict(pass_at_1=0.3, pass_at_k=0.6, k=8, zero_variance_fraction=0.4, format_rate=0.8,
                has_worked_solutions=True, has_verifier=True)
    return A.Facts(**{**base, **kw})


CASES = [  # (id, changes, recommendation, words the rule must contain)
    ("no-verifier-worked", dict(has_verifier=False), "sft", "no verifier"),
    ("no-verifier-no-worked", dict(has_verifier=False, has_worked_solutions=False), "neither", "no verifier"),
    ("pass@k=0-worked", dict(pass_at_k=0.0, pass_at_1=0.0), "sft_then_rft", "pass@k < 0.05"),
    ("pass@k=0-no-worked", dict(pass_at_k=0.0, pass_at_1=0.0, has_worked_solutions=False), "neither",
     "easier curriculum"),
    ("pass@k just below", dict(pass_at_k=A.PASS_AT_K_MIN - 1e-9, pass_at_1=0.01), "sft_then_rft", "pass@k"),
    ("pass@k at threshold", dict(pass_at_k=A.PASS_AT_K_MIN, pass_at_1=0.01), "rft", "-> rft"),
    ("pass@1 at headroom threshold", dict(pass_at_1=A.PASS_AT_1_MAX, pass_at_k=1.0), "neither", "pass@1 >= 0.9"),
    ("pass@1 just below headroom", dict(pass_at_1=A.PASS_AT_1_MAX - 1e-9, pass_at_k=1.0), "rft", "-> rft"),
    ("format low-worked", dict(format_rate=A.FORMAT_RATE_MIN - 1e-9), "sft_then_rft", "format_rate < 0.5"),
    ("format at threshold", dict(format_rate=A.FORMAT_RATE_MIN), "rft", "-> rft"),
    ("format low-no-worked", dict(format_rate=0.1, has_worked_solutions=False), "rft", "-> rft"),
    ("zero-var high-worked", dict(zero_variance_fraction=0.95), "sft_then_rft", "zero_variance_fraction > 0.9"),
    ("zero-var high-no-worked", dict(zero_variance_fraction=0.95, has_worked_solutions=False), "rft", "warning"),
    ("zero-var at threshold", dict(zero_variance_fraction=A.ZERO_VARIANCE_MAX), "rft", "-> rft"),
    ("precedence: no verifier beats pass@k", dict(has_verifier=False, pass_at_k=0.0), "sft", "no verifier"),
    ("precedence: pass@k beats format", dict(pass_at_k=0.0, format_rate=0.0), "sft_then_rft", "pass@k"),
    # plenty of worked solutions: SFT on them first, whatever pass@1 (measured by demo --compare)
    ("plenty worked, pass@1 low", dict(worked_rows=A.WORKED_ROWS_PLENTY, pass_at_1=0.1), "sft_then_rft",
     "worked_rows >= 1000"),
    ("plenty worked, pass@1 high", dict(worked_rows=A.WORKED_ROWS_PLENTY, pass_at_1=0.7, pass_at_k=0.9),
     "sft_then_rft", "worked_rows >= 1000"),
    ("precedence: headroom beats plenty", dict(worked_rows=5000, pass_at_1=0.95, pass_at_k=1.0), "neither",
     "pass@1"),
    ("just under plenty", dict(worked_rows=A.WORKED_ROWS_PLENTY - 1, pass_at_1=0.1), "rft", "-> rft"),
    ("plenty rows but no usable solutions", dict(worked_rows=5000, pass_at_1=0.1, has_worked_solutions=False), "rft",
     "-> rft"),
    ("precedence: format beats plenty", dict(worked_rows=5000, pass_at_1=0.1, format_rate=0.0), "sft_then_rft",
     "format_rate"),
    ("precedence: headroom beats zero-var", dict(pass_at_1=0.95, pass_at_k=1.0, zero_variance_fraction=1.0),
     "neither", "pass@1"),
]


@pytest.mark.parametrize("changes,expected,rule_words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_table(changes, expected, rule_words):
    rec, reasons, rule = A.decide(facts(**changes))
    assert rec == expected and rec in A.RECOMMENDATIONS
    assert rule_words in rule or any(rule_words in r for r in reasons), (rule, reasons)
    assert reasons and all(isinstance(r, str) and r for r in reasons)
    if changes.get("has_verifier", True):
        assert any("%" in r for r in reasons)  # reasons quote the measured numbers


def test_decide_covers_every_recommendation_and_accepts_a_dict():
    seen = {A.decide(facts(**c[1]))[0] for c in CASES}
    assert seen == set(A.RECOMMENDATIONS)
    d = {k: v for k, v in facts().__dict__.items() if k != "extra"}
    assert A.decide(d) == A.decide(facts())


# the label axis: (id, changes, recommendation, method, primer examples); FREE is A.LABEL_FREE_METHOD, whatever the
# lead set it to from the compare
LABEL_CASES = [
    ("answers only", dict(has_worked_solutions=False, worked_rows=0, answer_rows=2000), "rft", "FREE", 0),
    ("few worked, format learnt", dict(worked_rows=100, answer_rows=2000), "rft", "FREE", 0),
    ("few worked, format low", dict(worked_rows=100, format_rate=0.1), "sft_then_rft", "primer_then_FREE", 100),
    ("primer capped", dict(worked_rows=500, format_rate=0.1), "sft_then_rft", "primer_then_FREE", A.PRIMER_MAX),
    ("few worked, pass@k 0", dict(worked_rows=40, pass_at_k=0.0, pass_at_1=0.0), "sft_then_rft", "primer_then_FREE",
     40),
    ("just under plenty", dict(worked_rows=A.WORKED_ROWS_PLENTY - 1, answer_rows=2000), "rft", "FREE", 0),
    ("plenty worked", dict(worked_rows=A.WORKED_ROWS_PLENTY, answer_rows=2000), "sft_then_rft", "sft_all_then_grpo",
     0),
    ("no verifier, worked", dict(has_verifier=False, worked_rows=100), "sft", "sft", 0),
    ("no verifier, no worked", dict(has_verifier=False, has_worked_solutions=False), "neither", None, 0),
]


@pytest.mark.parametrize("free", list(A.LABEL_FREE_METHODS))
@pytest.mark.parametrize("changes,rec,method,primer", [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES])
def test_label_plan_table(changes, rec, method, primer, free, monkeypatch):
    """With answers and few worked solutions the method is LABEL_FREE_METHOD (one constant: each value is tried);
    with plenty of worked solutions, SFT on all of them first."""
    monkeypatch.setattr(A, "LABEL_FREE_METHOD", free)
    f = facts(**changes)
    got, _, _ = A.decide(f)
    plan = A.label_plan(f, got)
    assert (got, plan["method"], plan["primer_examples"]) == (rec, method and method.replace("FREE", free), primer)
    if method and "FREE" in method:  # the command to run it names the method's own flag
        assert A.LABEL_FREE_METHODS[free][1] in plan["how"]
        assert ("warmup.examples=" in plan["how"]) == (primer > 0)
    assert f"{f.worked_rows} worked solutions" in plan["labels"]


def test_label_free_method_must_be_one_on_offer(monkeypatch):
    monkeypatch.setattr(A, "LABEL_FREE_METHOD", "dpo")
    with pytest.raises(A.ConfigError, match="LABEL_FREE_METHOD='dpo' is not one of grpo_answers_only"):
        A.label_plan(facts(), "rft")


def test_reward_variance_and_total_reward():
    names, weights = ["fmt", "ans"], [1.0, 2.0]
    assert A.total_reward({"fmt": 1.0, "ans": 3.0}, names, weights) == 7.0
    assert A.total_reward({"fmt": None, "ans": 1.0}, names, weights) == 2.0  # skipped reward counts 0 (nansum)
    recs = [{"index": 0, "total_reward": 1.0}, {"index": 0, "total_reward": 1.0},
            {"index": 1, "total_reward": 0.0}, {"index": 1, "total_reward": 2.0}]
    assert A.group_stats(recs) == {"groups": 2, "zero_variance_groups": 1, "zero_variance_fraction": 0.5}


@pytest.mark.parametrize("answer,ok", [("42", True), ("-3.5", True), ("1,000", True), ("3/4", True),
                                       ("\\frac{1}{2}", True), ("x + 1", True), ("", False), (None, False),
                                       ("Paris is the capital", False), ("photosynthesis", False)])
def test_answer_checkable(answer, ok):
    assert A.answer_checkable(answer) is ok


def test_data_facts():
    import datasets

    qa = datasets.Dataset.from_list([{"question": f"q{i}", "answer": str(i)} for i in range(20)])
    f = A.data_facts(qa, 4)
    assert (f["has_worked_solutions"], f["has_verifier"], f["checkable_fraction"]) == (False, True, 1.0)
    n = A.MIN_WORKED_ROWS
    worked = qa.add_column("worked", ["step"] * n + [""] * (20 - n))
    assert A.data_facts(worked, 4)["worked_rows"] == n and A.data_facts(worked, 4)["has_worked_solutions"]
    few = qa.add_column("worked", ["step"] * (n - 1) + [""] * (21 - n))
    assert not A.data_facts(few, 4)["has_worked_solutions"]  # too few to fine-tune on
    tiny = qa.select(range(3)).add_column("worked", ["a", "b", "c"])
    assert A.data_facts(tiny, 4)["has_worked_solutions"]  # a small set counts when every row has one
    prose = datasets.Dataset.from_list([{"question": "q", "answer": "a long essay"}] * 5)
    assert A.data_facts(prose, 4)["has_verifier"] is False and A.data_facts(qa, 0)["has_verifier"] is False


def _cfg(model_dir, **extra):
    cfg = from_dict({"model": {"name": str(model_dir)}, "data": {"dataset": "procedural:arithmetic",
                                                                 "train_size": 8, "test_size": 2}})
    return override(cfg, {"eval.limit": 3, "eval.samples": 4, "eval.max_new_tokens": 8, **extra})


def test_advise_on_scripted_completions(tiny_model_dir, tmp_path, monkeypatch):
    """Problem 0: all 4 right; problem 1: 1 of 4 right; problem 2: all wrong -> known pass@, variance."""
    from transformers import AutoTokenizer

    import reasontune.engines.generation as gen
    from reasontune.data import build_datasets
    from reasontune.engines.generation import Generation

    cfg = _cfg(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = build_datasets(cfg.data, cfg.format, tok)
    answers = data["train"]["answer"][:3]
    good = [f"ok<end_working_out><SOLUTION>{a}</SOLUTION>" for a in answers]
    # problem 1's right sample is its last: greedy (the first) misses what sampling finds
    script = [[good[0]] * 4, ["ok<end_working_out><SOLUTION>-1</SOLUTION>"] * 3 + [good[1]], ["no idea"] * 4]

    def fake(model, tok, prompts, *, num_return_sequences=1, **kw):
        return [[Generation(t, [1, 2], 2, False) for t in script[i][:num_return_sequences]]
                for i in range(len(prompts))]

    monkeypatch.setattr(gen, "generate", fake)
    r = A.advise(cfg, model=object(), tokenizer=tok, datasets=data, out_dir=tmp_path)
    assert r["pass_at_1"] == pytest.approx((1 + 0.25 + 0) / 3) and r["pass_at_k"] == pytest.approx(2 / 3)
    assert r["format_rate"] == pytest.approx(8 / 12)
    assert r["zero_variance_fraction"] == pytest.approx(2 / 3)  # groups 0 and 2 all score the same
    assert r["has_worked_solutions"] and r["has_verifier"] and r["recommendation"] == "rft"
    recs = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert len(recs) == 12 and all("total_reward" in x for x in recs)
    h = r["headroom"]  # greedy solves problem 0 only; 4 samples solve 0 and 1
    assert (h["greedy"], h["pass_at_k"], h["headroom"]) == pytest.approx((1 / 3, 2 / 3, 1 / 3))
    levels = data["train"]["difficulty"][:3]
    for level, v in h["by_level"].items():
        mine = [i for i, lv in enumerate(levels) if str(lv) == level]
        assert v["n"] == len(mine)
        assert v["greedy"] == pytest.approx(sum(i == 0 for i in mine) / len(mine))
        assert v["pass_at_k"] == pytest.approx(sum(i in (0, 1) for i in mine) / len(mine))
    text = A.format_advice({**r, "model": "m"})
    assert "headroom: greedy 0.333, pass@4 0.667 (+0.333)" in text


def test_cli_advise_json_end_to_end(tiny_model_dir, tmp_path, capsys):
    from reasontune.cli import main

    argv = ["advise", "--model", str(tiny_model_dir), "--dataset", "procedural:arithmetic", "--set",
            "data.train_size=8", "--set", "data.test_size=2", "--limit", "3", "--samples", "3",
            "--max-new-tokens", "6", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(A.JSON_KEYS) <= set(out) and out["k"] == 3
    # a random 2-layer model writing 6 tokens never closes an answer: nothing to sharpen, worked solutions
    # exist, so the advice is to teach the format first
    assert (out["pass_at_1"], out["pass_at_k"], out["format_rate"]) == (0.0, 0.0, 0.0)
    assert out["has_worked_solutions"] is True and out["has_verifier"] is True
    assert out["recommendation"] == "sft_then_rft" and "pass@k" in out["rule"]
    # a few worked solutions (every row has one, and an answer): a primer of all of them, then the label-free method
    assert out["method"] == f"primer_then_{A.LABEL_FREE_METHOD}" and out["primer_examples"] == out["worked_rows"] > 0
    assert out["labels"] == f"{out['worked_rows']} worked solutions and {out['train_rows']} reference answers"
    recs = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert len(recs) == 9
    for r in recs:  # GRPO's reward: the weighted (all 1.0) sum of the per-reward scores
        assert r["total_reward"] == pytest.approx(sum(v for v in r["scores"].values() if v is not None))
    assert A.group_stats(recs)["zero_variance_fraction"] == out["zero_variance_fraction"]
    assert sum(r["correct"] for r in recs) / 9 == pytest.approx(out["pass_at_1"])


def test_cli_advise_needs_two_samples(tiny_model_dir, capsys):
    from reasontune.cli import main

    assert main(["advise", "--model", str(tiny_model_dir), "--set", "data.train_size=8", "--limit", "2",
                 "--samples", "1"]) == 2
    assert "advise needs 2 or more samples" in capsys.readouterr().err


@pytest.mark.parametrize("failure", ["error", "timeout"])
def test_answer_checkable_says_when_the_parser_failed(monkeypatch, caplog, failure):
    """A parser that raises or hangs is not a property of the answer: counted as not checkable, with a warning."""
    import logging
    import types

    from reasontune.rewards import check

    def parse(*a, **k):
        if failure == "error":
            raise RuntimeError("sympy bug")
        while True:
            pass

    monkeypatch.setattr(check, "_math_verify", lambda: types.SimpleNamespace(parse=parse))
    with caplog.at_level(logging.WARNING, logger="reasontune.stages.advise"):
        assert A.answer_checkable("x^2 + 1") is False
    assert ("RuntimeError: sympy bug" if failure == "error" else "within 1 s") in caplog.text
