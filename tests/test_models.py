"""Model resolution: a `.gguf` file is dequantised once into a cached safetensors folder and then
loads like any local model. The GGUF is a tiny random Llama written here with the `gguf` package."""

from __future__ import annotations

import pytest
import torch

from reasontune.config import ConfigError, FormatConfig, ModelConfig


@pytest.fixture()
def tiny_gguf(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasontune.stages.export import write_gguf

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
    import reasontune.models.speed as speed
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


def test_a_model_that_cannot_load_is_one_line_naming_the_fixes(tmp_path):
    """`eval --model nonexistent/model-xyz` offline: exit 2 and one line naming the model and the three fixes,
    no traceback (whether the id is misspelt or the hub unreachable, transformers raises an OSError)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "reasontune.cli", "eval", "--model", "nonexistent/model-xyz",
                           "--dataset", "procedural:arithmetic", "--limit", "2", "--out", str(tmp_path / "e")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("reasontune: error:")]
    assert len(errors) == 1 and errors[0] == proc.stderr.strip().splitlines()[-1]
    line = errors[0]
    assert "could not load model 'nonexistent/model-xyz'" in line and "OSError" in line
    assert "hub id" in line and "local folder" in line and ".gguf" in line and "HF_HUB_OFFLINE" in line


def test_a_folder_without_weights_is_a_config_error_naming_the_model(smol_dir, tmp_path):
    """A folder with a config and a tokenizer but no weights fails in the model's from_pretrained: the same
    one-line error (a ConfigError, which the CLI prints without a traceback)."""
    import shutil

    from reasontune.models import ModelLoadError, load_model_and_tokenizer

    for f in smol_dir.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin")):
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(ModelLoadError, match=r"could not load model '.*': OSError: .*\.gguf file") as err:
        load_model_and_tokenizer(ModelConfig(name=str(tmp_path)), FormatConfig())
    assert isinstance(err.value, ConfigError)
