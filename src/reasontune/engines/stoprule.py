"""Where a completion ends, applied after the fact to the full sampled ids: the one place an engine that
generates without stop strings (vLLM: up to EOS or max_tokens) turns its ids into `Generation`s.

Cutting a sample at the first point where the rule says "stop" gives the same text and ids as stopping
there while decoding, for the same sampled tokens: what follows the cut never influenced what came
before it. Today's rule (prompting.stop_strings): EOS, the token budget, or right after the first stop
string (the closing answer marker when `grpo.stop_at_solution_end`), with the text cut by
generation.cut_at_stop as our own decode cuts it. Issue 22 changes the rule; change it here.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..generation import Generation, cut_at_stop


def _stop_end(tokenizer, ids: list[int], stop_strings: Sequence[str]) -> int | None:
    """The fewest leading ids whose text holds a stop string (our decode stops after that token), or None.

    Holding a stop string only turns on as ids are added, so a binary search over prefixes finds it
    in about log2(len) decodes."""
    stops = [s for s in stop_strings if s]
    text = lambda n: tokenizer.decode(ids[:n], skip_special_tokens=False)  # noqa: E731
    if not stops or not any(s in text(len(ids)) for s in stops):
        return None
    lo, hi = 1, len(ids)  # text(hi) holds one; find the smallest such n
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in text(mid) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo


def generation_from_ids(tokenizer, ids: Sequence[int], *, eos_ids, max_new_tokens: int,
                        stop_strings: Sequence[str] | None) -> Generation:
    """A completion's Generation from its sampled ids (EOS included when sampled), the stop rule applied."""
    ids = list(ids)[:max_new_tokens]
    eos_ids = set(eos_ids)
    end = next((i + 1 for i, t in enumerate(ids) if t in eos_ids), None)
    if end is not None:
        ids = ids[:end]
    cut = _stop_end(tokenizer, ids, stop_strings or ())
    if cut is not None:
        ids = ids[:cut]
    ended = cut is not None or (ids and ids[-1] in eos_ids)
    text, stopped = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop_strings)
    truncated = not ended and len(ids) >= max_new_tokens
    return Generation(text=text, token_ids=ids, num_tokens=len(ids), truncated=truncated and not stopped)
