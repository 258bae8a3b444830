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
    from reasontune.demo import run_demo

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


def test_demo_report_and_adapter(quick_demo):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from reasontune.models import ensure_embedded

    out, _ = quick_demo
    md = (out / "report.md").read_text()
    assert "| before |" in md and "| after |" in md
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
