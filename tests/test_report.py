"""HTML report and compare on folders written here (eval, training run, demo): no model needed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from reasontune.stages.report import build_report, compare, compare_markdown, highlight

FMT = {"reasoning_start": "<start_working_out>", "reasoning_end": "<end_working_out>",
       "solution_start": "<SOLUTION>", "solution_end": "</SOLUTION>"}
EVIL = "<script>alert(1)</script> & \"quotes\""


def _completion(i: int, answer: str) -> str:
    return f" step {i}: add the numbers {EVIL if i == 0 else ''}\n<end_working_out>\n<SOLUTION>{answer}</SOLUTION>"


def write_eval(d: Path, correct: list[bool], levels=(1, 2)) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    recs = []
    for i, ok in enumerate(correct):
        gold = str(i + 10)
        pred = gold if ok else str(i + 99)
        recs.append({"index": i, "kind": "greedy", "sample": 0, "prompt": "p", "question": f"What is {i} + 10?",
                     "answer": gold, "completion": _completion(i, pred), "extracted": pred, "correct": ok,
                     "format_ok": True, "num_tokens": 20 + i, "truncated": False, "difficulty": levels[i % 2]})
    acc = sum(correct) / len(correct)
    by = {str(lv): {"n": sum(1 for r in recs if r["difficulty"] == lv),
                    "accuracy": sum(r["correct"] for r in recs if r["difficulty"] == lv)
                    / max(1, sum(1 for r in recs if r["difficulty"] == lv)), "format_rate": 1.0} for lv in levels}
    metrics = {"n": len(recs), "accuracy": acc, "format_rate": 1.0, "mean_length": 25.0, "length_p50": 25.0,
               "length_p90": 28.0, "truncation_rate": 0.0, "by_difficulty": by, "format": FMT,
               "model": "tiny", "dataset": "procedural:arithmetic"}
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def write_train_log(path: Path, steps: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"step": s, "reward": 0.1 * s, "reward_std": 0.3, "rewards/format_exact/mean": 0.05 * s,
             "rewards/answer_check/mean": 0.02 * s, "rewards/answer_check/std": 0.1, "frac_reward_zero_std": 0.5,
             "completions/mean_length": 100 - s, "kl": 0.001 * s, "loss": 0.01, "learning_rate": 5e-6,
             "step_time": 3.0, "mystery_metric": math.sin(s), "note": "text is ignored"} for s in range(1, steps + 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 99, "rew')  # half-written last line
    return path


def write_demo(d: Path) -> Path:
    write_eval(d / "evals" / "before", [False] * 6 + [True] * 2)
    write_eval(d / "evals" / "after", [True] * 6 + [False] * 2)
    write_train_log(d / "train" / "metrics.jsonl")
    (d / "metrics.json").write_text(json.dumps({
        "before": {"accuracy": 0.25, "format_rate": 1.0, "mean_length": 25.0},
        "after": {"accuracy": 0.75, "format_rate": 1.0, "mean_length": 25.0},
        "wall_seconds": 1234.5, "settings": {"max_steps": 10}}))
    return d


def _check_page(page: str) -> None:
    assert '<img src="data:image/png;base64,' in page or 'src="data:image/png;base64,' in page
    assert not re.search(r"(src|href)=['\"]?https?://", page)
    assert "http://" not in page and "https://" not in page


def test_report_on_eval_folder(tmp_path):
    d = write_eval(tmp_path / "ev", [True, False, True, False])
    out = build_report(d)
    page = out.read_text()
    _check_page(page)
    assert out == d / "report.html"
    assert "<script>alert(1)</script>" not in page  # sample text is escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<span class="answer">' in page and '<span class="reason">' in page
    assert "Training curves" not in page


def test_report_on_run_folder(tmp_path):
    d = tmp_path / "run"
    write_train_log(d / "metrics.jsonl")
    (d / "reasontune_config.json").write_text(json.dumps({"model": {"name": "m"}, "data": {"dataset": "ds"}}))
    page = build_report(d, tmp_path / "r.html").read_text()
    _check_page(page)
    assert "Training curves" in page
    for title in ("Reward (mean", "Reward components", "Zero-variance", "Completion length", "KL", "Other: mystery"):
        assert title in page
    assert "answer_check/std" not in page  # std of a component is not plotted as a curve


def test_report_on_demo_folder(tmp_path):
    d = write_demo(tmp_path / "demo")
    page = build_report(d).read_text()
    _check_page(page)
    assert page.count("data:image/png;base64,") >= 4  # stage bars, difficulty bars, curves
    assert "before" in page and "after" in page and "Training curves" in page
    assert "1234.5" in page


def test_report_headline_names_every_stage_and_the_stop_rate():
    """base -> warm-up -> GRPO with each step's gain, not base -> GRPO only (the warm-up's share was hidden),
    and how often each stage's model stops on its own."""
    from reasontune.stages.report import headline

    stages = {"before": {"accuracy": 0.0, "stop_rate": 0.0}, "warmup": {"accuracy": 0.345, "stop_rate": 1.0},
              "after": {"accuracy": 0.47, "stop_rate": 0.96}}
    h = headline(stages, [(s, m["accuracy"]) for s, m in stages.items()])
    assert h.startswith("accuracy base 0.000 → warm-up 0.345 → GRPO 0.470")
    assert "warm-up over base <b>+0.345</b>" in h and "GRPO over warm-up <b>+0.125</b>" in h
    assert h.endswith("stops on its own 0.00 → 1.00 → 0.96")


@pytest.fixture
def plotted(monkeypatch):
    """What the report's figures draw: bar heights and line values by label, and text notes."""
    from matplotlib.axes import Axes

    seen = {"bar": {}, "plot": {}, "text": []}
    real_bar, real_plot, real_text = Axes.bar, Axes.plot, Axes.text

    def bar(self, x, height, *a, label=None, **k):
        seen["bar"].setdefault(label, []).extend(float(h) for h in height)
        return real_bar(self, x, height, *a, label=label, **k)

    def plot(self, x, y, *a, label=None, **k):
        seen["plot"][label] = [float(v) for v in y]
        return real_plot(self, x, y, *a, label=label, **k)

    def text(self, x, y, s, *a, **k):
        seen["text"].append(s)
        return real_text(self, x, y, s, *a, **k)

    monkeypatch.setattr(Axes, "bar", bar)
    monkeypatch.setattr(Axes, "plot", plot)
    monkeypatch.setattr(Axes, "text", text)
    return seen


def test_report_bars_are_the_values_of_the_metrics_files(tmp_path, plotted):
    d = write_demo(tmp_path / "demo")
    for stage, acc, fmt_rate in (("before", 0.137, 0.5), ("after", 0.642, 0.875)):
        m = json.loads((d / "evals" / stage / "metrics.json").read_text())
        m.update(accuracy=acc, format_rate=fmt_rate)
        m["by_difficulty"]["1"]["accuracy"], m["by_difficulty"]["2"]["accuracy"] = acc / 2, acc / 4
        (d / "evals" / stage / "metrics.json").write_text(json.dumps(m))
    build_report(d)
    assert plotted["bar"]["accuracy"] == [0.137, 0.642] and plotted["bar"]["format rate"] == [0.5, 0.875]
    assert plotted["bar"]["before"] == pytest.approx([0.137 / 2, 0.137 / 4])  # levels 1 and 2
    assert plotted["bar"]["after"] == pytest.approx([0.642 / 2, 0.642 / 4])
    assert plotted["plot"]["reward"] == pytest.approx([0.1 * s for s in range(1, 13)])  # from metrics.jsonl
    assert "not measured" not in plotted["text"]


def test_report_draws_no_bar_for_a_metric_not_measured(tmp_path, plotted):
    d = write_eval(tmp_path / "ev", [True, False, True, False])
    m = json.loads((d / "metrics.json").read_text())
    del m["format_rate"]
    m["by_difficulty"]["2"].pop("accuracy")
    (d / "metrics.json").write_text(json.dumps(m))
    page = build_report(d).read_text()
    assert plotted["bar"]["accuracy"] == [0.5] and "format rate" not in plotted["bar"]
    assert plotted["bar"]["ev"] == [1.0]  # level 1 only: level 2 has no accuracy
    assert plotted["text"].count("not measured") == 2
    assert "<td>format_rate</td>" not in page  # and the table has no row of zeros for it


def test_report_refuses_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path)


def test_highlight_escapes_then_wraps():
    text = "a<b\n<end_working_out>\n<SOLUTION>x & y</SOLUTION> tail"
    out = highlight(text, FMT)
    assert out.startswith('<span class="reason">a&lt;b')
    assert '<span class="answer"><span class="mk">&lt;SOLUTION&gt;</span>x &amp; y' in out
    assert out.endswith(" tail")
    assert highlight("no markers <i>", FMT) == "no markers &lt;i&gt;"


def test_compare_paired(tmp_path):
    a = write_eval(tmp_path / "a", [False, False, True, True])
    b = write_eval(tmp_path / "b", [True, True, True, False])
    res = compare(a, b)
    p = res["paired"]
    assert p["n"] == 4 and p["diff"] == pytest.approx(0.25)
    assert p["low"] <= 0.25 <= p["high"] and p["low"] < p["high"]
    assert res["counts"] == {"paired": 4, "both_right": 1, "both_wrong": 0, "only_a_right": 1, "only_b_right": 2}
    assert [e["question"] for e in res["only_b_right"]] == ["What is 0 + 10?", "What is 1 + 10?"]
    md = compare_markdown(res)
    assert "| accuracy | 0.500 | 0.750 | +0.250 |" in md and "B right, A wrong" in md


def test_compare_identical_and_extremes(tmp_path):
    a = write_eval(tmp_path / "a", [True, False, True])
    res = compare(a, a)
    assert (res["paired"]["diff"], res["paired"]["low"], res["paired"]["high"]) == (0.0, 0.0, 0.0)
    wrong = write_eval(tmp_path / "w", [False] * 5)
    right = write_eval(tmp_path / "r", [True] * 5)
    p = compare(wrong, right)["paired"]
    assert (p["diff"], p["low"], p["high"]) == (1.0, 1.0, 1.0)


def test_compare_resolves_demo_folder(tmp_path):
    demo = write_demo(tmp_path / "demo")
    res = compare(demo / "evals" / "before", demo)  # a demo folder means its last stage (after)
    assert res["b"].endswith("after") and res["paired"]["diff"] == pytest.approx(0.5)


def test_cli_compare_and_report(tmp_path, capsys):
    from reasontune.cli import main

    a = write_eval(tmp_path / "a", [False, True])
    b = write_eval(tmp_path / "b", [True, True])
    assert main(["compare", str(a), str(b), "--json", "--out", str(tmp_path / "c.md")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["paired"]["diff"] == pytest.approx(0.5)
    assert (tmp_path / "c.md").read_text().startswith("# Comparison")
    assert main(["report", str(b), "--out", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").is_file()
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
