"""Model resolution: a `.gguf` file is dequantised once into a cached safetensors folder and then
loads like any local model. The GGUF is a tiny random Llama written here with the `gguf` package."""

from __future__ import annotations

import pytest
import torch

from reasontune.config import ConfigError, FormatConfig, ModelConfig


@pytest.fixture()
def tiny_gguf(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasontune.export import write_gguf

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    src = tmp_path / "src"
    tok.save_pretrained(src)
    return model, write_gguf(model, tok, src, tmp_path / "tiny.gguf", "f32")


def test_gguf_file_loads_through_the_cache(tiny_gguf, tmp_path, monkeypatch):
    from reasontune.models import load_model_and_tokenizer, resolve_model_path

    monkeypatch.setenv("REASONTUNE_HOME", str(tmp_path / "home"))
    model, path = tiny_gguf
    cfg = ModelConfig(name=str(path), dtype="float32")  # compare with the fp32 source exactly
    folder = resolve_model_path(cfg)
    assert (tmp_path / "home" / "models") in __import__("pathlib").Path(folder).parents
    assert list(__import__("pathlib").Path(folder).glob("*.safetensors")), "not converted to safetensors"
    assert resolve_model_path(cfg) == folder  # cached: the second call converts nothing
    loaded, tok, backend = load_model_and_tokenizer(cfg, FormatConfig())
    assert backend == "transformers" and getattr(loaded.config, "quantization_config", None) is None
    ids = tok("12 + 30 = 42", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bf16_faster,expected", [(True, "bfloat16"), (False, "float32")])
def test_cpu_auto_dtype_follows_the_bf16_measurement(monkeypatch, bf16_faster, expected):
    """model.dtype auto on a CPU: a bf16 frozen base only where bf16 measured faster (AMX/AVX512-BF16)."""
    import reasontune.speed as speed
    from reasontune.models import torch_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(speed, "cpu_bf16_is_faster", lambda: bf16_faster)
    assert torch_dtype(ModelConfig()) == getattr(torch, expected)
    assert torch_dtype(ModelConfig(dtype="float32")) == torch.float32  # an explicit dtype always wins


@pytest.mark.parametrize("name,fix", [("missing.gguf", "GGUF file not found"), ("./no/such/dir", "no such folder")])
def test_bad_model_paths_fail_before_loading(name, fix):
    from reasontune.models import check_model_spec

    with pytest.raises(ConfigError, match=fix):
        check_model_spec(ModelConfig(name=name))


def test_lora_top_layers_adapts_only_the_last_layers(tiny_model_dir):
    from reasontune.config import LoraConfig
    from reasontune.models import load_model_and_tokenizer

    model, _, _ = load_model_and_tokenizer(ModelConfig(name=str(tiny_model_dir)), FormatConfig(),
                                           lora=LoraConfig(r=2, alpha=4, top_layers=1))
    layers = {n.split(".layers.")[1].split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert layers == {"1"}  # 2-layer model: only the top one
