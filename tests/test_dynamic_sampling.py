"""DAPO dynamic sampling (engines/dynamic.py, grpo.dynamic_sampling): the batch trained on is refilled with groups
whose rewards differ, no group twice, each group's advantages its own; the bound and the time budget end the
refills; the option off changes nothing; bad settings fail before a model loads."""

from __future__ import annotations

import json
import math
import time
import zlib
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reasontune.config import ConfigError, from_dict
from reasontune.engines import dynamic
from reasontune.engines.dynamic import DynamicSampling, assemble, earliest_deadline, group_signal

from test_trainer import lora_state

GROUP = 2  # num_generations
GROUPS = 4  # groups a step: 8 completions


# ---- rewards the tiny-model runs score with (dotted paths: test_dynamic_sampling:NAME) -----------------------
def _text(c) -> str:
    return c if isinstance(c, str) else c[-1]["content"]


def half_constant(completions, prompts=None, **kw):
    """1.0 for every completion of about half the prompts (an all-equal group); elsewhere a value of the text (a
    random model's completions differ: a mixed group)."""
    return [1.0 if zlib.crc32(p.encode()) % 2 else zlib.crc32(_text(c).encode()) / 2**32
            for p, c in zip(prompts, completions)]


def always_mixed(completions, **kw):
    return [zlib.crc32(_text(c).encode()) / 2**32 for c in completions]


def constant(completions, **kw):
    return [1.0] * len(completions)


def _cfg(tmp_path, model_dir, reward, **grpo):
    g = {"per_device_train_batch_size": GROUP * GROUPS, "num_generations": GROUP, "max_completion_length": 6,
         "max_steps": 2, "learning_rate": 1e-2, "save_steps": 1000, "dynamic_sampling": True,
         "dynamic_sampling_max_rounds": 3, **grpo}
    return from_dict({"model": {"name": str(model_dir)}, "lora": {"r": 4, "alpha": 8},
                      "data": {"train_size": 32, "test_size": 4}, "grpo": g,
                      "rewards": {"names": [f"test_dynamic_sampling:{reward}"]},
                      "output_dir": str(tmp_path / "run"), "seed": 0})


def _train(cfg, spy=None):
    """(summary, metrics rows, LoRA before, LoRA after, spy records); `spy` records every round TRL scores (its
    output and rewards) and every batch dynamic sampling returns."""
    from reasontune.engines.trainer import ReasonTuneGRPOTrainer
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    rec = {"rounds": [], "rewards": [], "batches": [], "firsts": []}  # firsts: each step's first round
    with pytest.MonkeyPatch.context() as mp:
        real_score, real_rewards, real_fill = (ReasonTuneGRPOTrainer._generate_and_score_completions,
                                               ReasonTuneGRPOTrainer._calculate_rewards, DynamicSampling.fill)

        def score(self, inputs):
            out = real_score(self, inputs)
            rec["rounds"].append(out)
            return out

        def rewards(self, *a, **kw):
            out = real_rewards(self, *a, **kw)
            rec["rewards"].append(out.clone())
            return out

        def fill(self, inputs, score):
            rec["firsts"].append(len(rec["rounds"]))
            out = real_fill(self, inputs, score)
            rec["batches"].append(out)
            return out

        mp.setattr(ReasonTuneGRPOTrainer, "_generate_and_score_completions", score)
        mp.setattr(ReasonTuneGRPOTrainer, "_calculate_rewards", rewards)
        mp.setattr(DynamicSampling, "fill", fill)
        torch.manual_seed(cfg.seed)  # the LoRA init draws from the global RNG
        model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
        before = lora_state(model)
        out = train(cfg, model=model, tokenizer=tok)
    rows = [json.loads(r) for r in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines() if r]
    return out["summary"], rows, before, lora_state(model), rec


def _groups(batch):
    """[(prompt ids, [completion ids per row], advantages (n,))] of a scored batch, padding removed."""
    out = []
    for g in range(batch["advantages"].size(0) // GROUP):
        rows = range(g * GROUP, (g + 1) * GROUP)
        prompt = tuple(batch["prompt_ids"][rows[0]][batch["prompt_mask"][rows[0]].bool()].tolist())
        comps = [tuple(batch["completion_ids"][r][batch["completion_mask"][r].bool()].tolist()) for r in rows]
        out.append((prompt, comps, batch["advantages"][g * GROUP:(g + 1) * GROUP]))
    return out


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, tiny_model_dir, one_thread):
    return _train(_cfg(tmp_path_factory.mktemp("dyn"), tiny_model_dir, "half_constant"))


def test_the_batch_is_refilled_with_mixed_groups_none_twice(mixed_run):
    summary, rows, _, _, rec = mixed_run
    assert summary["global_step"] == 2 and len(rec["batches"]) == 2
    assert sum(r["dynamic/refill_rounds"] for r in rows) > 0, "no step refilled: the test checks nothing"
    for r in rows:
        assert r["dynamic/groups_generated"] == GROUPS * (1 + r["dynamic/refill_rounds"])
        assert r["dynamic/groups_kept"] == GROUPS  # half the prompts are mixed and 3 rounds find 4 of them
        assert r["time/refill"] > 0 if r["dynamic/refill_rounds"] else r["time/refill"] == 0
        assert r["rows/skipped"] == 0  # every group trained on has signal
    for batch in rec["batches"]:
        groups = _groups(batch)
        assert len(groups) == GROUPS
        assert all((adv != 0).any() for _, _, adv in groups)
        assert len({p for p, _, _ in groups}) == GROUPS  # no prompt, so no group, twice
        assert batch["num_items_in_batch"] == batch["completion_mask"].sum()  # DAPO's normaliser: these rows


def test_a_kept_group_has_the_advantages_of_its_own_rewards(mixed_run):
    from trl.trainer.utils import nanstd

    _, _, _, _, rec = mixed_run
    scored = {}  # (prompt, completions) -> the group's rewards, from every round TRL scored
    for out, rewards in zip(rec["rounds"], rec["rewards"]):
        for g, (prompt, comps, _) in enumerate(_groups(out)):
            scored[(prompt, tuple(comps))] = rewards[g * GROUP:(g + 1) * GROUP, 0]
    refilled = 0
    for batch, first in zip(rec["batches"], rec["firsts"]):
        firsts = {(p, tuple(c)) for p, c, _ in _groups(rec["rounds"][first])}
        for prompt, comps, adv in _groups(batch):
            r = scored[(prompt, tuple(comps))]
            alone = (r - torch.nanmean(r)) / (nanstd(r) + 1e-4)  # TRL's group advantage on this group only
            assert torch.equal(adv, alone.to(adv.dtype)), (adv, alone)
            refilled += (prompt, tuple(comps)) not in firsts
    assert refilled > 0, "no group came from a refill round"


def test_loss_finite_and_lora_changes_with_the_option_on(mixed_run):
    summary, _, before, after, _ = mixed_run
    assert math.isfinite(summary["train_loss"])
    assert [n for n in before if not torch.equal(before[n], after[n])], "no LoRA parameter changed"


def test_the_bound_ends_the_refills_and_the_step_still_trains(tmp_path, tiny_model_dir, one_thread):
    summary, rows, before, after, rec = _train(_cfg(tmp_path, tiny_model_dir, "constant",
                                                    dynamic_sampling_max_rounds=2, skip_zero_variance=False))
    assert summary["global_step"] == 2 and math.isfinite(summary["train_loss"])
    for r in rows:
        assert (r["dynamic/refill_rounds"], r["dynamic/groups_generated"], r["dynamic/groups_kept"]) == \
            (2, 3 * GROUPS, 0)
    assert len(rec["rounds"]) == 2 * 3
    for batch, first in zip(rec["batches"], rec["rounds"][::3]):
        assert batch is first  # nothing found: the first batch as TRL scored it


def test_off_or_with_nothing_to_refill_changes_nothing(tmp_path, tiny_model_dir, one_thread):
    """Every group mixed: the option on trains the very batches, so the same LoRA weights, as the option off; off,
    nothing of it is attached or logged."""
    # warmup_ratio 0: with one step and a warm-up, the step's learning rate is 0 and "a step that moved it" fails
    kw = dict(max_steps=1, warmup_ratio=0.0)
    _, rows_on, before_on, on, rec = _train(_cfg(tmp_path / "on", tiny_model_dir, "always_mixed", **kw))
    _, rows_off, before_off, off, rec_off = _train(_cfg(tmp_path / "off", tiny_model_dir, "always_mixed", **kw,
                                                        dynamic_sampling=False))
    assert rows_on[0]["dynamic/refill_rounds"] == 0 and rec["batches"][0] is rec["rounds"][0]
    assert not rec_off["batches"] and not any(k.startswith("dynamic/") or k == "time/refill" for k in rows_off[0])
    assert all(torch.equal(before_on[n], before_off[n]) for n in on)  # the same start
    assert not all(torch.equal(before_on[n], on[n]) for n in on)  # and a step that moved it
    assert all(torch.equal(on[n], off[n]) for n in on)


# ---- the refill loop on a stand-in trainer: bound, deadline, prompts -------------------------------------------
class _Trainer:
    """What DynamicSampling reads of a trainer; a round takes `round_s` on the fake clock and scores with `reward`."""

    def __init__(self, clock, round_s, reward, callbacks=(), prompts=40):
        self.clock, self.round_s, self.reward = clock, round_s, reward
        self.num_generations, self.curriculum, self.rounds = GROUP, None, []
        self.callback_handler = SimpleNamespace(callbacks=list(callbacks))
        self.model, self.args = SimpleNamespace(training=True), SimpleNamespace(seed=0)
        self.train_dataset = [{"prompt": f"p{i}"} for i in range(prompts)]
        self.accelerator, self._tokenizer = SimpleNamespace(num_processes=1), SimpleNamespace(pad_token_id=0)
        self.reward_weights, self._metrics, self.step_timings = torch.ones(1), {"train": defaultdict(list)}, \
            defaultdict(float)

    def _calculate_rewards(self, inputs, prompts, completions, ids):
        return torch.tensor([[self.reward(p, i)] for i, p in enumerate(prompts)])

    def _generate_and_score_completions(self, inputs):
        self.clock[0] += self.round_s
        prompts = [r["prompt"] for r in inputs]
        self.rounds.append(prompts)
        self._calculate_rewards(inputs, prompts, None, None)
        b = len(inputs)
        ids = torch.tensor([[int(p[1:]) + 1] for p in prompts])  # (B, 1): the prompt's number
        return {"prompt_ids": ids, "prompt_mask": torch.ones(b, 1, dtype=torch.long), "completion_ids": ids,
                "completion_mask": torch.ones(b, 1, dtype=torch.long), "advantages": torch.zeros(b),
                "num_items_in_batch": torch.tensor(b)}


def _constant(prompt, i):
    return 1.0


def _mixed(prompt, i):
    return float(i % 2)


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])  # dynamic.py's and TimeBudget's clock
    return now


def _batch(start):
    return [{"prompt": f"p{i}"} for i in range(start, start + GROUPS) for _ in range(GROUP)]


def test_a_refill_round_never_starts_past_the_budget(clock):
    """Budget 50 s; a round takes 10 s, training 5 s. Step 1 has signal (15 s). Step 2 finds none: it refills while
    a round ends before the deadline (25 -> 35 -> 45) and trains: it ends at 50, not at 80 (5 rounds, the bound)."""
    from reasontune.runs.callbacks import TimeBudget
    from transformers import TrainerControl, TrainerState

    budget, control, state = TimeBudget(seconds=50.0), TrainerControl(), TrainerState()
    budget.on_train_begin(None, state, control)
    t = _Trainer(clock, 10.0, _mixed, callbacks=[budget])
    ds = DynamicSampling(max_rounds=5).attach(t)
    for step, reward in enumerate((_mixed, _constant)):
        t.reward = reward
        t._generate_and_score_completions(_batch(step * GROUPS))
        clock[0] += 5.0  # forward, backward, optimizer
        budget.on_step_end(None, state, control)
    assert ds.last["dynamic/refill_rounds"] == 2 and control.should_training_stop
    assert clock[0] - budget.deadline <= 5.0  # past it by at most the training part: less than a step (15 s)
    t2 = _Trainer(clock, 10.0, _constant)  # no budget: the bound ends the refills
    ds2 = DynamicSampling(max_rounds=5).attach(t2)
    t2._generate_and_score_completions(_batch(0))
    assert ds2.last["dynamic/refill_rounds"] == 5


def test_refill_prompts_are_new_to_the_step_and_run_out(clock):
    t = _Trainer(clock, 1.0, _constant, prompts=GROUPS * 3)  # room for two refill rounds of new prompts
    ds = DynamicSampling(max_rounds=5).attach(t)
    t._generate_and_score_completions(_batch(0))
    seen = [p for r in t.rounds for p in r[::GROUP]]
    assert len(seen) == len(set(seen)) == GROUPS * 3  # each prompt once, then no more rounds
    assert ds.last["dynamic/refill_rounds"] == 2
    assert all(r[i] == r[i + 1] for r in t.rounds for i in range(0, len(r), GROUP))  # groups of GROUP rows


def test_assemble_pads_joins_and_recounts():
    def batch(ids, adv, width):
        b = len(ids)
        comp = torch.zeros(b, width, dtype=torch.long)
        mask = torch.zeros(b, width, dtype=torch.long)
        for r, n in enumerate(ids):
            comp[r, :n], mask[r, :n] = torch.arange(1, n + 1), 1
        return {"prompt_ids": torch.tensor([[5, 6]] * b), "prompt_mask": torch.ones(b, 2, dtype=torch.long),
                "completion_ids": comp, "completion_mask": mask, "advantages": torch.tensor(adv),
                "num_items_in_batch": mask.sum()}

    first = batch([1, 2, 1, 1], [0.5, -0.5, 0.0, 0.0], 2)  # groups: signal, none
    second = batch([4, 3, 1, 1], [1.0, -1.0, 0.0, 0.0], 4)  # groups: signal, none
    out, kept = assemble([(first, torch.tensor([True, False])), (second, torch.tensor([True, False]))], 2, GROUP, 0)
    assert kept == 2 and out["advantages"].tolist() == [0.5, -0.5, 1.0, -1.0]
    assert out["completion_ids"].tolist() == [[1, 0, 0, 0], [1, 2, 0, 0], [1, 2, 3, 4], [1, 2, 3, 0]]
    assert int(out["num_items_in_batch"]) == 1 + 2 + 4 + 3
    # too few found: the first batch's all-equal groups fill the batch, none of its groups twice
    a, b = batch([1, 2, 1, 1, 3, 3], [0.5, -0.5, 0.0, 0.0, 0.0, 0.0], 3), batch([2, 1, 1, 1, 1, 1], [1.0, -1.0] +
                                                                                   [0.0] * 4, 2)
    out, kept = assemble([(a, torch.tensor([True, False, False])), (b, torch.tensor([True, False, False]))], 3,
                         GROUP, 0)
    assert kept == 2 and out["advantages"].tolist() == [0.5, -0.5, 0.0, 0.0, 1.0, -1.0]
    # the third group's 3-token rows are not taken: the columns no kept row uses are dropped
    assert out["completion_ids"].tolist() == [[1, 0], [1, 2], [1, 0], [1, 0], [1, 2], [1, 0]]
    # nothing found later: the first batch itself, its all-equal group filling it
    out, kept = assemble([(first, torch.tensor([True, False])), (second, torch.tensor([False, False]))], 2, GROUP, 0)
    assert out is first and kept == 1


def test_group_signal_reads_the_weighted_rewards():
    nan = float("nan")
    per_func = torch.tensor([[1.0, 0.0], [1.0, 0.0],  # equal
                             [1.0, 0.0], [0.0, 1.0],  # differ, but not at weight 0 for the second function
                             [1.0, nan], [0.0, nan],  # differ
                             [1.0, 0.0], [nan, nan]])  # one scored row: no signal
    assert group_signal(per_func, torch.tensor([1.0, 0.0]), 2).tolist() == [False, True, True, False]
    assert group_signal(per_func, torch.tensor([1.0, 1.0]), 2).tolist() == [False, False, True, False]


def test_the_time_budget_deadline_is_found():
    from reasontune.runs.callbacks import TimeBudget

    assert earliest_deadline([TimeBudget(deadline=30.0), object(), TimeBudget(deadline=20.0)]) == 20.0
    assert earliest_deadline([TimeBudget(seconds=10.0)]) is None  # set when training begins


# ---- validation: before a model loads, and what only the trainer can see ---------------------------------------
@pytest.mark.parametrize("grpo, match", [
    ({"dynamic_sampling_max_rounds": 0}, "use 1 or more"),
    ({"use_vllm": True}, "grpo.use_vllm: false"),
    ({"extra": {"scale_rewards": "batch"}}, "scale_rewards='batch'"),
    ({"extra": {"multi_objective_aggregation": "normalize_then_sum"}}, "normalize_then_sum"),
    ({"num_generations": 1, "per_device_train_batch_size": 1}, "use 2 or more"),
])
def test_config_refuses_what_cannot_work(grpo, match):
    with pytest.raises(ConfigError, match=match):
        from_dict({"grpo": {"dynamic_sampling": True, **grpo}})


def test_config_refuses_several_processes_and_unsloth(monkeypatch):
    from reasontune import models
    from reasontune.runs.validate import check_dynamic_sampling

    cfg = from_dict({"grpo": {"dynamic_sampling": True}})
    cfg.grpo.check_batch(1)
    with pytest.raises(ConfigError, match="one process"):
        cfg.grpo.check_batch(2)
    check_dynamic_sampling(cfg)  # this CPU: transformers
    monkeypatch.setattr(models, "pick_backend", lambda m: ("unsloth", "CUDA device and unsloth imports"))
    with pytest.raises(ConfigError, match="model.backend: transformers"):
        check_dynamic_sampling(cfg)
    check_dynamic_sampling(from_dict({"grpo": {"dynamic_sampling": False}}))  # off: no check


@pytest.mark.parametrize("attrs, match", [
    ({"under_unsloth": True}, "Unsloth"), ({"use_vllm": True}, "vLLM"),
    ({"accelerator": SimpleNamespace(num_processes=2)}, "2 processes"), ({"tools": [print]}, "tools"),
    ({"scale_rewards": "batch"}, "whole batch"), ({"train_dataset": iter([])}, "not indexable"),
])
def test_the_trainer_refuses_what_the_config_cannot_see(attrs, match, clock):
    t = _Trainer(clock, 1.0, _mixed)
    vars(t).update(attrs)
    with pytest.raises(ConfigError, match=match):
        DynamicSampling(2).attach(t)


def test_breakdown_reports_the_refill_time():
    from reasontune.engines.steptime import breakdown

    assert breakdown({"refill": 2.5})["time/refill"] == 2.5
    assert "time/refill" not in breakdown({"generation": 1.0})
