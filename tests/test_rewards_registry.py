"""Registry, presets, dotted paths, the error wrapper and the `rewards check` CLI."""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import textwrap

import pytest

import reasontune.rewards as rw
from reasontune.config import ConfigError, FormatConfig, RewardsConfig
from reasontune.rewards import PRESETS, available, build_reward_funcs, wrap_reward
from reasontune.rewards.cli import handle_check, register

FMT = FormatConfig()
GOOD = f"w{FMT.reasoning_end}{FMT.solution_start}42{FMT.solution_end}"


def test_available_lists_both_presets_members():
    names = available()
    for preset in PRESETS.values():
        assert set(preset) <= set(names)
    assert "recipe" not in names and names == sorted(names)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        build_reward_funcs(RewardsConfig(names=["format_exakt"]), FMT)
    msg = str(err.value)
    assert "format_exakt" in msg and "format_exact" in msg and "answer_equiv" in msg and "verified" in msg


def test_duplicate_registration_is_rejected():
    rw.register("tmp_reward_dup", lambda completions, **kw: [1.0] * len(completions))
    try:
        with pytest.raises(ValueError, match="already registered"):
            rw.register("tmp_reward_dup", lambda completions, **kw: [0.0] * len(completions))
        with pytest.raises(ValueError, match="already registered"):
            rw.register_builder("format_exact", lambda ctx: None)
        with pytest.raises(ValueError, match="already registered"):
            rw.register("verified", lambda completions, **kw: [])
    finally:
        rw.REGISTRY.unregister("tmp_reward_dup")


def test_registered_plain_function_is_buildable():
    @rw.register("tmp_len_reward")
    def tmp_len_reward(completions, **kwargs):
        return [float(len(c)) for c in completions]

    try:
        funcs, weights = build_reward_funcs(RewardsConfig(names=["tmp_len_reward"], weights=[0.0]), FMT)
        assert funcs[0](["abc"]) == [3.0] and weights == [0.0] and funcs[0].__name__ == "tmp_len_reward"
    finally:
        rw.REGISTRY.unregister("tmp_len_reward")


def test_listing_a_reward_twice_is_an_error():
    with pytest.raises(ConfigError, match="twice"):
        build_reward_funcs(RewardsConfig(names=["recipe", "format_exact"]), FMT)


def test_preset_weights_multiply():
    funcs, weights = build_reward_funcs(RewardsConfig(names=["recipe", "format_strict"], weights=[2.0, 0.0]), FMT)
    assert [f.__name__ for f in funcs] == PRESETS["recipe"] + ["format_strict"]
    assert weights == [2.0, 2.0, 2.0, 2.0, 0.0]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_pkg").mkdir()
    (tmp_path / "my_rewards_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_rewards_pkg" / "rewards.py").write_text(textwrap.dedent("""
        def brevity(completions, **kwargs):
            return [-len(c) / 100 for c in completions]

        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards_pkg.rewards"


def test_dotted_path_loading(user_module):
    funcs, weights = build_reward_funcs(RewardsConfig(names=["format_exact", f"{user_module}:brevity"]), FMT)
    assert [f.__name__ for f in funcs] == ["format_exact", "brevity"]
    assert funcs[1](["x" * 50]) == [-0.5]
    funcs, _ = build_reward_funcs(RewardsConfig(names=[f"{user_module}.brevity"]), FMT)
    assert funcs[0](["x"]) == [-0.01]


@pytest.mark.parametrize("path, match", [
    ("no_such_module_xyz:fn", "cannot import"),
    ("my_rewards_pkg.rewards:missing", "no attribute"),
    ("my_rewards_pkg.rewards:NOT_CALLABLE", "not a callable"),
    (":fn", "must look like"),
])
def test_bad_dotted_paths(user_module, path, match):
    with pytest.raises(ConfigError, match=match):
        build_reward_funcs(RewardsConfig(names=[path]), FMT)


# ------------------------------------------------------------------ the error wrapper
def flaky(completions, **kwargs):
    if any("boom" in c for c in completions):
        raise RuntimeError("boom")
    return [1.0] * len(completions)


def test_on_error_none_returns_none_and_counts(caplog):
    rw.reset_errors()
    reward = wrap_reward(flaky, "flaky", "none")
    metrics = []
    with caplog.at_level(logging.WARNING, logger="reasontune.rewards.wrap"):
        out = reward(["fine", "boom here", "fine"], log_metric=lambda name, value: metrics.append((name, value)))
    assert out == [1.0, None, 1.0]
    assert rw.error_counts() == {"flaky": 1} and rw.errors["flaky"] == 1
    assert "boom here" in caplog.text and "RuntimeError" in caplog.text
    assert metrics == [("rewards/flaky/error_rate", pytest.approx(1 / 3))]
    assert reward.__name__ == "flaky"


def test_on_error_raise_reraises_and_counts():
    rw.reset_errors()
    reward = wrap_reward(flaky, "flaky", "raise")
    with pytest.raises(RuntimeError, match="boom"):
        reward(["fine", "boom"])
    assert rw.error_counts() == {"flaky": 1}
    assert reward(["fine"]) == [1.0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1.0", [1.0]])
def test_unusable_scores_are_errors(bad):
    rw.reset_errors()
    reward = wrap_reward(lambda completions, **kw: [bad for _ in completions], "bad", "none")
    assert reward(["a", "b"]) == [None, None]
    assert rw.error_counts() == {"bad": 2}


def test_wrong_number_of_scores_is_an_error():
    reward = wrap_reward(lambda completions, **kw: [1.0], "short", "raise")
    with pytest.raises(ValueError, match="1 scores for 2 completions"):
        reward(["a", "b"])


def test_builtin_reward_without_answer_column_is_counted():
    rw.reset_errors()
    funcs, _ = build_reward_funcs(RewardsConfig(names=["answer_equiv"], on_error="none"), FMT)
    assert funcs[0]([GOOD]) == [None]
    assert rw.error_counts() == {"answer_equiv": 1}
    funcs, _ = build_reward_funcs(RewardsConfig(names=["answer_equiv"], on_error="raise"), FMT)
    with pytest.raises(ValueError, match="'answer' column"):
        funcs[0]([GOOD])


def test_non_string_completion_is_an_error_not_a_zero():
    rw.reset_errors()
    funcs, _ = build_reward_funcs(RewardsConfig(names=["format_exact"]), FMT)
    assert funcs[0]([GOOD, 12345]) == [3.0, None]
    assert rw.error_counts() == {"format_exact": 1}


# ------------------------------------------------------------------ CLI
def parse(argv):
    parser = argparse.ArgumentParser(prog="reasontune")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_builtin_table_json(capsys):
    args = parse(["rewards", "check", "--preset", "recipe", "--json"])
    assert args.func(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_case = {r["case"]: r for r in rows}
    assert by_case["honest, correct"]["total"] == 13.0
    assert by_case["number without closing tag"]["scores"]["number_check"] == 3.5
    assert by_case["true answer 0"]["scores"]["answer_check"] == -4.5


def test_cli_verified_table_ranks_honesty_first(capsys):
    args = parse(["rewards", "check", "--preset", "verified", "--json", "--max-completion-length", "512"])
    assert handle_check(args) == 0
    rows = {r["case"]: r["total"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    honest = rows["honest, correct"]
    hacks = [k for k in rows if k not in ("honest, correct", "honest, correct + EOS", "spaces around answer",
                                          "1/2 vs 0.5", "true answer 0", "thousands separator")]
    assert all(rows[k] < honest for k in hacks), {k: rows[k] for k in hacks}


def test_cli_completions_file(tmp_path, capsys):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"completion": GOOD, "answer": "42"}) + "\n\n"
                 + json.dumps({"completion": [{"role": "assistant", "content": "nothing"}], "answer": 7}) + "\n")
    args = parse(["rewards", "check", "--preset", "recipe", "--completions", str(f), "--json"])
    assert handle_check(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["total"] for r in rows] == [13.0, -7.5]
    assert set(rows[0]["scores"]) == set(PRESETS["recipe"])


def test_cli_human_table_and_errors(tmp_path, capsys):
    assert handle_check(parse(["rewards", "check", "--preset", "recipe"])) == 0
    out = capsys.readouterr().out
    assert "format_exact" in out and "repeated tags" in out
    assert handle_check(parse(["rewards", "check", "--preset", "nope"])) == 2
    assert "valid names" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion": "x"}\n')
    assert handle_check(parse(["rewards", "check", "--completions", str(bad)])) == 2
    assert handle_check(parse(["rewards", "check", "--completions", str(tmp_path / "missing.jsonl")])) == 2


def test_cli_as_a_process(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"completion": GOOD, "answer": "41"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "reasontune.rewards.cli", "check", "--preset", "recipe",
                           "--completions", str(f), "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip())["scores"]["answer_check"] == 2.0
