"""`reasontune export`: the merged model (and its GGUF) gives the adapter model's logits."""

from __future__ import annotations

import json

import pytest
import torch

from reasontune import cli
from reasontune.config import ConfigError, from_dict

TEXT = "Solve: 12 + 30 = ? <start_working_out> 12 plus 30 is 42 <end_working_out><SOLUTION>42</SOLUTION>"


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    """A finished-looking run: config + an adapter whose LoRA B is non-zero (so merging matters)."""
    from reasontune.models import load_model_and_tokenizer
    from reasontune.runs.folder import RunFolder

    run = tmp_path_factory.mktemp("export") / "run"
    cfg = from_dict({"model": {"name": str(tiny_model_dir)}, "lora": {"r": 4, "alpha": 8}, "output_dir": str(run)})
    RunFolder(run).start(cfg)
    torch.manual_seed(0)
    model, tok, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    model.save_pretrained(run / "adapter")
    tok.save_pretrained(run / "adapter")
    return run


@pytest.fixture(scope="module")
def reference(run_dir, tiny_model_dir):
    """Logits of base + adapter (PEFT, unmerged) and of the base alone, on TEXT."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        peft = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
        logits = peft(ids).logits
    assert (logits - base_logits).abs().max() > 1e-2, "the adapter must change the logits for the test to mean much"
    return ids, logits


def _export(capsys, *argv) -> dict:
    rc = cli.main(["export", *argv])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, out
    return json.loads(out[-1])


def _logits(folder, ids, **kw):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, **kw).eval()
    with torch.no_grad():
        return model(ids).logits.float(), model


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("float16", 2e-2), ("bfloat16", 1e-1)])
def test_merged_export_matches_adapter_logits(capsys, run_dir, reference, tmp_path, dtype, tol):
    ids, want = reference
    res = _export(capsys, str(run_dir), "--merged", "--dtype", dtype, "--out", str(tmp_path / "m"))
    assert res == {"merged": str(tmp_path / "m")}
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()
    assert not any("lora" in p.name or p.name == "adapter_config.json" for p in (tmp_path / "m").iterdir())
    got, model = _logits(tmp_path / "m", ids, dtype="auto")
    assert model.dtype == getattr(torch, dtype)
    diff = (got - want).abs().max().item()
    print(f"merged {dtype}: max |logit diff| = {diff:.2e} (logit scale {want.abs().max().item():.2f})")
    assert diff < tol


def test_default_dtype_is_float16_on_cpu(capsys, run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _export(capsys, str(run_dir), "--merged", "--out", str(tmp_path / "m"))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "float16"


def test_gguf_export_round_trips(capsys, run_dir, reference, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    ids, want = reference
    res = _export(capsys, str(run_dir), "--gguf", "--gguf-type", "f32", "--out", str(tmp_path / "g"))
    path = tmp_path / "g" / "model-f32.gguf"
    assert res == {"gguf": str(path), "modelfile": str(path.with_suffix(".Modelfile"))} and path.is_file()
    got, _ = _logits(tmp_path / "g", ids, gguf_file=path.name, dtype=torch.float32)
    diff = (got - want).abs().max().item()
    print(f"gguf f32: max |logit diff| = {diff:.2e}")
    assert diff < 1e-4
    tok = AutoTokenizer.from_pretrained(tmp_path / "g", gguf_file=path.name)
    assert tok(TEXT)["input_ids"] == AutoTokenizer.from_pretrained(tiny_model_dir)(TEXT)["input_ids"]


def test_gguf_qwen3_round_trips(tmp_path, tiny_model_dir, kind="q8_0", tol=1e-1):
    """A tiny random Qwen3 (q/k norms, no Q/K permutation) through the GGUF writer and back.
    head_dim is Qwen3's 128: transformers' GGUF reader assumes the default head_dim."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from reasontune.stages.export import write_gguf

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=128, max_position_embeddings=512,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id)
    model = Qwen3ForCausalLM(cfg).eval()
    tok.save_pretrained(tmp_path)
    path = write_gguf(model, tok, tmp_path, tmp_path / f"q.{kind}.gguf", kind)
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = model(ids).logits
    got, back = _logits(tmp_path, ids, gguf_file=path.name, dtype=torch.float32)
    assert back.config.model_type == "qwen3"
    diff = (got - want).abs().max().item()
    print(f"gguf qwen3 {kind}: max |logit diff| = {diff:.2e} (logit scale {want.abs().max().item():.2f})")
    assert diff < tol


def test_export_errors(capsys, tmp_path, run_dir):
    from reasontune.stages.export import write_gguf

    assert cli.main(["export", str(tmp_path), "--merged"]) == 2
    assert "not a reasontune run folder" in capsys.readouterr().err
    assert cli.main(["export", str(run_dir)]) == 2
    assert "nothing to do" in capsys.readouterr().err
    fake = type("M", (), {"config": type("C", (), {"model_type": "gpt_neox"})()})()
    with pytest.raises(ConfigError, match="not supported by reasontune's GGUF writer"):
        write_gguf(fake, None, tmp_path, tmp_path / "x.gguf")
