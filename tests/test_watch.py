"""The watcher (watch.py): every condition fires on a scripted metric stream and stays silent on a healthy
one; warnings reach status.json and the report; grpo.stop_on stops a run with a checkpoint. Two tiny GRPO
runs end to end: rewards that are constant (the run warns about zero variance) and rewards that vary."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from reasontune.config import WATCH_CONDITIONS, ConfigError, RunConfig, override, parse_set
from reasontune.runs.watch import ZERO_SIGNAL_STEPS, CHECKS, RewardScale, Watch, check_learning_rate, reward_scales

W = 4  # window of the scripted streams
STEPS = 12  # three windows
# The recipe's scales as reward_scales measures them (format_exact 0 / 3; answer_check -2.5 / 5.0)
SCALES = {"format_exact": RewardScale("format", 0.0, 3.0), "answer_check": RewardScale("answer", -2.5, 5.0)}


def ramp(a: float, b: float):
    return lambda i: a + (b - a) * i / (STEPS - 1)


def flat(v: float):
    return lambda i: v


HEALTHY = {  # what a run that learns logs: few uniform groups, format and answers rising, entropy easing
    "frac_reward_zero_std": flat(0.3), "completions/clipped_ratio": flat(0.05), "format": ramp(0.3, 0.9),
    "answer": ramp(0.3, 0.5), "entropy": ramp(0.5, 0.4), "completions/mean_length": ramp(100, 95),
    "nonfinite_steps": flat(0), "loss": flat(0.1),
}


def stream(**changes) -> list[dict]:
    """STEPS logged rows: HEALTHY with `changes`; 'format' and 'answer' are levels turned into reward means."""
    spec = {**HEALTHY, **changes}
    rows = []
    for i in range(STEPS):
        row = {k: f(i) for k, f in spec.items() if k not in ("format", "answer")}
        row["rewards/format_exact/mean"] = 3.0 * spec["format"](i)
        row["rewards/answer_check/mean"] = -2.5 + 7.5 * spec["answer"](i)
        rows.append(row)
    return rows


def run_stream(rows, stop_on=(), stage="grpo"):
    w = Watch(W, stop_on=stop_on, stage=stage, scales=SCALES)
    fired = {}
    for step, row in enumerate(rows, 1):
        for e in w.observe(row, step):
            fired[e["condition"]] = e
    return w, fired


FIRES = {  # condition -> (stream, a phrase its message must hold)
    "zero_variance/hard": ("zero_variance", stream(frac_reward_zero_std=flat(0.95), answer=flat(0.03)), "too hard"),
    "zero_variance/easy": ("zero_variance", stream(frac_reward_zero_std=flat(0.95), answer=flat(0.97)), "too easy"),
    "zero_variance/mixed": ("zero_variance", stream(frac_reward_zero_std=flat(0.95), answer=flat(0.5)),
                            "grpo.curriculum=adaptive"),
    "truncation": ("truncation", stream(**{"completions/clipped_ratio": flat(0.5)}), "grpo.max_completion_length"),
    "no_format": ("no_format", stream(format=ramp(0.2, 0.25)), "warmup.kind=sft"),
    "no_right_answers": ("no_right_answers", stream(answer=flat(0.0)), "reasontune advise"),
    "entropy_collapse": ("entropy_collapse", stream(entropy=ramp(0.5, 0.1)), "grpo.temperature"),
    "entropy_floor": ("entropy_collapse", stream(entropy=flat(0.01)), "grpo.temperature"),
    "entropy_rise": ("entropy_rise", stream(entropy=ramp(0.5, 4.0)), "grpo.learning_rate"),
    "length_shrink": ("length_shrink", stream(**{"completions/mean_length": ramp(100, 50)}, answer=flat(0.3)),
                      "step_check"),
    "nonfinite": ("nonfinite", stream(nonfinite_steps=lambda i: int(i >= 5)), "nonfinite.jsonl"),
    "nonfinite/loss": ("nonfinite", stream(loss=lambda i: math.nan if i == 7 else 0.1), "non-finite"),
}

SILENT = {  # streams close to a condition that must not fire it
    "healthy": stream(),
    "zero variance 0.85": stream(frac_reward_zero_std=flat(0.85)),
    "clipped 0.15": stream(**{"completions/clipped_ratio": flat(0.15)}),
    "format low but rising": stream(format=ramp(0.1, 0.45)),
    "one right answer in ten": stream(answer=flat(0.1)),
    "entropy down to 0.6x": stream(entropy=ramp(0.5, 0.3)),
    "entropy up 2x": stream(entropy=ramp(0.5, 1.0)),
    "shorter while accuracy rises": stream(**{"completions/mean_length": ramp(100, 50)}, answer=ramp(0.3, 0.6)),
}


@pytest.mark.parametrize("case", sorted(FIRES))
def test_condition_fires_on_its_stream(case):
    condition, rows, phrase = FIRES[case]
    w, fired = run_stream(rows)
    assert condition in fired, (case, [e["message"] for e in w.warnings])
    assert phrase in fired[condition]["message"]
    assert fired[condition]["step"] <= STEPS and fired[condition]["figures"]
    assert [e["condition"] for e in w.warnings].count(condition) == 1  # once, though every later row fires too


@pytest.mark.parametrize("case", sorted(SILENT))
def test_healthy_streams_stay_silent(case):
    w, fired = run_stream(SILENT[case])
    assert fired == {}, [e["message"] for e in w.warnings]


def test_every_condition_has_a_firing_stream():
    assert {c for c, _, _ in FIRES.values()} | {"low_learning_rate"} == set(WATCH_CONDITIONS) == \
        set(CHECKS) | {"low_learning_rate"}


def test_zero_variance_fires_once_the_window_is_full_and_not_before():
    _, fired = run_stream(stream(frac_reward_zero_std=flat(0.95), answer=flat(0.0)))
    assert fired["zero_variance"]["step"] == W
    assert fired["zero_variance"]["figures"]["frac_reward_zero_std"] == 0.95


@pytest.mark.parametrize("first,fires_at", [
    ([1.0, 1.0, 1.0], ZERO_SIGNAL_STEPS),  # no group with signal from the start: warned at once, window or not
    ([1.0, 0.9, 1.0], None),  # one group with signal: the window decides (10 steps, not reached here)
    ([0.9, 1.0, 1.0], None),
])
def test_a_run_with_no_signal_from_its_start_warns_early(first, fires_at):
    """Issue 35, item 2: an 8-step run whose every group scored all alike ended with no warning (the window of
    10 was never full); now the first ZERO_SIGNAL_STEPS logged steps decide."""
    rows = stream(frac_reward_zero_std=lambda i: first[i] if i < len(first) else 1.0, answer=flat(0.0))[:8]
    w = Watch(10, scales=SCALES)
    fired = {e["condition"]: e for step, row in enumerate(rows, 1) for e in w.observe(row, step)}
    if fires_at is None:
        assert "zero_variance" not in fired
        assert "needs 10 logged steps of frac_reward_zero_std, 8 logged" in w.coverage()["not_checked"]["zero_variance"]
    else:
        zv = fired["zero_variance"]
        assert zv["step"] == fires_at and zv["figures"]["first_steps"] and "no signal" in zv["message"]
        assert "too hard" in zv["message"] and "zero_variance" in w.coverage()["checked"]


TREND = {"no_format", "entropy_collapse", "entropy_rise", "length_shrink"}


@pytest.mark.parametrize("steps,scales,not_checked", [
    (2 * W - 1, SCALES, TREND | {"low_learning_rate"}),  # one step short of two windows: no trend is checked
    (2 * W, SCALES, {"low_learning_rate"}),
    (W - 1, SCALES, TREND | {"low_learning_rate", "zero_variance", "truncation", "no_right_answers"}),
    (2 * W, {}, {"low_learning_rate", "no_format", "no_right_answers", "length_shrink"}),  # no reward to read
])
def test_the_watcher_says_which_conditions_it_could_check(steps, scales, not_checked):
    """Issue 35, item 2: a condition that could not run (too few logged steps, no reward recognised) is listed
    with the reason, never among the checked ones."""
    w = Watch(W, scales=scales)
    for step, row in enumerate(stream()[:steps], 1):
        w.observe(row, step)
    cov = w.coverage()
    assert set(cov["not_checked"]) == not_checked and set(cov["checked"]) == set(WATCH_CONDITIONS) - not_checked
    assert cov["logged_steps"] == steps and cov["window"] == W
    if "entropy_collapse" in not_checked and scales:
        assert cov["not_checked"]["entropy_collapse"] == f"a trend: needs {2 * W} logged steps of entropy, {steps} logged"
    if not scales:
        assert "no answer reward recognised" in cov["not_checked"]["no_right_answers"]
    assert cov["not_checked"]["low_learning_rate"] == "the run did not start"


def test_coverage_reaches_status_json_and_the_reports(tmp_path):
    """The run folder keeps what the watcher checked through status changes; both reports list the unchecked
    conditions as such and say 'no warning' only of the checked ones."""
    from reasontune.stages.demo import write_markdown
    from reasontune.stages.report import build_report
    from reasontune.runs.folder import RunFolder

    w = Watch(W, scales=SCALES)
    for step, row in enumerate(stream()[:W + 1], 1):
        w.observe(row, step)
    run = RunFolder(tmp_path / "train")
    run.set_status("running")
    run.set_watched("grpo", w.coverage())
    run.set_status("done", global_step=W + 1)
    st = run.status()
    assert st["watched"]["grpo"] == w.coverage() and st["status"] == "done"
    run.append_metrics({"step": 1, "stage": "grpo", "loss": 0.0, "frac_reward_zero_std": 0.3})
    stage = {"accuracy": 0.5, "format_rate": 1.0, "mean_length": 10.0, "n": 4}
    write_markdown(tmp_path, {"wall_seconds": 1.0, "backend": "fake", "before": dict(stage), "after": dict(stage)})
    for page in ((tmp_path / "report.md").read_text(), build_report(tmp_path / "train").read_text()):
        said = next(line for line in page.split("\n") if "no warning from" in line)
        assert "zero_variance" in said and not any(c in said.split("Not checked")[0] for c in TREND)
        assert "Not checked: " in page and "no_format (a trend: needs 8 logged steps of a format reward, 5 logged)" in page
        assert "fired no warning during GRPO" not in page


def test_a_resumed_run_keeps_what_either_part_checked(tmp_path):
    from reasontune.runs.folder import RunFolder

    run = RunFolder(tmp_path)
    run.set_watched("grpo", {"window": 4, "logged_steps": 9, "checked": ["zero_variance", "entropy_rise"],
                             "not_checked": {"truncation": "needs 4"}})
    run.set_watched("grpo", {"window": 4, "logged_steps": 3, "checked": ["truncation"],
                             "not_checked": {"zero_variance": "needs 4", "entropy_rise": "a trend"}})
    run.set_watched("warmup", {"window": 4, "logged_steps": 2, "checked": ["nonfinite"], "not_checked": {}})
    st = run.status()["watched"]
    assert st["grpo"]["checked"] == ["zero_variance", "entropy_rise", "truncation"] and st["grpo"]["not_checked"] == {}
    assert st["warmup"]["checked"] == ["nonfinite"]


def test_trend_conditions_need_two_windows():
    rows = stream(entropy=lambda i: 0.5 if i < W else 0.1)  # collapsed right after the first window
    assert "entropy_collapse" not in run_stream(rows[: 2 * W - 1])[1]
    assert run_stream(rows[: 2 * W])[1]["entropy_collapse"]["step"] == 2 * W


@pytest.mark.parametrize("lr,r,alpha,rslora,stage,fires", [
    (5e-6, 32, 64, False, "grpo", False),  # the reference recipe: 1e-5 at alpha 32, LoRA's LR
    (2e-4, 16, 32, False, "grpo", False),  # the demo
    (1e-6, 16, 16, False, "grpo", True),  # a full fine-tune's LR on LoRA
    (5e-6, 16, 16, False, "grpo", True),  # 2.5e-6 at alpha 32
    (1e-6, 64, 128, True, "grpo", False),  # rsLoRA scales by alpha / sqrt(r): 1.6e-5
    (2e-4, 16, 32, False, "warmup", False),
    (2e-5, 16, 32, False, "warmup", True),  # TRL's full fine-tune SFT default on LoRA
])
def test_low_learning_rate(lr, r, alpha, rslora, stage, fires):
    hit = check_learning_rate(lr, r, alpha, rslora, stage)
    assert (hit is not None) == fires
    if fires:
        assert "learning_rate" in hit[1] and hit[0]["learning_rate"] == lr


def fake_peft_model(r, alpha):
    return SimpleNamespace(peft_config={"default": SimpleNamespace(r=r, lora_alpha=alpha, use_rslora=False)},
                           active_adapter="default")


def test_learning_rate_is_checked_at_train_begin_and_stop_on_stops_after_the_first_step():
    w = Watch(W, stop_on=["low_learning_rate"])
    state, control = SimpleNamespace(global_step=0, is_world_process_zero=True), SimpleNamespace(
        should_save=False, should_training_stop=False)
    w.on_train_begin(SimpleNamespace(learning_rate=1e-6), state, control, model=fake_peft_model(16, 16))
    assert w.fired == {"low_learning_rate"} and w.stopped["condition"] == "low_learning_rate"
    w.on_step_end(None, state, control)
    assert control.should_save and control.should_training_stop
    quiet = Watch(W)
    quiet.on_train_begin(SimpleNamespace(learning_rate=2e-4), state, control, model=fake_peft_model(16, 32))
    quiet.on_train_begin(SimpleNamespace(learning_rate=1e-6), state, control, model=object())  # no LoRA: no check
    assert quiet.warnings == []


def test_stop_on_sets_save_and_stop_on_the_row_that_fires_and_only_then():
    rows = stream(frac_reward_zero_std=flat(0.95), answer=flat(0.0))
    w = Watch(W, stop_on=["zero_variance"], scales=SCALES)
    for step, row in enumerate(rows[:W], 1):
        control = SimpleNamespace(should_save=False, should_training_stop=False)
        w.on_log(None, SimpleNamespace(global_step=step, is_world_process_zero=True), control, logs=dict(row))
        assert control.should_training_stop == (step == W) and control.should_save == (step == W)
    assert w.stopped["condition"] == "zero_variance"


def test_the_warm_up_checks_only_its_conditions():
    _, fired = run_stream(stream(frac_reward_zero_std=flat(1.0), answer=flat(0.0), loss=flat(math.inf)),
                          stage="warmup")
    assert set(fired) == {"nonfinite"}


def test_reward_scales_reads_the_recipe_and_verified_rewards():
    """The probe classifies the registered rewards by what they pay, not by their names."""
    from reasontune.rewards import run_reward_funcs

    row = {"prompt": "p", "question": "Tom has 3 apples and buys 4 more. How many?", "answer": "7",
           "worked": "3 + 4 = 7", "difficulty": 1}
    kinds = {}
    for names in (["recipe", "step_check"], ["verified"]):
        cfg = override(RunConfig(), {"rewards.names": names})
        funcs, weights = run_reward_funcs(cfg, "<|im_end|>", 64)
        kinds.update({n: (s.kind, s.low, s.high) for n, s in reward_scales(funcs, weights, row, cfg.format,
                                                                          "<|im_end|>").items()})
    assert kinds == {"format_exact": ("format", 0.0, 3.0), "format_approx": ("format", -3.0, 1.5),
                     "answer_check": ("answer", -2.5, 5.0), "number_check": ("answer", -2.5, 3.5),
                     "format_strict": ("format", -1.5, 3.0), "answer_equiv": ("answer", -2.0, 5.0),
                     "number_strict": ("answer", -2.5, 3.5)}  # step, length, repetition rewards: neither


def test_reward_scales_skips_a_reward_that_raises_on_the_probe():
    def broken(completions, **kw):
        raise RuntimeError("no")

    broken.__module__ = "reasontune.rewards.fake"  # probed like one of ours
    assert reward_scales([broken], [1.0], {"answer": "7"}, RunConfig().format, "") == {}


def test_reward_scales_never_calls_a_users_reward():
    """A user's reward (a dotted path) may log, cost or call a judge: the probe leaves it alone (the two-process
    test's prompt-logging reward saw the probe's row on both ranks)."""
    calls = []

    def mine(completions, **kw):
        calls.append(completions)
        return [1.0 if "7" in c else 0.0 for c in completions]

    assert reward_scales([mine], [1.0], {"answer": "7"}, RunConfig().format, "") == {} and not calls


@pytest.mark.parametrize("value,expected", [("zero_variance", ["zero_variance"]),
                                            ("zero_variance,truncation", ["zero_variance", "truncation"]),
                                            ("[nonfinite, entropy_collapse]", ["nonfinite", "entropy_collapse"]),
                                            ("[]", [])])
def test_stop_on_accepts_names_lists_and_comma_strings(value, expected):
    assert override(RunConfig(), parse_set([f"grpo.stop_on={value}"])).grpo.stop_on == expected


def test_stop_on_rejects_an_unknown_name_listing_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        override(RunConfig(), parse_set(["grpo.stop_on=zero_var"]))
    assert "grpo.stop_on=['zero_var']" in str(e.value)
    for name in WATCH_CONDITIONS:
        assert name in str(e.value)
    assert RunConfig().grpo.stop_on == []  # off by default


def test_warnings_are_added_to_status_without_losing_its_fields(tmp_path):
    from reasontune.runs.folder import RunFolder

    run = RunFolder(tmp_path)
    run.set_status("running", stage="grpo", step=3)
    entry = {"condition": "zero_variance", "stage": "grpo", "step": 4, "message": "m", "figures": {"x": 1}}
    run.add_warning(entry)
    run.add_warning({**entry, "step": 9})  # fired again after a resume: listed once
    st = run.status()
    assert st["status"] == "running" and st["stage"] == "grpo" and st["step"] == 3 and st["warnings"] == [entry]
    run.set_status("done", global_step=10)
    assert run.status()["warnings"] == [entry] and run.status()["status"] == "done"


def test_the_report_shows_the_warnings_first(tmp_path):
    from reasontune.stages.report import build_report
    from reasontune.runs.folder import RunFolder

    run = RunFolder(tmp_path)
    run.set_status("stopped", reason="grpo.stop_on: zero_variance at step 4")
    run.add_warning({"condition": "zero_variance", "stage": "grpo", "step": 4, "message": "too <hard>",
                     "figures": {}})
    run.append_metrics({"step": 1, "stage": "grpo", "loss": 0.0, "frac_reward_zero_std": 1.0})
    page = build_report(tmp_path).read_text()
    assert page.index("Warnings while training") < page.index("Training curves")
    assert "too &lt;hard&gt;" in page and "stopped: grpo.stop_on: zero_variance at step 4" in page


# ---- end to end on a tiny model -----------------------------------------------------------------------------
def spread(completions, **kw):
    """Distinct characters: varies between random completions, so groups are not uniform."""
    from reasontune.rewards.extract import completion_text

    return [len(set(completion_text(c))) / 8.0 for c in completions]


def tiny_argv(model_dir, out, *extra, steps: int = 3, window: int = 2):
    return ["train", "--model", str(model_dir), "--output-dir", str(out), "--dataset", "procedural:arithmetic",
            "--set", "data.train_size=16", "--set", "data.test_size=2", "--batch-size", "4",
            "--num-generations", "2", "--max-completion-length", "8", "--max-steps", str(steps),
            "--set", "grpo.save_steps=1000", "--set", "grpo.bf16=false", "--set", f"grpo.watch_window={window}",
            "--learning-rate", "1e-3", "--lora-r", "4", "--set", "lora.alpha=8", *extra]


def test_e2e_an_8_step_run_that_never_solves_warns_at_the_default_window(tiny_model_dir, tmp_path, one_thread):
    """Issue 35, item 2: 8 steps at the default watch_window (10) on a task the model never solves ended with no
    warning at all; now status.json and the report hold the zero-variance warning and what was checked."""
    from reasontune.cli import main
    from reasontune.config import RunConfig
    from reasontune.stages.report import build_report

    out = tmp_path / "run"
    assert main(tiny_argv(tiny_model_dir, out, steps=8, window=RunConfig().grpo.watch_window)) == 0
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "done" and st["global_step"] == 8
    zv = next(w for w in st["warnings"] if w["condition"] == "zero_variance")
    assert zv["step"] == ZERO_SIGNAL_STEPS and "no signal" in zv["message"]
    cov = st["watched"]["grpo"]
    assert cov["logged_steps"] == 8 and {"zero_variance", "nonfinite", "low_learning_rate"} <= set(cov["checked"])
    assert {"entropy_collapse", "length_shrink", "truncation"} <= set(cov["not_checked"])  # 8 of 10 or 20 steps
    page = build_report(out).read_text()
    assert "no signal" in page and "Not checked: " in page and "entropy_collapse (a trend: needs 20" in page


def test_e2e_constant_rewards_warn_about_zero_variance(tiny_model_dir, tmp_path, one_thread):
    """A random model cannot solve arithmetic: every completion scores the recipe's no-answer rewards."""
    from reasontune.cli import main
    from reasontune.stages.report import build_report

    out = tmp_path / "run"
    assert main(tiny_argv(tiny_model_dir, out)) == 0
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "done" and st["global_step"] == 3
    zv = next(w for w in st["warnings"] if w["condition"] == "zero_variance")
    assert zv["step"] == 2 and zv["figures"]["frac_reward_zero_std"] == 1.0  # within the window of 2
    assert "too hard" in zv["message"]
    assert "zero_variance" in st["warned"]
    assert "zero_variance" in build_report(out).read_text()


def test_e2e_varying_rewards_do_not_warn_about_zero_variance(tiny_model_dir, tmp_path, one_thread):
    from reasontune.cli import main

    out = tmp_path / "run"
    assert main(tiny_argv(tiny_model_dir, out, "--reward", "test_watch:spread")) == 0
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "done"
    assert "zero_variance" not in [w["condition"] for w in st["warnings"]]


def test_e2e_stop_on_zero_variance_stops_with_a_checkpoint(tiny_model_dir, tmp_path, one_thread):
    from reasontune.cli import main

    out = tmp_path / "run"
    assert main(tiny_argv(tiny_model_dir, out, "--set", "grpo.stop_on=zero_variance")) == 3
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "stopped" and st["global_step"] == 2
    assert st["reason"].startswith("grpo.stop_on: zero_variance at step 2")
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and (out / "adapter" / "adapter_config.json").is_file()


COV = {"window": 10, "logged_steps": 17, "checked": ["zero_variance", "entropy_collapse", "nonfinite"],
       "not_checked": {"length_shrink": "a trend: needs 20 logged steps of completions/mean_length, 17 logged"}}


@pytest.mark.parametrize("warnings, watched, expected, absent", [
    # no `watched` (a run before it was recorded): no claim about the conditions that did not warn
    ([], None, "was not recorded", "no warning from"),
    ([], COV, "checked 3 conditions over 17 logged grpo steps (window 10): no warning from zero_variance, "
     "entropy_collapse, nonfinite.\n\nNot checked: length_shrink (a trend: needs 20", "Warning at GRPO step"),
    ([{"step": 7, "condition": "entropy_collapse", "message": "the entropy fell", "stage": "grpo"}], COV,
     "Warning at GRPO step 7 (entropy_collapse): the entropy fell", "no warning from zero_variance, entropy"),
])
def test_the_demo_report_says_which_warnings_fired_or_that_none_did(tmp_path, warnings, watched, expected, absent):
    from reasontune.stages.demo import write_markdown

    (tmp_path / "train").mkdir()
    st = {"status": "done", "warnings": warnings, **({"watched": {"grpo": watched}} if watched else {})}
    (tmp_path / "train" / "status.json").write_text(json.dumps(st))
    stage = {"accuracy": 0.5, "format_rate": 1.0, "mean_length": 10.0, "n": 4}
    write_markdown(tmp_path, {"wall_seconds": 1.0, "backend": "fake", "before": dict(stage), "after": dict(stage)})
    md = (tmp_path / "report.md").read_text()
    assert expected in md and absent not in md
    assert "fired no warning" not in md
