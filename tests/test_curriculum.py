"""Adaptive curriculum: mixed-group statistics, the sampler's layout and weighting, and the wiring into
GRPO (curriculum.py)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from reasontune.config import ConfigError, FormatConfig, from_dict
from reasontune.engines.curriculum import CurriculumSampler, LevelStats, answer_checker, observe_groups


@pytest.mark.parametrize("answers, mixed", [
    ([True, False, False, False], 1.0),   # some right, some wrong: the group has answer signal
    ([False] * 4, 0.0),                   # all wrong: none
    ([True] * 4, 0.0),                    # all right: none
    ([True, True, True, False], 1.0),
])
def test_a_group_counts_as_mixed_only_when_answers_differ(answers, mixed):
    stats = LevelStats([1, 2], decay=0.0)  # decay 0: the rate is the last group's
    stats.observe(1, answers)
    assert stats.mixed[1] == mixed and stats.mixed[2] == 1.0  # an untried level keeps its prior


def test_weights_sum_to_one_follow_the_mixed_rate_and_respect_the_floor():
    stats = LevelStats([1, 2, 3, 4], floor=0.05, decay=0.0)
    for level, answers in [(1, [True, False]), (2, [True, False]), (3, [False, False]), (4, [False, False])]:
        stats.observe(level, answers)
    w = stats.weights()
    assert math.isclose(sum(w.values()), 1.0)
    assert w[1] == w[2] > 0.4 and w[3] == w[4] == pytest.approx(0.05)
    stats.observe(3, [True, False])  # level 3 starts to teach: it gains weight
    assert stats.weights()[3] > 0.3


def test_floor_above_one_over_levels_is_rejected():
    with pytest.raises(ValueError, match="floor"):
        LevelStats([1, 2, 3], floor=0.5)


def test_sampler_keeps_trls_repeat_layout_and_length():
    from trl.trainer.utils import RepeatSampler

    levels = [1, 2] * 10
    args = dict(mini_repeat_count=3, batch_size=4, repeat_count=2)
    s = CurriculumSampler(levels, LevelStats(levels, floor=0.1), seed=0, **args)
    out = list(s)
    assert len(out) == len(s) == len(RepeatSampler(levels, **args, seed=0))
    per_batch = 3 * 4
    for b in range(0, len(out), per_batch * 2):
        batch = out[b:b + per_batch]
        assert out[b + per_batch:b + 2 * per_batch] == batch  # repeat_count: the same generation batch again
        groups = [batch[i:i + 3] for i in range(0, per_batch, 3)]
        assert all(len(set(g)) == 1 for g in groups)  # each prompt num_generations times in a row


def test_sampler_draws_levels_by_weight_and_reads_them_lazily():
    levels = [1] * 100 + [2] * 100 + [3] * 100  # 300 indices: one pass of the sampler
    stats = LevelStats(levels, floor=0.05, decay=0.0)
    stats.observe(1, [True, False]), stats.observe(2, [False, False]), stats.observe(3, [False, False])
    sampler = CurriculumSampler(levels, stats, mini_repeat_count=1, batch_size=10, seed=0)
    it = iter(sampler)
    first = Counter(levels[next(it)] for _ in range(100))
    assert first[1] >= 75 and first[2] + first[3] >= 1  # level 1 dominates; the floor keeps the others
    stats.observe(1, [False, False]), stats.observe(3, [True, False])  # now only level 3 teaches
    later = Counter(levels[next(it)] for _ in range(200))
    assert later[3] >= 150


def test_sampler_is_reproducible_and_cycles_through_each_level():
    levels = [1] * 20 + [2] * 10
    make = lambda: CurriculumSampler(levels, LevelStats(levels, floor=0.2), mini_repeat_count=1,  # noqa: E731
                                     batch_size=3, seed=7)
    assert list(make()) == list(make())
    drawn = [i for i in make() if levels[i] == 2]
    assert len(drawn) >= 10 and sorted(drawn[:10]) == list(range(20, 30))  # each prompt once before repeats


def test_observe_groups_grades_like_evaluation():
    fmt = FormatConfig(reasoning_start="<think>", reasoning_end="</think>", solution_start="<answer>",
                       solution_end="</answer>")
    right, wrong = "<think>2+2=4</think><answer>4</answer>", "<think>2+2=5</think><answer>5</answer>"
    rows = [{"difficulty": 1, "answer": "4"}] * 2 + [{"difficulty": 2, "answer": "4"}] * 2
    stats = LevelStats([1, 2], decay=0.0)
    observe_groups(stats, rows, [right, wrong, wrong, wrong], 2, "difficulty", answer_checker(fmt))
    assert stats.mixed == {1: 1.0, 2: 0.0}


@pytest.mark.parametrize("grpo, match", [
    ({"curriculum": "sometimes"}, "grpo.curriculum"),
    ({"curriculum_floor": 0.0}, "grpo.curriculum_floor"),
])
def test_bad_curriculum_settings_are_config_errors(grpo, match):
    with pytest.raises(ConfigError, match=match):
        from_dict({"grpo": grpo})


def test_missing_level_column_fails_before_a_model_loads(tmp_path):
    """validate_run (train, --dry-run, demo) builds generator data without a model and checks the column."""
    from reasontune.runs.validate import validate_run

    cfg = from_dict({"grpo": {"curriculum": "adaptive", "curriculum_column": "level"},
                     "data": {"train_size": 8, "test_size": 2}, "output_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="'level' column.*curriculum_column"):
        validate_run(cfg)
    validate_run(from_dict({**{"grpo": {"curriculum": "adaptive"}}, "data": {"train_size": 8, "test_size": 2},
                            "output_dir": str(tmp_path / "run")}))  # 'difficulty' is there: no error


def test_grpo_with_adaptive_curriculum_trains_and_logs_level_weights(tmp_path, tiny_model_dir):
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    cfg = from_dict({"model": {"name": str(tiny_model_dir)}, "lora": {"r": 4, "alpha": 8},
                     "data": {"train_size": 16, "test_size": 4, "difficulty": [1, 2]},
                     "grpo": {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 12,
                              "max_steps": 2, "learning_rate": 1e-2, "save_steps": 1000, "curriculum": "adaptive"},
                     "output_dir": str(tmp_path / "run"), "seed": 0})
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    out = train(cfg, model=model, tokenizer=tok)
    assert out["summary"]["global_step"] == 2 and math.isfinite(out["summary"]["train_loss"])
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if r]
    weights = {k: v for k, v in rows[-1].items() if k.startswith("curriculum/weight_")}
    assert set(weights) == {"curriculum/weight_1", "curriculum/weight_2"}
    assert math.isclose(sum(float(v) for v in weights.values()), 1.0, rel_tol=1e-3)
