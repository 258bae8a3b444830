"""The group's prompt once per micro-batch in the GRPO loss forward (Prefix Grouper, arXiv 2506.05433).

A GRPO group is num_generations completions of one prompt, and the prompt is most of the tokens a row
carries (demo: ~60 prompt tokens, ~30 completion tokens). Here the U distinct prompts of a micro-batch run
once, with use_cache=True and with grad; their KV cache is copied out to the B rows (index_select: autograd
adds each copy's gradient back into its prompt's forward); then the completions run on that cache with the
attention mask (B, P + C) and positions continuing from each prompt's length. Every completion token sees the
same keys and values it would see in the row's own forward, so loss and LoRA gradients are the unshared
path's (up to float rounding: tests/test_shared_prompt.py), and the prompt's forward and backward cost U
rows, not B. The trainer groups each micro-batch's rows by prompt (trainer.py) so that U is small.

Positions: the prompt's from its own tokens (left padding skipped) and the completion's from the prompt's
length, as our decode gives them (prefill.py). TRL's forward counts the left padding into the positions;
with rotary embeddings only position differences reach attention, so both give the same numbers.

Only for plain full-attention caches (kvcache.plain_cache), without gradient checkpointing (it turns the
cache off) and in one process (DDP expects one forward per backward); the caller falls back otherwise.
"""

from __future__ import annotations

import torch

from reasontune.engines.kvcache import plain_cache
from reasontune.engines.logps import head_as_identity
from reasontune.engines.prefill import _cache_kw


def distinct_rows(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first (U,): the first row of each distinct (ids, mask) row, inverse (B,): each row's distinct row)."""
    _, inverse = torch.unique(torch.cat([ids, mask.to(ids.dtype)], dim=1), dim=0, return_inverse=True)
    b = ids.size(0)
    first = torch.full((int(inverse.max()) + 1,), b, dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(b, device=ids.device), reduce="amin")
    return first, inverse


def why_not(model) -> str | None:
    """None when the shared-prompt forward can run on `model`, else why not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else "is_gradient_checkpointing"
    if getattr(base, name, False):
        return "gradient checkpointing turns the KV cache off"
    if plain_cache(model) is None:
        return "the model's cache is not plain full attention"
    return None


BUCKET_COST_TOKENS = 64  # a completion forward's fixed cost, in row-tokens: fewer, longer buckets below that


def length_buckets(lengths: list[int], fixed: int | None = None) -> list[list[int]]:
    """Rows (indices into `lengths`) split into buckets of similar completion length, so that each bucket's forward
    pads its rows only to its own longest: the split (of the rows sorted by length) that minimises the row-tokens
    run plus `fixed` per bucket. Completions of 20-64 tokens in one 32-row micro-batch ran 2048 row-tokens for
    ~1400 real ones."""
    fixed = BUCKET_COST_TOKENS if fixed is None else fixed
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)  # best[i]: the cost of the first i sorted rows
    for i in range(1, n + 1):
        for j in range(i):  # the last bucket holds sorted rows j .. i-1, padded to the longest, lengths[order[i-1]]
            cost = best[j] + (i - j) * lengths[order[i - 1]] + fixed
            if cost < best[i]:
                best[i], cut[i] = cost, j
    buckets, i = [], n
    while i > 0:
        buckets.append(order[cut[i]:i])
        i = cut[i]
    return buckets[::-1]


def shared_prompt_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, c: int):
    """(hidden (B, C', H), C') for prompt + completion rows (B, P + C), the completion the last `c` columns:
    the hidden states the LM head would get at the positions that predict completion tokens 0 .. C'-1, where
    C' <= c drops the completion columns no row uses. A row's positions past its own completion are zeros (their
    log-probs are padding): the completions run in buckets of similar length (length_buckets), each padded to its
    own longest. None when every row's prompt differs (nothing to share)."""
    p = input_ids.size(1) - c
    pids, pmask = input_ids[:, :p], attention_mask[:, :p]
    cids, cmask = input_ids[:, p:], attention_mask[:, p:]
    first, inverse = distinct_rows(pids, pmask)
    if first.numel() == input_ids.size(0):
        return None
    pids, pmask = pids[first], pmask[first]  # (U, P)
    start = int(pmask.any(dim=0).int().argmax())  # left padding no distinct prompt uses
    pids, pmask = pids[:, start:], pmask[:, start:]
    cols = torch.arange(1, c + 1, device=cmask.device)
    lengths = (cmask.ne(0) * cols).amax(dim=1).clamp(min=1).tolist()  # (B,): up to each row's last used column
    cu = max(lengths)
    cache, kw = plain_cache(model), _cache_kw(model)
    unwrapped = getattr(model, "module", model)
    base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    last = torch.tensor([pids.size(1) - 1], device=pids.device)
    with head_as_identity(model):
        model(input_ids=pids, attention_mask=pmask, position_ids=(pmask.cumsum(-1) - 1).clamp(min=0),
              use_cache=True, logits_to_keep=last, **{kw: cache})
        head0 = base.get_output_embeddings().hidden  # (U, 1, H): predicts completion token 0
        prompt_kv = [(layer.keys, layer.values) for layer in cache.layers]  # (U, h, P, d) each, with grad
        plen = pmask.sum(-1)  # (U,)
        parts, order = [], []
        for rows in length_buckets(lengths):
            idx = torch.tensor(rows, device=cids.device)
            src = inverse.index_select(0, idx)  # (b,): each row's distinct prompt
            h = [head0.index_select(0, src)]  # (b, 1, H)
            n = max(lengths[r] for r in rows) - 1  # completion tokens this bucket runs
            if n > 0:
                for layer, (k, v) in zip(cache.layers, prompt_kv):  # the rows' prompt KV (gradients flow back)
                    layer.keys, layer.values = k.index_select(0, src), v.index_select(0, src)
                steps = torch.arange(n, device=cids.device)[None]
                model(input_ids=cids.index_select(0, idx)[:, :n],
                      attention_mask=torch.cat([pmask.index_select(0, src), cmask.index_select(0, idx)[:, :n]], dim=1),
                      position_ids=plen.index_select(0, src)[:, None] + steps, use_cache=True, **{kw: cache})
                h.append(base.get_output_embeddings().hidden)  # (b, n, H): predict tokens 1 .. n
            h = torch.cat(h, dim=1)
            parts.append(torch.nn.functional.pad(h, (0, 0, 0, cu - h.size(1))))  # (b, C', H)
            order += rows
    back = torch.empty(len(order), dtype=torch.long, device=cids.device)
    back[torch.tensor(order, device=cids.device)] = torch.arange(len(order), device=cids.device)
    return torch.cat(parts).index_select(0, back), cu
