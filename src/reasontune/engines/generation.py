"""Batched generation shared by evaluation and the GRPO trainer.

Where a completion ends (`StopRule`, the same in GRPO, eval, advise and ask): at the model's own EOS, at
the token budget, or `grace` tokens after the closing answer marker when the model has not written EOS
by then. Every token is sampled; nothing is appended and no text is cut, so what is scored is the
decoded ids, as TRL scores them. (GRPO used to stop at the marker and append EOS: the token after the
marker was then never sampled, its policy gradient summed to zero over each group, nothing held EOS
there, and the tuned model stopped writing it: issue 22.)

A small decoding loop over the model's KV cache instead of `model.generate`: HF keeps a
finished sequence in the batch (feeding pad tokens) until the longest one ends, while here a
sequence that hits EOS or a stop string is dropped from the batch and its cache rows are
freed, so it stops costing work. The prefill (prefill.py) runs each distinct prompt once. Prompts
are sorted by token length and batched with their neighbours (little padding) and results come back
in the caller's order.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

from reasontune.models.prompting import StopRule, render_chat  # noqa: F401  (StopRule: generate's callers import it here)
from reasontune.engines.prefill import _cache_kw, _cache_of, _prefill
from reasontune.models.speed import decode_threads, threads

logger = logging.getLogger(__name__)


@dataclass
class Generation:
    """One completion. `token_ids` are every sampled token, the EOS included when the model wrote one.

    truncated: cut by the token budget. stopped: ended with the model's own EOS. A completion cut `grace`
    tokens after the closing marker without EOS is neither."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    num_tokens: int = 0
    truncated: bool = False
    stopped: bool = False


def as_stop_rule(stop) -> StopRule:
    """A StopRule from a StopRule, None, or a marker string (tests and callers that pass one)."""
    if stop is None or isinstance(stop, StopRule):
        return stop or StopRule()
    return StopRule(marker=str(stop))


def stopped_on_own(g: Generation, marker: str | None) -> bool:
    """The completion closed its answer block and then ended with EOS (within the rule's grace tokens)."""
    return bool(g.stopped and (marker is None or marker in g.text))


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    for e in eos if isinstance(eos, (list, tuple)) else [eos]:
        if e is not None:
            ids.add(int(e))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _pick_tokens(logits, temperature: float, top_p: float, min_p: float | None):
    """Next token per row: argmax when temperature is 0, else temperature / min-p / top-p sampling."""
    import torch

    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if min_p is not None and min_p > 0:
        floor = probs.max(dim=-1, keepdim=True).values * min_p
        probs = torch.where(probs < floor, torch.zeros_like(probs), probs)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(dim=-1) - sorted_p > top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
    return sample_index(probs)


def sample_index(probs):
    """One index per row with probability proportional to probs (B, V), by inverse transform.

    One uniform number per row and a binary search in the cumulative sums. torch.multinomial, and
    the Gumbel / exponential-race tricks, draw a random number per vocabulary entry: 25-29 ms per
    decode step at batch 32 over SmolLM2's 49k tokens on a CPU, against about 1 ms for this.
    """
    import torch

    cdf = probs.cumsum(dim=-1)  # (B, V), unnormalised
    u = torch.rand(probs.size(0), 1, device=probs.device) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first index with cdf > u
    return idx.clamp(max=probs.size(-1) - 1)


class _StopCheck:
    """Per row: has the closing marker been written, and are its grace tokens used up? Decodes only the
    last few tokens, once per token until the marker shows."""

    def __init__(self, tokenizer, rule: StopRule | None):
        self.tokenizer = tokenizer
        self.rule = as_stop_rule(rule)
        self.marked: dict[int, int] = {}  # row -> completion length when the marker was complete

    def __call__(self, row: int, ids: list[int]) -> bool:
        """True when row `row` (its completion so far: `ids`) is to end without EOS."""
        rule = self.rule
        if not rule.marker:
            return False
        if row not in self.marked:
            tail = self.tokenizer.decode(ids[-rule.window():], skip_special_tokens=False)
            if rule.marker not in tail:
                return False
            self.marked[row] = len(ids)
        return len(ids) - self.marked[row] >= rule.grace


@contextlib.contextmanager
def merged_lora(model):
    """Decode with each LoRA folded into its base weight: one matmul per projection instead of three.

    The merged weights are new tensors (W + B A * scale, rounded once to W's dtype) swapped in for the
    duration, with the adapters disabled; the originals come back untouched afterwards, so unlike PEFT's
    merge/unmerge nothing drifts when the base is bf16. SmolLM2 at batch 32 measured 64 ms per decode
    step merged against 86 unmerged. Anything else (DoRA, quantized or non-Linear bases, several active
    adapters, no PEFT) decodes unmerged.
    """
    import torch

    swaps = _merge_plan(model)
    if not swaps:
        yield model
        return
    originals = []
    try:
        with torch.no_grad():
            for base, delta in swaps:
                w = base.weight
                originals.append((base, w))
                base.weight = torch.nn.Parameter((w.float() + delta()).to(w.dtype), requires_grad=False)
        with model.disable_adapter():
            yield model
    finally:
        for base, w in originals:
            base.weight = w


def _merge_plan(model) -> list:
    """[(base Linear, delta thunk)] for every LoRA layer, or [] when any layer cannot be merged this way."""
    import torch

    if not hasattr(model, "disable_adapter"):
        return []
    try:
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return []
    plan = []
    for mod in model.modules():
        if not isinstance(mod, LoraLayer):
            continue
        active = [a for a in mod.active_adapters if a in mod.lora_A]
        ok = (type(mod) is LoraLinear and len(active) == 1 and not mod.merged and not mod.use_dora.get(active[0])
              and isinstance(mod.base_layer, torch.nn.Linear) and mod.base_layer.weight.is_floating_point())
        if not ok:
            return []
        plan.append((mod.base_layer, lambda m=mod, a=active[0]: m.get_delta_weight(a).float()))
    return plan


def _decode_batch(model, rows: list[list[int]], pad_id: int, *, max_new_tokens: int, sampling: tuple,
                  eos: set[int], stop: _StopCheck, bar=None, limits: list[int] | None = None,
                  timings: dict | None = None) -> list[tuple[list[int], str]]:
    """Decode one left-padded batch, row i for at most limits[i] tokens (default: max_new_tokens); per row
    (completion ids, how it ended: "eos", "marker" or "limit"). `bar` ticks per finished row; `timings`
    (engines/steptime.py) gets the prefill and decode seconds added."""
    from reasontune.engines.logps import column_head

    device = model.device
    cache_kw = _cache_kw(model)
    limits = limits or [max_new_tokens] * len(rows)
    t0 = time.perf_counter()
    with column_head(model):  # a few rows against the whole vocabulary: W h^T (logps.py)
        cache, logits, mask, pos = _prefill(model, rows, pad_id, cache_kw, room=max(limits))
        t1 = time.perf_counter()
        with threads(decode_threads() if device.type == "cpu" else None):
            out = _decode_loop(model, rows, cache, logits, mask, pos, limits=limits,
                               sampling=sampling, eos=eos, stop=stop, bar=bar, cache_kw=cache_kw)
    if timings is not None:
        timings["prefill"] += t1 - t0
        timings["decode"] += time.perf_counter() - t1
    return out


def _decode_loop(model, rows, cache, logits, mask, pos, *, limits, sampling, eos, stop, bar, cache_kw):
    """Token-by-token decoding from a filled cache; finished rows leave the batch."""
    import torch

    device = model.device
    alive = list(range(len(rows)))  # original row index of each batch row still decoding
    done: list[tuple[list[int], str] | None] = [None] * len(rows)
    gen: list[list[int]] = [[] for _ in rows]
    for step in range(max(limits)):
        nxt = _pick_tokens(logits, *sampling)
        keep = []
        for b, tok in enumerate(nxt.tolist()):
            r = alive[b]
            gen[r].append(tok)
            if tok in eos:
                done[r] = (gen[r], "eos")
            elif stop(r, gen[r]):
                done[r] = (gen[r], "marker")
            elif step + 1 >= limits[r]:
                done[r] = (gen[r], "limit")
            else:
                keep.append(b)
        if bar is not None and len(keep) < len(alive):
            bar.update(len(alive) - len(keep))
        if not keep:
            break
        if len(keep) < len(alive):
            sel = torch.tensor(keep, device=device)
            cache.batch_select_indices(sel)
            mask, pos, nxt = mask[sel], pos[sel], nxt[sel]
            alive = [alive[b] for b in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        pos = pos + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                    **{cache_kw: cache})
        cache, logits = _cache_of(out), out.logits[:, -1]
    return [d if d is not None else (gen[i], "limit") for i, d in enumerate(done)]


def to_generation(tokenizer, ids: list[int], ended: str) -> Generation:
    """A Generation from sampled ids: the text is what TRL scores (decoded, special tokens skipped)."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return Generation(text=text, token_ids=list(ids), num_tokens=len(ids), truncated=ended == "limit",
                      stopped=ended == "eos")


def apply_stop_rule(tokenizer, ids: list[int], eos: set[int], rule: StopRule | None,
                    max_new_tokens: int) -> Generation:
    """The rule applied after the fact to ids sampled without it (another engine: vLLM, HF generate): the
    same prefix, so the same Generation as our decode loop gives for the same samples."""
    check, out = _StopCheck(tokenizer, rule), []
    for tok in ids[:max_new_tokens]:
        out.append(tok)
        if tok in eos:
            return to_generation(tokenizer, out, "eos")
        if check(0, out):
            return to_generation(tokenizer, out, "marker")
    return to_generation(tokenizer, out, "limit")


def completion_budgets(prompt_lengths: list[int], max_new_tokens: int, max_length: int | None) -> list[int]:
    """Tokens each prompt may generate: `max_new_tokens`, and prompt + completion within `max_length` (the run's
    model.max_seq_length, which vLLM's max_model_len also enforces; None: no cap). 0: the prompt fills it."""
    if max_length is None:
        return [max_new_tokens] * len(prompt_lengths)
    full = sum(n >= max_length for n in prompt_lengths)
    if full:
        logger.warning("%d prompt(s) of %d tokens or more (model.max_seq_length): nothing generated for them, "
                       "counted as truncated; raise model.max_seq_length", full, max_length)
    return [max(0, min(max_new_tokens, max_length - n)) for n in prompt_lengths]


def generate(model, tokenizer, prompts, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             min_p: float | None = None, num_return_sequences: int = 1, stop: StopRule | str | None = None,
             batch_size: int = 32, progress: bool = False, desc: str = "generate",
             autocast_setting: str = "auto", max_length: int | None = None) -> list[list[Generation]]:
    """Generate `num_return_sequences` completions per prompt; result[i][j] is prompt i, sample j.

    prompts: chat-message lists (rendered with the chat template + generation prompt) or
    already-templated strings. temperature 0 is greedy (one decode, copied n times). `stop`: the StopRule
    (a marker string means that marker with the default grace). `max_length`: prompt + completion at most
    (completion_budgets), as the vLLM engine caps them.
    batch_size counts sequences decoded together (a prompt with n samples fills n rows).
    """
    import torch

    from reasontune.models.speed import autocast

    if max_new_tokens <= 0 or num_return_sequences <= 0:
        raise ValueError("max_new_tokens and num_return_sequences must be positive")
    texts = [render_chat(tokenizer, p) for p in prompts]
    enc = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    copies = 1 if temperature <= 0 else num_return_sequences
    budget = completion_budgets([len(e) for e in enc], max_new_tokens, max_length)
    results: dict[tuple[int, int], Generation] = {(i, j): to_generation(tokenizer, [], "limit")
                                                  for i in range(len(enc)) if not budget[i] for j in range(copies)}
    rows = sorted(((i, j) for i in range(len(enc)) if budget[i] for j in range(copies)),
                  key=lambda r: (-len(enc[r[0]]), r))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    bar = _progress(progress, len(rows), desc)
    was_training = model.training
    model.eval()
    t0, ntok = time.perf_counter(), 0
    try:
        with torch.inference_mode(), autocast(model.device, autocast_setting), merged_lora(model):
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                limits = [budget[i] for i, _ in chunk]
                outs = _decode_batch(model, [enc[i] for i, _ in chunk], pad_id, max_new_tokens=max(limits),
                                     limits=limits, sampling=(temperature, top_p, min_p), eos=eos,
                                     stop=_StopCheck(tokenizer, as_stop_rule(stop)), bar=bar)
                for key, (ids, ended) in zip(chunk, outs):
                    results[key] = to_generation(tokenizer, ids, ended)
                    ntok += len(ids)
                if bar is not None:
                    bar.set_postfix(tok_s=f"{ntok / max(time.perf_counter() - t0, 1e-9):.0f}")
    finally:
        if was_training:
            model.train()
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    logger.debug("%s: %d sequences, %d tokens in %.1fs (%.0f tok/s)", desc, len(rows), ntok, dt, ntok / max(dt, 1e-9))
    return [[_copy(results[(i, j if copies > 1 else 0)]) for j in range(num_return_sequences)]
            for i in range(len(enc))]


def _copy(g: Generation) -> Generation:
    return Generation(text=g.text, token_ids=list(g.token_ids), num_tokens=g.num_tokens, truncated=g.truncated,
                      stopped=g.stopped)


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", leave=False)
