"""DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476, section 3.2) for reasontune's GRPO step.

A group whose completions all score the same has zero advantage everywhere: it teaches nothing, and
trainer.py skips its rows. Late in the demo 38-88% of the groups are such, and the update sees 1-4 groups of 8.
With `grpo.dynamic_sampling`, after TRL generates and scores a batch of G groups:

1. the groups whose rewards are not all equal are kept;
2. while fewer than G are kept, another round generates and scores G more groups, from training prompts not yet
   in this step, at most `grpo.dynamic_sampling_max_rounds` rounds, and never a round that is predicted to end
   past the time budget's deadline (below);
3. the batch is G groups again: the kept ones in the order they came, the first rounds' first; where fewer than G
   were found, the first batch's all-equal groups fill it (the bound was hit: trained on what there is, and those
   rows are skipped exactly as without the option). No group is taken twice.

Each round is TRL's own `_generate_and_score_completions`, so a group's advantages are its own rewards' mean and
std exactly as without the option (this refuses the TRL settings that normalise over the whole batch). DAPO's loss
normaliser, the token count of the batch trained on, is recomputed for the batch returned.

Refill prompts come from a stream of their own over the training set (TRL's RepeatSampler, or the curriculum's
sampler, seeded with the run's seed + 1), not from the Trainer's epoch iterator: the Trainer counts an epoch's
optimizer steps from its dataloader's length, so prompts taken from it would end epochs early and a run short of
max_steps. Prompts already in the step (its batch or an earlier round) are passed over.

The time budget (runs.callbacks.TimeBudget) predicts the next step from the last cycle's; a step that refills can
be longer than any before it. So a refill round starts only when it is predicted (from the longest round of this
step) to end before the earliest `deadline` a trainer callback holds: the step then ends past the deadline by at
most its training part, less than a step.

Logged per step: dynamic/refill_rounds, dynamic/groups_generated, dynamic/groups_kept (groups with signal in the
batch trained on), and time/refill (steptime.py: the seconds of the refill rounds, inside time/generation,
time/rewards and time/scoring_other).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator

import torch

from reasontune.config import ConfigError
from reasontune.engines.trainer import _LEFT_PADDED, _RIGHT_PADDED, _select_rows

logger = logging.getLogger(__name__)

# What a right-padded tensor is padded with, where not 0 (TRL pads these the same way).
_RIGHT_PAD_VALUE = {"tool_mask": 1}


class DynamicSampling:
    """Attach with `DynamicSampling(max_rounds).attach(trainer)`, before steptime.StepTimes (whose scoring time
    then counts every round)."""

    def __init__(self, max_rounds: int):
        self.max_rounds = max_rounds
        self.trainer = None
        self._rewards = None  # (N, F) rewards of the last scored round, from the trainer's _calculate_rewards
        self._stream: Iterator[int] | None = None
        self.last: dict | None = None  # the last step's figures

    def attach(self, trainer) -> DynamicSampling:
        check_trainer(trainer)
        self.trainer = trainer
        score, rewards = trainer._generate_and_score_completions, trainer._calculate_rewards

        @functools.wraps(rewards)
        def recorded(*args, **kwargs):
            self._rewards = rewards(*args, **kwargs)
            return self._rewards

        @functools.wraps(score)
        def refilled(inputs):
            return self.fill(inputs, score) if trainer.model.training else score(inputs)

        trainer._calculate_rewards, trainer._generate_and_score_completions = recorded, refilled
        return self

    def fill(self, inputs: list[dict], score) -> dict:
        """TRL's scored batch for `inputs` (rows in groups of num_generations), refilled with groups with signal."""
        t, n = self.trainer, self.trainer.num_generations
        t0 = time.perf_counter()
        rounds = [(score(inputs), self._signal(n))]  # (scored batch, (G,) bool: the group's rewards differ)
        groups = rounds[0][1].numel()
        first_end = time.perf_counter()
        longest = first_end - t0  # the longest round of this step predicts the next
        used = {_prompt_key(row["prompt"]) for row in inputs}
        found, deadline = int(rounds[0][1].sum()), earliest_deadline(t.callback_handler.callbacks)
        while found < groups and len(rounds) <= self.max_rounds:
            if deadline is not None and time.perf_counter() + longest >= deadline:
                break  # another round would end past the time budget
            rows = self._draw(groups, n, used)
            if not rows:
                break  # no training prompt left that this step has not seen
            t1 = time.perf_counter()
            rounds.append((score(rows), self._signal(n)))
            longest = max(longest, time.perf_counter() - t1)
            found += int(rounds[-1][1].sum())
        refill_s = time.perf_counter() - first_end if len(rounds) > 1 else 0.0
        batch, kept = assemble(rounds, groups, n, t._tokenizer.pad_token_id)
        self._log(len(rounds) - 1, sum(int(s.numel()) for _, s in rounds), kept, refill_s)
        return batch

    def _signal(self, n: int) -> torch.Tensor:
        """(G,) bool of the round just scored: True where the group's weighted rewards are not all equal."""
        t = self.trainer
        per_func = self._rewards  # (N, F): NaN where a reward function returned None
        if per_func is None:
            raise RuntimeError("dynamic sampling: the trainer scored a batch without calling _calculate_rewards")
        self._rewards = None
        return group_signal(per_func, t.reward_weights.to(per_func.device), n)

    def _draw(self, groups: int, n: int, used: set) -> list[dict]:
        """Rows for `groups` more groups (each prompt's row n times, as TRL's sampler lays them out), from
        training prompts not in `used`; fewer when the set runs out of them."""
        ds = self.trainer.train_dataset
        if self._stream is None:
            self._stream = prompt_stream(self.trainer)
        rows: list[dict] = []
        for _ in range(len(ds) + groups):  # a bound: a small set may have fewer new prompts than asked for
            if len(rows) == groups * n:
                break
            row = ds[int(next(self._stream))]
            key = _prompt_key(row["prompt"])
            if key in used:
                continue
            used.add(key)
            rows.extend(dict(row) for _ in range(n))  # copies: TRL may add fields to a row
        return rows

    def _log(self, refills: int, generated: int, kept: int, refill_s: float) -> None:
        t = self.trainer
        self.last = {"dynamic/refill_rounds": refills, "dynamic/groups_generated": generated,
                     "dynamic/groups_kept": kept}
        for key, value in self.last.items():
            t._metrics["train"][key].append(float(value))
        timings = getattr(t, "step_timings", None)  # steptime.StepTimes: time/refill
        if timings is not None:
            timings["refill"] += refill_s


def check_trainer(trainer) -> None:
    """Refuse what the config could not see: where dynamic sampling cannot run as written."""
    why = []
    if getattr(trainer, "under_unsloth", False):
        why.append("Unsloth's patched trainer generates and scores its own way: set model.backend: transformers")
    if getattr(trainer, "use_vllm", False):
        why.append("TRL's vLLM generation is on (model.fast_inference or grpo.use_vllm): turn it off")
    if trainer.accelerator.num_processes > 1:
        why.append(f"{trainer.accelerator.num_processes} processes would each refill differently: launch one")
    if getattr(trainer, "rollout_func", None) is not None or getattr(trainer, "tools", None) or \
            getattr(trainer, "environment_factories", None):
        why.append("a rollout function, tools or environments generate the completions: drop them")
    if getattr(trainer, "scale_rewards", "group") == "batch" or \
            getattr(trainer, "multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize":
        why.append("advantages are normalised over the whole batch: use scale_rewards 'group' or 'none' and "
                   "multi_objective_aggregation 'sum_then_normalize'")
    ds = trainer.train_dataset
    if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
        why.append("the training set is not indexable (an iterable dataset): refill prompts are drawn by index")
    if why:
        raise ConfigError("grpo.dynamic_sampling=true cannot run here: " + "; ".join(why)
                          + " (or set grpo.dynamic_sampling: false)")


def group_signal(per_func: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """(G,) bool: the group's rewards (TRL's weighted sum over the functions, (N, F) -> (N,), a row every function
    left unscored excluded) take more than one value."""
    rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1)  # (N,)
    scored = ~torch.isnan(per_func).all(dim=1)
    rewards = rewards.view(-1, n)  # (G, n)
    scored = scored.view(-1, n)
    hi = torch.where(scored, rewards, torch.full_like(rewards, -torch.inf)).amax(dim=1)
    lo = torch.where(scored, rewards, torch.full_like(rewards, torch.inf)).amin(dim=1)
    return scored.sum(dim=1).ge(2) & (hi > lo)


def assemble(rounds: list[tuple[dict, torch.Tensor]], groups: int, n: int, pad_id: int) -> tuple[dict, int]:
    """(the batch of `groups` groups to train on, how many of them carry signal): the groups with signal in round
    order, then the first round's other groups where too few were found. The first round's batch as it is when
    no group of a later round is taken."""
    picks = [(r, g) for r, (_, signal) in enumerate(rounds) for g in signal.nonzero().flatten().tolist()][:groups]
    kept = len(picks)
    first_zero = (~rounds[0][1]).nonzero().flatten().tolist()
    picks += [(0, g) for g in first_zero[:groups - kept]]
    if all(r == 0 for r, _ in picks):
        return rounds[0][0], kept
    parts = []
    for r, (batch, signal) in enumerate(rounds):
        mine = [g for rr, g in picks if rr == r]
        if mine:
            rows = torch.zeros(signal.numel(), n, dtype=torch.bool)  # (G, n)
            rows[mine] = True
            parts.append(_select_rows(batch, rows.flatten().to(batch["advantages"].device)))
    return join_batches(parts, pad_id), kept


def join_batches(parts: list[dict], pad_id: int) -> dict:
    """TRL's scored batches (per-row tensors, prompts left-padded, completions right-padded) as one, each tensor
    padded to the widest; `num_items_in_batch` (DAPO's normaliser) recounted over the joined rows."""
    out = {}
    for key, first in parts[0].items():
        vals = [p[key] for p in parts]
        if key == "num_items_in_batch":
            continue
        if key == "advantages" and first.dim() == 1:  # (B,)
            out[key] = torch.cat(vals)
        elif key in _LEFT_PADDED:
            out[key] = _pad_cat(vals, pad_id if key == "prompt_ids" else 0, left=True)
        elif key in _RIGHT_PADDED or key == "advantages":  # (B, C)
            out[key] = _pad_cat(vals, pad_id if key == "completion_ids" else _RIGHT_PAD_VALUE.get(key, 0), left=False)
        else:
            raise RuntimeError(f"dynamic sampling cannot join scored batches that carry {key!r} (multimodal inputs?)")
    loss_mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
    out["num_items_in_batch"] = loss_mask.sum()  # TRL's count for one process
    return out


def _pad_cat(vals: list[torch.Tensor], value, left: bool) -> torch.Tensor:
    width = max(v.size(1) for v in vals)
    pads = [(width - v.size(1), 0) if left else (0, width - v.size(1)) for v in vals]
    return torch.cat([torch.nn.functional.pad(v, p, value=value) for v, p in zip(vals, pads)])


def prompt_stream(trainer) -> Iterator[int]:
    """Training-set indices, endlessly: the curriculum's sampler when one is on (its weights then), else TRL's
    RepeatSampler, one index at a time, seeded apart from the Trainer's own order."""
    ds, seed = trainer.train_dataset, trainer.args.seed + 1
    if getattr(trainer, "curriculum", None) is not None:
        from reasontune.engines.curriculum import CurriculumSampler

        column, stats, _ = trainer.curriculum
        sampler = CurriculumSampler(ds[column], stats, mini_repeat_count=1, batch_size=1, seed=seed)
    else:
        from trl.trainer.utils import RepeatSampler

        sampler = RepeatSampler(ds, mini_repeat_count=1, batch_size=1, shuffle=True, seed=seed)
    while True:
        yield from sampler


def earliest_deadline(callbacks) -> float | None:
    """The earliest `deadline` (a time.perf_counter() value) a trainer callback holds: runs.callbacks.TimeBudget's,
    read by name because engines sit below runs. None: no budget."""
    found = [d for cb in callbacks if isinstance(d := getattr(cb, "deadline", None), (int, float))]
    return min(found) if found else None


def _prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else repr(prompt)
