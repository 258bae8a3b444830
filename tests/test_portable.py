"""Saved folders load anywhere exactly as trained: the chat template renders the training prompt from a
bare user message, the format travels with the folder, and a merged export answers like the adapter."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest
import torch

from reasontune import cli
from reasontune.config import from_dict
from reasontune.prompting import render_prompt

QUESTION = "Tom has 12 apples and buys 30 more. How many apples does he have?"
FORMAT = {"reasoning_start": "<think>", "reasoning_end": "</think>", "solution_start": "<answer>",
          "solution_end": "</answer>", "system_prompt": 'Reason first. Say "why" in <think>, then <answer>.'}


def _cfg(tiny_model_dir, out, **fmt):
    return from_dict({"model": {"name": str(tiny_model_dir)}, "lora": {"r": 4, "alpha": 8},
                      "format": {**FORMAT, **fmt}, "output_dir": str(out)})


def _training_prompt(tok, cfg, question=QUESTION):
    """What training and eval render: the system prompt + the question through the training tokenizer."""
    msgs = [{"role": "system", "content": cfg.format.prompt}, {"role": "user", "content": question}]
    return render_prompt(tok, msgs, cfg.format)


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    """An adapter (non-zero LoRA B) written the way train/sft/demo write theirs, with a non-default format."""
    from reasontune.models import load_model_and_tokenizer
    from reasontune.portable import save_adapter
    from reasontune.runfolder import RunFolder

    run = tmp_path_factory.mktemp("portable") / "run"
    cfg = _cfg(tiny_model_dir, run)
    RunFolder(run).start(cfg)
    torch.manual_seed(0)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    save_adapter(model, tok, run / "adapter", cfg, "test")
    return run, cfg, model, tok


@pytest.mark.parametrize("prefill", [True, False])
def test_folder_template_renders_the_training_prompt(tiny_model_dir, tmp_path, prefill):
    from transformers import AutoTokenizer

    from reasontune.models import load_tokenizer
    from reasontune.portable import finish_folder

    cfg = _cfg(tiny_model_dir, tmp_path, prefill_reasoning=prefill)
    train_tok = load_tokenizer(str(tiny_model_dir), cfg.model, cfg.format)
    before = train_tok.chat_template
    finish_folder(tmp_path, None, train_tok, cfg, "test")
    assert train_tok.chat_template == before, "saving must not change the live tokenizer's template"
    tok = AutoTokenizer.from_pretrained(tmp_path)
    bare = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                   add_generation_prompt=True)
    assert bare == _training_prompt(train_tok, cfg)
    assert bare.endswith("<think>") == prefill
    given = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}],
                                    tokenize=False, add_generation_prompt=True)
    assert "Be brief." in given and cfg.format.prompt not in given  # a given system message wins
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen["eos_token_id"] in (tok.eos_token_id, [tok.eos_token_id]) or gen["eos_token_id"][0] == tok.eos_token_id
    card = (tmp_path / "README.md").read_text()
    assert "Trained with reasontune" in card and "apply_chat_template" in card


def test_eval_takes_the_format_from_the_adapter_folder(saved, tmp_path):
    """The demo's adapter/ has no run config beside it: eval/advise must read the folder's own format."""
    import shutil

    from reasontune.evaluate import _run_config_near

    run, cfg, _, _ = saved
    alone = tmp_path / "adapter"  # as runs/demo/adapter: no reasontune_config.json here or in the parent
    shutil.copytree(run / "adapter", alone)
    got, path = _run_config_near(str(alone), None)
    assert path == str(alone)
    assert got is not None and got.format == cfg.format and got.model.name == cfg.model.name


def test_checkpoints_get_the_template(saved, tmp_path):
    from transformers import AutoTokenizer, TrainerControl, TrainerState

    from reasontune.portable import PortableCheckpoints

    _, cfg, model, tok = saved
    (tmp_path / "checkpoint-3").mkdir()
    state = TrainerState()
    state.global_step = 3
    PortableCheckpoints(tok, cfg).on_save(Namespace(output_dir=str(tmp_path)), state, TrainerControl(), model=model)
    ck = AutoTokenizer.from_pretrained(tmp_path / "checkpoint-3")
    assert ck.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                  add_generation_prompt=True) == _training_prompt(tok, cfg)


def test_merged_export_answers_like_the_adapter_with_plain_transformers(saved, tmp_path, capsys):
    """export --merged, then AutoModelForCausalLM + AutoTokenizer alone: bare user message ->
    apply_chat_template -> greedy generate gives the adapter model's answer to the training prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, cfg, model, tok = saved
    assert cli.main(["export", str(run), "--merged", "--dtype", "float32", "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    m_tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    ids = m_tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
    want_ids = tok(_training_prompt(tok, cfg), return_tensors="pt")
    assert ids["input_ids"].tolist() == want_ids["input_ids"].tolist()
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(cfg.model.name, dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, str(run / "adapter")).eval()  # the adapter's answers, fp32
    with torch.no_grad():
        got = merged.generate(**ids, max_new_tokens=12, do_sample=False)
        want = adapter.generate(**want_ids, max_new_tokens=12, do_sample=False)
    assert got.tolist() == want.tolist()
    assert json.loads((tmp_path / "m" / "reasontune_adapter.json").read_text())["format"] == cfg.to_dict()["format"]
    assert "peft" not in (tmp_path / "m" / "README.md").read_text().split("```python")[1]


def test_gguf_carries_the_training_template(saved, tmp_path, capsys):
    import gguf
    from transformers import AutoTokenizer

    run, *_ = saved
    assert cli.main(["export", str(run), "--gguf", "--gguf-type", "f32", "--out", str(tmp_path / "g")]) == 0
    capsys.readouterr()
    fields = gguf.GGUFReader(tmp_path / "g" / "model-f32.gguf").fields
    assert fields["tokenizer.chat_template"].contents() == AutoTokenizer.from_pretrained(run / "adapter").chat_template
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
