"""Expert iteration (stages/expert.py): it keeps only completions whose answer verifies, distinct and capped per
problem, trains on them with SFT, and writes a run folder like GRPO's (metrics per round, labels, adapter,
a checkpoint per round that --resume continues from)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from reasontune.config import ConfigError, FormatConfig, from_dict, override
from reasontune.engines.generation import Generation

from test_trainer import lora_state, tiny_cfg

FMT = FormatConfig(reasoning_start="<think>", reasoning_end="</think>", solution_start="<answer>",
                   solution_end="</answer>")


def done(working: str, answer: str, tail: str = "", fmt: FormatConfig = FMT) -> Generation:
    """A completion in the format (the prompt opened the working), with `tail` after the answer block."""
    return Generation(text=f"{working}\n{fmt.reasoning_end}\n{fmt.solution_start}{answer}{fmt.solution_end}{tail}",
                      num_tokens=10)


# (samples of one problem whose answer is 22, the targets kept with a cap of 2, counts that differ from 0)
CASES = [
    ([done("14 + 8 = 22", "22"), done("14 + 8 = 22", "21")], ["14 + 8 = 22\n</think>\n<answer>22</answer>"],
     {"right": 1, "kept": 1}),
    ([done("14 + 8 = 22", "22"), done("14  +  8 = 22", "22")],  # the same completion up to white space
     ["14 + 8 = 22\n</think>\n<answer>22</answer>"], {"right": 2, "kept": 1, "duplicates": 1}),
    ([done("14 + 8 = 22", "22"), done("8 + 14 = 22", "22"), done("22 = 22", "22")],  # the cap keeps the first two
     ["14 + 8 = 22\n</think>\n<answer>22</answer>", "8 + 14 = 22\n</think>\n<answer>22</answer>"],
     {"right": 3, "kept": 2, "capped": 1}),
    ([done("14 + 8 = 22", "22", tail=" and more text")],  # cut after the closing marker: a clean target
     ["14 + 8 = 22\n</think>\n<answer>22</answer>"], {"right": 1, "kept": 1}),
    ([Generation(text="14 + 8 = 22\n<answer>22</answer>", num_tokens=8)], [],  # right, but the working never closed
     {"right": 1, "unformatted": 1}),
    ([Generation(text="14 + 8 = 22\n</think>\n<answer>22", num_tokens=8, truncated=True)], [], {}),  # cut off
    ([done("", "twenty-two"), done("14 - 8 = 6", "6")], [], {}),
]


@pytest.mark.parametrize("samples, targets, counts", CASES)
def test_only_verified_distinct_capped_completions_are_kept(samples, targets, counts):
    from reasontune.stages.expert import select_verified

    kept, n = select_verified([{"question": "14 and 8 more?", "answer": "22"}], [samples], FMT, keep_per_problem=2)
    assert [t for _, t in kept] == targets
    assert all(i == 0 for i, _ in kept)
    expected = {"samples": len(samples), "right": 0, "problems_solved": int(counts.get("right", 0) > 0), "kept": 0,
                "duplicates": 0, "capped": 0, "unformatted": 0, **counts}
    assert n == expected


def test_problems_are_taken_in_turn_wrapping_round_and_resume_where_they_stopped():
    from reasontune.stages.expert import Problems

    p = Problems(5, seed=0)
    first, second = p.take(3), p.take(3)
    assert sorted(first + second[:2]) == [0, 1, 2, 3, 4] and second[2] == first[0]  # every problem before a repeat
    again = Problems(5, seed=0, cursor=3, seen=first)
    assert again.take(3) == second and again.seen == set(range(5))
    assert len(Problems(2, seed=0).take(8)) == 2  # a round never holds one problem twice


class Scripted:
    """An engine that writes, for every problem, its right answer twice (a duplicate) and a wrong one."""

    name = "scripted"

    def __init__(self, rows, fmt):
        self.rows, self.fmt = rows, fmt

    def generate(self, prompts, num_return_sequences=1, **kw):
        out = []
        for p in prompts:
            answer = next(r["answer"] for r in self.rows if r["question"] in p)
            right = done(f"{answer} = {answer}", answer, tail=">", fmt=self.fmt)
            wrong = done("1 + 1 = 2", str(int(answer) + 1), fmt=self.fmt)
            out.append(([right, right, wrong] * num_return_sequences)[:num_return_sequences])
        return out

    def close(self):
        pass


def ei_cfg(tmp_path, model_dir, **ei):
    cfg = tiny_cfg(tmp_path, model_dir, max_completion_length=12)
    return override(cfg, {"method": "expert_iteration", "expert_iteration.rounds": 2,
                          "expert_iteration.problems_per_round": 4, "expert_iteration.samples": 3,
                          "expert_iteration.learning_rate": 1e-2, "expert_iteration.batch_size": 2,
                          **{f"expert_iteration.{k}": v for k, v in ei.items()}})


@pytest.fixture
def scripted(monkeypatch):
    """Samples from `Scripted`; every SFT round's rows recorded."""
    from reasontune.stages import expert, sft

    trained = []
    real = sft.sft_train

    def recording(cfg, model, tok, data, out, **kw):
        trained.append(list(data))
        return real(cfg, model, tok, data, out, **kw)

    monkeypatch.setattr(sft, "sft_train", recording)
    rows = []
    monkeypatch.setattr(expert, "open_sampler", lambda cfg, model, tok, run: Scripted(rows, cfg.format))
    return rows, trained


def test_expert_iteration_trains_on_verified_completions_and_writes_the_run(tmp_path, tiny_model_dir, one_thread,
                                                                           scripted):
    from reasontune.data import build_datasets
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    rows, trained = scripted
    cfg = ei_cfg(tmp_path, tiny_model_dir)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    data = build_datasets(cfg.data, cfg.format, tokenizer=tok)
    rows.extend(data["train"])
    before = lora_state(model)
    summary = train(cfg, model=model, tokenizer=tok, datasets=data)["summary"]
    run = tmp_path / "run"
    # two rounds of 4 problems x 3 samples: each problem's right answer kept once (its copy is a duplicate)
    assert len(trained) == 2 and all(len(t) == 4 for t in trained)
    answers = {r["question"]: r["answer"] for r in rows}
    for t in (row for rnd in trained for row in rnd):
        question = next(q for q in answers if q in t["prompt"])
        fmt = cfg.format
        assert f"{fmt.solution_start}{answers[question]}{fmt.solution_end}" in t["completion"]  # never the wrong one
        assert t["completion"].endswith(f"{fmt.solution_end}{tok.eos_token}")  # cut after the marker, then EOS
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2] and {m["stage"] for m in metrics} == {"expert_iteration"}
    for m in metrics:
        assert (m["kept"], m["duplicates"], m["problems_solved"], m["samples"]) == (4, 4, 4, 12)
        assert m["pass_rate"] == pytest.approx(8 / 12) and math.isfinite(m["loss"]) and m["sft_steps"] == 2
    assert summary["rounds"] == 2 and math.isfinite(summary["train_loss"])
    assert any(not torch.equal(before[n], p) for n, p in lora_state(model).items()), "no LoRA parameter changed"
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2"]  # one is enough to restart
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "done" and status["method"] == "expert_iteration"
    labels = status["labels"]  # 8 distinct problems' answers read to verify; no worked solution anywhere
    assert (labels["answers"], labels["worked_solutions"], labels["sft_examples"]) == (8, 0, 0)
    assert "worked" not in trained[0][0] and all("worked" not in r for rnd in trained for r in rnd)

    # --resume after the last finished round: round 3 takes the next problems, from the saved weights
    resumed = train(override(cfg, {"resume": True, "expert_iteration.rounds": 3}), model=model, tokenizer=tok,
                    datasets=data)["summary"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3] and resumed["rounds"] == 3
    assert resumed["labels"]["answers"] == 12 and metrics[-1]["problems_seen"] == 12


def test_expert_iteration_samples_with_our_decode_and_keeps_nothing_unverified(tmp_path, tiny_model_dir, one_thread):
    """The real sampler on a random model: nothing verifies, so nothing trains, and the run still ends well."""
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages import expert
    from reasontune.stages.train import train

    cfg = ei_cfg(tmp_path, tiny_model_dir, rounds=1, problems_per_round=2, samples=2)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    engine = expert.open_sampler(cfg, model, tok, run=None)
    assert engine.name == "transformers"
    before = lora_state(model)
    train(cfg, model=model, tokenizer=tok)
    (m,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert (m["samples"], m["kept"], m["sft_steps"], m["loss"]) == (4, 0, 0, None)
    assert all(torch.equal(before[n], p) for n, p in lora_state(model).items())


@pytest.mark.parametrize("updates, env, match", [
    ({"method": "rft"}, {}, r"method='rft' is invalid: use one of grpo, expert_iteration"),
    ({"method": "expert_iteration", "grpo.curriculum": "adaptive"}, {}, r"grpo.curriculum='adaptive' is GRPO's"),
    ({"method": "expert_iteration"}, {"WORLD_SIZE": "2"}, r"runs in one process, but WORLD_SIZE=2"),
    ({"expert_iteration.keep_per_problem": 0}, {}, r"expert_iteration.keep_per_problem=0 is invalid"),
])
def test_expert_iteration_settings_are_checked_before_a_model_loads(tmp_path, monkeypatch, updates, env, match):
    from reasontune.runs.validate import validate_run

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=match):
        validate_run(override(from_dict({"data": {"train_size": 8, "test_size": 4},
                                         "output_dir": str(tmp_path / "run")}), updates))
