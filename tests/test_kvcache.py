"""The preallocated KV cache hands attention exactly what transformers' DynamicLayer would."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from reasontune.engines.kvcache import PreallocatedLayer, preallocated_cache

# (op, argument): the sequence our decoder performs (shared prefix at batch 1, repeat to the batch,
# the suffix, tokens, rows finishing), then past the reserved room so the buffer must grow.
OPS = [("update", (1, 5)), ("repeat", 4), ("update", (4, 3)), ("update", (4, 1)), ("select", [0, 2, 3]),
       ("update", (3, 1)), ("crop", -2), ("update", (3, 1)), ("select", [2]), ("update", (1, 1)),
       ("update", (1, 9))]


@pytest.mark.parametrize("room", [0, 3, 64])
def test_preallocated_layer_matches_dynamic_layer(room):
    g = torch.Generator().manual_seed(0)
    ref, ours = DynamicLayer(), PreallocatedLayer(room)
    for op, arg in OPS:
        if op == "update":
            b, t = arg
            k, v = torch.randn(b, 2, t, 8, generator=g), torch.randn(b, 2, t, 8, generator=g)
            got, want = ours.update(k, v), ref.update(k, v)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        elif op == "repeat":
            ours.batch_repeat_interleave(arg), ref.batch_repeat_interleave(arg)
        elif op == "select":
            idx = torch.tensor(arg)
            ours.batch_select_indices(idx), ref.batch_select_indices(idx)
        elif op == "crop":
            ours.crop(arg), ref.crop(arg)
        assert ours.get_seq_length() == ref.get_seq_length(), op
        assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values), op


def test_preallocated_layer_writes_in_place_within_its_room():
    layer = PreallocatedLayer(room=4)
    layer.update(torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4))
    buf = layer._k.data_ptr()
    for _ in range(4):  # 3 + 4 = 7 tokens fit: the buffer is never replaced
        layer.update(torch.ones(2, 1, 1, 4), torch.ones(2, 1, 1, 4))
        assert layer._k.data_ptr() == buf
    layer.update(torch.ones(2, 1, 1, 4), torch.ones(2, 1, 1, 4))  # the 8th token: it grows
    assert layer._k.data_ptr() != buf and layer.get_seq_length() == 8 and layer._k.shape[-2] >= 8


def test_preallocated_cache_only_for_plain_full_attention():
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    small = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1)
    cache = preallocated_cache(LlamaForCausalLM(LlamaConfig(**small)), room=10)
    assert cache is not None and len(cache.layers) == 2
    assert all(isinstance(layer, PreallocatedLayer) and layer.room == 10 for layer in cache.layers)
    # sliding-window layers drop old tokens: those models keep the cache they build themselves
    assert preallocated_cache(MistralForCausalLM(MistralConfig(sliding_window=4, **small)), room=10) is None
