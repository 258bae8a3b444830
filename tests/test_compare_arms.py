"""`reasontune demo --compare --arms`: the arms on two axes (training seconds and labels), `--recipe`, and the
labels every arm counts, end to end on the tiny random Llama."""

from __future__ import annotations

import json

import pytest

from reasontune.config import ConfigError, override
from reasontune.stages import compare_arms as CA

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ --arms
@pytest.mark.parametrize("text,expected", [
    (None, ("sft_then_grpo", "grpo_only", "sft_only")),  # the compare as it was
    ("primer_expert,primer_grpo_answers", ("primer_expert", "primer_grpo_answers")),
    (" sft_all , sft_all,primer_only ", ("sft_all", "primer_only")),  # order kept, repeats dropped
])
def test_parse_arms(text, expected):
    assert CA.parse_arms(text) == expected


@pytest.mark.parametrize("text,words", [("primer_rft", "unknown arm(s) primer_rft"), (",", "no arm named")])
def test_parse_arms_refuses_naming_the_arms(text, words):
    with pytest.raises(ConfigError, match=r"--arms") as e:
        CA.parse_arms(text)
    assert words in str(e.value) and all(a in str(e.value) for a in CA.ARMS)


def test_every_label_arm_is_an_arm_with_help():
    assert set(CA.LABEL_ARMS) | set(CA.DEFAULT_ARMS) == set(CA.ARMS)
    assert all(a.help for a in CA.ARMS.values())


# ---------------------------------------------------------------------------------------------- settings
def _cfg(**updates):
    from reasontune.stages.demo import demo_config

    return override(demo_config("o"), updates)


def test_reference_rewards_add_step_check_and_read_the_worked_column():
    cfg = _cfg(**{"rewards.names": ["format_exact", "answer_check"], "rewards.weights": [0.5, 2.0],
                  "rewards.answers_only": True})
    u = CA.reference_rewards(cfg)
    assert u == {"rewards.names": ["format_exact", "answer_check", "step_check"], "rewards.weights": [0.5, 2.0, 1.0],
                 "rewards.answers_only": False}
    free = _cfg(**{"rewards.names": ["answer_check", "work_check"], "rewards.answers_only": True})
    assert CA.reference_rewards(free)["rewards.names"] == ["answer_check", "step_check"]  # in place of work_check
    has = _cfg(**{"rewards.names": ["answer_check", "step_check"]})
    assert CA.reference_rewards(has)["rewards.names"] == ["answer_check", "step_check"]  # not added twice


PLAN = {"budget_s": 100.0, "grpo_step_seconds": 10.0, "grpo_steps": 10, "sft_seconds_per_example": 0.5,
        "sft_examples": 200, "sft_epochs": 1.0}


@pytest.mark.parametrize("arm,want", [
    ("primer_only", {"warmup.examples": 8, "warmup.epochs": 25.0}),  # 100 s / 0.5 s = 200 passes over 8 examples
    ("sft_all", {"warmup.examples": 64, "warmup.epochs": 3.125}),  # 200 passes over all 64 worked rows
    ("sft_all_grpo", {"warmup.examples": 64, "warmup.epochs": 1.0}),
    ("primer_expert", {"method": "expert_iteration", "rewards.answers_only": True}),
    ("primer_grpo_answers", {"rewards.answers_only": True}),
    ("primer_grpo_reference", {"rewards.answers_only": False}),
    ("grpo_only", {"grpo.max_steps": 10}),
])
def test_arm_settings(arm, want, tmp_path):
    cfg = _cfg(**{"warmup.examples": 8, "warmup.epochs": 1.0})
    plan = {**PLAN, **CA.plan_arms(PLAN, cfg, worked_rows=64)}
    acfg = CA.arm_config(cfg, arm, plan, str(tmp_path / arm))
    d = acfg.to_dict()
    for key, value in want.items():
        sec, _, name = key.rpartition(".")
        assert (d[sec][name] if sec else d[name]) == value, key
    assert acfg.grpo.max_seconds is None  # the compare's budget stops every arm but the calibrating one
    assert CA.arm_config(cfg, "sft_then_grpo", plan, str(tmp_path / "x")).grpo.max_seconds == cfg.grpo.max_seconds


# ------------------------------------------------------------------------------------------- --recipe
def test_recipe_path_finds_the_shipped_recipes_and_refuses_others(tmp_path, monkeypatch):
    from reasontune.stages.demo import RECIPES, demo_config, recipe_path

    assert recipe_path(None) == RECIPES / "demo.yaml"
    monkeypatch.chdir(tmp_path)  # outside the repository: shipped names still resolve
    assert recipe_path("recipes/demo-worked.yaml") == recipe_path("demo-worked.yaml") == RECIPES / "demo-worked.yaml"
    mine = tmp_path / "mine.yaml"
    mine.write_text((RECIPES / "demo-worked.yaml").read_text())
    assert recipe_path(str(mine)) == mine
    with pytest.raises(ConfigError, match=r"--recipe 'nope\.yaml' is not a file.*recipes/demo-worked\.yaml"):
        recipe_path("nope.yaml")
    worked = demo_config("o", recipe="recipes/demo-worked.yaml")  # the labelled demo, as named
    assert worked.warmup.examples == 1000 and "step_check" in worked.rewards.names
    assert not worked.rewards.answers_only


@pytest.fixture
def no_demo(monkeypatch):
    """The demo, the compare and any model load fail the test: the flags were checked before them."""
    import transformers

    from reasontune import models
    from reasontune.stages import compare_demo, demo

    def boom(*a, **k):
        raise AssertionError("the demo started before its flags were checked")

    for mod, name in ((demo, "run_demo"), (compare_demo, "run_compare"), (models, "load_model_and_tokenizer")):
        monkeypatch.setattr(mod, name, boom)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)


@pytest.mark.parametrize("argv,words", [
    (["--recipe", "nope.yaml"], "--recipe 'nope.yaml' is not a file"),
    (["--compare", "--arms", "sft_all,bogus"], "unknown arm(s) bogus"),
    (["--arms", "sft_all"], "add --compare"),
    (["--compare", "--compare-seconds", "0"], "--compare-seconds=0.0 is invalid"),
    (["--compare", "--set", "grpo.nope=1"], "unknown setting 'grpo.nope'"),
])
def test_demo_flags_fail_before_the_demo_starts(argv, words, no_demo, capsys):
    from reasontune.cli import main

    assert main(["demo", *argv]) == 2
    assert words in capsys.readouterr().err


def test_demo_passes_arms_recipe_and_seconds_to_the_compare(monkeypatch, tmp_path):
    from reasontune.cli import main
    from reasontune.stages import compare_demo, demo

    calls, finished = {}, {"a finished demo": True}

    def fake_demo(**kw):
        calls["demo"] = kw
        return finished

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    monkeypatch.setattr(compare_demo, "run_compare", lambda out, quick, **kw: calls.setdefault("compare", kw))
    assert main(["demo", "--out", str(tmp_path), "--recipe", "recipes/demo-worked.yaml", "--compare", "--arms",
                 "primer_expert,sft_all", "--compare-seconds", "600"]) == 0
    assert calls["demo"]["recipe"] == "recipes/demo-worked.yaml"
    kw = calls["compare"]
    assert kw["arms"] == ("primer_expert", "sft_all") and kw["budget_s"] == 600.0
    assert kw["recipe"] == "recipes/demo-worked.yaml" and kw["demo_summary"] is finished


# ------------------------------------------------------------------ every arm's labels, on the tiny model
def test_every_arm_counts_its_labels(tiny_model_dir, tmp_path, monkeypatch):
    """All nine arms on the tiny model under a 2 s budget. Each row's labels follow from what the arm ran, read
    from its stages and its run folder: the worked solutions SFT trained on (its steps x batch, at most its
    examples), GRPO's problems (8 a step: 2 prompts x 8 micro-batches / 2 completions each, at most the training rows)
    whose answers the rewards read and, with the reference step_check, whose working; expert iteration's distinct
    problems (3 a round), answers only."""
    import reasontune.stages.demo as demo
    from conftest import tiny_demo_updates
    from reasontune.stages.compare_demo import run_compare

    real = demo.demo_config

    def tiny(out_dir, quick=False, updates=None, recipe=None):
        return override(real(out_dir, quick=False), {
            **tiny_demo_updates(tiny_model_dir),
            # the rewards stated here, so the expectations do not move when recipes/demo.yaml does
            "rewards.names": ["format_exact", "answer_check", "step_check"], "rewards.answers_only": False,
            "expert_iteration.rounds": 2, "expert_iteration.problems_per_round": 3, "expert_iteration.samples": 2})

    monkeypatch.setattr(demo, "demo_config", tiny)
    s = run_compare(str(tmp_path), budget_s=2.0, arms=tuple(CA.ARMS))
    root = tmp_path / "compare"
    assert list(s["arms"]) == ["base", *CA.ARMS]
    table = (root / "table.md").read_text()
    reads_worked = {"sft_then_grpo", "grpo_only", "primer_grpo_reference", "sft_all_grpo"}
    n = s["plan"]["sft_all_examples"]  # the training rows (every one has a worked solution)
    for arm, r in s["arms"].items():
        st, lab = r.get("stages") or {}, r["labels"]
        sft = min(st["sft"]["examples"], st["sft"]["steps"] * 2) if "sft" in st else 0
        if "grpo" in st:
            answers = min(n, st["grpo"]["steps"] * 8)
            assert lab["rewards_reading_worked"] == (["step_check"] if arm in reads_worked else []), arm
        elif "expert" in st:
            rows = [json.loads(x) for x in (root / arm / "metrics.jsonl").read_text().splitlines()]
            rounds = [x for x in rows if x.get("stage") == "expert_iteration"]
            assert len(rounds) == st["expert"]["rounds"] >= 1 and all(x["problems"] == 3 for x in rounds), arm
            answers = min(n, 3 * len(rounds))
            assert lab["expert_problems"] == answers, arm
        else:
            answers = 0
        worked = sft + (answers if arm in reads_worked else 0)
        assert (lab["sft_examples"], lab["worked_solutions"], lab["answers"]) == (sft, worked, answers), arm
        assert f"| {arm} | {worked} / {answers} |" in table or f"| {arm} (the demo's run) | {worked} / {answers} |" \
            in table, arm
        if arm != "base":  # the same status.json a run folder keeps
            status = json.loads((root / arm / "status.json").read_text())
            assert status["labels"] == lab, arm
    assert s["arms"]["base"]["labels"]["worked_solutions"] == s["arms"]["base"]["labels"]["answers"] == 0
    # the primer is the recipe's 2 worked solutions; "all" is every training row that has one
    assert s["arms"]["primer_only"]["stages"]["sft"]["examples"] == s["plan"]["primer_examples"] == 2
    assert s["arms"]["sft_all"]["stages"]["sft"]["examples"] == n >= 8
    for arm in CA.ARMS:  # every arm was evaluated on the phrased-otherwise set too
        assert s["arms"][arm]["phrased_accuracy"] is not None and (root / arm / "evals" / "phrased").is_dir(), arm
