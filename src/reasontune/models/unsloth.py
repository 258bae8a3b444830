"""The Unsloth backend (CUDA only): the reference recipe's loader, LoRA and vLLM generation.

`models.load_model_and_tokenizer` imports this module only after `models.pick_backend` chose
Unsloth, so nothing here runs (and `unsloth` is never imported) on a CPU. Unsloth's own API, as of
unsloth 2026.10:

    FastLanguageModel.from_pretrained(model_name, max_seq_length, load_in_4bit, fast_inference,
                                      max_lora_rank, gpu_memory_utilization, ...)
    FastLanguageModel.get_peft_model(model, r, target_modules, lora_alpha, lora_dropout,
                                     use_gradient_checkpointing="unsloth", random_state, ...)

With `fast_inference=True` Unsloth attaches a vLLM engine as `model.vllm_engine`, and its patched
TRL GRPOTrainer generates with that engine when `GRPOConfig(use_vllm=True)` (colocate mode):
`grpo_overrides` returns the GRPOConfig keywords that make TRL take that path.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from reasontune.config import FormatConfig, LoraConfig, ModelConfig, RunConfig
from reasontune.models.prompting import prepare_tokenizer

logger = logging.getLogger(__name__)

RANDOM_STATE = 3407  # the recipe's seed for LoRA init


def vllm_available() -> bool:
    """True when vllm is installed (checked without importing it: the import is slow and CUDA-bound)."""
    return importlib.util.find_spec("vllm") is not None


def fast_inference_on(cfg: ModelConfig, warn: bool = True) -> bool:
    """fast_inference is honoured only when vllm is installed; otherwise it is dropped with a warning."""
    if not cfg.fast_inference:
        return False
    if not vllm_available():
        if not warn:
            return False
        logger.warning("model.fast_inference=true but vllm is not installed: generating with transformers "
                       "(pip install -e '.[gpu]' -c constraints/gpu.txt for vLLM generation)")
        return False
    return True


def from_pretrained_kwargs(path: str, cfg: ModelConfig, lora: LoraConfig | None) -> dict[str, Any]:
    """Keyword arguments for `FastLanguageModel.from_pretrained` (the recipe's step 1)."""
    kwargs: dict[str, Any] = dict(model_name=path, max_seq_length=cfg.max_seq_length, load_in_4bit=cfg.load_in_4bit)
    if cfg.dtype != "auto":
        import torch

        kwargs["dtype"] = getattr(torch, cfg.dtype)
    kwargs["fast_inference"] = fast_inference_on(cfg)
    kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization  # used by the vLLM engine only
    if lora is not None:
        kwargs["max_lora_rank"] = lora.r  # vLLM's LoRA slots must fit the adapter's rank
    return kwargs


def get_peft_kwargs(lora: LoraConfig, num_layers: int | None = None) -> dict[str, Any]:
    """Keyword arguments for `FastLanguageModel.get_peft_model` (the recipe's step 2)."""
    kwargs: dict[str, Any] = dict(
        r=lora.r, target_modules=list(lora.target_modules), lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        bias="none", use_gradient_checkpointing="unsloth" if lora.gradient_checkpointing else False,
        random_state=RANDOM_STATE,
    )
    if lora.top_layers is not None and num_layers:  # as models.peft_config: the last N layers only
        kwargs["layers_to_transform"] = list(range(max(0, num_layers - lora.top_layers), num_layers))
    return kwargs


def load_unsloth(path: str, cfg: ModelConfig, fmt: FormatConfig, lora: LoraConfig | None,
                 adapter: str | None = None, trainable: bool = True):
    """(model, tokenizer) through Unsloth; a new LoRA from `lora`, or an existing `adapter` folder."""
    from unsloth import FastLanguageModel  # only reached on CUDA, after pick_backend chose unsloth

    kwargs = from_pretrained_kwargs(path, cfg, lora)
    logger.info("unsloth: FastLanguageModel.from_pretrained(%s)", kwargs)
    model, tok = FastLanguageModel.from_pretrained(**kwargs)
    tok = getattr(tok, "tokenizer", tok)  # a processor for multimodal models: keep its text tokenizer
    prepare_tokenizer(tok, cfg, fmt)
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
        if not trainable:
            FastLanguageModel.for_inference(model)
    elif lora is not None:
        num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        model = FastLanguageModel.get_peft_model(model, **get_peft_kwargs(lora, num_layers))
    return model, tok


def grpo_overrides(cfg: RunConfig) -> dict[str, Any]:
    """GRPOConfig keywords the Unsloth backend needs on top of `train.grpo_args`' own.

    With fast_inference the model carries its own vLLM engine: TRL must generate through vLLM in
    colocate mode (Unsloth's patched trainer then uses `model.vllm_engine` instead of starting a
    second engine). The recipe's sampling (min_p 0.1, temperature 1.0) goes through GRPOConfig's
    own `min_p` / `temperature`, which TRL hands to vLLM.
    """
    # Unsloth's GRPOConfig (unsloth 2026.10.9, models/rl.py) leaves loss_type/beta unset (None, resolved
    # to dapo / 0.0), turns vllm_importance_sampling_correction off, and for an explicit loss_type='dapo'
    # sets mask_truncated_completions=True and epsilon_high=0.28. grpo_args passes loss_type, beta and
    # the correction; these two keep TRL's own values, so a run trains what its config says.
    from trl.trainer.grpo_config import GRPOConfig as TRLConfig  # the module Unsloth does not replace

    fields = TRLConfig.__dataclass_fields__
    out: dict[str, Any] = {"mask_truncated_completions": fields["mask_truncated_completions"].default,
                           "epsilon_high": fields["epsilon"].default}  # TRL: epsilon_high None = epsilon
    if fast_inference_on(cfg.model, warn=False):  # the loader already warned
        out.update(use_vllm=True, vllm_mode="colocate",
                   vllm_gpu_memory_utilization=cfg.model.gpu_memory_utilization)
        if cfg.grpo.vllm_mode == "server":
            logger.warning("grpo.vllm_mode=server ignored: model.fast_inference attaches a colocated vLLM engine")
    return out
