"""The real SmolLM2 path, end to end: `reasontune demo --quick` on the embedded model.

A smoke test of the plumbing (a few problems, two GRPO steps), not of the result: the wheel comes
from PyPI, the model is converted once and cached, nothing touches a model hub."""

from __future__ import annotations

import json

import pytest

from reasontune.config import FormatConfig
from reasontune.rewards import grade

pytestmark = pytest.mark.slow  # the real SmolLM2, converted and run for minutes


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory, smol_dir):
    from reasontune.stages.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out_dir=str(out), quick=True)
    return out, summary


def test_demo_writes_metrics_for_each_stage(quick_demo):
    out, summary = quick_demo
    m = json.loads((out / "metrics.json").read_text())
    fmt = FormatConfig(**m["settings"]["format"])
    for stage in ("before", "warmup", "after"):
        assert set(m[stage]) >= {"accuracy", "format_rate", "mean_length"}
        recs = [json.loads(x) for x in (out / "evals" / stage / "completions.jsonl").read_text().splitlines()]
        greedy = [r for r in recs if r["kind"] == "greedy"]
        assert m[stage]["accuracy"] == sum(r["correct"] for r in greedy) / len(greedy)  # the stage's own records
        for r in greedy:  # each graded by the shared definition of a right answer
            assert r["correct"] == grade(r["completion"], r["answer"], fmt)[1]
    assert m["wall_seconds"] > 0 and m["settings"]["model"]["name"] == "smollm2-135m"
    assert m["grpo"]["global_step"] == 2
    for stage in ("before", "warmup", "after"):  # working lines per answer, overall and by level
        assert "mean_working_lines" in m[stage] and m[stage]["by_level"]
        assert all("working_lines" in v for v in m[stage]["by_level"].values())
    assert m["warmup"]["k"] == 8 and all("pass_at_k" in v for v in m["warmup"]["by_level"].values())
    assert m["ood"]["difficulty"] == [5] and set(m["ood"]) >= {"before", "warmup", "after"}
    # the OOD evals live apart: the report reads the last stage under evals/ as the demo's result
    assert sorted(p.name for p in (out / "evals").iterdir()) == ["after", "before", "warmup"]
    assert sorted(p.name for p in (out / "evals_ood").iterdir()) == ["after", "before", "warmup"]
    assert sorted(p.name for p in (out / "evals_phrased").iterdir()) == ["after", "before", "warmup"]
    p = m["phrased_otherwise"]  # the transfer set, 8 of its problems with --quick, by kind of phrasing
    assert p["n"] == 8 and set(p) >= {"before", "warmup", "after", "by_phrasing", "by_level"} and p["by_phrasing"]["after"]
    assert m["labels"]["sft_examples"] == 8 and m["labels"]["answers"] == m["labels"]["grpo_problems"] > 0
    assert set(m["turned"]) == {"fixed", "fixed_within_warmup_samples", "fixed_among_sampled_problems",
                                "sampled_problems", "lost"}


def test_the_demo_is_the_compare_arm_it_calibrates(quick_demo):
    """`demo --compare` reads the demo's metrics as its SFT-then-GRPO arm and base row: the figures are the
    demo's own stages, and the budget the other arms get is the demo's SFT plus GRPO seconds."""
    from reasontune.stages.compare_demo import rows_from_demo

    out, _ = quick_demo
    m = json.loads((out / "metrics.json").read_text())
    assert m["warmup_sft"]["steps"] >= 1 and m["warmup_sft"]["seconds"] > 0
    rows = rows_from_demo(m)
    first = rows["sft_then_grpo"]
    assert first["heldout_accuracy"] == m["after"]["accuracy"] and rows["base"]["heldout_accuracy"] == m["before"]["accuracy"]
    assert first["ood_accuracy"] == m["ood"]["after"]
    assert first["wall_seconds"] == pytest.approx(m["warmup_sft"]["seconds"] + m["grpo"]["grpo_seconds"])
    assert m["grpo"]["grpo_seconds"] < m["timings"]["grpo"]  # trainer.train() only, as the other arms count
    assert first["stages"]["grpo"]["steps"] == 2 and set(first["heldout_working_lines_by_level"]) == set(m["after"]["by_level"])


def test_demo_report_and_adapter(quick_demo):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from reasontune.models import ensure_embedded

    out, _ = quick_demo
    md = (out / "report.md").read_text()
    assert "| before |" in md and "| after |" in md
    assert "warm-up pass@8" in md and "Out of distribution (difficulty [5]" in md
    assert "Phrased otherwise (8 problems" in md and "The tuned model learned from" in md
    assert (out / "report.html").is_file()
    base = AutoModelForCausalLM.from_pretrained(ensure_embedded())
    model = PeftModel.from_pretrained(base, out / "adapter")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) > 0 for p in lora_b), "adapter is all zeros"
    fresh = AutoModelForCausalLM.from_pretrained(ensure_embedded())
    warm = PeftModel.from_pretrained(fresh, out / "warmup" / "adapter")
    warm_b = dict((n, p) for n, p in warm.named_parameters() if "lora_B" in n)
    assert any(torch.count_nonzero(p) > 0 for p in warm_b.values()), "warm-up adapter is all zeros"
    after_b = dict((n, p) for n, p in model.named_parameters() if "lora_B" in n)
    assert any(not torch.equal(warm_b[n], after_b[n]) for n in warm_b), "GRPO left the warm-up adapter as it was"


def test_turned_into_greedy_counts_problems_fixed_within_the_warmups_samples(tmp_path):
    """Fixed: wrong greedily after the warm-up, right after GRPO; within the samples: some warm-up sample was right."""
    from reasontune.stages.demo import turned_into_greedy

    def write(stage, recs):
        (tmp_path / "evals" / stage).mkdir(parents=True)
        (tmp_path / "evals" / stage / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    g = lambda i, ok, kind="greedy": {"index": i, "kind": kind, "correct": ok}  # noqa: E731
    # problems 0, 1, 3 sampled (the first ones: eval.sample_limit), 4 only greedily
    write("warmup", [g(0, False), g(1, False), g(2, True), g(3, False), g(4, False),
                     g(0, True, "sample"), g(0, False, "sample"), g(1, False, "sample"), g(3, False, "sample")])
    write("after", [g(0, True), g(1, True), g(2, False), g(3, False), g(4, True)])
    assert turned_into_greedy(tmp_path) == {"fixed": 3, "fixed_within_warmup_samples": 1,
                                            "fixed_among_sampled_problems": 2, "sampled_problems": 3, "lost": 1}


def test_the_demo_seed_also_draws_the_data():
    """--set seed=N repeats the demo on other problems, not only with another LoRA init and other samples."""
    from reasontune.stages.demo import demo_config

    assert demo_config("o").seed == demo_config("o").data.seed == 0
    assert demo_config("o", updates={"seed": 2}).data.seed == 2
    assert demo_config("o", updates={"seed": 2, "data.seed": 7}).data.seed == 7


def test_compare_only_reads_the_finished_demo_and_refuses_other_settings(quick_demo, tmp_path, capsys):
    """`demo --compare-only` takes the demo in --out as its SFT-then-GRPO arm: the same settings pass the check,
    another --set is refused naming the key, and a folder without a finished demo names the command to run,
    each before any model loads or the compare folder is made."""
    from reasontune import cli
    from reasontune.stages.compare_demo import check_same_settings, finished_demo
    from reasontune.stages.demo import demo_config

    out, _ = quick_demo
    m = finished_demo(out)
    check_same_settings(m["settings"], demo_config(str(out), quick=True))  # the demo's own recipe: no error
    assert cli.main(["demo", "--quick", "--compare-only", "--out", str(out), "--set", "grpo.learning_rate=1e-5"]) == 2
    err = capsys.readouterr().err
    assert "grpo.learning_rate" in err and "same --set" in err, err
    assert cli.main(["demo", "--compare-only", "--out", str(out)]) == 2  # the demo ran --quick: other settings
    assert "ran other settings" in capsys.readouterr().err
    assert not (out / "compare").exists()
    assert cli.main(["demo", "--compare-only", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "reasontune demo --out" in err and "metrics.json" in err, err
    assert not (tmp_path / "none").exists()
