"""Saved models that load anywhere exactly as trained.

Every adapter folder reasontune writes (train, sft, the demo's adapter/ and warmup/adapter/,
checkpoints) and every merged export carries:
  tokenizer + chat_template   renders the training prompt from a bare user message, and each assistant
                              turn of a conversation as that prompt + what the model generated
                              (prompting.training_chat_template)
  generation_config.json      EOS (and pad) ids, so generation stops where training stopped
  reasontune_adapter.json     the prompt format and base model, read back by eval/advise/export
  README.md                   PEFT's model card plus how it was trained and a load-and-ask snippet

The stop marker is recorded in reasontune_adapter.json but not as `stop_strings` in
generation_config.json: transformers' `generate` raises when a config holds stop strings and the
caller passes no tokenizer, which would break the plainest `model.generate(**inputs)`. The model
ends its answer with EOS (the warm-up's targets end with it, and GRPO samples that EOS itself:
generation.StopRule), so EOS is the stop.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import TrainerCallback

from reasontune.config import ConfigError, FormatConfig, RunConfig, from_dict
from reasontune.models.prompting import training_chat_template

logger = logging.getLogger(__name__)

ADAPTER_FILE = "reasontune_adapter.json"
CARD_MARK = "## Trained with reasontune"


def trained_format(cfg: RunConfig) -> FormatConfig:
    """The run's format with the system prompt it trained with as `prompt`: a code run's rows (rewards.is_code_run)
    were prompted with format.code_prompt, so that prompt is the saved template's default system message, the
    Modelfile's SYSTEM and the card's; the run's own format (reasontune_adapter.json's `format`) is unchanged."""
    from dataclasses import replace

    from reasontune.rewards import is_code_run

    return replace(cfg.format, system_prompt=cfg.format.code_prompt) if is_code_run(cfg) else cfg.format


def save_tokenizer(tokenizer, folder: str | Path, fmt: FormatConfig) -> None:
    """The tokenizer with the training prompt's chat template; the live tokenizer is left as it was."""
    original = tokenizer.chat_template
    tokenizer.chat_template = training_chat_template(tokenizer, fmt)
    try:
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.chat_template = original


def save_generation_config(model, tokenizer, folder: str | Path) -> None:
    from transformers import GenerationConfig

    gen = getattr(model, "generation_config", None)
    gen = GenerationConfig.from_dict(gen.to_dict()) if gen is not None else GenerationConfig()
    # Every EOS the model declares still ends a turn (as TRL treats them); the tokenizer's comes first
    # because the warm-up's targets end with it.
    declared = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    eos = [tokenizer.eos_token_id] + [e for e in declared if e is not None and e != tokenizer.eos_token_id]
    gen.eos_token_id = eos[0] if len(eos) == 1 else eos
    gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        gen.bos_token_id = tokenizer.bos_token_id
    gen.save_pretrained(folder)


def save_format(folder: str | Path, cfg: RunConfig, stage: str) -> None:
    from reasontune.runs.folder import atomic_write_json, library_versions

    d = cfg.to_dict()
    atomic_write_json(Path(folder) / ADAPTER_FILE, {
        "stage": stage, "format": d["format"], "system_prompt": trained_format(cfg).prompt,
        "stop": cfg.format.solution_end,
        "model": {"name": cfg.model.name, "chat_template": cfg.model.chat_template},
        "dataset": cfg.data.dataset, "rewards": d["rewards"],
        # the whole run config, GRPO's completion budget resolved: eval/advise/ask --run or --adapter grade the
        # task it trained on (dataset, levels, seed), at its budget, sampling and stop rule
        "run_config": d,
        "versions": library_versions()})


def model_card(cfg: RunConfig, stage: str, folder: str) -> str:
    fmt = trained_format(cfg)
    start = fmt.reasoning_start if fmt.prefill_reasoning else "(nothing: the model writes it)"
    return f"""
{CARD_MARK}

Base model `{cfg.model.name}`, trained by reasontune ({stage}) on `{cfg.data.dataset}`.
Prompt format (the folder's chat template renders it from a bare user message):
- system prompt, used when the messages carry none: {fmt.prompt!r}
- the generation prompt ends with: `{start}`
- the answer: `{fmt.reasoning_start}` working `{fmt.reasoning_end}` then `{fmt.solution_start}` answer
  `{fmt.solution_end}`, then EOS (`generation_config.json`).

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer
model, tok = AutoPeftModelForCausalLM.from_pretrained("{folder}"), AutoTokenizer.from_pretrained("{folder}")
ids = tok.apply_chat_template([{{"role": "user", "content": "What is 17 + 25?"}}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
print(tok.decode(model.generate(**ids, max_new_tokens=256)[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""


def write_card(folder: str | Path, cfg: RunConfig, stage: str, name: str | None = None) -> None:
    """Append our section to the card PEFT wrote (or start one); idempotent on a re-save."""
    p = Path(folder) / "README.md"
    text = p.read_text() if p.is_file() else "---\nlibrary_name: peft\n---\n"
    text = text.split("\n" + CARD_MARK)[0].rstrip("\n") + "\n"
    p.write_text(text + model_card(cfg, stage, name or str(folder)))


def finish_folder(folder: str | Path, model, tokenizer, cfg: RunConfig, stage: str, name: str | None = None) -> None:
    """Everything but the weights: tokenizer + template, generation config, format file, card
    (`name`: the folder as the card's snippet names it, when `folder` is a temporary one)."""
    save_tokenizer(tokenizer, folder, trained_format(cfg))
    save_generation_config(model, tokenizer, folder)
    save_format(folder, cfg, stage)
    write_card(folder, cfg, stage, name)


def save_adapter(model, tokenizer, folder: str | Path, cfg: RunConfig, stage: str) -> Path:
    """model.save_pretrained (PEFT adapter) plus finish_folder: the one way adapter folders are written."""
    folder = Path(folder)
    model.save_pretrained(folder)
    finish_folder(folder, model, tokenizer, cfg, stage)
    logger.info("adapter (%s) written to %s", stage, folder)
    return folder


def has_run_config(folder: str | Path) -> bool:
    """Whether a saved folder's ADAPTER_FILE records the whole run config (older folders: only the format)."""
    try:
        return "run_config" in json.loads((Path(folder) / ADAPTER_FILE).read_text())
    except (OSError, ValueError):
        return False


def read_format(folder: str | Path) -> RunConfig | None:
    """The RunConfig a saved folder was trained with (older folders: defaults + their format and base model)."""
    p = Path(folder) / ADAPTER_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
        if isinstance(d.get("run_config"), dict):
            return from_dict(d["run_config"])
        rewards = d.get("rewards") if isinstance(d.get("rewards"), dict) else {}  # folders from before run_config
        return from_dict({"format": d["format"], "model": d["model"], "rewards": rewards})
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{str(p)!r} is unreadable ({e}); write it again by saving the adapter, or pass "
                          "--config with the format it was trained with") from e


class PortableCheckpoints(TrainerCallback):
    """TrainerCallback: each checkpoint-N gets the template, generation config, format and card too."""

    def __init__(self, tokenizer, cfg: RunConfig, stage: str = "grpo checkpoint"):
        self.tokenizer, self.cfg, self.stage = tokenizer, cfg, stage

    def on_save(self, args, state, control, model=None, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            finish_folder(folder, model, self.tokenizer, self.cfg, f"{self.stage} {state.global_step}")
        return control
