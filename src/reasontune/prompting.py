"""Prompt rendering shared by training, warm-up and evaluation, so all three see the same text.

Prompts are rendered to plain strings with the tokenizer's chat template (generation prompt on),
then the reasoning-start marker is appended when `format.prefill_reasoning` is set and the
template did not already add it. Completions therefore start inside the reasoning block.
"""

from __future__ import annotations

from .config import FormatConfig


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
