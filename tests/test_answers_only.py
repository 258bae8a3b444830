"""rewards.answers_only: the worked solutions never reach a reward, in GRPO or in eval, and a reward that needs
them is refused before a model loads. Without the switch the same recording reward sees them (the control)."""

from __future__ import annotations

import pytest

from reasontune.config import ConfigError, from_dict, override

from test_trainer import tiny_cfg

SEEN: list[set[str]] = []


def record_columns(completions, **kwargs):
    """A reward that records which columns it was given, and scores nothing."""
    SEEN.append(set(kwargs))
    return [0.0 for _ in completions]


def needs_worked(completions, worked=None, **kwargs):
    return [0.0 for _ in completions]


needs_worked.needs_columns = ("worked",)


@pytest.mark.parametrize("answers_only", [True, False])
def test_grpo_rewards_never_see_worked_solutions_in_answer_only_mode(tmp_path, tiny_model_dir, one_thread,
                                                                     answers_only):
    from reasontune.models import load_model_and_tokenizer
    from reasontune.stages.train import train

    cfg = override(tiny_cfg(tmp_path, tiny_model_dir, max_steps=1),
                   {"rewards.names": ["answer_check", "step_check", "test_answers_only:record_columns"],
                    "rewards.answers_only": answers_only})
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    SEEN.clear()
    train(cfg, model=model, tokenizer=tok)
    assert SEEN, "the recording reward never ran"
    assert all("answer" in cols for cols in SEEN)  # the reference answer is what the verifier checks
    assert any("worked" in cols for cols in SEEN) is (not answers_only)
    # the labels it used, counted: 1 step of 4 completions, 2 per problem -> 2 problems, every one with an answer
    # the verifier read; step_check reads the worked solutions unless answers_only withheld them
    import json

    labels = json.loads((tmp_path / "run" / "status.json").read_text())["labels"]
    assert labels["grpo_problems"] == 2 and labels["answers"] == 2 and labels["sft_examples"] == 0
    assert labels["rewards_reading_worked"] == ([] if answers_only else ["step_check"])
    assert labels["worked_solutions"] == (0 if answers_only else 2)
    from reasontune.stages.report import build_report

    html = build_report(tmp_path / "run").read_text()
    assert f"learned from {labels['worked_solutions']} worked solutions" in html and "and 2 answers" in html


def test_labels_count_sft_examples_and_what_each_reward_reads():
    from reasontune.runs.labels import readers, total

    assert readers([record_columns, needs_worked], "worked") == ["needs_worked"]  # **kwargs names nothing
    grpo = {"grpo_problems": 10, "answers": 10, "grpo_worked_read": 0, "worked_solutions": 0, "sft_examples": 0}
    t = total(128, grpo)
    assert (t["worked_solutions"], t["answers"], t["sft_examples"]) == (128, 10, 128)


def test_eval_scores_without_worked_solutions_in_answer_only_mode():
    from reasontune.engines.generation import Generation
    from reasontune.stages.evaluate import _records

    row = {"question": "2 + 3?", "answer": "5", "worked": "2 + 3 = 5"}
    gen = Generation(text="2 + 3 = 5</think>\n<answer>5</answer>", token_ids=[1, 2], num_tokens=2)
    for answers_only, worked_seen in ((True, False), (False, True)):
        cfg = from_dict({"rewards": {"answers_only": answers_only}})
        SEEN.clear()
        _records([row], ["p"], [[gen]], "greedy", cfg, [record_columns])
        assert ("worked" in SEEN[0]) is worked_seen


def test_a_reward_that_needs_worked_solutions_is_refused_before_a_model_loads(tmp_path):
    from reasontune.runs.validate import validate_run

    cfg = from_dict({"rewards": {"names": ["answer_check", "test_answers_only:needs_worked"], "answers_only": True},
                     "data": {"train_size": 8, "test_size": 4}, "output_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match=r"answers_only=true, but reward\(s\) \['needs_worked'\] need worked"):
        validate_run(cfg)
    validate_run(override(cfg, {"rewards.answers_only": False}))  # the same set is fine with labels
