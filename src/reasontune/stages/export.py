"""`reasontune export RUN_DIR --merged [--gguf]`: merge a run's LoRA into its base model.

--merged writes a plain 16-bit (or float32) safetensors folder + tokenizer (export/merged.py) that
`AutoModelForCausalLM.from_pretrained` loads without PEFT. --gguf also writes a GGUF file (export/gguf.py,
then llama.cpp's quantizer for the k-quants: export/llamacpp.py), its Ollama Modelfile and the card's GGUF section.
"""

from __future__ import annotations

import logging
from pathlib import Path

from reasontune.config import ConfigError
from reasontune.export.gguf import GGUF_TYPES, gguf_pre_tokenizer, gguf_row_widths, write_gguf, _gguf_arch
from reasontune.export.llamacpp import DEFAULT_FALLBACK, FALLBACKS, LLAMA_CPP_PIN, QUANT_TYPES
from reasontune.export.merged import DTYPES, export_dtype, load_merged, save_merged

logger = logging.getLogger(__name__)

QUANT_TYPES = tuple(QUANT_TYPES)  # what llama.cpp's quantizer makes from our f16 (llamacpp.py)


def check_export_args(merged: bool, gguf: bool, gguf_type: str,
                      tensor_types: list[str] | None = None) -> dict:
    """Everything the flags alone decide, before any model loads; returns the parsed --gguf-tensor-type overrides."""
    if not (merged or gguf):
        raise ConfigError("export: nothing to do; pass --merged and/or --gguf")
    if gguf_type != "auto" and not gguf:
        raise ConfigError(f"--gguf-type={gguf_type} without --gguf: add --gguf to write the GGUF file")
    if gguf_type not in GGUF_TYPES + QUANT_TYPES:
        raise ConfigError(f"--gguf-type={gguf_type!r}: use one of {', '.join(GGUF_TYPES + QUANT_TYPES)}")
    if gguf_type in QUANT_TYPES:
        from reasontune.export.llamacpp import require_llama_cpp

        require_llama_cpp(gguf_type)
    if tensor_types and gguf_type not in QUANT_TYPES:
        raise ConfigError(f"--gguf-tensor-type sets llama.cpp's quantizer's per-tensor types; --gguf-type={gguf_type} "
                          f"is not quantized by it: add --gguf-type with one of {', '.join(QUANT_TYPES)}")
    from reasontune.export.llamacpp import parse_tensor_types

    return parse_tensor_types(tensor_types)


def _export_gguf(model, tok, cfg, out: Path, kind: str, imatrix: tuple | None = None,
                 tensor_types: dict | None = None, fallback: str = DEFAULT_FALLBACK) -> Path:
    """OUT.model-KIND.gguf beside OUT (OUT may not exist yet): our converter, then llama.cpp's quantizer for
    the k-quants (from an f16 file it deletes after), with `imatrix` = (matrix, info) from imatrix.calibrate
    when given, the user's `tensor_types` first, then the `fallback` type for the tensors whose rows the
    k-quants cannot take (llamacpp.fallback_overrides); the file's metadata then says what it holds (gguf_types)."""
    import shutil

    from reasontune.export.portable import trained_format
    from reasontune.models.prompting import training_chat_template

    _gguf_arch(model.config)  # fail before writing anything
    gguf_pre_tokenizer(tok)  # refuse an unknown pre-tokenizer before the slow part
    tok_dir = out.with_name(out.name + ".tokenizer")
    tok.save_pretrained(tok_dir)
    path = out.with_name(f"{out.name}.model-{kind}.gguf")
    template = training_chat_template(tok, trained_format(cfg))  # a code run's: the code system prompt
    try:
        if kind in QUANT_TYPES:
            from reasontune.export.gguf_types import quantize_recorded
            from reasontune.export.imatrix import imatrix_kv

            matrix, info = imatrix or (None, {})
            f16 = write_gguf(model, tok, tok_dir, path.with_name(path.name + ".f16"), "f16", chat_template=template,
                             extra_kv=imatrix_kv(matrix, info))  # the quantizer copies these keys
            try:  # the user's --gguf-tensor-type patterns first, then the fallback's; the written types read back
                quantize_recorded(f16, path, kind, gguf_row_widths(model), matrix, tensor_types, fallback)
            finally:
                f16.unlink(missing_ok=True)
        else:
            write_gguf(model, tok, tok_dir, path, kind, chat_template=template)
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)
    return path


def export_run(run_dir: str | Path, out: str | Path | None = None, merged: bool = True, gguf: bool = False,
               dtype: str = "auto", gguf_type: str = "auto", imatrix: bool = False,
               tensor_types: list[str] | None = None, fallback: str = DEFAULT_FALLBACK) -> dict:
    """Merge RUN/adapter into the base model; write the merged folder and/or a GGUF (with its Ollama Modelfile
    and the card's GGUF section). `imatrix`: quantize llama.cpp's types with an importance matrix from the
    run's training rows (imatrix.py; off by default: on the demo's 576-wide model it measured no better, docs/export.md). Returns paths (and what the imatrix calibrated on)."""
    import torch

    types = check_export_args(merged, gguf, gguf_type, tensor_types)
    tdtype = export_dtype(dtype)
    model, tok, cfg = load_merged(run_dir)
    out = Path(out) if out else Path(run_dir) / "merged"
    result: dict = {}
    if gguf:  # from the float32 merge, before the cast below
        kind = gguf_type if gguf_type != "auto" else {torch.float32: "f32", torch.bfloat16: "bf16"}.get(tdtype, "f16")
        from reasontune.export.imatrix import for_export

        calib = for_export(run_dir, model, tok, cfg, kind, imatrix)
        result.update({"imatrix": calib[1]} if calib else {})
        gguf_path = _export_gguf(model, tok, cfg, out, kind, calib, types, fallback)
    if merged:
        result["merged"] = str(save_merged(model, tok, out, tdtype, cfg))
    if gguf:
        from reasontune.export.amx import warn_if_amx
        from reasontune.export.llamacpp import write_gguf_card, write_modelfile
        from reasontune.export.portable import trained_format

        warn_if_amx(kind, LLAMA_CPP_PIN)  # llama.cpp's AMX path crashes on quantized files (issue 36)
        out.mkdir(parents=True, exist_ok=True)
        final = gguf_path.replace(out / f"model-{kind}.gguf")
        result["gguf"] = str(final)
        result["modelfile"] = str(write_modelfile(final, tok, trained_format(cfg)))
        files = sorted(p.name for p in out.glob("model-*.gguf"))
        write_gguf_card(out, files, trained_format(cfg), tok.eos_token)
    return result


def cmd_export(args) -> int:
    import json

    result = export_run(args.run_dir, out=args.out, merged=args.merged, gguf=args.gguf, dtype=args.dtype,
                        gguf_type=args.gguf_type, imatrix=args.imatrix,
                        tensor_types=args.gguf_tensor_type, fallback=args.gguf_fallback)
    print(json.dumps(result))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="merge a run's LoRA into its base model (16-bit safetensors, GGUF)")
    p.add_argument("run_dir", help="a finished run folder (holds reasontune_config.json and adapter/)")
    p.add_argument("--merged", action="store_true", help="write the merged model as safetensors + tokenizer")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/merged)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="merged weights' dtype; auto: bfloat16 on a CUDA GPU that supports it, else float16")
    p.add_argument("--gguf", action="store_true",
                   help="also write OUT/model-TYPE.gguf (Llama/Qwen families) and its Ollama OUT/model-TYPE.Modelfile")
    p.add_argument("--gguf-type", default="auto", choices=GGUF_TYPES + QUANT_TYPES,
                   help="GGUF tensor type; auto follows --dtype (f16, bf16 or f32). f32/f16/bf16/q8_0 are written by "
                        f"reasontune; {'/'.join(QUANT_TYPES)} by llama.cpp's quantizer (needs {LLAMA_CPP_PIN})")
    p.add_argument("--imatrix", action="store_true",
                   help=f"quantize {'/'.join(QUANT_TYPES)} with an importance matrix measured on the run's first training "
                        "rows (prompt + worked solution), as llama-quantize --imatrix")
    p.add_argument("--gguf-tensor-type", action="append", metavar="PATTERN=TYPE",
                   help="repeatable, as llama-quantize --tensor-type: tensors whose GGUF name matches the regex PATTERN "
                        "take ggml TYPE (e.g. ffn_down=q6_k) instead of the mix's own choice")
    p.add_argument("--gguf-fallback", default=DEFAULT_FALLBACK, choices=FALLBACKS,
                   help="k-quants only: the type of the tensors whose rows are not a multiple of 256 wide, which the "
                        "k-quants cannot take (most of SmolLM2-135M's). q8_0: keep them at 8 bits (on the demo, q4_k_m "
                        "within 2 points of f16, 135 MB); llama.cpp: its own legacy 5-bit fallback (105 MB, measured "
                        "3.5-9.5 points below f16)")
    p.set_defaults(func=cmd_export)
