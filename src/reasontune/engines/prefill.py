"""Prefill: the prompts' forward pass into the KV cache that generation.py's decode loop continues.

Two kinds of sharing, each exact (every row sees the positions and keys it would see alone):
- identical prompts (GRPO's group: num_generations copies of one prompt) are prefilled once and their
  cache rows copied out to the copies;
- a prefix every prompt shares (the chat template and system prompt) runs once at batch 1.
"""

from __future__ import annotations


def _cache_kw(model) -> str:
    """transformers 5.x renamed `past_key_values` to `cache` (the old name warns); ask the forward."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "cache"
    return "cache" if "cache" in params or "past_key_values" not in params else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


MIN_SHARED_PREFIX = 8  # tokens; below this a separate prefix pass is not worth it


def _left_pad(rows: list[list[int]], pad_id: int, device):
    """(ids, mask), both (B, width): rows right-aligned, pad on the left."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def _shared_prefix(rows: list[list[int]]) -> int:
    """Length of the prefix every row shares (the chat template + system prompt), leaving each row
    at least one token of its own."""
    limit = min(len(r) for r in rows) - 1
    first, n = rows[0], 0
    while n < limit and all(r[n] == first[n] for r in rows):
        n += 1
    return n


def _forward(model, **kw):
    """Prefill forward with logits for the last position only (the prompt's other logits are never used).

    The position goes in as an index tensor, not the int 1: an int slices hidden_states[:, -1:, :], a
    non-contiguous (B, 1, H) view, and F.linear on that falls back to a batched matmul that copies the
    (H, V) lm_head weight B times (measured: 5.2 of 7.4 s of a 64-prompt SmolLM2 prefill). Indexing
    with a tensor gives a contiguous copy, and the lm_head is one plain matmul.
    """
    import torch

    last = torch.tensor([kw["input_ids"].shape[1] - 1], device=kw["input_ids"].device)
    try:
        return model(use_cache=True, logits_to_keep=last, **kw)
    except TypeError:  # a model without logits_to_keep
        return model(use_cache=True, **kw)


def _distinct(rows: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """(the distinct rows in first-seen order, for each row the index of its distinct row)."""
    first: dict[tuple[int, ...], int] = {}
    inverse = [first.setdefault(tuple(r), len(first)) for r in rows]
    return [list(k) for k in first], inverse


def _prefill(model, rows: list[list[int]], pad_id: int, cache_kw: str, room: int = 0):
    """Fill the KV cache for a batch of prompts -> (cache, last logits (B, V), mask (B, T), pos (B, 1)).

    Identical prompts (GRPO's group: num_generations copies of one prompt) are prefilled once: the U
    distinct rows run, then their cache rows, last logits, mask and positions are copied out to the B
    rows (index_select), so each copy samples from exactly what its own prefill would give. Only with
    our preallocated cache (plain full attention), whose rows we know how to copy.
    """
    from reasontune.engines.kvcache import plain_cache

    uniq, inverse = _distinct(rows)
    if len(uniq) == len(rows) or plain_cache(model) is None:
        return _prefill_rows(model, rows, pad_id, cache_kw, room)
    import torch

    cache, logits, mask, pos = _prefill_rows(model, uniq, pad_id, cache_kw, room)
    idx = torch.tensor(inverse, device=logits.device)  # (B,) into the U distinct rows
    cache.batch_select_indices(idx)  # (U, H, T + room, D) -> (B, H, T + room, D), the room kept
    return cache, logits[idx], mask[idx], pos[idx]


def _prefill_rows(model, rows: list[list[int]], pad_id: int, cache_kw: str, room: int = 0):
    """_prefill for rows taken as they are.

    Prompts that share a prefix (the system prompt) pay for it once: the prefix runs at batch 1,
    its cache is repeated B times, then the suffixes run left-padded after it. The padding then sits
    between prefix and suffix, masked out, with explicit position ids, so every row sees the same
    positions and keys it would see alone.
    """
    import torch

    from reasontune.engines.kvcache import preallocated_cache

    device, b = model.device, len(rows)
    shared = _shared_prefix(rows) if b > 1 else 0
    width = max(len(r) for r in rows)
    # Room past the first update for the rest of the prompt and the new tokens (`room`): no per-token regrowth.
    cache = preallocated_cache(model, room + (width - shared if shared >= MIN_SHARED_PREFIX else 0))
    given = {} if cache is None else {cache_kw: cache}
    if shared < MIN_SHARED_PREFIX:
        ids, mask = _left_pad(rows, pad_id, device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = _forward(model, input_ids=ids, attention_mask=mask, position_ids=pos, **given)
        return _cache_of(out), out.logits[:, -1], mask, pos[:, -1:]
    prefix = torch.tensor([rows[0][:shared]], dtype=torch.long, device=device)  # (1, P)
    cache = _cache_of(_forward(model, input_ids=prefix, **given))
    cache.batch_repeat_interleave(b)
    ids, smask = _left_pad([r[shared:] for r in rows], pad_id, device)  # (B, S)
    mask = torch.cat([smask.new_ones((b, shared)), smask], dim=1)  # (B, P + S)
    pos = shared + (smask.cumsum(-1) - 1).clamp(min=0)
    out = _forward(model, input_ids=ids, attention_mask=mask, position_ids=pos, **{cache_kw: cache})
    return _cache_of(out), out.logits[:, -1], mask, pos[:, -1:]
