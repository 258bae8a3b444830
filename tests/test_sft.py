"""`reasontune sft` and the SFT / GRPO / SFT-then-GRPO comparison, on the tiny random Llama."""

from __future__ import annotations

import json
import time

import pytest

from reasontune.cli import main
from conftest import tiny_demo_updates


pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_sft_writes_a_loadable_adapter(tiny_model_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    argv = ["sft", "--model", str(tiny_model_dir), "--output-dir", str(run), "--set", "data.train_size=8",
            "--set", "data.test_size=2", "--examples", "2", "--epochs", "1", "--batch-size", "2",
            "--learning-rate", "1e-3", "--lora-r", "2", "--set", "model.max_seq_length=256", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["examples"] == 2 and out["steps"] == 1 and out["run_dir"] == str(run)
    cfg = json.loads((run / "reasontune_config.json").read_text())
    assert cfg["warmup"]["learning_rate"] == 1e-3 and cfg["warmup"]["batch_size"] == 2 and cfg["lora"]["r"] == 2
    assert cfg["grpo"]["learning_rate"] != 1e-3  # --learning-rate is the SFT rate here
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[0]["stage"] == "warmup" and "loss" in rows[0]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("worked", [None, ""], ids=["no-column", "empty-column"])
def test_cli_sft_without_worked_solutions_fails_clearly(worked, tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "qa.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
    if worked is not None:
        rows = [{**r, "worked": worked} for r in rows]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    assert main(["sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(run),
                 "--set", "data.test_size=1"]) == 2
    err = capsys.readouterr().err
    assert "reasontune: error: reasontune sft needs worked solutions" in err and "qa.jsonl" in err
    assert not run.exists()  # failed before a run folder or a model


def test_budget_callback_stops_at_the_deadline():
    from transformers import TrainerControl, TrainerState

    from reasontune.stages.train import TimeBudget

    control, state = TrainerControl(), TrainerState()
    cb = TimeBudget(deadline=time.perf_counter() + 3600)
    cb.on_step_end(None, state, control)
    assert not control.should_training_stop and not cb.fired and cb.steps == 1
    cb = TimeBudget(deadline=time.perf_counter() - 1)
    cb.on_step_end(None, state, control)
    assert control.should_training_stop and cb.fired


@pytest.mark.parametrize("step_s, left_s, stops", [(1.0, 3600.0, False), (7200.0, 3600.0, True), (0.0, 1.0, False)])
def test_budget_stops_when_another_step_would_overrun(step_s, left_s, stops):
    """The last step's time predicts the next: stop before a step that would end past the deadline."""
    from transformers import TrainerControl, TrainerState

    from reasontune.stages.train import TimeBudget

    control, state = TrainerControl(), TrainerState()
    cb = TimeBudget(seconds=left_s)
    cb.on_train_begin(None, state, control)
    cb._last -= step_s  # the step that just ended began step_s ago; left_s remain
    cb.on_step_end(None, state, control)
    assert bool(control.should_training_stop) is stops and cb.fired is stops


@pytest.mark.parametrize("iters, stops", [(1, False), (2, True)])
def test_budget_counts_the_generating_step_after_a_reuse_step(iters, stops, monkeypatch):
    """num_iterations 2: a 40 s step that generates, then a 5 s step that reuses its rollouts, 40 s left. The
    next step generates again (40 s): the budget must stop now. It used to predict 5 s from the last step."""
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from reasontune.stages import train as train_mod

    clock = [0.0]
    monkeypatch.setattr(train_mod.time, "perf_counter", lambda: clock[0])
    args = SimpleNamespace(num_iterations=iters, gradient_accumulation_steps=8, steps_per_generation=8)
    control, state = TrainerControl(), TrainerState()
    cb = train_mod.TimeBudget(seconds=85.0)
    cb.on_train_begin(args, state, control)
    for dt in (40.0, 5.0):  # generate, reuse
        clock[0] += dt
        cb.on_step_end(args, state, control)
    assert bool(control.should_training_stop) is stops and cb.fired is stops
    assert train_mod.generation_cycle(args) == iters


@pytest.mark.parametrize("seconds, stops", [(None, False), (3600.0, False), (1e-6, True)])
def test_time_budget_counts_from_train_begin(seconds, stops):
    """grpo.max_seconds: the clock starts when training begins, not when the callback is built."""
    from transformers import TrainerControl, TrainerState

    from reasontune.stages.train import TimeBudget

    control, state = TrainerControl(), TrainerState()
    cb = TimeBudget(seconds=seconds)
    cb.on_train_begin(None, state, control)
    time.sleep(0.01)
    cb.on_step_end(None, state, control)
    assert bool(control.should_training_stop) is stops and cb.fired is stops


def test_ood_config_is_the_harder_level():
    from reasontune.stages.compare_demo import ood_data_config
    from reasontune.config import DataConfig

    assert ood_data_config(DataConfig(difficulty=[1, 2, 3, 4])).difficulty == [5]
    assert ood_data_config(DataConfig(difficulty=None)).difficulty == [5]  # default levels are 1-4
    assert ood_data_config(DataConfig(difficulty=[5])) is None
    assert ood_data_config(DataConfig(dataset="x.jsonl")) is None


def test_compare_end_to_end_tiny(tiny_model_dir, tmp_path, monkeypatch):
    """Three arms on the tiny model; GRPO has a huge step cap (and the SFT stage alone may spend the 2 s budget,
    so the GRPO-only arm falls back to that cap): only the budget can stop it."""
    import reasontune.stages.demo as demo
    from reasontune.stages.compare_demo import run_compare
    from reasontune.config import override

    real = demo.demo_config

    def tiny(out_dir, quick=False, updates=None, recipe=None):
        return override(real(out_dir, quick=False), tiny_demo_updates(tiny_model_dir))

    monkeypatch.setattr(demo, "demo_config", tiny)
    s = run_compare(str(tmp_path), budget_s=2.0, include_base=False)
    root = tmp_path / "compare"
    assert (root / "metrics.json").is_file() and (root / "table.md").is_file()
    m = json.loads((root / "metrics.json").read_text())
    assert set(m["arms"]) == {"sft_then_grpo", "grpo_only", "sft_only"} and m["ood_difficulty"] == [5]
    for arm, r in m["arms"].items():
        for key in ("wall_seconds", "heldout_accuracy", "ood_accuracy", "heldout_format_rate", "stopped_by_budget"):
            assert key in r, (arm, key)
        held = json.loads((root / arm / "evals" / "heldout" / "metrics.json").read_text())
        assert r["heldout_accuracy"] == held["accuracy"], arm
        # the demo's near-duplicate split, per arm: a count of the held-out rows, and their accuracy
        assert 1 <= r["heldout_novel_n"] <= held["n"] and 0.0 <= r["heldout_novel_accuracy"] <= 1.0, arm
        if r["heldout_novel_n"] == held["n"]:  # no near-duplicate: the novel rows are all of them
            assert r["heldout_novel_accuracy"] == held["accuracy"], arm
        # one definition of training seconds (issue 35, item 4): the stages' trainer.train() seconds
        assert r["wall_seconds"] == pytest.approx(sum(st["seconds"] for st in r["stages"].values())), arm
        assert (root / arm / "adapter" / "adapter_config.json").is_file()
        assert (root / arm / "evals" / "ood" / "metrics.json").is_file()
    assert s["arms"]["sft_then_grpo"]["stopped_by_budget"]  # in its SFT or its GRPO stage
    grpo = s["arms"]["grpo_only"]["stages"]["grpo"]
    # The arm is sized from the first arm's step time to fit the budget: either the budget stopped it, or it ran
    # exactly its planned steps (timing decides which; the budget callback alone is tested above).
    assert 1 <= grpo["steps"] <= grpo["max_steps"], grpo
    assert grpo["stopped_by_budget"] or grpo["steps"] == grpo["max_steps"], grpo
    assert s["plan"]["budget_s"] == 2.0 and s["plan"]["sft_examples"] >= 1
    table = (root / "table.md").read_text()
    assert ("| arm | labels: worked solutions / answers | training s | held-out | no near-duplicate | level 5 | "
            "phrased otherwise | working lines by level | stops on its own | steps run |") in table
    assert f"| GRPO {grpo['steps']}" in table.split("| grpo_only |")[1].splitlines()[0]
    # the labels each arm learned from: its SFT examples, and the problems GRPO drew (8 a step: 2 completions x 8
    # micro-batches, 2 per problem), whose answers the recipe's rewards read; the demo recipe learns from answers
    # only (rewards.answers_only, work_check), so no GRPO arm reads a worked solution
    for arm, r in m["arms"].items():
        st = r["stages"]
        sft = min(st["sft"]["examples"], st["sft"]["steps"] * 2) if "sft" in st else 0
        drawn = min(16, st["grpo"]["steps"] * 8) if "grpo" in st else 0
        assert (r["labels"]["sft_examples"], r["labels"]["answers"]) == (sft, drawn), arm
        assert r["labels"]["worked_solutions"] == sft and not r["labels"].get("rewards_reading_worked"), arm
        assert f"| {arm} | {sft} / {drawn} |" in table


@pytest.mark.parametrize("eval_s", [0.0, 25.0, 90.0])
def test_demo_grpo_budget_fits_the_demo_budget(eval_s):
    """The promise: what is used, plus the GRPO budget, plus the final eval (estimated 1.2x the last) and a margin,
    stays within DEMO_BUDGET_S; the budget shrinks as time is used; it is never under the 60 s floor."""
    from reasontune.stages.demo import DEMO_BUDGET_S, grpo_seconds_left

    budgets = [grpo_seconds_left(elapsed, eval_s) for elapsed in range(0, DEMO_BUDGET_S + 1, 30)]
    for elapsed, left in zip(range(0, DEMO_BUDGET_S + 1, 30), budgets):
        assert left >= 60.0
        assert left == 60.0 or elapsed + left + 1.2 * eval_s <= DEMO_BUDGET_S, (elapsed, left)
    assert budgets == sorted(budgets, reverse=True) and budgets[0] > 60.0 and budgets[-1] == 60.0
    assert budgets[0] >= DEMO_BUDGET_S - 1.2 * eval_s - 60  # and it does not waste the budget either


def test_release_memory_callback_hands_freed_heap_back(tmp_path, monkeypatch):
    """After a step that freed much heap (here 250 MB of 64 KB blocks, below glibc's mmap threshold, with a
    block kept above them so the heap top cannot shrink by itself), the callback returns it to the OS, under
    REASONTUNE_CPU_HEAP=trim (by default the heap is kept for the next step: tests/test_heap.py)."""
    import gc

    from reasontune.models import speed
    from reasontune.stages import train as T
    from reasontune.models.speed import rss_mb

    monkeypatch.setattr(speed, "_heap_reused", False)

    if rss_mb() is None or not T.release_freed_memory():
        pytest.skip("no /proc RSS or no glibc malloc_trim here")
    blocks = [bytearray(64 * 1024) for _ in range(4000)]
    pin = bytearray(64 * 1024)  # noqa: F841
    del blocks
    gc.collect()
    held = rss_mb()
    T.ReleaseMemory().on_step_end(None, None, None)
    assert held - rss_mb() > 150, (held, rss_mb())


def test_compare_after_a_demo_trains_only_the_other_two_arms(tiny_model_dir, tmp_path, monkeypatch):
    """With a finished demo's summary the SFT-then-GRPO arm is not trained again: its row is the demo's, and the
    other arms are sized from the demo's timings (budget = its SFT + GRPO seconds)."""
    import reasontune.stages.demo as demo
    from reasontune.stages.compare_demo import run_compare
    from reasontune.config import override

    real = demo.demo_config

    def tiny(out_dir, quick=False, updates=None, recipe=None):
        return override(real(out_dir, quick=False), tiny_demo_updates(tiny_model_dir))

    monkeypatch.setattr(demo, "demo_config", tiny)
    stage = {"accuracy": 0.5, "format_rate": 1.0, "stop_rate": 1.0, "mean_working_lines": 1.5, "n": 2,
             "by_level": {"1": {"working_lines": 1.0}, "2": {"working_lines": 2.0}}}
    summary = {"before": {**stage, "accuracy": 0.0}, "after": stage, "ood": {"before": 0.0, "after": 0.25, "n": 2},
               "warmup_sft": {"steps": 4, "seconds": 0.5, "examples": 2}, "grpo_steps": 3, "timings": {"grpo": 9.0},
               "grpo": {"grpo_seconds": 1.5},
               "labels": {"worked_solutions": 26, "answers": 24, "sft_examples": 2},
               "settings": json.loads(json.dumps(tiny(str(tmp_path)).to_dict()))}  # the demo ran this recipe
    s = run_compare(str(tmp_path), demo_summary=summary)
    root = tmp_path / "compare"
    assert not (root / "sft_then_grpo").exists() and not (root / "base").exists()  # read, not trained again
    assert s["arms"]["sft_then_grpo"]["heldout_accuracy"] == 0.5 and s["arms"]["base"]["heldout_accuracy"] == 0.0
    assert s["arms"]["sft_then_grpo"]["ood_accuracy"] == 0.25 and s["arms"]["sft_then_grpo"]["stopped_by_budget"]
    assert s["budget_s"] == pytest.approx(2.0) and s["plan"]["grpo_steps"] == 4  # 2.0 s / (1.5 s / 3 steps)
    for arm in ("grpo_only", "sft_only"):
        assert (root / arm / "adapter" / "adapter_config.json").is_file()
        held = json.loads((root / arm / "evals" / "heldout" / "metrics.json").read_text())
        by_level = s["arms"][arm]["heldout_working_lines_by_level"]
        assert by_level and by_level == {str(k): v["working_lines"] for k, v in held["by_difficulty"].items()}, arm
    table = (root / "table.md").read_text()
    assert "sft_then_grpo (the demo's run)" in table and "L1 1.000 / L2 2.000" in table
    assert "| sft_then_grpo (the demo's run) | 26 / 24 |" in table and "| base | 0 / 0 |" in table


def test_the_demo_arm_counts_trainer_train_seconds_as_the_other_arms_do():
    """Issue 35, item 4: the demo read as the SFT-then-GRPO arm counts the seconds inside trainer.train() (train()'s
    grpo_seconds), as run_arm does, not the demo's GRPO stage timing (validation, prompt preparation, the trainer's
    build, the reward probe and the adapter's save as well)."""
    from reasontune.stages.compare_demo import rows_from_demo

    stage = {"accuracy": 0.5, "format_rate": 1.0, "stop_rate": 1.0, "mean_working_lines": 1.5, "n": 2, "by_level": {}}
    s = {"before": stage, "after": stage, "warmup_sft": {"steps": 4, "seconds": 0.5}, "grpo_steps": 3,
         "timings": {"grpo": 9.0}, "grpo": {"grpo_seconds": 1.5}, "settings": {"grpo": {"max_steps": 3}}}
    first = rows_from_demo(s)["sft_then_grpo"]
    assert first["stages"]["grpo"]["seconds"] == 1.5 and first["wall_seconds"] == 2.0
