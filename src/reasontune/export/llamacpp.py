"""GGUF files as people ship them: llama.cpp's own quantizer, an Ollama Modelfile, and the model card's
GGUF section (what llama.cpp, Ollama and LM Studio need to prompt the file as it was trained).

Our converter (export.write_gguf) writes f32, f16, bf16 and q8_0. The k-quants (q4_k_m, q5_k_m, q6_k, ...)
need llama.cpp's quantizer and its mixes of tensor types: export writes f16 with our converter, then
`llama_cpp.llama_model_quantize` turns it into the asked type, with `--imatrix` weighing rounding errors by an
importance matrix measured on the run's training rows (imatrix.py). llama-cpp-python is an
optional dependency (`pip install llama-cpp-python==0.3.36` builds llama.cpp from source).
"""

from __future__ import annotations

import logging
from pathlib import Path

from reasontune.config import ConfigError, FormatConfig

logger = logging.getLogger(__name__)

LLAMA_CPP_PIN = "llama-cpp-python==0.3.36"
# --gguf-type -> llama.cpp's LLAMA_FTYPE_MOSTLY_* name (llama_cpp/llama_cpp.py of 0.3.36)
QUANT_TYPES = {"q4_0": "Q4_0", "q4_k_s": "Q4_K_S", "q4_k_m": "Q4_K_M", "q5_0": "Q5_0", "q5_k_s": "Q5_K_S",
               "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}
# The ggml types `--gguf-tensor-type PATTERN=TYPE` takes (llama-quantize --tensor-type's), checked before any
# model loads; a build of llama.cpp that lacks one still refuses it in tensor_overrides.
TENSOR_TYPES = ("f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k",
                "q6_k", "iq4_nl", "iq4_xs")
# The k-quant mixes, whose types need rows a multiple of QK_K wide; llama.cpp quantizes a narrower tensor to a
# legacy type instead (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; llama-quant.cpp). On the demo's 576-wide SmolLM2
# that is 180 of 272 tensors, and q4_k_m answered 3.5-9.5 points below f16 (docs/export.md). reasontune asks for
# q8_0 on those tensors by default (2 points below, 135 MB against 105); "llama.cpp" leaves its mix as it is.
K_QUANTS = ("q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
QK_K, QK8_0 = 256, 32  # ggml's k-quant super-block and q8_0's block, in columns
FALLBACKS = ("q8_0", "llama.cpp")
DEFAULT_FALLBACK = FALLBACKS[0]
# The keys llama.cpp's llama-quantize writes into a file it quantized with an imatrix (tools/quantize).
KV_DATASET, KV_ENTRIES, KV_CHUNKS = ("quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                                     "quantize.imatrix.chunks_count")
# Metadata a llama.cpp-quantized file gets after it is written, read back from its tensors (gguf_types.py): the
# matrices' types, and for a k-quant the types of the tensors too narrow for it and who asked for each.
KV_TYPES, KV_FALLBACK = "reasontune.quantize.types", "reasontune.quantize.fallback"
# Sentinels rendered through the chat template, then replaced by Ollama's variables.
_SYS, _USER = "\x00REASONTUNE_SYSTEM\x00", "\x00REASONTUNE_PROMPT\x00"


def require_llama_cpp(kind: str):
    """The llama_cpp module, or a ConfigError with the install command (called before any model loads)."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ConfigError(f"--gguf-type={kind} is quantized by llama.cpp's own quantizer, and llama-cpp-python is "
                          f"not installed: pip install {LLAMA_CPP_PIN} (builds llama.cpp from source, about 7 "
                          "minutes on 2 cores); or pick a type reasontune writes itself: f16, bf16, f32, q8_0") from e
    return llama_cpp


def quantize(src: str | Path, dst: str | Path, kind: str, imatrix: dict | None = None,
             tensor_types: dict[str, str] | None = None) -> Path:
    """llama.cpp's quantizer on an f16/f32 GGUF, with its default parameters (as `llama-quantize SRC DST TYPE`);
    `imatrix` ({GGUF tensor name: per-column weights}) as `llama-quantize --imatrix FILE`; `tensor_types`
    ({regex on GGUF tensor names: ggml type, e.g. "ffn_down": "q6_k"}) as `llama-quantize --tensor-type`
    (the first pattern that matches wins; a type the tensor's width cannot take falls back as llama.cpp does)."""
    if kind not in QUANT_TYPES:
        raise ConfigError(f"--gguf-type={kind!r} is not a llama.cpp quantization reasontune runs "
                          f"(use one of {', '.join(QUANT_TYPES)})")
    llama_cpp = require_llama_cpp(kind)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANT_TYPES[kind]}")
    keep = None
    if imatrix:
        import ctypes

        keep = ctypes_imatrix(llama_cpp, imatrix)  # the buffers live until the quantizer has returned
        params.imatrix = ctypes.cast(keep[0], ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    overrides = tensor_overrides(llama_cpp, tensor_types) if tensor_types else None
    if overrides is not None:
        import ctypes

        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp's quantizer failed on {src} -> {kind} (return code {rc}); "
                           "its log above says why")
    del keep, overrides
    tmp.replace(dst)
    logger.info("GGUF quantized by llama.cpp to %s%s%s: %s (%.1f MB)", kind, " with an importance matrix" if imatrix
                else "", f", tensor types {tensor_types}" if tensor_types else "", dst, dst.stat().st_size / 1e6)
    return dst


def parse_tensor_types(specs: list[str] | None) -> dict[str, str]:
    """`--gguf-tensor-type PATTERN=TYPE` (repeatable, as llama-quantize --tensor-type) -> {PATTERN: TYPE}, in order
    (llama.cpp takes the first pattern that matches a tensor name); a ConfigError names a bad one."""
    import re

    out: dict[str, str] = {}
    for spec in specs or []:
        pattern, sep, name = spec.rpartition("=")
        name = name.strip().lower()
        if not sep or not pattern:
            raise ConfigError(f"--gguf-tensor-type {spec!r}: write PATTERN=TYPE, e.g. ffn_down=q6_k "
                              "(PATTERN is a regex searched in GGUF tensor names such as blk.3.ffn_down.weight)")
        if name not in TENSOR_TYPES:
            raise ConfigError(f"--gguf-tensor-type {spec!r}: {name!r} is not a ggml type llama.cpp quantizes to "
                              f"(use one of {', '.join(TENSOR_TYPES)})")
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"--gguf-tensor-type {spec!r}: {pattern!r} is not a regex ({e})") from e
        out[pattern] = name
    return out


def fallback_overrides(widths: dict[str, int], kind: str, fallback: str = DEFAULT_FALLBACK,
                       user: dict[str, str] | None = None) -> dict[str, str]:
    """The {regex: type} the quantizer gets for `kind`: the `user`'s --gguf-tensor-type patterns first, in their
    order (llama.cpp takes the first that matches, and a pattern of ours identical to one of the user's is
    dropped, never given our type), then the `fallback` type for the matrices a k-quant mix cannot take (rows not
    a multiple of QK_K; {GGUF name: row width} from export.gguf_row_widths). Ours are none for the legacy types,
    for fallback="llama.cpp", and for a model whose rows all fit; one pattern per tensor kind (blk.N. dropped)
    when every layer's tensor of that kind is narrow, else one per tensor."""
    import re

    if fallback not in FALLBACKS:
        raise ConfigError(f"--gguf-fallback={fallback!r}: use one of {', '.join(FALLBACKS)}")
    user = dict(user or {})
    narrow = {n for n, w in widths.items() if w % QK_K and not w % QK8_0}  # q8_0 needs 32-column blocks
    if kind not in K_QUANTS or fallback == "llama.cpp" or not narrow:
        return user
    by_kind: dict[str, list[str]] = {}
    for name in widths:
        by_kind.setdefault(re.sub(r"^blk\.\d+\.", "", name), []).append(name)
    ours = {}
    for suffix, names in sorted(by_kind.items()):
        if all(n in narrow for n in names):
            prefix = r"blk\.\d+\." if names[0].startswith("blk.") else ""
            ours[f"^{prefix}{re.escape(suffix)}$"] = fallback
        else:
            ours.update({f"^{re.escape(n)}$": fallback for n in sorted(narrow & set(names))})
    cols = ", ".join(str(w) for w in sorted({widths[n] for n in narrow}))
    logger.info("GGUF %s: %d of %d matrices have rows %s wide, not a multiple of %d: asking llama.cpp for %s on them "
                "(after your --gguf-tensor-type patterns; `--gguf-fallback llama.cpp` for its legacy types)",
                kind, len(narrow), len(widths), cols, QK_K, fallback)
    return {**user, **{p: t for p, t in ours.items() if p not in user}}


def tensor_overrides(llama_cpp, tensor_types: dict[str, str]):
    """{pattern: type name} as llama.cpp's NULL-terminated llama_model_tensor_override array (keep it alive until
    the quantizer returns)."""
    arr = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
    for slot, (pattern, name) in zip(arr, tensor_types.items()):
        ggml = getattr(llama_cpp, f"GGML_TYPE_{name.upper()}", None)
        if ggml is None:
            raise ConfigError(f"tensor type {name!r} for {pattern!r} is not a ggml type this llama.cpp knows "
                              "(e.g. q4_k, q5_k, q6_k, q8_0, f16)")
        slot.pattern, slot.type = pattern.encode(), ggml
    arr[len(tensor_types)].pattern = None  # the terminator llama.cpp stops at
    return arr


# ---- Ollama ----------------------------------------------------------------------------------------
def _go_literal(text: str) -> str:
    """Go template literal text: only `{{` opens an action, so it is written as an action printing it."""
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(tok, fmt: FormatConfig) -> str:
    """The training prompt as an Ollama (Go) TEMPLATE over .System and .Prompt: the tokenizer's chat template
    (the training one, see prompting.training_chat_template) rendered with sentinels for the two contents."""
    from reasontune.models.prompting import render_prompt

    text = render_prompt(tok, [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}], fmt)
    if text.count(_SYS) != 1 or text.count(_USER) != 1:
        raise ConfigError("--gguf: the chat template does not insert the system and user messages verbatim, so no "
                          "Ollama TEMPLATE can be derived from it; write the Modelfile by hand")
    head, rest = text.split(_SYS)
    mid, tail = rest.split(_USER)
    return _go_literal(head) + "{{ .System }}" + _go_literal(mid) + "{{ .Prompt }}" + _go_literal(tail)


def render_go(template: str, system: str, prompt: str) -> str:
    """The few Go-template actions ollama_template writes ({{ .System }}, {{ .Prompt }}, {{ "literal" }}),
    rendered as Ollama would; anything else raises, so a template outside that subset is noticed."""
    import json
    import re

    def action(m):
        body = m.group(1).strip()
        if body in (".System", ".Prompt"):
            return system if body == ".System" else prompt
        if body.startswith('"') and body.endswith('"'):
            return json.loads(body)
        raise ValueError(f"render_go: unsupported action {{{{ {body} }}}}")

    return re.sub(r"\{\{(.*?)\}\}", action, template, flags=re.S)


def _quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise ConfigError(f"--gguf: the {what} holds '\"\"\"', which an Ollama Modelfile cannot quote")
    return f'"""{text}"""'


def write_modelfile(gguf_path: str | Path, tok, fmt: FormatConfig) -> Path:
    """OUT/model-TYPE.Modelfile next to OUT/model-TYPE.gguf: `ollama create NAME -f` it."""
    from reasontune.export.amx import note

    gguf_path = Path(gguf_path)
    stop = tok.eos_token
    amx = [f"# {note(LLAMA_CPP_PIN)}", ""] if _quantized(gguf_path.name) else []  # Ollama skips comment lines
    lines = [*amx, f"FROM ./{gguf_path.name}", "",
             f"TEMPLATE {_quoted(ollama_template(tok, fmt), 'chat template')}", "",
             f"SYSTEM {_quoted(fmt.prompt, 'system prompt')}", "", f"PARAMETER stop {stop}" if stop else ""]
    path = gguf_path.with_suffix(".Modelfile")
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path


def _quantized(name: str) -> bool:
    """model-TYPE.gguf holds quantized matrices (what llama.cpp's AMX path takes: amx.py)."""
    return Path(name).stem.removeprefix("model-") not in ("f32", "f16", "bf16")


def parse_modelfile(text: str) -> dict:
    """{'FROM': ..., 'TEMPLATE': ..., 'SYSTEM': ..., 'PARAMETER': [...]} of the Modelfiles write_modelfile writes."""
    import re

    out: dict = {"PARAMETER": []}
    for m in re.finditer(r'^(FROM|TEMPLATE|SYSTEM|PARAMETER) (?:"""(.*?)"""|(.*?))$', text, flags=re.S | re.M):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        if m.group(1) == "PARAMETER":
            out["PARAMETER"].append(value)
        else:
            out[m.group(1)] = value
    return out


# ---- the model card ---------------------------------------------------------------------------------
GGUF_MARK = "## GGUF (llama.cpp, Ollama, LM Studio)"


def gguf_card(files: list[str], fmt: FormatConfig, eos: str | None, notes: dict | None = None) -> str:
    from reasontune.export.amx import note

    start = f"`{fmt.reasoning_start}`" if fmt.prefill_reasoning else "nothing"
    rows = "\n".join(f"- `{f}`" + (f": {notes[f]}" if (notes or {}).get(f) else "") for f in files)
    first = files[-1]
    amx = f"- **CPUs with Intel AMX**: {note(LLAMA_CPP_PIN)}\n" if any(_quantized(f) for f in files) else ""
    return f"""
{GGUF_MARK}

{rows}

The file's chat template (`tokenizer.chat_template`) renders the training prompt from a bare user message:
the training system prompt when the messages carry none, and a generation prompt that ends with {start}.
EOS is `{eos}`.

- **llama.cpp**: `llama-cli -m {first} --jinja` / `llama-server -m {first} --jinja`. `--jinja` (the default
  in current llama.cpp) runs the file's own template. Without it (`--no-jinja`, older builds, or clients that
  call `llama_chat_apply_template`), llama.cpp picks a built-in template by name, which renders the messages
  as given: it drops the training system prompt and the {start} prefill, and the model is prompted as it was
  not trained. llama-server also moves text between thinking tags into `reasoning_content` unless started
  with `--reasoning-format none`.
- **llama-cpp-python**: `Llama("{first}").create_chat_completion(messages=[{{"role": "user", "content": "..."}}])`
  uses the file's template (Jinja).
- **Ollama**: `ollama create NAME -f {Path(first).with_suffix(".Modelfile").name}` (the Modelfile next to each
  file: its TEMPLATE is the training prompt, SYSTEM the system prompt, `PARAMETER stop` the end of turn).
- **LM Studio**: load the file; it reads the file's Jinja template. Check its prompt-template settings
  keep it, and set the system prompt to the one above if the app replaces it.
{amx}"""


def write_gguf_card(folder: str | Path, files: list[str], fmt: FormatConfig, eos: str | None) -> Path:
    """Append (or replace) the GGUF section of OUT/README.md, after the merged card if there is one."""
    p = Path(folder) / "README.md"
    text = p.read_text() if p.is_file() else "---\nlibrary_name: gguf\n---\n"
    text = text.split("\n" + GGUF_MARK)[0].rstrip("\n") + "\n"
    p.write_text(text + gguf_card(files, fmt, eos, {f: quantize_note(Path(folder) / f) for f in files}))
    return p


def quantize_note(path: Path) -> str:
    """What the card says about how a file was quantized: with an importance matrix (its quantize.imatrix.* keys),
    and the types its matrices were written with (its KV_TYPES and KV_FALLBACK keys, read back from its tensors
    after quantizing: gguf_types.record_written_types)."""
    import gguf

    fields = gguf.GGUFReader(path).fields
    notes = []
    if KV_CHUNKS in fields:
        notes.append(f"quantized by llama.cpp with an importance matrix from {fields[KV_CHUNKS].contents()} training "
                     f"rows in the training format (`{fields[KV_DATASET].contents()}`)")
    notes += [fields[k].contents() for k in (KV_TYPES, KV_FALLBACK) if k in fields]
    return "; ".join(notes)


def ctypes_imatrix(llama_cpp, matrix: dict):
    """(array of llama_model_imatrix_data ending in a NULL name, as llama_model_quantize reads it; the float
    buffers it points into, which the caller keeps alive until the quantizer returns)."""
    import ctypes

    import numpy as np

    bufs = [(name.encode(), np.ascontiguousarray(v, dtype=np.float32)) for name, v in sorted(matrix.items())]
    arr = (llama_cpp.llama_model_imatrix_data * (len(bufs) + 1))()
    for entry, (name, v) in zip(arr, bufs):
        entry.name = name
        entry.data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = v.size
    arr[len(bufs)].name = None  # the end of the list (llama-quant.cpp: `p->name != nullptr`)
    return arr, bufs
