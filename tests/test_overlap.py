"""The near-duplicate check (overlap.py, issue 24 item 5): the normalised working, the marking, the rows the
demo really trains and evaluates on, and the held-out accuracy split into novel rows and near-duplicates."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from reasontune.stages.overlap import add_novelty, mark_near_duplicates, novelty, worked_steps

SAME = [  # the same steps in other words, spacing or operator spelling
    ("12 + 3 = 15\n15 - 4 = 11", "Start: 12+3=15. Then 15 − 4 = 11 left."),
    ("12 + 3 = 15", "   12  +  3  =  15   "),
    ("1,200 + 3 = 1,203", "1200 + 3 = 1203"),
    ("4 x 5 = 20", "4 * 5 = 20"),
    ("4 × 5 = 20\n20 ÷ 2 = 10", "4*5=20\n20/2=10"),
    ("5.0 + 1 = 6", "5 + 1 = 6"),
]
DIFFERENT = [
    ("12 + 3 = 15", "12 + 4 = 16"),                                # other numbers
    ("2 + 2 = 4", "2 * 2 = 4"),                                    # other operation, same numbers
    ("12 + 3 = 15\n15 - 4 = 11", "12 - 4 = 8\n8 + 3 = 11"),        # the same operations in another order
    ("12 + 3 = 15", "12 + 3 = 15\n15 - 4 = 11"),                   # a step fewer
    ("3 + 12 = 15", "12 + 3 = 15"),                                # operands swapped: the story's order differs
]


@pytest.mark.parametrize("a, b", SAME)
def test_the_same_steps_in_other_words_normalise_equal(a, b):
    assert worked_steps(a) == worked_steps(b) != ()


@pytest.mark.parametrize("a, b", DIFFERENT)
def test_other_numbers_operations_or_steps_normalise_different(a, b):
    assert worked_steps(a) != worked_steps(b)


def test_normalised_steps_are_operand_op_operand_result():
    assert worked_steps("12 + 3 = 15\n15 - 4 = 11") == ((12, "+", 3, 15), (15, "-", 4, 11))
    assert worked_steps("") == worked_steps(None) == worked_steps("no working here") == ()


def test_marking_on_a_hand_made_split():
    train = [{"worked": "12 + 3 = 15"}, {"worked": "7 - 2 = 5\n5 + 1 = 6"}, {"worked": ""}]
    heldout = [{"worked": "Maya: 12+3=15"},          # the first training working, other words
               {"worked": "12 + 4 = 16"},            # other numbers
               {"worked": "7 - 2 = 5"},              # only the first step of a training working
               {"worked": ""},                       # nothing to compare, though training has an empty one
               {"worked": "7 - 2 = 5\n5 + 1 = 6"}]   # the second training working
    assert mark_near_duplicates(heldout, train) == [True, False, False, False, True]
    assert mark_near_duplicates(heldout, []) == [False] * 5


class _Captured(Exception):
    """Raised by the fake GRPO trainer: the rows it was given are recorded, nothing trains."""


@pytest.mark.parametrize("max_prompt_length", [None, 82])  # 82 tokens: about half the demo's prompts are longer
def test_the_rows_rebuilt_are_the_rows_the_demo_trains_and_evaluates_on(smol_dir, tmp_path, monkeypatch,
                                                                        max_prompt_length):
    """run_demo on its own config with the model, decoding and trainers faked: the warm-up's examples reach
    SFT, GRPO gets its training rows, the evals grade the held-out rows; overlap.run_rows rebuilds all three
    from the config (and the tokenizer, when grpo.max_prompt_length drops the longer prompts)."""
    import reasontune.engines.generation as gen
    import reasontune.models as models
    import reasontune.export.portable as portable
    import reasontune.stages.sft as sft
    import reasontune.engines.sft_trainer as sft_trainer
    import reasontune.engines.trainer as trainer
    from reasontune.stages.demo import demo_config, run_demo
    from reasontune.engines.generation import Generation
    from reasontune.stages.overlap import run_rows

    seen = {}

    class FakeSFT:
        def __init__(self, train_dataset=None, **kw):
            seen["sft"] = train_dataset
            self.state = SimpleNamespace(global_step=0)

        def train(self, resume_from_checkpoint=None):
            return SimpleNamespace(training_loss=0.0)

    def fake_grpo(train_dataset=None, **kw):
        seen["grpo"] = train_dataset
        raise _Captured

    def fake_load(cfg, fmt, lora=None, **kw):
        return object(), models.load_tokenizer(str(smol_dir), cfg, fmt), "fake"

    monkeypatch.setattr(models, "load_model_and_tokenizer", fake_load)
    monkeypatch.setattr(gen, "generate", lambda model, tok, prompts, num_return_sequences=1, **kw:
                        [[Generation("", [], 0, False)] * num_return_sequences for _ in prompts])
    monkeypatch.setattr(sft_trainer, "LeanSFTTrainer", FakeSFT)
    monkeypatch.setattr(sft, "_sft_bf16", lambda cfg: False)
    monkeypatch.setattr(trainer, "ReasonTuneGRPOTrainer", fake_grpo)
    monkeypatch.setattr(portable, "save_adapter", lambda *a, **kw: None)
    updates = {"grpo.max_prompt_length": max_prompt_length}
    with pytest.raises(_Captured):
        run_demo(out_dir=str(tmp_path), updates=updates)

    cfg = demo_config(str(tmp_path), updates=updates)
    tok = models.load_tokenizer(str(smol_dir), cfg.model, cfg.format) if max_prompt_length else None
    rows = run_rows(cfg, tokenizer=tok)
    from reasontune.stages.demo import BASE_EVAL_PROBLEMS

    def graded(stage):  # the greedy rows an eval stage wrote, as (index, question)
        lines = (tmp_path / "evals" / stage / "completions.jsonl").read_text().splitlines()
        return [(r["index"], r["question"]) for r in map(json.loads, lines) if r.get("kind", "greedy") == "greedy"]

    heldout = [(i, r["question"]) for i, r in enumerate(rows["heldout"])]
    assert graded("warmup") == heldout
    assert graded("before") == heldout[:BASE_EVAL_PROBLEMS]  # the base: the first problems only
    assert len(rows["heldout"]) == 200 and len(rows["warmup"]) == cfg.warmup.examples == 128
    assert (len(rows["grpo"]) == 2000) == (max_prompt_length is None)
    assert seen["grpo"]["question"] == [r["question"] for r in rows["grpo"]]
    # the demo learns from answers only: GRPO's rows reach the trainer without their worked solutions
    assert cfg.rewards.answers_only and "worked" not in seen["grpo"].column_names and all(r["worked"] for r in rows["grpo"])
    assert len(seen["sft"]) == len(rows["warmup"])
    for target, r in zip(seen["sft"], rows["warmup"]):  # SFT's rendered prompt and target hold the row's own
        assert r["question"] in target["prompt"] and r["worked"].strip() in target["completion"]


def test_the_demos_seed0_marks_are_a_pure_function_of_its_config():
    """The warm-up's targets are training rows too, so its near-duplicates are among all near-duplicates; level 1
    (one +/- step on small numbers) is nearly all near-duplicates, which is why the split is reported."""
    from reasontune.stages.demo import demo_config
    from reasontune.stages.overlap import heldout_marks, marks_summary

    marks = heldout_marks(demo_config("o"))
    assert marks == heldout_marks(demo_config("o"))
    assert all(m["near_duplicate"] for m in marks if m["near_duplicate_warmup"])
    s = marks_summary(marks)
    assert s["n"] == 200 and 0 < s["near_duplicate"] < 200
    level1 = s["by_level"]["1"]
    assert level1["near_duplicate"] / level1["n"] > max(v["near_duplicate"] / v["n"] for k, v in s["by_level"].items()
                                                         if k != "1")


MARKS = [{"index": i, "question": f"q{i}", "difficulty": lv, "near_duplicate": d, "near_duplicate_warmup": False}
         for i, (lv, d) in enumerate([(1, True), (1, False), (2, False), (2, True)])]


def _write(out, stage, correct, extra=()):
    d = out / "evals" / stage
    d.mkdir(parents=True)
    recs = [{"index": i, "kind": "greedy", "question": f"q{i}", "difficulty": MARKS[i]["difficulty"], "correct": ok,
             "format_ok": True, "completion": "", "answer": "1"} for i, ok in enumerate(correct)] + list(extra)
    (d / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_the_demo_metrics_split_each_stage_into_novel_and_near_duplicate(tmp_path):
    """Greedy records only (the warm-up's samples are not graded twice), joined on index, overall and by level."""
    _write(tmp_path, "before", [False] * 4)
    _write(tmp_path, "after", [True, False, True, True],
           extra=[{"index": 1, "kind": "sample", "question": "q1", "difficulty": 1, "correct": True}])
    summary = {"before": {"accuracy": 0.0, "by_level": {"1": {"n": 2}, "2": {"n": 2}}}, "after": {"accuracy": 0.75}}
    add_novelty(summary, tmp_path, MARKS)
    assert summary["near_duplicates"] == {"n": 4, "near_duplicate": 2, "near_duplicate_warmup": 0,
                                          "by_level": {"1": {"n": 2, "near_duplicate": 1},
                                                       "2": {"n": 2, "near_duplicate": 1}}}
    a = summary["after"]
    assert (a["novel_n"], a["novel_accuracy"], a["near_duplicate_n"], a["near_duplicate_accuracy"]) == (2, 0.5, 2, 1.0)
    assert a["by_level"]["1"] == {"novel_n": 1, "novel_accuracy": 0.0, "near_duplicate_n": 1,
                                  "near_duplicate_accuracy": 1.0}
    assert a["by_level"]["2"]["novel_accuracy"] == 1.0
    assert summary["before"]["novel_accuracy"] == 0.0 and summary["before"]["by_level"]["1"]["n"] == 2  # kept


def test_records_from_another_config_are_refused():
    recs = [{"index": 0, "kind": "greedy", "question": "another problem", "correct": True}]
    with pytest.raises(ValueError, match="does not rebuild its evals"):
        novelty(recs, MARKS)


def test_report_md_shows_the_novel_row(tmp_path):
    from reasontune.stages.demo import write_markdown

    _write(tmp_path, "before", [False] * 4)
    _write(tmp_path, "after", [True, False, True, True])
    stage = {"accuracy": 0.5, "format_rate": 1.0, "mean_length": 10.0, "n": 4,
             "by_level": {"1": {"n": 2, "accuracy": 0.5}, "2": {"n": 2, "accuracy": 1.0}}}
    s = {"wall_seconds": 1.0, "backend": "fake", "before": dict(stage), "after": dict(stage)}
    add_novelty(s, tmp_path, MARKS)
    write_markdown(tmp_path, s)
    md = (tmp_path / "report.md").read_text()
    assert "| no near-duplicate in training | 2 | 0.000 | 0.500 |" in md
    assert "| near-duplicate of a training problem | 2 | 0.000 | 1.000 |" in md
    assert "2 of 4 are (level 1: 1 of 2, level 2: 1 of 2)" in md
    assert "| level | n | warm-up greedy" in md  # the per-level table stays


def test_bench_prints_the_table_for_a_saved_folder(tmp_path, capsys):
    """bench/near_duplicates.py on a folder: the config from metrics.json's settings, the evals read back."""
    import importlib.util
    from pathlib import Path

    from reasontune.stages.demo import demo_config
    from reasontune.stages.overlap import heldout_marks

    cfg = demo_config(str(tmp_path), quick=True)
    marks = heldout_marks(cfg)
    (tmp_path / "metrics.json").write_text(json.dumps({"settings": cfg.to_dict()}))
    d = tmp_path / "evals" / "after"
    d.mkdir(parents=True)
    d.joinpath("completions.jsonl").write_text("".join(json.dumps(
        {"index": m["index"], "kind": "greedy", "question": m["question"], "difficulty": m["difficulty"],
         "correct": not m["near_duplicate"]}) + "\n" for m in marks))
    path = Path(__file__).resolve().parents[1] / "bench" / "near_duplicates.py"
    spec = importlib.util.spec_from_file_location("near_duplicates", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    t = bench.table(tmp_path)
    n_dup = sum(m["near_duplicate"] for m in marks)
    assert t["stages"]["after"]["novel_n"] == len(marks) - n_dup and t["near_duplicates"]["near_duplicate"] == n_dup
    if n_dup < len(marks):
        assert t["stages"]["after"]["novel_accuracy"] == 1.0
    assert bench.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"near-duplicates: {n_dup} of {len(marks)}") and "after    all" in out
