"""`evaluate` and `reasontune eval` on the tiny random Llama: every metric key, the files, --run."""

from __future__ import annotations

import json

import pytest

from reasontune.config import from_dict, override

KEYS = {"n", "accuracy", "format_rate", "mean_length", "length_p50", "length_p90", "truncation_rate",
        "pass_at_k", "maj_at_k", "pass_at", "k", "by_difficulty", "reward_means", "wall_seconds"}
RECORD_KEYS = {"prompt", "question", "answer", "completion", "extracted", "correct", "format_ok", "num_tokens",
               "truncated", "sample", "kind", "scores"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(model_dir, **extra):
    cfg = from_dict({"model": {"name": str(model_dir)}, "data": {"dataset": "procedural:arithmetic",
                                                                 "train_size": 8, "test_size": 6}})
    return override(cfg, {"eval.limit": 4, "eval.samples": 2, "eval.max_new_tokens": 8, **extra})


def assert_metrics_match_records(m: dict, greedy: list[dict], fmt) -> None:
    """accuracy and format_rate are the greedy records' own grades, and each grade is the shared definition
    (rewards.grade, has_format) applied to the completion as written."""
    from reasontune.rewards import grade, has_format

    assert all(r["kind"] == "greedy" for r in greedy) and len(greedy) == m["n"]
    for r in greedy:
        assert (r["extracted"], r["correct"]) == grade(r["completion"], r["answer"], fmt)
        assert r["format_ok"] == has_format(r["completion"], fmt)
    assert m["accuracy"] == sum(r["correct"] for r in greedy) / len(greedy)
    assert m["format_rate"] == sum(r["format_ok"] for r in greedy) / len(greedy)


def test_evaluate_tiny_model_writes_everything(tiny_model_dir, tmp_path):
    from reasontune.stages.evaluate import evaluate

    m = evaluate(_cfg(tiny_model_dir), out_dir=tmp_path, progress=False)
    assert KEYS <= set(m)
    assert m["n"] == 4 and m["k"] == 2 and set(m["pass_at"]) == {"1", "2"}
    greedy = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()][:4]
    assert_metrics_match_records(m, greedy, _cfg(tiny_model_dir).format)
    assert m["mean_length"] <= 8 and m["length_p50"] <= m["length_p90"] <= 8
    assert set(m["reward_means"]) == {"format_exact", "format_approx", "answer_check", "number_check"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(m))
    recs = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert len(recs) == 4 + 4 * 2
    assert all(RECORD_KEYS <= set(r) for r in recs)
    assert [r["kind"] for r in recs].count("greedy") == 4
    assert sorted((r["index"], r["sample"]) for r in recs if r["kind"] == "sample") == [
        (i, j) for i in range(4) for j in range(2)]
    assert all(r["prompt"].endswith("<start_working_out>") for r in recs)  # same prompt text as training
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_sample_limit_samples_only_the_first_problems(tiny_model_dir, tmp_path):
    """eval.sample_limit: greedy on every problem, the samples (and pass@k) on the first N only."""
    from reasontune.stages.evaluate import evaluate

    m = evaluate(_cfg(tiny_model_dir, **{"eval.sample_limit": 2}), out_dir=tmp_path, progress=False)
    recs = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert m["n"] == 4 and m["sampled_n"] == 2 and m["k"] == 2
    assert [r["index"] for r in recs if r["kind"] == "greedy"] == [0, 1, 2, 3]
    assert sorted((r["index"], r["sample"]) for r in recs if r["kind"] == "sample") == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_evaluate_grades_given_model_and_rows(tiny_model_dir):
    """A stub model that always answers correctly: accuracy, format and maj@k must all be 1."""
    from reasontune.stages.evaluate import evaluate
    from reasontune.engines.generation import Generation

    rows = [{"question": f"{i} + 1?", "answer": str(i + 1), "difficulty": 1 + i % 2} for i in range(3)]
    cfg = _cfg(tiny_model_dir)

    import reasontune.engines.generation as gen

    def fake(model, tok, prompts, *, num_return_sequences=1, **kw):
        out = []
        for p in prompts:
            q = p.split("user\n")[-1].split(" + 1?")[0]
            text = f" {q} plus one\n<end_working_out>\n<SOLUTION>{int(q) + 1}</SOLUTION>"
            out.append([Generation(text, [1, 2, 3], 3, False) for _ in range(num_return_sequences)])
        return out

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    real, gen.generate = gen.generate, fake
    try:
        m = evaluate(cfg, model=object(), tokenizer=tok, dataset={"test": rows}, progress=False)
    finally:
        gen.generate = real
    assert (m["accuracy"], m["format_rate"], m["pass_at_k"], m["maj_at_k"], m["truncation_rate"]) == (1, 1, 1, 1, 0)
    same = {"accuracy": 1.0, "format_rate": 1.0, "pass_at_k": 1.0, "working_lines": 0.0, "mean_length": 3.0}
    assert m["by_difficulty"] == {"1": {"n": 2, **same}, "2": {"n": 1, **same}}


def test_pass_at_k_by_level_counts_problems_not_samples():
    """Level 1: one problem solved by 1 of 2 samples, one never -> pass@2 0.5; level 2: solved by both -> 1.0."""
    from reasontune.stages.evaluate import summarize

    def rec(index, level, correct):
        return {"index": index, "difficulty": level, "correct": correct, "format_ok": True, "num_tokens": 4,
                "truncated": False, "extracted": "1" if correct else "0", "answer": "1"}

    greedy = [rec(0, 1, False), rec(1, 1, False), rec(2, 2, True)]
    sampled = [rec(0, 1, True), rec(0, 1, False), rec(1, 1, False), rec(1, 1, False), rec(2, 2, True), rec(2, 2, True)]
    m = summarize(greedy, sampled, 2)
    assert {lv: v["pass_at_k"] for lv, v in m["by_difficulty"].items()} == {"1": 0.5, "2": 1.0}
    assert {lv: v["accuracy"] for lv, v in m["by_difficulty"].items()} == {"1": 0.0, "2": 1.0}
    assert summarize(greedy, None, None)["by_difficulty"]["1"].keys() == {"n", "accuracy", "format_rate", "mean_length"}


def test_working_lines_per_answer_by_level():
    """Equation lines of the working, counted per answer and averaged by level (the answer block is not working)."""
    from reasontune.config import FormatConfig
    from reasontune.stages.evaluate import summarize
    from reasontune.rewards.steps import working_lines

    end = FormatConfig().reasoning_end
    two = f"Maya has 9.\n9 + 3 = 12\n12 - 5 = 7\n{end}<answer>7 = 7</answer>"
    one = f"9 + 3 - 5 = 7\nso x = 7\n{end}<answer>7</answer>"
    assert (working_lines(two, end), working_lines(one, end), working_lines("no working", end)) == (2, 1, 0)

    def rec(level, text):
        return {"index": 0, "difficulty": level, "correct": True, "format_ok": True, "num_tokens": 4,
                "truncated": False, "working_lines": working_lines(text, end)}

    m = summarize([rec(1, one), rec(2, two), rec(2, one)])
    assert m["mean_working_lines"] == pytest.approx(4 / 3)
    assert {lv: v["working_lines"] for lv, v in m["by_difficulty"].items()} == {"1": 1.0, "2": 1.5}


def test_cli_eval_with_run_folder(tiny_model_dir, tmp_path, capsys):
    """--run brings the run's adapter, model and markers; flags still override eval settings."""
    from transformers import AutoModelForCausalLM

    from reasontune.cli import main
    from reasontune.config import LoraConfig
    from reasontune.models import add_lora

    run = tmp_path / "run"
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, alpha=4))
    model.save_pretrained(run / "adapter")
    cfg = override(_cfg(tiny_model_dir), {"format.solution_start": "<ANS>", "format.solution_end": "</ANS>"})
    (run / "reasontune_config.json").write_text(json.dumps({**cfg.to_dict(), "versions": {}}))
    rc = main(["eval", "--run", str(run), "--limit", "2", "--samples", "1", "--max-new-tokens", "4", "--json"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["n"] == 2 and m["format"]["solution_end"] == "</ANS>" and m["adapter"].endswith("adapter")
    assert "pass_at_k" not in m and m["max_new_tokens"] == 4
    assert (run / "eval" / "metrics.json").is_file()
    assert main(["eval", "--run", str(tmp_path / "nope"), "--limit", "1"]) == 2


def test_eval_of_a_demo_folder_grades_its_task_at_its_budget(tiny_model_dir, tmp_path, capsys):
    """The demo's runs/demo has no run config beside adapter/: `eval --run` and `eval --adapter`, with no
    --dataset, used to grade procedural:arithmetic at 256 tokens. The adapter folder now records its run's
    config, so both grade the task and levels it trained on, at GRPO's budget; a flag still wins."""
    import torch

    from reasontune.cli import main
    from reasontune.config import from_dict
    from reasontune.models import load_model_and_tokenizer
    from reasontune.export.portable import save_adapter

    cfg = from_dict({"model": {"name": str(tiny_model_dir), "dtype": "float32"}, "lora": {"r": 2, "alpha": 4},
                     "data": {"dataset": "procedural:small_arithmetic", "difficulty": [2], "train_size": 20,
                              "test_size": 6},
                     "grpo": {"max_completion_length": 7, "temperature": 0.7}})
    torch.manual_seed(0)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    save_adapter(model, tok, tmp_path / "demo" / "adapter", cfg, "test")
    for src in (["--run", str(tmp_path / "demo")], ["--adapter", str(tmp_path / "demo" / "adapter")]):
        assert main(["eval", *src, "--limit", "3", "--json", "--out", str(tmp_path / "ev")]) == 0
        m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (m["dataset"], m["max_new_tokens"], m["n"]) == ("procedural:small_arithmetic", 7, 3)
        assert set(m["by_difficulty"]) == {"2"}
    assert main(["eval", "--run", str(tmp_path / "demo"), "--limit", "2", "--samples", "2", "--max-new-tokens", "5",
                 "--json", "--out", str(tmp_path / "ev")]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["max_new_tokens"] == 5 and m["sampling"]["temperature"] == 0.7  # GRPO's temperature by default


def test_a_reward_builder_type_error_is_raised_not_retried_without_the_length():
    """eval used to catch TypeError and rebuild the rewards without the completion budget: a bug in a
    builder silently became another reward set (overlong_soft left out). Now it surfaces."""
    import types

    from reasontune.stages.evaluate import _build_rewards
    from reasontune.rewards import REGISTRY, register_builder

    def builder(ctx):
        if ctx.max_completion_length is not None:
            return len(ctx)  # a bug: TypeError
        return lambda completions, **kw: [0.0] * len(completions)

    register_builder("tmp_type_error_reward", builder)
    try:
        cfg = from_dict({"rewards": {"names": ["verified", "tmp_type_error_reward"]}})
        with pytest.raises(TypeError):
            _build_rewards(cfg, types.SimpleNamespace(eos_token="</s>"), 64)
    finally:
        REGISTRY.unregister("tmp_type_error_reward")


def test_cli_eval_grades_every_row_of_a_file(tiny_model_dir, tmp_path, capsys):
    """`eval --dataset FILE --limit 200` on a 200-row file grades all 200: no train/test split is forced and no
    length quantile drops the longest problems (it used to keep 188 and then refuse to hold out 200)."""
    from reasontune.cli import main

    path = tmp_path / "two_hundred.jsonl"
    rows = [{"question": f"What is {i} plus one?" + " Think it over." * (i % 40), "answer": str(i + 1)}
            for i in range(200)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(tiny_model_dir), "--dataset", str(path), "--limit", "200",
               "--max-new-tokens", "1", "--out", str(out), "--json"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["n"] == 200
    graded = [json.loads(line)["question"] for line in (out / "completions.jsonl").read_text().splitlines()]
    assert sorted(graded) == sorted(r["question"] for r in rows)
    assert main(["eval", "--model", str(tiny_model_dir), "--dataset", str(path), "--limit", "200",
                 "--max-new-tokens", "1", "--out", str(out), "--json", "--set", "eval.max_prompt_quantile=0.5"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 100 <= m["n"] < 200  # a length filter only when asked for


def test_accuracy_and_format_rate_are_the_graded_records(tiny_model_dir, tmp_path, monkeypatch):
    """Right with the format, wrong without it, right without the format: accuracy 2/3, format rate 1/3,
    each from the records' own grades."""
    from transformers import AutoTokenizer

    import reasontune.engines.generation as gen
    from reasontune.stages.evaluate import evaluate
    from reasontune.engines.generation import Generation

    rows = [{"question": f"{i} + 1?", "answer": str(i + 1)} for i in range(3)]
    texts = [" 0 + 1 = 1\n<end_working_out>\n<SOLUTION>1</SOLUTION>", " no idea", " it is <SOLUTION>3</SOLUTION>"]
    monkeypatch.setattr(gen, "generate", lambda model, tok, prompts, **kw: [[Generation(t, [1], 1, False)]
                                                                            for t in texts[:len(prompts)]])
    cfg = override(_cfg(tiny_model_dir), {"eval.samples": 1})
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    m = evaluate(cfg, model=object(), tokenizer=tok, dataset={"test": rows}, out_dir=tmp_path, progress=False)
    greedy = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [(r["correct"], r["format_ok"]) for r in greedy] == [(True, True), (False, False), (True, False)]
    assert (m["accuracy"], m["format_rate"]) == (2 / 3, 1 / 3)
    assert_metrics_match_records(m, greedy, cfg.format)


def test_eval_caps_prompt_plus_completion_at_max_seq_length(tiny_model_dir, tmp_path):
    """Issue 35, item 3: eval's completions fit model.max_seq_length with their prompt, as vLLM's max_model_len
    makes them fit there (our decode used to generate the whole eval.max_new_tokens past it)."""
    from transformers import AutoTokenizer

    from reasontune.stages.evaluate import evaluate

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    free = evaluate(_cfg(tiny_model_dir, **{"eval.samples": 1}), out_dir=tmp_path / "free", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "free" / "completions.jsonl").read_text().splitlines()]
    lengths = [len(tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in recs]
    cap = min(lengths) + 3
    m = evaluate(_cfg(tiny_model_dir, **{"eval.samples": 1, "model.max_seq_length": cap}), out_dir=tmp_path / "cap",
                 progress=False)
    capped = [json.loads(x) for x in (tmp_path / "cap" / "completions.jsonl").read_text().splitlines()]
    for n, r, f in zip(lengths, capped, recs):
        assert r["num_tokens"] == min(f["num_tokens"], max(0, cap - n))  # the same tokens, up to the cap
    assert sum(r["num_tokens"] for r in capped) < sum(r["num_tokens"] for r in recs)  # the cap did bind
    assert m["truncation_rate"] == sum(r["truncated"] for r in capped) / len(capped) and m["truncation_rate"] > 0
