"""`reasontune ask`: base and tuned answers to the same training prompt, side by side, scored."""

from __future__ import annotations

from argparse import Namespace

import pytest
import torch

from reasontune import cli
from reasontune.stages.ask import Answer, plain_columns, read_questions
from reasontune.config import ConfigError, from_dict

QUESTION = "Tom has 12 apples and buys 30 more. How many apples does he have?"


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    from reasontune.models import load_model_and_tokenizer
    from reasontune.export.portable import save_adapter

    out = tmp_path_factory.mktemp("ask") / "adapter"
    cfg = from_dict({"model": {"name": str(tiny_model_dir), "dtype": "float32"}, "lora": {"r": 4, "alpha": 8},
                     "format": {"reasoning_start": "<think>", "reasoning_end": "</think>",
                                "solution_start": "<answer>", "solution_end": "</answer>"}})
    torch.manual_seed(0)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1.0)
    save_adapter(model, tok, out, cfg, "test")
    return out, cfg


def test_ask_prints_both_answers_the_models_give(adapter, capsys):
    """The columns hold the base model's and the adapter model's own greedy answers to the training prompt."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, cfg = adapter
    assert cli.main(["ask", "--adapter", str(folder), QUESTION, "--answer", "42", "--plain",
                     "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Q: {QUESTION}") and "base model" in out and "tuned model" in out
    assert out.count("answer: (none)  wrong  rewards: ") == 2  # random models: no answer block, scored

    tok = AutoTokenizer.from_pretrained(folder)  # renders the training prompt from the bare question
    ids = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    base = AutoModelForCausalLM.from_pretrained(cfg.model.name, dtype=torch.float32).eval()
    n = ids["input_ids"].shape[1]
    with torch.no_grad():
        want_base = tok.decode(base.generate(**ids, max_new_tokens=6, do_sample=False)[0, n:], skip_special_tokens=True)
        tuned = PeftModel.from_pretrained(base, str(folder)).eval()
        want_tuned = tok.decode(tuned.generate(**ids, max_new_tokens=6, do_sample=False)[0, n:],
                                skip_special_tokens=True)
    assert want_base != want_tuned, "the adapter must change the answer for this test to mean much"
    left, right = zip(*(line.split(" | ", 1) for line in out.splitlines()[3:] if " | " in line))
    assert " ".join(left).split()[:len(want_base.split())] == want_base.split()
    assert " ".join(right).split()[:len(want_tuned.split())] == want_tuned.split()


def test_ask_scores_an_answer_as_eval_and_grpo_do(adapter):
    """ask's reward scores for a completion are eval's for the same completion of the same row (scoring.py):
    the same ids reach the length reward (ask used to pass none, so overlong_soft estimated the length from
    characters). That the same stop rule ends ask's answers: test_ask_ends_an_answer_by_eval_s_stop_rule."""
    from transformers import AutoTokenizer

    from reasontune.stages.ask import score
    from reasontune.config import override
    from reasontune.stages.evaluate import _records
    from reasontune.engines.generation import to_generation
    from reasontune.rewards import run_reward_funcs

    folder, cfg = adapter
    cfg = override(cfg, {"rewards.names": ["recipe", "overlong_soft", "step_check"]})
    tok = AutoTokenizer.from_pretrained(folder)
    text = "12 + 30 = 42\n</think>\n<answer>42</answer>"
    g = to_generation(tok, tok.encode(text, add_special_tokens=False) + [tok.eos_token_id], "eos")
    funcs = run_reward_funcs(cfg, tok.eos_token, 8)[0]  # a small budget: the length reward is not flat
    got = score(g, "42", cfg, funcs, QUESTION, "PROMPT")
    [rec] = _records([{"question": QUESTION, "answer": "42"}], ["PROMPT"], [[g]], "greedy", cfg, funcs)
    assert got.correct and got.rewards == rec["scores"]
    assert rec["scores"]["overlong_soft"] < 0  # the ids (over the budget of 8) were counted


def test_ask_ends_an_answer_by_eval_s_stop_rule(adapter):
    """ask's greedy answer is our decode's under the run's StopRule: with the closing answer marker set to a piece
    of text the tiny model writes early, both end `grpo.stop_grace_tokens` after it, with the same ids."""
    from reasontune.stages.ask import answer
    from reasontune.config import override
    from reasontune.engines.generation import generate
    from reasontune.models import load_model_and_tokenizer
    from reasontune.models.prompting import render_prompt, stop_rule

    _, cfg = adapter
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=None)
    prompt = render_prompt(tok, [{"role": "user", "content": QUESTION}], cfg.format)
    [[free]] = generate(model, tok, [prompt], max_new_tokens=24, autocast_setting="false")
    assert free.num_tokens == 24 and not free.stopped  # no marker written: the budget ends it
    marker = tok.decode(free.token_ids[3:5])  # two tokens the model writes at positions 3-4
    cfg = override(cfg, {"format.solution_end": marker, "grpo.stop_at_solution_end": True,
                         "grpo.stop_grace_tokens": 2})
    got = answer(model, tok, prompt, cfg, 24, lambda text: None, tuned=False)
    [[want]] = generate(model, tok, [prompt], max_new_tokens=24, stop=stop_rule(cfg), autocast_setting="false")
    assert got == want  # the same ids and text, ended the same way
    # ended by the marker (neither EOS nor the budget), its grace tokens after it
    assert not got.stopped and not got.truncated and got.num_tokens < 24
    assert got.token_ids == free.token_ids[:got.num_tokens] and marker in got.text


def test_questions_from_a_file_with_reference_answers(tmp_path):
    f = tmp_path / "q.txt"
    f.write_text("What is 2 + 2?\t4\n\nWhat is 3 * 3?\n")
    args = Namespace(questions=[], file=str(f), answer=None)
    assert read_questions(args) == [("What is 2 + 2?", "4"), ("What is 3 * 3?", None)]
    with pytest.raises(ConfigError, match="exactly one question"):
        read_questions(Namespace(questions=["a", "b"], file=None, answer="4"))
    with pytest.raises(ConfigError, match="no question"):
        read_questions(Namespace(questions=[], file=None, answer=None))


def test_plain_columns_show_value_verdict_and_rewards():
    left = Answer("<think>2+2=5</think><answer>5</answer>", "5", False, {"answer_check": -1.0})
    right = Answer("<think>2+2=4</think><answer>4</answer>", "4", True, {"answer_check": 3.0})
    text = plain_columns("What is 2 + 2?", left, right, 100)
    row = next(line for line in text.splitlines() if line.startswith("answer: 5"))
    assert row.split(" | ") == ["answer: 5  wrong  rewards: answer_check -1".ljust(48),
                                "answer: 4  right  rewards: answer_check 3"]


def test_ask_engine_flag_is_read_and_checked_before_a_model_loads(adapter, monkeypatch, capsys):
    """--engine reaches ask: an unknown name, and vllm where it does not import, are refused (exit 2, the
    fix named) before any model loads; --engine transformers answers with our model."""
    from reasontune import engines, models

    folder, _ = adapter
    loads = []
    real_load = models.load_model_and_tokenizer

    def counting_load(*a, **kw):
        loads.append(a)
        return real_load(*a, **kw)

    monkeypatch.setattr(models, "load_model_and_tokenizer", counting_load)
    ask = ["ask", "--adapter", str(folder), QUESTION, "--plain", "--max-new-tokens", "2"]
    assert cli.main(ask + ["--engine", "llamacpp"]) == 2
    assert "eval.engine" in capsys.readouterr().err and loads == []
    monkeypatch.setattr(engines, "vllm_importable", lambda: (False, "vllm is not installed"))
    assert cli.main(ask + ["--engine", "vllm"]) == 2
    assert "vllm is not installed" in (err := capsys.readouterr().err) and "--engine transformers" in err
    assert loads == []
    picked = []
    real_pick = engines.pick_engine
    monkeypatch.setattr(engines, "pick_engine", lambda name, device=None: picked.append(name) or real_pick(name))
    assert cli.main(ask + ["--engine", "transformers"]) == 0
    assert picked == ["transformers"] and len(loads) == 1
    assert "tuned model" in capsys.readouterr().out
