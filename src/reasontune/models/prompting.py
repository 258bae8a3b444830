"""Prompt rendering shared by training, warm-up and evaluation, so all three see the same text.

Prompts are rendered to plain strings with the tokenizer's chat template (generation prompt on),
then the reasoning-start marker is appended when `format.prefill_reasoning` is set and the
template did not already add it. Completions therefore start inside the reasoning block.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from reasontune.config import FormatConfig, GRPOSettings, ModelConfig

logger = logging.getLogger(__name__)


def reasoning_chat_template(fmt: FormatConfig, eos: str) -> str:
    """A plain template for base models: system, user, and a generation prompt that ends with the
    reasoning-start marker, so completions begin inside the reasoning block (the recipe's trick). An
    assistant turn in history reads the same way: the marker (unless its content starts with it), the
    content, EOS, which is the prompt plus what the model generated."""
    start = _jinja_str(fmt.reasoning_start)
    return (
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '" + eos + "' }}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'user' %}{{ message['content'] }}"
        "{% elif message['role'] == 'assistant' %}"
        "{% if not message['content'].startswith(" + start + ") %}{{ " + start + " }}{% endif %}"
        "{{ message['content'] + '" + eos + "' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ " + start + " }}{% endif %}"
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


_SENTINEL = "\x00reasontune-content\x00"
_OURS = "{# reasontune: the training prompt, every turn #}"


def _prompt_of(tokenizer) -> str:
    return tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "x"}],
                                         tokenize=False, add_generation_prompt=True)


def _turn_end(tokenizer) -> str | None:
    """What the base template writes right after an assistant message's content (chatml: <|im_end|> and a
    newline; the reasoning template: EOS); None when it drops or rewrites the content."""
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "x"},
            {"role": "assistant", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    return text[text.index(_SENTINEL) + len(_SENTINEL):] if text.count(_SENTINEL) == 1 else None


def _history_template(fmt: FormatConfig, eot: str) -> str:
    """Jinja that renders `messages` (system first) with the base template wrapped as the macro __rt_base.

    Each plain assistant turn (string content, no tool calls) is the generation prompt of the history
    before it (the training prompt: with `format.prefill_reasoning`, ending with the reasoning-start marker),
    its content (a leading marker is not written twice) and `eot`: what the model generated after that prompt. The
    base template renders everything else, as the pieces between those turns. Base templates that rewrite
    assistant turns (Qwen3's adds an empty think block to the last one and strips it from earlier ones)
    then render history as the model saw it in training."""
    start = _jinja_str(fmt.reasoning_start)
    cont, tail = "m['content']", ""
    if fmt.prefill_reasoning:
        cont = f"(m['content'][{len(fmt.reasoning_start)}:] if m['content'].startswith({start}) else m['content'])"
        tail = ("{% if not __rt.text.endswith(" + start + ") %}{% set __rt.text = __rt.text + " + start
                + " %}{% endif %}")
    # The base's rendering of messages[a:b] after the system message: its rendering of system +
    # messages[a:b] less that of the system message alone.
    piece = "__rt_base(messages[:1] + messages[__rt.done:{end}], {gen})[__rt_head|length:]"
    return (
        "{% set __rt = namespace(text='', done=0) %}{% set __rt_head = __rt_base(messages[:1], false) %}"
        "{% for m in messages %}{% if m['role'] == 'assistant' and m['content'] is string and not m.tool_calls %}"
        "{% if __rt.done == 0 %}{% set __rt.text = __rt_base(messages[:loop.index0], true) %}"
        "{% else %}{% set __rt.text = __rt.text + " + piece.format(end="loop.index0", gen="true") + " %}{% endif %}"
        + tail + "{% set __rt.text = __rt.text + " + cont + " + " + _jinja_str(eot) + " %}"
        "{% set __rt.done = loop.index0 + 1 %}{% endif %}{% endfor %}"
        "{% if __rt.done == 0 %}{% set __rt.text = __rt_base(messages, add_generation_prompt) %}"
        "{% elif __rt.done < messages|length or add_generation_prompt %}"
        "{% set __rt.text = __rt.text + " + piece.format(end="", gen="add_generation_prompt") + " %}{% endif %}"
        "{% if add_generation_prompt %}" + tail + "{% endif %}{{ __rt.text }}"
    )


def training_chat_template(tokenizer, fmt: FormatConfig) -> str:
    """The chat template a saved model should carry: it renders what training rendered, with and without
    the generation prompt, single-turn and multi-turn. The configured system prompt is the default (a given
    system message still wins); the generation prompt ends with the reasoning-start marker when
    `format.prefill_reasoning` is set and the base template does not already add it; an assistant turn in
    history is that prompt plus its content plus the template's end of turn (_history_template). So a
    bare user message gives the training prompt, and SFT on messages or TRL's multi-turn and tool GRPO
    render a conversation as GRPO trained on it. Clients (transformers, vLLM, llama.cpp) then prompt
    it as it was trained."""
    base = tokenizer.chat_template
    if not isinstance(base, str) or not base.strip():
        raise ValueError("the tokenizer has no chat template to wrap")
    if base.startswith(_OURS):  # a saved folder's tokenizer (export loads one): already wrapped
        return base
    # No whitespace control ({%- -%}) here: it would strip the base template's own whitespace.
    default_system = ("{% if not messages or messages[0]['role'] != 'system' %}"
                      "{% set messages = [{'role': 'system', 'content': " + _jinja_str(fmt.prompt) + "}]"
                      " + messages %}{% endif %}")
    gen_tail = ""
    if fmt.prefill_reasoning and not _prompt_of(tokenizer).endswith(fmt.reasoning_start):
        gen_tail = "{% if add_generation_prompt %}{{ " + _jinja_str(fmt.reasoning_start) + " }}{% endif %}"
    eot = _turn_end(tokenizer)
    if eot is not None:
        wrapped = ("{% macro __rt_base(messages, add_generation_prompt) %}" + base + "{% endmacro %}"
                   + default_system + _history_template(fmt, eot))
        if _renders_history(tokenizer, wrapped, fmt):
            return _OURS + wrapped
    # A base that drops assistant content, or renders a turn's pieces differently in context (a system prompt
    # folded into the first user turn): its own history rendering, with the marker in each assistant turn.
    logger.warning("the chat template renders conversation history its own way: the saved template gives the "
                   "training prompt and the reasoning-start marker in assistant turns, the rest as the base does")
    return _OURS + default_system + _marked_assistants(fmt) + base + gen_tail


def _marked_assistants(fmt: FormatConfig) -> str:
    """Jinja: each plain assistant message's content starts with the reasoning-start marker (prefill only)."""
    if not fmt.prefill_reasoning:
        return ""
    start = _jinja_str(fmt.reasoning_start)
    return ("{% set __rtm = namespace(out=[]) %}{% for m in messages %}"
            "{% if m['role'] == 'assistant' and m['content'] is string and not m['content'].startswith(" + start
            + ") %}{% set __rtm.out = __rtm.out + [{'role': 'assistant', 'content': " + start
            + " + m['content']}] %}{% else %}{% set __rtm.out = __rtm.out + [m] %}{% endif %}{% endfor %}"
            "{% set messages = __rtm.out %}")


def _renders_history(tokenizer, wrapped: str, fmt: FormatConfig) -> bool:
    """Whether `wrapped` renders a two-turn conversation as the base renders it with marked assistant turns:
    false where the pieces between assistant turns are not the base's (a system prompt folded into a user turn),
    or where the base raises on a piece (a system message alone)."""
    start = fmt.reasoning_start if fmt.prefill_reasoning else ""
    conv = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]
    marked = [dict(m, content=start + m["content"]) if m["role"] == "assistant" else m for m in conv]
    try:
        got = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True, chat_template=wrapped)
        want = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja2's TemplateError, or a template bug on an unusual message list
        logger.info("chat template: multi-turn wrapper not usable (%s: %s)", type(e).__name__, e)
        return False
    return got == (want if want.endswith(start) else want + start)


def stop_rule(cfg):
    """Where a completion ends besides EOS and the budget, for GRPO's rollouts (reasontune's decode) and eval's,
    advise's and ask's samples alike (a RunConfig): `grpo.stop_grace_tokens` after the closing answer marker when
    `grpo.stop_at_solution_end`, else nowhere."""
    if not cfg.grpo.stop_at_solution_end:
        return StopRule()
    return StopRule(marker=cfg.format.solution_end, grace=cfg.grpo.stop_grace_tokens)


@dataclass(frozen=True)
class StopRule:
    """Where completions end besides EOS and the budget: `grace` tokens after `marker` (None: nowhere).

    The grace tokens let the model sample its own EOS after the answer (SmolLM2 writes `>` then EOS, or
    `>\n` then EOS); a completion that goes on writing past them has shown it will not stop, and what it
    wrote there is scored (text after the marker costs format_exact)."""

    marker: str | None = None
    grace: int = field(default_factory=lambda: _default_grace())

    def window(self) -> int:
        # a marker of n characters spans at most n tokens (each token decodes to >= 1 character)
        return len(self.marker) + 1 if self.marker else 0


def _default_grace() -> int:
    """grpo.stop_grace_tokens' default: defined once, in config/sections.py."""
    return GRPOSettings.__dataclass_fields__["stop_grace_tokens"].default
