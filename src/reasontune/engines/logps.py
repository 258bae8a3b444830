"""Per-token log-probs from hidden states, without keeping (N, V) logits for the backward pass.

SmolLM2's vocabulary has 49,152 entries, so the logits of one GRPO micro-batch (16 completions x
64 tokens) are 100 MB in bf16 and autograd keeps fp32 copies of them for the log-softmax: most of
the step's peak memory. `hidden_logps` computes log p(target) chunk by chunk, keeps only the hidden
states (N, H) and the log-sum-exp (N,), and recomputes each chunk's logits in the backward pass:
one extra lm_head matmul (~2% of a step) for hundreds of MB less peak RSS.

The model's forward never runs its LM head here (raw_hidden), so what it does to the head's output is
done here too (LogitPost: Gemma-2/3's final_logit_softcapping, Granite's logits_scaling, Cohere's
logit_scale), read from the config as TRL's fused head reads it; `head_mismatch` checks on one row that the
result is the model's own logits, so a post-processing we do not know turns this path off.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

CHUNK = 256  # positions per chunk: (256, 49152) fp32 logits are 50 MB
# The forward's log-softmax is kept for the backward when it fits in this (without a softcap): the backward then
# skips the head matmul it would redo (a 32-row GRPO micro-batch of ~1400 positions keeps 270 MB, and saves a
# third of the head's matmuls). Larger ones are recomputed chunk by chunk.
KEEP_LOGPS_BYTES = 512 * 2**20


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


@dataclass(frozen=True)
class LogitPost:
    """What a model's forward does to its LM head's output a = h W^T: z = softcap * tanh(scale * a / softcap),
    or z = scale * a without a softcap (the sampling temperature divides z afterwards)."""

    scale: float = 1.0
    softcap: float | None = None

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.softcap is None


def logit_post(model) -> LogitPost:
    """The model's logit post-processing from its config, read as TRL's fused LM head reads it (trl
    add_fused_lm_head): Gemma-2/3 final_logit_softcapping (tanh(z / cap) * cap), Cohere logit_scale (z *
    scale), Granite and MiniCPM3 logits_scaling (z / scaling; HyperCLOVA X multiplies), Muse Glimmer
    output_multiplier and Falcon-H1 lm_head_multiplier (z * m)."""
    unwrapped = getattr(model, "module", model)
    config = unwrapped.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = getattr(text, "logit_scale", None)
    for name in ("output_multiplier", "lm_head_multiplier"):
        scale = getattr(text, name, None) if scale is None else scale
    if scale is None and getattr(text, "logits_scaling", None) is not None:
        ls = text.logits_scaling
        scale = ls if getattr(text, "model_type", "") == "hyperclovax" else 1.0 / ls
    cap = getattr(text, "final_logit_softcapping", None)
    return LogitPost(1.0 if scale is None else float(scale), None if cap is None else float(cap))


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, post: LogitPost, inv_t: float, deriv: bool = False):
    """(z, dz/da): the logits (n, V) in fp32 and, with `deriv`, their derivative by a = h W^T (a float, or
    (n, V) under a softcap). The matmul runs in the head's dtype (bf16 where the base is bf16, as under autocast); the
    softmax in fp32."""
    a = torch.nn.functional.linear(h.to(weight.dtype), weight).float()  # (n, V)
    if post.softcap is None:
        return a.mul_(post.scale * inv_t), post.scale * inv_t
    t = a.mul_(post.scale / post.softcap).tanh_()  # in place: a is not needed again
    return t * (post.softcap * inv_t), ((1.0 - t * t).mul_(post.scale * inv_t) if deriv else None)


class _HiddenLogps(torch.autograd.Function):
    """log softmax(post(h W^T) / T)[target] for h (N, H), W (V, H) frozen; with `stats`, also the entropy
    (N,), differentiable (TRL's entropy bonus puts it in the loss), and whether the target is the top-1
    token (N,) (a metric, no gradient)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, post: LogitPost, inv_t: float, stats: bool):
        n = hidden.size(0)
        lps = torch.empty(n, dtype=torch.float32, device=hidden.device)  # (N,)
        lses = torch.empty_like(lps)
        ents = torch.empty_like(lps) if stats else torch.empty(0, device=hidden.device)
        top1 = torch.empty_like(lps) if stats else torch.empty(0, device=hidden.device)
        keep = post.softcap is None and n * weight.size(0) * 4 <= KEEP_LOGPS_BYTES
        kept = torch.empty(n if keep else 0, weight.size(0), dtype=torch.float32, device=hidden.device)  # (N, V) log-softmax, or none
        for s in range(0, n, CHUNK):
            z, _ = _chunk_logits(hidden[s:s + CHUNK], weight, post, inv_t)  # (n, V)
            t = targets[s:s + CHUNK, None]
            lse = z.logsumexp(-1)
            lses[s:s + CHUNK] = lse
            if keep:
                torch.sub(z, lse[:, None], out=kept[s:s + CHUNK])
            zt = z.gather(-1, t).squeeze(-1)
            lps[s:s + CHUNK] = zt - lse
            if stats:
                ents[s:s + CHUNK] = lse - (torch.softmax(z, -1) * z).sum(-1)
                top1[s:s + CHUNK] = (zt >= z.max(-1).values).float()
        ctx.save_for_backward(hidden, weight, targets, lses, ents, kept)
        ctx.post, ctx.inv_t, ctx.kept = post, inv_t, keep
        ctx.mark_non_differentiable(top1)
        ctx.set_materialize_grads(False)  # None for an unused output: no entropy term unless the loss has one
        return lps, ents, top1

    @staticmethod
    def backward(ctx, grad_lps, grad_ents, _grad_top1):
        hidden, weight, targets, lses, ents, kept = ctx.saved_tensors
        grad_h = torch.zeros_like(hidden)
        if grad_lps is None and grad_ents is None:
            return grad_h, None, None, None, None, None
        for s in range(0, hidden.size(0), CHUNK):
            if ctx.kept:  # the forward's log-softmax (not written to: a second backward reads it too)
                logp, dz_da = kept[s:s + CHUNK], ctx.post.scale * ctx.inv_t
            else:
                z, dz_da = _chunk_logits(hidden[s:s + CHUNK], weight, ctx.post, ctx.inv_t, deriv=True)  # (n, V)
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
            grad_z.mul_(dz_da)  # d z / d (h W^T)
            grad_h[s:s + CHUNK] = (grad_z.to(weight.dtype) @ weight).to(hidden.dtype)
        return grad_h, None, None, None, None, None


def hidden_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                 entropy: bool = False, post: LogitPost = LogitPost()):
    """(log p(target), entropy or None), both (B, C), from hidden states (B, C, H), a frozen head W (V, H)
    and the model's logit post-processing. The entropy carries a gradient, for an entropy bonus in the loss."""
    lps, ents, _ = _apply(hidden, weight, targets, temperature, entropy, post)
    return lps, ents


def hidden_logps_at(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                    temperature: float = 1.0, entropy: bool = False, post: LogitPost = LogitPost()):
    """hidden_logps at the positions `valid` (B, C) marks, 0 elsewhere: padding's log-probs are masked out of
    the loss anyway, and the LM head (a 49k-row matmul forward, two in the backward) skips them."""
    lp, ent = hidden_logps(hidden[valid][None], weight, targets[valid][None], temperature, entropy, post)  # (1, N)
    zeros = lp.new_zeros(valid.shape)
    return zeros.masked_scatter(valid, lp[0]), (zeros.masked_scatter(valid, ent[0]) if entropy else None)


def hidden_logps_stats(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0):
    """(log p(target), entropy, target is top-1 as 0/1), each (B, C): what TRL's SFT metrics need."""
    return _apply(hidden, weight, targets, temperature, True)


def _apply(hidden, weight, targets, temperature, stats, post=LogitPost()):
    if weight.requires_grad:
        raise ValueError("hidden_logps needs a frozen output head (its gradient is not computed)")
    b, c, h = hidden.shape
    lps, ents, top1 = _HiddenLogps.apply(hidden.reshape(b * c, h), weight, targets.reshape(b * c),
                                         post, 1.0 / temperature, stats)
    return lps.view(b, c), (ents.view(b, c) if stats else None), (top1.view(b, c) if stats else None)


def frozen_head(model, any_post: bool = False) -> torch.nn.Linear | None:
    """The model's output head when hidden_logps can stand in for it: a bias-free, frozen nn.Linear, and
    (unless `any_post`: the caller applies `logit_post(model)`) logits used as the head gives them."""
    unwrapped = getattr(model, "module", model)  # DDP
    get = getattr(unwrapped, "get_output_embeddings", None)
    head = get() if get else None
    ok = isinstance(head, torch.nn.Linear) and head.bias is None and not head.weight.requires_grad
    return head if ok and (any_post or logit_post(model).identity) else None


@torch.no_grad()
def head_mismatch(model, head: torch.nn.Linear, post: LogitPost, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, keep: int = 4) -> str | None:
    """None when `head` and `post` applied to the hidden states give the model's own logits on the last
    `keep` positions of the first row (eval mode: no dropout), else why not: a post-processing the config
    does not name (a masked vocabulary, an unpadded one, another scale)."""
    ids, mask = input_ids[:1], attention_mask[:1]
    was_training = model.training
    model.eval()
    try:
        want = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits.float()
        hidden = raw_hidden(model, input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False)
    finally:
        model.train(was_training)
    got, _ = _chunk_logits(hidden.reshape(-1, hidden.size(-1)), head.weight, post, 1.0)
    got = got.view(want.shape[:-1] + got.shape[-1:])
    if got.shape != want.shape:
        return f"the model's logits are {tuple(want.shape)}, its head gives {tuple(got.shape)}"
    err, size = (got - want).abs().max().item(), want.abs().max().item()
    if not err <= 0.02 * size + 1e-3:  # bf16 rounds logits to ~0.4%; any real post-processing moves them more
        return f"its head with {post} is {err:.3g} off the model's logits (max |logit| {size:.3g})"
    return None


class _Passthrough(torch.nn.Module):
    """Stands in for the LM head: returns its input and keeps it, since the forward may transform what the
    head returns (Gemma-2's softcap would bend hidden states; a scale would pass through a matmul unharmed)."""

    def forward(self, x):
        self.hidden = x
        return x


@contextlib.contextmanager
def head_as_identity(model):
    """Within the block the model's forward returns hidden states (post final norm) as `logits`, after
    whatever the forward does to its head's output (for models whose logit_post is the identity, nothing);
    `raw_hidden` gives them untouched."""
    unwrapped = getattr(model, "module", model)
    base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    head = base.get_output_embeddings()
    base.set_output_embeddings(_Passthrough())
    try:
        yield head
    finally:
        base.set_output_embeddings(head)


class _ColumnHead(torch.nn.Module):
    """The LM head as W h^T (V, n), handed back transposed: the same products as F.linear(h, W), and on a CPU the
    weight's 49k rows stream once through the matmul. Measured on a 2-core EPYC (fp32, SmolLM2's 49152 x 576
    head): 4 rows 4.9 ms against 18.4, 8 rows 8.5 against 17.3, 32 rows 17.9 against 25.6, 64 rows 27.7 against
    35.8."""

    def __init__(self, head: torch.nn.Linear):
        super().__init__()
        self.head = head

    def forward(self, x):  # (..., H) -> (..., V)
        h = x.reshape(-1, x.size(-1))  # (n, H)
        out = torch.mm(self.head.weight, h.t()).t()  # (n, V), a transposed view
        if self.head.bias is not None:
            out = out + self.head.bias
        return out.reshape(*x.shape[:-1], out.size(-1))


@contextlib.contextmanager
def column_head(model):
    """Within the block a CPU model's LM head (a plain nn.Linear) computes W h^T (_ColumnHead): for decoding,
    where a few rows meet the whole vocabulary every token. Elsewhere, or for another head, nothing changes."""
    unwrapped = getattr(model, "module", model)
    base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    get = getattr(base, "get_output_embeddings", None)
    head = get() if get else None
    if type(head) is not torch.nn.Linear or head.weight.device.type != "cpu":
        yield
        return
    base.set_output_embeddings(_ColumnHead(head))
    try:
        yield
    finally:
        base.set_output_embeddings(head)


def raw_hidden(model, **inputs) -> torch.Tensor:
    """The hidden states the model's LM head would get (B, C, H), for the positions `logits_to_keep` names."""
    unwrapped = getattr(model, "module", model)
    base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    with head_as_identity(model):
        model(**inputs)
        return base.get_output_embeddings().hidden
