"""Saved folders load anywhere exactly as trained: the chat template renders the training prompt from a
bare user message, the format travels with the folder, and a merged export answers like the adapter."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest
import torch

from reasontune import cli
from reasontune.config import from_dict
from reasontune.models.prompting import render_prompt

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
    from reasontune.export.portable import save_adapter
    from reasontune.runs.folder import RunFolder

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


# The base templates a saved folder's template wraps: SmolLM2's own (chatml), prompting.reasoning_chat_template
# (base models), and Qwen3's (TRL ships the original text; it adds an empty think block to the last assistant
# turn and splits content at </think>). Each with the pieces a conversation is made of: a user turn as the base
# writes it in history (up to the generation prompt), and the end of an assistant turn.
CHATML_TURN = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
TEMPLATES = {"chatml": (CHATML_TURN, "<|im_end|>\n"), "reasoning": ("{}", "EOS"),
             "qwen3": (CHATML_TURN, "<|im_end|>\n")}
WORKED = "12 + 30 = 42\n</think>\n<answer>42</answer>"


def _base_tokenizer(tiny_model_dir, cfg, template):
    from pathlib import Path

    import trl

    from reasontune.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir), cfg.model, cfg.format)
    if template == "qwen3":
        tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    return tok


def _saved_tokenizer(tiny_model_dir, tmp_path, template, prefill):
    """(training tokenizer, the folder's tokenizer as a client loads it, cfg) for a base template."""
    from transformers import AutoTokenizer

    from reasontune.export.portable import finish_folder

    cfg = _cfg(tiny_model_dir, tmp_path, prefill_reasoning=prefill)
    if template == "reasoning":
        cfg.model.chat_template = "reasoning"
    train_tok = _base_tokenizer(tiny_model_dir, cfg, template)
    before = train_tok.chat_template
    finish_folder(tmp_path, None, train_tok, cfg, "test")
    assert train_tok.chat_template == before, "saving must not change the live tokenizer's template"
    return train_tok, AutoTokenizer.from_pretrained(tmp_path), cfg


def _conversations(train_tok, cfg, template, system=None):
    """(messages, add_generation_prompt, the text training renders for it), one to two turns: each assistant
    turn is the training prompt of the history before it, what the model generated after that prompt, and the
    template's end of turn; the next user turn is the base template's, up to its generation prompt."""
    from reasontune.models.prompting import completion_prefix

    turn, eot = TEMPLATES[template]
    eot = train_tok.eos_token if eot == "EOS" else eot
    head = [{"role": "system", "content": system}] if system else []
    p1 = render_prompt(train_tok, [{"role": "system", "content": system or cfg.format.prompt},
                                   {"role": "user", "content": QUESTION}], cfg.format)
    done = completion_prefix(cfg.format) + WORKED  # what the model generated after p1
    opened = cfg.format.prefill_reasoning or template == "reasoning"  # the reasoning template always opens it
    u1, a1, u2 = ({"role": "user", "content": QUESTION}, {"role": "assistant", "content": done},
                  {"role": "user", "content": "And 5 more?"})
    p2 = p1 + done + eot + turn.format("And 5 more?") + ("<think>" if opened else "")
    table = [(head + [u1], True, p1), (head + [u1, a1], False, p1 + done + eot), (head + [u1, a1, u2], True, p2),
             (head + [u1, a1, u2, a1], False, p2 + done + eot)]
    if cfg.format.prefill_reasoning:  # content that already starts with the marker: not written twice
        table.append((head + [u1, {"role": "assistant", "content": "<think>" + done}, u2], True, p2))
    return table


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("prefill", [True, False])
def test_folder_template_renders_every_turn_as_training_did(tiny_model_dir, tmp_path, template, prefill):
    """The folder's template through transformers' apply_chat_template, with and without the generation
    prompt: a bare user message gives the training prompt, and a conversation is the training prompt of each
    turn followed by what the model generated there; a given system message wins over the default."""
    train_tok, tok, cfg = _saved_tokenizer(tiny_model_dir, tmp_path, template, prefill)
    for system in (None, "Be brief."):
        for msgs, gen, want in _conversations(train_tok, cfg, template, system):
            got = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert got == want, (template, prefill, system, [m["role"] for m in msgs], gen)
            assert (system is None) == (cfg.format.prompt in got)
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen["eos_token_id"] in (tok.eos_token_id, [tok.eos_token_id]) or gen["eos_token_id"][0] == tok.eos_token_id
    card = (tmp_path / "README.md").read_text()
    assert "Trained with reasontune" in card and "apply_chat_template" in card


def test_eval_takes_the_format_from_the_adapter_folder(saved, tmp_path):
    """The demo's adapter/ has no run config beside it: eval/advise must read the folder's own format."""
    import shutil

    from reasontune.stages.evaluate import _run_config_near

    run, cfg, _, _ = saved
    alone = tmp_path / "adapter"  # as runs/demo/adapter: no reasontune_config.json here or in the parent
    shutil.copytree(run / "adapter", alone)
    got, path = _run_config_near(str(alone), None)
    assert path == str(alone)
    assert got is not None and got.format == cfg.format and got.model.name == cfg.model.name


def test_checkpoints_get_the_template(saved, tmp_path):
    from transformers import AutoTokenizer, TrainerControl, TrainerState

    from reasontune.export.portable import PortableCheckpoints

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


def test_gguf_template_renders_the_training_prompt(saved, tmp_path, capsys):
    """The chat template stored in the GGUF's metadata, read back with gguf's reader and rendered with jinja2
    (transformers' sandboxed renderer, as llama-cpp-python's Jinja2 formatter does): every turn of the
    conversations renders as training rendered it."""
    import gguf
    from transformers.utils.chat_template_utils import render_jinja_template

    run, cfg, _, tok = saved
    assert cli.main(["export", str(run), "--gguf", "--gguf-type", "f32", "--out", str(tmp_path / "g")]) == 0
    capsys.readouterr()
    fields = gguf.GGUFReader(tmp_path / "g" / "model-f32.gguf").fields
    template = fields["tokenizer.chat_template"].contents()
    for system in (None, "Be brief."):
        for msgs, gen, want in _conversations(tok, cfg, "chatml", system):
            (got,), _ = render_jinja_template([msgs], chat_template=template, add_generation_prompt=gen,
                                              **tok.special_tokens_map)
            assert got == want, (system, [m["role"] for m in msgs], gen)
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"


FOLDED = ("{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\\n' %}"
          "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
          "{% for m in msgs %}{% if m['role'] == 'user' %}{{ '[INST] ' + (sys if loop.first else '') + m['content']"
          " + ' [/INST]' }}{% else %}{{ m['content'] + '</s>' }}{% endif %}{% endfor %}")


def test_a_template_that_folds_the_system_prompt_keeps_its_history_and_marks_assistant_turns(tiny_model_dir):
    """A base that writes the system prompt into the first user turn (Llama-2 style) cannot be cut into
    per-turn pieces: the saved template keeps the base's history, with the marker opening each assistant
    turn, and the training prompt; wrapping a wrapped template changes nothing (export loads saved folders)."""
    from reasontune.models.prompting import training_chat_template

    cfg = _cfg(tiny_model_dir, "unused")
    tok = _base_tokenizer(tiny_model_dir, cfg, "chatml")
    tok.chat_template = FOLDED
    saved = training_chat_template(tok, cfg.format)
    assert "__rt_base" not in saved  # the per-turn wrapper's self-check refused this base
    msgs = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"}]
    got = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, chat_template=saved)
    assert got == f"[INST] {cfg.format.prompt}\nu1 [/INST]<think>a1</s>[INST] u2 [/INST]<think>"
    assert tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True,
                                   chat_template=saved) == _training_prompt(tok, cfg, "u1")
    tok.chat_template = saved
    assert training_chat_template(tok, cfg.format) == saved


@pytest.mark.parametrize("fmt", [{"code_system_prompt": "Write the Python function in <answer>."},
                                 {"system_prompt": None}], ids=["code_system_prompt", "derived"])
def test_a_code_runs_folder_defaults_to_the_code_system_prompt(tiny_model_dir, tmp_path, fmt):
    """A run whose rewards run tests trained on code rows, prompted with format.code_prompt: its adapter folder's
    template gives that prompt to a bare user message, and its format file and card record it."""
    from transformers import AutoTokenizer

    from reasontune.data import chat_messages
    from reasontune.export.portable import finish_folder

    cfg = from_dict({"model": {"name": str(tiny_model_dir)}, "format": {**FORMAT, **fmt},
                     "rewards": {"names": ["code_tests", "format_strict"]}, "output_dir": str(tmp_path)})
    assert cfg.format.code_prompt != cfg.format.prompt
    tok = _base_tokenizer(tiny_model_dir, cfg, "chatml")
    finish_folder(tmp_path, None, tok, cfg, "test")
    got = AutoTokenizer.from_pretrained(tmp_path).apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)
    assert got == render_prompt(tok, chat_messages(QUESTION, cfg.format, code=True), cfg.format)
    record = json.loads((tmp_path / "reasontune_adapter.json").read_text())
    assert record["system_prompt"] == cfg.format.code_prompt and record["format"] == cfg.to_dict()["format"]
    assert repr(cfg.format.code_prompt) in (tmp_path / "README.md").read_text()
