"""Prompt rendering shared by training, warm-up and evaluation, so all three see the same text.

Prompts are rendered to plain strings with the tokenizer's chat template (generation prompt on),
then the reasoning-start marker is appended when `format.prefill_reasoning` is set and the
template did not already add it. Completions therefore start inside the reasoning block.
"""

from __future__ import annotations

import json

from .config import FormatConfig, ModelConfig


def reasoning_chat_template(fmt: FormatConfig, eos: str) -> str:
    """A plain template for base models: system, user, and a generation prompt that ends with the
    reasoning-start marker, so completions begin inside the reasoning block (the recipe's trick)."""
    return (
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '" + eos + "' }}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'user' %}{{ message['content'] }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + '" + eos + "' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '" + fmt.reasoning_start + "' }}{% endif %}"
    )


def prepare_tokenizer(tok, model_cfg: ModelConfig, fmt: FormatConfig):
    """Pad token, left padding (decoder-only batched generation) and the chat template: the same
    setup whichever backend (transformers or Unsloth) loaded the tokenizer."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if model_cfg.chat_template == "reasoning" or tok.chat_template is None:
        tok.chat_template = reasoning_chat_template(fmt, tok.eos_token or "")
    return tok


def render_chat(tokenizer, messages) -> str:
    """Chat messages through the chat template with the generation prompt; a string is already rendered."""
    if isinstance(messages, str):
        return messages
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def render_prompt(tokenizer, messages, fmt: FormatConfig) -> str:
    """Chat messages (or an already-rendered string) -> the exact text the model continues."""
    text = render_chat(tokenizer, messages)
    if fmt.prefill_reasoning and not text.endswith(fmt.reasoning_start):
        text = text + fmt.reasoning_start
    return text


def completion_prefix(fmt: FormatConfig) -> str:
    """What a completion should start with: nothing when the prompt already opened the reasoning."""
    return "" if fmt.prefill_reasoning else fmt.reasoning_start


def render_target(worked: str, answer: str, fmt: FormatConfig, eos: str = "") -> str:
    """A worked solution in the reasoning format: the SFT warm-up's target completion."""
    return (f"{completion_prefix(fmt)}{worked.strip()}\n{fmt.reasoning_end}\n"
            f"{fmt.solution_start}{answer}{fmt.solution_end}{eos}")


def _jinja_str(text: str) -> str:
    """A Jinja string literal for any text: Jinja unescapes literals with Python's unicode-escape,
    which reads JSON's ASCII escapes (quotes, newlines, \\uXXXX) the same way."""
    return json.dumps(text, ensure_ascii=True)


def training_chat_template(tokenizer, fmt: FormatConfig) -> str:
    """The chat template a saved model should carry: from a bare user message it renders exactly the
    training prompt. The training tokenizer's own template, wrapped so that the configured system
    prompt is the default (a given system message still wins), and so that the generation prompt ends
    with the reasoning-start marker when `format.prefill_reasoning` is set and the template does not
    already add it. Clients (transformers, vLLM, llama.cpp, Ollama) then prompt it as it was trained."""
    base = tokenizer.chat_template
    if not isinstance(base, str) or not base.strip():
        raise ValueError("the tokenizer has no chat template to wrap")
    # No whitespace control ({%- -%}) here: it would strip the base template's own whitespace.
    default_system = ("{% if not messages or messages[0]['role'] != 'system' %}"
                      "{% set messages = [{'role': 'system', 'content': " + _jinja_str(fmt.prompt) + "}]"
                      " + messages %}{% endif %}")
    tail = ""
    if fmt.prefill_reasoning:
        probe = tokenizer.apply_chat_template(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}],
            tokenize=False, add_generation_prompt=True)
        if not probe.endswith(fmt.reasoning_start):
            tail = "{% if add_generation_prompt %}{{ " + _jinja_str(fmt.reasoning_start) + " }}{% endif %}"
    return default_system + base + tail


def stop_rule(cfg):
    """Where a completion ends besides EOS and the budget, for GRPO's rollouts (reasontune's decode) and eval's,
    advise's and ask's samples alike (a RunConfig): `grpo.stop_grace_tokens` after the closing answer marker when
    `grpo.stop_at_solution_end`, else nowhere."""
    from .generation import StopRule

    if not cfg.grpo.stop_at_solution_end:
        return StopRule()
    return StopRule(marker=cfg.format.solution_end, grace=cfg.grpo.stop_grace_tokens)
