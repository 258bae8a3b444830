"""The engine interface without vLLM: the choice `auto` makes, the refusal of a missing vLLM, and the
post-hoc stop rule the vLLM engine builds its Generations with (tests/test_vllm.py runs vLLM itself)."""

from __future__ import annotations

import pytest

from reasontune import engines
from reasontune.config import ConfigError, from_dict


def test_auto_is_our_decode_off_cuda_and_vllm_on_cuda_when_it_imports(monkeypatch):
    assert engines.pick_engine("auto", "cpu") == ("transformers", "no CUDA device")
    monkeypatch.setattr(engines, "vllm_importable", lambda: (True, ""))
    assert engines.pick_engine("auto", "cuda")[0] == "vllm"
    monkeypatch.setattr(engines, "vllm_importable", lambda: (False, "vllm is not installed"))
    assert engines.pick_engine("auto", "cuda") == ("transformers", "vllm is not installed")
    with pytest.raises(ConfigError, match="vllm is not installed.*--engine transformers"):
        engines.pick_engine("vllm", "cpu")


def test_bad_engine_is_refused_before_anything_loads():
    with pytest.raises(ConfigError, match="eval.engine"):
        from_dict({"eval": {"engine": "llamacpp"}})


def test_stop_rule_after_the_fact_cuts_where_our_decode_stops(smol_dir):
    """vLLM samples to EOS or the budget; the rule applied to its ids ends a completion where our decode does:
    the grace tokens after the marker, or the model's own EOS within them, or the budget."""
    from transformers import AutoTokenizer

    from reasontune.engines.generation import StopRule, apply_stop_rule

    tok = AutoTokenizer.from_pretrained(smol_dir)
    eos = {tok.eos_token_id}
    body = tok("3 + 4 = 7\n</think>\n<answer>7</answer>", add_special_tokens=False)["input_ids"]
    tail = tok("\n<answer>8</answer>", add_special_tokens=False)["input_ids"]
    g = apply_stop_rule(tok, body + tail, eos, StopRule("</answer>", grace=2), 64)
    assert g.token_ids == (body + tail)[:len(body) + 2] and not g.truncated and not g.stopped
    g = apply_stop_rule(tok, body + [tok.eos_token_id, 5, 6], eos, StopRule("</answer>", grace=2), 64)
    assert g.token_ids == body + [tok.eos_token_id] and g.stopped and g.text.endswith("</answer>")
    g = apply_stop_rule(tok, body + tail, eos, StopRule(), 5)
    assert g.num_tokens == 5 and g.truncated
