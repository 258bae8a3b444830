"""Per-token log-probs from hidden states, without keeping (N, V) logits for the backward pass.

SmolLM2's vocabulary has 49,152 entries, so the logits of one GRPO micro-batch (16 completions x
64 tokens) are 100 MB in bf16 and autograd keeps fp32 copies of them for the log-softmax: most of
the step's peak memory. `hidden_logps` computes log p(target) chunk by chunk, keeps only the hidden
states (N, H) and the log-sum-exp (N,), and recomputes each chunk's logits in the backward pass:
one extra lm_head matmul (~2% of a step) for hundreds of MB less peak RSS.
"""

from __future__ import annotations

import contextlib

import torch

CHUNK = 256  # positions per chunk: (256, 49152) fp32 logits are 50 MB


def token_logps(logits: torch.Tensor, targets: torch.Tensor, entropy: bool = False):
    """(log p(target), entropy or None), both (B, C), from logits (B, C, V) in any dtype.

    fp32 one row at a time: a bf16 log-softmax over 49k classes loses ~2 digits, and a whole fp32
    (B, C, V) copy would be B times the memory. Entropy is a metric here, so it carries no gradient.
    """
    lps, ents = [], []
    for row, tgt in zip(logits, targets):  # (C, V), (C,)
        z = row.float()
        lse = z.logsumexp(-1)  # (C,)
        lps.append(z.gather(-1, tgt[:, None]).squeeze(-1) - lse)
        if entropy:
            with torch.no_grad():
                ents.append(lse - (torch.softmax(z, -1) * z).sum(-1))
    return torch.stack(lps), (torch.stack(ents) if entropy else None)


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    # The matmul runs in the head's dtype (bf16 where the base is bf16, as under autocast); the
    # softmax in fp32.
    return torch.nn.functional.linear(h.to(weight.dtype), weight).float() * scale  # (n, V)


class _HiddenLogps(torch.autograd.Function):
    """log softmax(h W^T * scale)[target] for h (N, H), W (V, H) frozen; with `stats`, also the entropy
    (N,), differentiable (TRL's entropy bonus puts it in the loss), and whether the target is the top-1
    token (N,) (a metric, no gradient)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale: float, stats: bool):
        n = hidden.size(0)
        lps = torch.empty(n, dtype=torch.float32, device=hidden.device)  # (N,)
        lses = torch.empty_like(lps)
        ents = torch.empty_like(lps) if stats else torch.empty(0, device=hidden.device)
        top1 = torch.empty_like(lps) if stats else torch.empty(0, device=hidden.device)
        for s in range(0, n, CHUNK):
            z = _chunk_logits(hidden[s:s + CHUNK], weight, scale)  # (n, V)
            t = targets[s:s + CHUNK, None]
            lse = z.logsumexp(-1)
            lses[s:s + CHUNK] = lse
            zt = z.gather(-1, t).squeeze(-1)
            lps[s:s + CHUNK] = zt - lse
            if stats:
                ents[s:s + CHUNK] = lse - (torch.softmax(z, -1) * z).sum(-1)
                top1[s:s + CHUNK] = (zt >= z.max(-1).values).float()
        ctx.save_for_backward(hidden, weight, targets, lses, ents)
        ctx.scale = scale
        ctx.mark_non_differentiable(top1)
        ctx.set_materialize_grads(False)  # None for an unused output: no entropy term unless the loss has one
        return lps, ents, top1

    @staticmethod
    def backward(ctx, grad_lps, grad_ents, _grad_top1):
        hidden, weight, targets, lses, ents = ctx.saved_tensors
        grad_h = torch.zeros_like(hidden)
        if grad_lps is None and grad_ents is None:
            return grad_h, None, None, None, None
        for s in range(0, hidden.size(0), CHUNK):
            z = _chunk_logits(hidden[s:s + CHUNK], weight, ctx.scale)  # (n, V)
            logp = z.sub_(lses[s:s + CHUNK, None])  # (n, V), in place: z is not needed again
            p = logp.exp()
            grad_z = torch.zeros_like(p)
            if grad_ents is not None:
                # H = -sum p log p, so dH/dz = -p (log p + H)
                grad_z.addcmul_(p, logp + ents[s:s + CHUNK, None], value=-1.0).mul_(grad_ents[s:s + CHUNK, None])
            if grad_lps is not None:
                # d log p_t / d z = onehot(t) - softmax(z)
                g = grad_lps[s:s + CHUNK, None]  # (n, 1)
                grad_z.addcmul_(p, g, value=-1.0)
                grad_z.scatter_add_(-1, targets[s:s + CHUNK, None], g)
            grad_z.mul_(ctx.scale)  # d z / d (h W^T)
            grad_h[s:s + CHUNK] = (grad_z.to(weight.dtype) @ weight).to(hidden.dtype)
        return grad_h, None, None, None, None


def hidden_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                 entropy: bool = False):
    """(log p(target), entropy or None), both (B, C), from hidden states (B, C, H) and a frozen head W (V, H).
    The entropy carries a gradient, for an entropy bonus in the loss."""
    lps, ents, _ = _apply(hidden, weight, targets, temperature, entropy)
    return lps, ents


def hidden_logps_stats(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0):
    """(log p(target), entropy, target is top-1 as 0/1), each (B, C): what TRL's SFT metrics need."""
    return _apply(hidden, weight, targets, temperature, True)


def _apply(hidden, weight, targets, temperature, stats):
    if weight.requires_grad:
        raise ValueError("hidden_logps needs a frozen output head (its gradient is not computed)")
    b, c, h = hidden.shape
    lps, ents, top1 = _HiddenLogps.apply(hidden.reshape(b * c, h), weight, targets.reshape(b * c),
                                         1.0 / temperature, stats)
    return lps.view(b, c), (ents.view(b, c) if stats else None), (top1.view(b, c) if stats else None)


def frozen_head(model) -> torch.nn.Linear | None:
    """The model's output head when hidden_logps can stand in for it: a bias-free, frozen nn.Linear."""
    unwrapped = getattr(model, "module", model)  # DDP
    get = getattr(unwrapped, "get_output_embeddings", None)
    head = get() if get else None
    ok = isinstance(head, torch.nn.Linear) and head.bias is None and not head.weight.requires_grad
    return head if ok else None


@contextlib.contextmanager
def head_as_identity(model):
    """Within the block the model's forward returns hidden states (post final norm) as `logits`."""
    unwrapped = getattr(model, "module", model)
    base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    head = base.get_output_embeddings()
    base.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        base.set_output_embeddings(head)
