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


def shared_prompt_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, c: int):
    """(hidden (B, C', H), C') for prompt + completion rows (B, P + C), the completion the last `c` columns:
    the hidden states the LM head would get at the positions that predict completion tokens 0 .. C'-1, where
    C' <= c drops the completion columns no row uses (their log-probs are padding). None when every row's
    prompt differs (nothing to share)."""
    p = input_ids.size(1) - c
    pids, pmask = input_ids[:, :p], attention_mask[:, :p]
    cids, cmask = input_ids[:, p:], attention_mask[:, p:]
    first, inverse = distinct_rows(pids, pmask)
    if first.numel() == input_ids.size(0):
        return None
    pids, pmask = pids[first], pmask[first]  # (U, P)
    start = int(pmask.any(dim=0).int().argmax())  # left padding no distinct prompt uses
    pids, pmask = pids[:, start:], pmask[:, start:]
    used = cmask.any(dim=0).nonzero()
    cu = int(used.max()) + 1 if used.numel() else 1  # completion columns some row uses
    cache, kw = plain_cache(model), _cache_kw(model)
    unwrapped = getattr(model, "module", model)
    base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    last = torch.tensor([pids.size(1) - 1], device=pids.device)
    with head_as_identity(model):
        model(input_ids=pids, attention_mask=pmask, position_ids=(pmask.cumsum(-1) - 1).clamp(min=0),
              use_cache=True, logits_to_keep=last, **{kw: cache})
        hidden = [base.get_output_embeddings().hidden.index_select(0, inverse)]  # (B, 1, H): predicts token 0
        if cu > 1:
            cache.batch_select_indices(inverse)  # (U, h, P, d) -> (B, h, P, d), with grad
            plen = pmask.sum(-1).index_select(0, inverse)[:, None]  # (B, 1)
            steps = torch.arange(cu - 1, device=cids.device)[None]
            model(input_ids=cids[:, :cu - 1], attention_mask=torch.cat([pmask.index_select(0, inverse),
                                                                        cmask[:, :cu - 1]], dim=1),
                  position_ids=plen + steps, use_cache=True, **{kw: cache})
            hidden.append(base.get_output_embeddings().hidden)  # (B, C' - 1, H): predict tokens 1 .. C'-1
    return torch.cat(hidden, dim=1), cu
