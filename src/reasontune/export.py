"""`reasontune export RUN_DIR --merged [--gguf]`: merge a run's LoRA into its base model.

--merged writes a plain 16-bit (or float32) safetensors folder + tokenizer that
`AutoModelForCausalLM.from_pretrained` loads without PEFT. --gguf also writes a GGUF file
(llama.cpp / Ollama / LM Studio) for Llama- and Qwen-family models, using the `gguf` package's
writer: tensor names from gguf's own HF-name map, the BPE vocabulary and merges from the
tokenizer files, and llama.cpp's Q/K row permutation for the `llama` architecture.

The merge always happens in float32 on the plain transformers backend (never on 4-bit weights),
then the merged weights are cast to the export dtype.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .config import ConfigError
from .llamacpp import DEFAULT_FALLBACK, FALLBACKS, LLAMA_CPP_PIN, QUANT_TYPES

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float16", "bfloat16", "float32")
GGUF_TYPES = ("auto", "f32", "f16", "bf16", "q8_0")  # what our converter writes
QUANT_TYPES = tuple(QUANT_TYPES)  # what llama.cpp's quantizer makes from our f16 (llamacpp.py)
# HF model_type -> gguf architecture name, and whether llama.cpp permutes Q/K rows for it.
GGUF_ARCHS = {"llama": ("llama", True), "mistral": ("llama", True), "qwen2": ("qwen2", False),
              "qwen3": ("qwen3", False)}


# llama.cpp picks its pre-tokenizer (how text is split into words, digits and spaces before BPE) from
# `tokenizer.ggml.pre`. Its converter (convert_hf_to_gguf.py, get_vocab_base_pre) names it by the
# sha256 of str(tokenizer.encode(PRE_PROBE)); these are its hashes for the families we export.
PRE_PROBE = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
             "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 "
             "33333333 3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f"
             "\u17a2\u17b6\u1785\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e "
             "------======= \u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441"
             "\u043a\u0438 ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? "
             "'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
KNOWN_PRE = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / 2 / 2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2
}


def gguf_pre_tokenizer(tok) -> str:
    """llama.cpp's name for this tokenizer's pre-tokenizer, found as its converter finds it.
    Unknown: refuse, since llama.cpp would split digits and spaces differently from training."""
    from hashlib import sha256

    h = sha256(str(tok.encode(PRE_PROBE)).encode()).hexdigest()
    if h not in KNOWN_PRE:
        raise ConfigError(f"--gguf: unknown pre-tokenizer (llama.cpp hash {h}); reasontune knows "
                          f"{sorted(set(KNOWN_PRE.values()))}. Export --merged and convert with llama.cpp's "
                          "convert_hf_to_gguf.py, which knows more tokenizers")
    return KNOWN_PRE[h]


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
    from .models import load_model_and_tokenizer
    from .runfolder import load_run_config

    from .portable import read_format
    from .runfolder import CONFIG_FILE

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
        from .portable import finish_folder

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


# ---- GGUF -------------------------------------------------------------------------------------
def _gguf_arch(config) -> tuple[str, bool]:
    mt = getattr(config, "model_type", None)
    if mt not in GGUF_ARCHS:
        raise ConfigError(f"--gguf: model_type {mt!r} is not supported by reasontune's GGUF writer "
                          f"(supported: {', '.join(GGUF_ARCHS)}); export --merged and convert with llama.cpp's "
                          "convert_hf_to_gguf.py instead")
    _rope_scaling(config)  # refuses what it cannot write, before anything is written
    return GGUF_ARCHS[mt]


def _rope_scaling(config) -> dict:
    """GGUF rope-scaling keys for the config's RoPE: plain, linear or YaRN, as llama.cpp's converter
    writes them. Any other scaling (llama3, dynamic, longrope) is refused, not written as plain RoPE."""
    import gguf

    rope = dict(getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None) or {})
    kind = rope.get("rope_type", rope.get("type", "default")) or "default"
    if kind == "default":
        return {}
    if kind == "linear" and rope.get("factor"):
        return {"type": gguf.RopeScalingType.LINEAR, "factor": float(rope["factor"])}
    if kind == "yarn" and rope.get("factor"):
        keys = {"type": gguf.RopeScalingType.YARN, "factor": float(rope["factor"])}
        orig = rope.get("original_max_position_embeddings")
        if orig:
            keys["orig_ctx_len"] = int(orig)
        for k in ("beta_fast", "beta_slow"):
            if rope.get(k) is not None:
                keys[f"yarn_{k}"] = float(rope[k])
        return keys
    raise ConfigError(f"--gguf: rope scaling {rope} is not one reasontune's GGUF writer can write (plain, "
                      "linear, yarn); export --merged and convert with llama.cpp's convert_hf_to_gguf.py")


def _permute_qk(w, n_head: int):
    """HF (rotate-half) -> GGML (interleaved) row order for llama-arch Q/K weights."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_metadata(w, config, ggml_type, name: str) -> None:
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    w.add_name(name)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    rope = getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get("rope_theta")
    if rope:
        w.add_rope_freq_base(float(rope))
    scaling = _rope_scaling(config)
    if scaling:
        w.add_rope_scaling_type(scaling["type"])
        w.add_rope_scaling_factor(scaling["factor"])
        if "orig_ctx_len" in scaling:
            w.add_rope_scaling_orig_ctx_len(scaling["orig_ctx_len"])
        if "yarn_beta_fast" in scaling:
            w.add_rope_scaling_yarn_beta_fast(scaling["yarn_beta_fast"])
        if "yarn_beta_slow" in scaling:
            w.add_rope_scaling_yarn_beta_slow(scaling["yarn_beta_slow"])
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    ftype = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
             "BF16": gguf.LlamaFileType.MOSTLY_BF16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[ggml_type.name]
    w.add_file_type(ftype)


def _write_vocab(w, tok, tok_dir: Path, n_vocab: int, chat_template: str | None = None) -> None:
    """BPE (gpt2-style) vocabulary, token types, merges, special ids and chat template
    (`chat_template`, else the one saved with the tokenizer)."""
    import gguf

    if not (tok_dir / "tokenizer.json").is_file() or getattr(tok, "vocab_files_names", None) is None:
        raise ConfigError("--gguf needs a fast BPE tokenizer (tokenizer.json)")
    vocab = tok.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    added = {t.content: t.special for t in tok.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(n_vocab):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(t)
            types.append(gguf.TokenType.CONTROL if added.get(t) else
                         gguf.TokenType.USER_DEFINED if t in added else gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(gguf_pre_tokenizer(tok))
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(tok_dir, load_merges=True, n_vocab=n_vocab)
    if not special.merges:
        raise ConfigError("--gguf: the tokenizer has no BPE merges; only BPE (gpt2-style) tokenizers are supported")
    # As the HF tokenizer encodes (llama.cpp's own defaults for a missing key differ by vocab type)
    bos = tok.bos_token_id
    special.add_special_token.setdefault("bos", bos is not None and tok.encode("a")[:1] == [bos])
    w.add_add_space_prefix(bool(getattr(tok, "add_prefix_space", False)))
    if chat_template:
        special.chat_template = chat_template
    elif special.chat_template is None and tok.chat_template:
        special.chat_template = tok.chat_template
    special.add_to_gguf(w)


def _gguf_tensors(model):
    """(HF name, GGUF name, tensor) for every tensor the GGUF file holds, named as write_gguf names them."""
    cfg = model.config
    names = gguf_tensor_names(cfg)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for hf_name, t in model.state_dict().items():
        if (tied and hf_name == "lm_head.weight") or hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConfigError(f"--gguf: no GGUF name for tensor {hf_name!r}; convert with llama.cpp instead")
        yield hf_name, name, t


def gguf_row_widths(model) -> dict[str, int]:
    """{GGUF name: row width} of the file's matrices (ggml's ne[0], the input width of a linear layer): what
    decides whether llama.cpp's k-quants can take a tensor (llamacpp.fallback_overrides)."""
    return {name: int(t.shape[-1]) for _, name, t in _gguf_tensors(model) if t.dim() == 2}


def _write_tensors(w, model, permute: bool, ggml_type) -> None:
    import gguf
    import torch

    cfg = model.config
    n_head, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    for hf_name, name, t in _gguf_tensors(model):
        data = t.detach().to(torch.float32).cpu().numpy()
        if permute and hf_name.endswith("q_proj.weight"):
            data = _permute_qk(data, n_head)
        elif permute and hf_name.endswith("k_proj.weight"):
            data = _permute_qk(data, n_kv)
        qtype = ggml_type if data.ndim == 2 else gguf.GGMLQuantizationType.F32  # norms stay f32
        if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
            qtype = gguf.GGMLQuantizationType.F16
        w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def _arch_enum(config) -> str:
    return GGUF_ARCHS[config.model_type][0].upper()


def gguf_tensor_names(config):
    """gguf's HF-name -> GGUF-name map for the model (what _write_tensors and the imatrix name tensors by)."""
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH[_arch_enum(config)], config.num_hidden_layers)


def write_gguf(model, tok, tok_dir: str | Path, path: str | Path, kind: str = "f16",
               chat_template: str | None = None, extra_kv: dict | None = None) -> Path:
    """Write a merged (non-PEFT) Llama/Qwen model as a GGUF file. `tok_dir` holds tokenizer.json;
    `chat_template` (default: the tokenizer's) goes into the file for llama.cpp and Ollama; `extra_kv`
    (str or int values) are further metadata keys."""
    try:
        import gguf
    except ImportError as e:
        raise ConfigError("--gguf needs the `gguf` package: pip install gguf") from e
    arch, permute = _gguf_arch(model.config)
    if kind not in GGUF_TYPES[1:]:
        raise ConfigError(f"--gguf-type={kind!r}: use one of {', '.join(GGUF_TYPES)}")
    ggml_type = gguf.GGMLQuantizationType[kind.upper()]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, arch)
    _write_metadata(w, model.config, ggml_type, path.stem)
    _write_vocab(w, tok, Path(tok_dir), model.get_input_embeddings().weight.shape[0], chat_template)
    for key, value in (extra_kv or {}).items():
        w.add_string(key, value) if isinstance(value, str) else w.add_int32(key, value)
    _write_tensors(w, model, permute, ggml_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    logger.info("GGUF (%s, %s) written to %s", arch, kind, path)
    return path


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
        from .llamacpp import require_llama_cpp

        require_llama_cpp(gguf_type)
    if tensor_types and gguf_type not in QUANT_TYPES:
        raise ConfigError(f"--gguf-tensor-type sets llama.cpp's quantizer's per-tensor types; --gguf-type={gguf_type} "
                          f"is not quantized by it: add --gguf-type with one of {', '.join(QUANT_TYPES)}")
    from .llamacpp import parse_tensor_types

    return parse_tensor_types(tensor_types)


def _export_gguf(model, tok, cfg, out: Path, kind: str, imatrix: tuple | None = None,
                 tensor_types: dict | None = None, fallback: str = DEFAULT_FALLBACK) -> Path:
    """OUT.model-KIND.gguf beside OUT (OUT may not exist yet): our converter, then llama.cpp's quantizer for
    the k-quants (from an f16 file it deletes after), with `imatrix` = (matrix, info) from imatrix.calibrate
    when given, the user's `tensor_types` first, then the `fallback` type for the tensors whose rows the
    k-quants cannot take (llamacpp.fallback_overrides); the file's metadata then says what it holds (gguf_types)."""
    import shutil

    from .prompting import training_chat_template

    _gguf_arch(model.config)  # fail before writing anything
    gguf_pre_tokenizer(tok)  # refuse an unknown pre-tokenizer before the slow part
    tok_dir = out.with_name(out.name + ".tokenizer")
    tok.save_pretrained(tok_dir)
    path = out.with_name(f"{out.name}.model-{kind}.gguf")
    template = training_chat_template(tok, cfg.format)
    try:
        if kind in QUANT_TYPES:
            from .gguf_types import quantize_recorded
            from .imatrix import imatrix_kv

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
        from .imatrix import for_export

        calib = for_export(run_dir, model, tok, cfg, kind, imatrix)
        result.update({"imatrix": calib[1]} if calib else {})
        gguf_path = _export_gguf(model, tok, cfg, out, kind, calib, types, fallback)
    if merged:
        result["merged"] = str(save_merged(model, tok, out, tdtype, cfg))
    if gguf:
        from .amx import warn_if_amx
        from .llamacpp import write_gguf_card, write_modelfile

        warn_if_amx(kind, LLAMA_CPP_PIN)  # llama.cpp's AMX path crashes on quantized files (issue 36)
        out.mkdir(parents=True, exist_ok=True)
        final = gguf_path.replace(out / f"model-{kind}.gguf")
        result["gguf"] = str(final)
        result["modelfile"] = str(write_modelfile(final, tok, cfg.format))
        files = sorted(p.name for p in out.glob("model-*.gguf"))
        write_gguf_card(out, files, cfg.format, tok.eos_token)
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
