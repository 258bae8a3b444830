"""The merged folder: a run's LoRA merged into its base model, saved as plain safetensors + tokenizer.

`AutoModelForCausalLM.from_pretrained` loads it without PEFT. The merge always happens in float32 on the plain
transformers backend (never on 4-bit weights); the merged weights are then cast to the export dtype.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from reasontune.config import ConfigError

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float16", "bfloat16", "float32")


def export_dtype(name: str):
    """'auto': bfloat16 on a CUDA device that supports it, else float16."""
    import torch

    if name not in DTYPES:
        raise ConfigError(f"--dtype={name!r}: use one of {', '.join(DTYPES)}")
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def load_merged(run_dir: str | Path):
    """(merged float32 model, tokenizer, RunConfig) of a finished run."""
    from reasontune.models import load_model_and_tokenizer
    from reasontune.runs.folder import load_run_config

    from reasontune.export.portable import read_format
    from reasontune.runs.folder import CONFIG_FILE

    run_dir = Path(run_dir)
    adapter = run_dir / "adapter"
    own = read_format(adapter) if not (run_dir / CONFIG_FILE).is_file() else None
    cfg = own or load_run_config(run_dir)  # the demo's folder: the adapter's own format file
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{str(run_dir)!r} has no adapter/ (adapter_config.json): the run did not finish "
                          "training; export a finished run, or finish it with `reasontune train --resume`")
    model_cfg = dataclasses.replace(cfg.model, backend="transformers", dtype="float32", load_in_4bit=False,
                                    fast_inference=False)
    model, tok, _ = load_model_and_tokenizer(model_cfg, cfg.format, adapter=str(adapter), trainable=False)
    model = model.merge_and_unload()
    model.eval()
    return model, tok, cfg


def save_merged(model, tok, out: Path, dtype, cfg=None) -> Path:
    """Cast and save as safetensors + tokenizer (written aside, then renamed: no half folders).

    With the run's config, the folder also gets the training prompt's chat template, the generation
    config (EOS) and the format file, as adapter folders do (portable.finish_folder)."""
    import shutil

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = model.to(dtype)
    model.config.use_cache = True
    model.save_pretrained(tmp, safe_serialization=True)
    if cfg is not None:
        from reasontune.export.portable import finish_folder

        finish_folder(tmp, model, tok, cfg, "merged export (LoRA merged into the base weights)", str(out))
        _merged_card(tmp, cfg)
    else:
        tok.save_pretrained(tmp)
    for keep in list(out.glob("model-*.gguf")) + list(out.glob("model-*.Modelfile")) if out.is_dir() else []:
        keep.replace(tmp / keep.name)  # earlier GGUF exports of other types stay with the new merge
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    logger.info("merged %s model written to %s", str(dtype).replace("torch.", ""), out)
    return out


def _merged_card(folder: Path, cfg) -> None:
    """A merged folder loads with transformers alone: the card's snippet says so (no peft)."""
    p = folder / "README.md"
    p.write_text(p.read_text().replace("from peft import AutoPeftModelForCausalLM\n", "")
                 .replace("AutoPeftModelForCausalLM.from_pretrained", "AutoModelForCausalLM.from_pretrained")
                 .replace("import AutoTokenizer", "import AutoModelForCausalLM, AutoTokenizer")
                 .replace("library_name: peft", "library_name: transformers"))
