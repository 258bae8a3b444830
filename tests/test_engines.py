"""The engine interface without vLLM: the choice `auto` makes, the refusal of a missing vLLM, and the
post-hoc stop rule the vLLM engine builds its Generations with (tests/test_vllm.py runs vLLM itself)."""

from __future__ import annotations

import pytest

from reasontune import engines
from reasontune.config import ConfigError, from_dict
from reasontune.engines.stoprule import generation_from_ids


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
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    ids = tok("3 + 4 = 7\n</think>\n<answer>7</answer>\n<answer>8</answer>", add_special_tokens=False)["input_ids"]
    g = generation_from_ids(tok, ids, eos_ids={tok.eos_token_id}, max_new_tokens=64, stop_strings=["</answer>"])
    assert g.text == "3 + 4 = 7\n</think>\n<answer>7</answer>" and not g.truncated
    n = len(g.token_ids)  # the fewest ids whose text holds the marker: where our decode's stop check fires
    assert g.token_ids == ids[:n] and "</answer>" in tok.decode(ids[:n]) and "</answer>" not in tok.decode(ids[:n - 1])
    # no stop string: to EOS (kept in the ids, not in the text), or cut at the budget and marked truncated
    g = generation_from_ids(tok, ids + [tok.eos_token_id, 5, 6], eos_ids={tok.eos_token_id}, max_new_tokens=64,
                            stop_strings=[])
    assert g.token_ids == ids + [tok.eos_token_id] and not g.truncated and g.text.endswith("<answer>8</answer>")
    g = generation_from_ids(tok, ids, eos_ids={tok.eos_token_id}, max_new_tokens=5, stop_strings=[])
    assert g.num_tokens == 5 and g.truncated
