"""Code rows through the stages that were written for answers: the code prompt, the curriculum's and the
watcher's idea of "right", ask and advise, and the refusal of code rewards on data without tests (before a
model loads)."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest

from reasontune.config import ConfigError, FormatConfig, RunConfig, from_dict, override

CODE = {"dataset": "procedural:code", "train_size": 8, "test_size": 2, "difficulty": [1]}
MATH = {"dataset": "procedural:arithmetic", "train_size": 8, "test_size": 2}


def _rows(data: dict, fmt: FormatConfig | None = None) -> list[dict]:
    from reasontune.data import build_datasets

    return build_datasets(from_dict({"data": data}).data, fmt or FormatConfig())["train"].to_list()


def _answer(code: str, fmt: FormatConfig) -> str:
    return f"plan{fmt.reasoning_end}{fmt.solution_start}```python\n{code}\n```{fmt.solution_end}"


# ------------------------------------------------------------------------- the code prompt
def test_code_rows_get_the_code_prompt_and_other_rows_the_answer_prompt():
    fmt = FormatConfig()
    code, math = _rows(CODE, fmt), _rows(MATH, fmt)
    assert {r["prompt"][0]["content"] for r in code} == {fmt.code_prompt}
    assert {r["prompt"][0]["content"] for r in math} == {fmt.prompt}
    assert "```python" in fmt.code_prompt and fmt.solution_start in fmt.code_prompt and "def line" in fmt.code_prompt
    assert fmt.code_prompt != fmt.prompt


def test_the_code_prompt_is_code_system_prompt_else_system_prompt():
    assert FormatConfig(system_prompt="S").code_prompt == "S"  # a recipe's own prompt is kept for code rows too
    fmt = FormatConfig(system_prompt="S", code_system_prompt="C")
    assert (fmt.code_prompt, fmt.prompt, fmt.prompt_for(True), fmt.prompt_for(False)) == ("C", "S", "C", "S")
    assert {r["prompt"][0]["content"] for r in _rows(CODE, fmt)} == {"C"}
    cfg = from_dict({"format": {"code_system_prompt": "Write code."}})
    assert cfg.format.code_prompt == "Write code." and cfg.format.prompt == RunConfig().format.prompt


def test_eval_builds_the_code_prompt_for_a_row_without_one():
    from reasontune.stages.evaluate import _messages

    cfg = RunConfig()
    row = {k: v for k, v in _rows(CODE)[0].items() if k != "prompt"}
    assert _messages(row, cfg)[0]["content"] == cfg.format.code_prompt
    assert _messages({"question": "1+1?", "answer": "2"}, cfg)[0]["content"] == cfg.format.prompt


# ------------------------------------------------------------------------- curriculum: right means the tests pass
def test_the_curriculum_counts_a_code_row_right_when_its_tests_pass(bwrap):
    from reasontune.engines.curriculum import LevelStats, answer_checker, observe_groups

    fmt = FormatConfig()
    row = _rows(CODE, fmt)[0]
    right, wrong = _answer(row["worked"], fmt), _answer(row["worked"].replace("return ", "return 1 + "), fmt)
    check = answer_checker(fmt, bwrap)
    assert check(right, row) is True and check(wrong, row) is False
    seven = f"plan{fmt.reasoning_end}{fmt.solution_start}7{fmt.solution_end}"  # answer rows: graded as before
    assert check(seven, {"answer": "7", "question": "q"}) is True and check(seven, {"answer": "8"}) is False
    stats = LevelStats([1, 2], decay=0.0)
    observe_groups(stats, [dict(row, difficulty=1)] * 2 + [dict(row, difficulty=2)] * 2, [right, wrong, wrong, wrong],
                   2, "difficulty", check)
    assert stats.mixed == {1: 1.0, 2: 0.0}
    with pytest.raises(ValueError, match="without a sandbox"):
        answer_checker(fmt)(right, row)  # a code row never counts as wrong for want of a sandbox


def test_curriculum_from_config_gives_code_data_a_sandboxed_checker(bwrap):
    from reasontune.data import build_datasets
    from reasontune.engines.curriculum import curriculum_from_config

    cfg = from_dict({"data": dict(CODE, difficulty=[1, 2]), "grpo": {"curriculum": "adaptive"},
                     "rewards": {"names": ["code_tests"], "code_sandbox": "bwrap"}})
    train = build_datasets(cfg.data, cfg.format)["train"]
    column, stats, check = curriculum_from_config(cfg, train)
    row = train[0]
    assert column == "difficulty" and check(_answer(row["worked"], cfg.format), row) is True


# ------------------------------------------------------------------------- the watcher's probes
def test_the_watcher_probes_a_code_row_with_its_worked_solution(bwrap):
    from reasontune.rewards import run_reward_funcs
    from reasontune.runs.watch import probe_completions, reward_scales

    cfg = override(RunConfig(), {"rewards.names": ["code_tests", "format_exact"], "rewards.code_sandbox": "bwrap"})
    row = _rows(CODE, cfg.format)[0]
    funcs, weights = run_reward_funcs(cfg, "<|im_end|>", 64)
    got = reward_scales(funcs, weights, row, cfg.format, "<|im_end|>")
    scales = {n: (s.kind, s.low, s.high) for n, s in got.items()}
    assert scales == {"code_tests": ("answer", 0.0, 1.0), "format_exact": ("format", 0.0, 3.0)}
    assert probe_completions(dict(row, worked=""), cfg.format, "") is None
    assert reward_scales(funcs, weights, dict(row, worked=""), cfg.format, "") == {}  # no right program: unread


# ------------------------------------------------------------------------- code rewards need code rows
@pytest.mark.parametrize("data", [MATH, {"dataset": "openai/gsm8k"}], ids=["generator", "known-hub-set"])
def test_code_rewards_on_data_without_tests_are_refused_before_a_model_loads(data, tmp_path, monkeypatch):
    from reasontune import models
    from reasontune.runs.validate import validate_run

    monkeypatch.setattr(models, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("a model loaded"))
    for names in (["code_tests"], ["format_exact", "code_tests_binary"]):
        cfg = from_dict({"data": data, "rewards": {"names": names}, "output_dir": str(tmp_path / "run")})
        with pytest.raises(ConfigError, match=r"run each row's tests.*no code rows.*--dataset humaneval, mbpp, "
                                              r"procedural:code.*drop them from rewards.names"):
            validate_run(cfg)
    validate_run(from_dict({"data": CODE, "rewards": {"names": ["code_tests"]}, "output_dir": str(tmp_path / "r")}))


def test_a_hub_set_no_adapter_knows_is_checked_when_it_loads():
    from reasontune.runs.validate import check_rewards_fit_data, known_code_source

    cfg = from_dict({"data": {"dataset": "someone/unknown"}, "rewards": {"names": ["code_tests"]}})
    assert known_code_source("someone/unknown") is None and known_code_source("humaneval") is True
    assert known_code_source("openai/gsm8k") is False
    check_rewards_fit_data(cfg, None)  # not known yet: no error
    with pytest.raises(ConfigError, match="no code rows"):
        check_rewards_fit_data(cfg, False)


def test_eval_refuses_code_rewards_on_a_known_math_set_before_a_model_loads(monkeypatch):
    import reasontune.engines as engines
    from reasontune.stages.evaluate import evaluate

    monkeypatch.setattr(engines, "open_engine", lambda *a, **k: pytest.fail("a model loaded"))
    cfg = from_dict({"data": {"dataset": "openai/gsm8k"}, "rewards": {"names": ["code_tests"]}})
    with pytest.raises(ConfigError, match="no code rows"):
        evaluate(cfg)


# ------------------------------------------------------------------------- ask and advise
def test_ask_on_a_code_run_refuses_a_reference_answer_before_a_model_loads(tmp_path, monkeypatch):
    import reasontune.engines as engines
    import reasontune.stages.evaluate as ev
    from reasontune.stages.ask import cmd_ask

    cfg = from_dict({"data": CODE, "rewards": {"names": ["code_tests"]}})
    monkeypatch.setattr(ev, "config_for_eval", lambda args: (cfg, "adapter"))
    monkeypatch.setattr(engines, "open_engine", lambda *a, **k: pytest.fail("a model loaded"))
    args = Namespace(questions=["Write add_one(x)."], answer="x + 1", file=None, run="r", adapter=None, plain=True)
    with pytest.raises(ConfigError, match="checked by running tests.*reasontune eval --run"):
        cmd_ask(args)


def test_ask_shows_a_code_runs_program_not_an_answer():
    from reasontune.engines.generation import Generation
    from reasontune.stages.ask import score, summary

    cfg = from_dict({"rewards": {"names": ["code_tests"]}})
    got = score(Generation(_answer("def f(x):\n    return x", cfg.format), [1], 1, False), None, cfg, [], "q", "p")
    assert got.code and got.extracted == "def f(x):\n    return x" and summary(got) == "code: 2 lines"
    assert summary(score(Generation("I do not know", [1], 1, False), None, cfg, [], "q", "p")).startswith("code: (none")


def test_advise_counts_code_rows_checkable_only_when_a_reward_runs_their_tests():
    import datasets

    from reasontune.stages import advise as A

    ds = datasets.Dataset.from_list([{k: r[k] for k in ("question", "answer", "worked", "tests")} for r in _rows(CODE)])
    assert A.data_facts(ds, 1, runs_tests=True)["has_verifier"] is True
    assert A.data_facts(ds, 1, runs_tests=False)["checkable_fraction"] == 0.0


@pytest.mark.parametrize("data,names,match", [
    (CODE, ["format_exact", "answer_check"], "holds code rows .* no reward runs them.*--reward code_tests"),
    (MATH, ["code_tests"], "no code rows"),
], ids=["code-data-answer-rewards", "math-data-code-rewards"])
def test_advise_refuses_rewards_that_do_not_fit_the_rows_before_a_model_loads(data, names, match, monkeypatch):
    import reasontune.engines as engines
    from reasontune.stages.advise import advise

    monkeypatch.setattr(engines, "open_engine", lambda *a, **k: pytest.fail("a model loaded"))
    cfg = override(from_dict({"data": data, "rewards": {"names": names}}), {"eval.samples": 2})
    with pytest.raises(ConfigError, match=match):
        advise(cfg)


def test_a_code_row_in_the_hub_schema_is_known_by_its_tests_json():
    from reasontune.runs.validate import has_code_rows

    import datasets

    rows = _rows(CODE)
    assert has_code_rows(datasets.Dataset.from_list(rows))
    assert not has_code_rows(datasets.Dataset.from_list([dict(r, tests="") for r in rows]))
    assert json.loads(rows[0]["tests"])["kind"] == "functional"
