"""reasontune's GRPO step: TRL's GRPOTrainer with two levers that keep what it learns unchanged.

1. Generation stops at the closing answer marker (stop strings): tokens after the answer cannot
   change any reward, so generating them is waste. Compute runs under the autocast dtype that
   measured fastest on this device (speed.py) and in inference mode.
2. Rows whose advantage is exactly zero (every completion of the group scored the same) contribute
   exactly zero to the DAPO/CISPO loss when beta == 0: their forward and backward are skipped. The
   loss normaliser of those losses is the token count of the whole generation batch, computed
   before we drop rows, so the gradient of the rows that remain is bit-for-bit the same sum.
"""

from __future__ import annotations

import logging

import torch
from trl import GRPOTrainer

from .guards import find_guard, is_finite, loss_sample, reward_problems
from .speed import autocast

logger = logging.getLogger(__name__)

# Per-row tensors in TRL's prepared inputs, by which end their padding is on.
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_RIGHT_PADDED = ("completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps",
                 "tool_mask", "sampling_per_token_logps", "importance_sampling_ratio")
# Loss types whose normaliser does not depend on which rows are in the micro-batch.
SKIP_SAFE_LOSSES = ("dapo", "cispo")


class ReasonTuneGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, stop_strings: list[str] | None = None, skip_zero_variance: bool = True,
                 autocast_setting: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_strings = list(stop_strings or [])
        self.autocast_setting = autocast_setting
        self.skip_zero_variance = skip_zero_variance and self._skip_is_exact()

    def _skip_is_exact(self) -> bool:
        why = []
        if self.beta != 0.0:
            why.append(f"beta={self.beta} (the KL term is non-zero on every row)")
        if self.loss_type not in SKIP_SAFE_LOSSES:
            why.append(f"loss_type={self.loss_type} normalises per micro-batch")
        if getattr(self, "_entropy_bonus_enabled", False) or getattr(self, "top_entropy_quantile", 1.0) < 1.0:
            why.append("an entropy term depends on all rows")
        if why:
            logger.info("zero-advantage skipping off: %s", "; ".join(why))
        return not why

    # ---- generation -------------------------------------------------------------------------
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self.use_vllm or images or multimodal_fields or self.use_transformers_continuous_batching:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        from trl.models.utils import unwrap_model_for_generation

        device = self.accelerator.device
        input_ids, attention_mask = pad_left(prompt_ids, self._tokenizer.pad_token_id, device)  # (B*G, P)
        with (
            unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                        gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                                        generation_kwargs=self.generation_kwargs) as model,
            torch.inference_mode(),
            autocast(device, self.autocast_setting),
        ):
            extra = {"stop_strings": self.stop_strings, "tokenizer": self._tokenizer} if self.stop_strings else {}
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                 generation_config=self.generation_config, **extra)
        completions = out[:, input_ids.size(1):].cpu()  # (B*G, C)
        return [self._cut(row.tolist()) for row in completions], None

    def _cut(self, ids: list[int]) -> list[int]:
        """Completion ids up to the first EOS (kept) or the end of a stop string (nothing after it).

        After a stop string, HF pads with pad_token_id, which is often the EOS id too; a padded EOS
        must not become a trained token, so we look at the text to tell the two apart.
        """
        eos = set(self.eos_token_ids) | {self._tokenizer.pad_token_id}
        end = next((i for i, t in enumerate(ids) if t in eos), len(ids))
        if end < len(ids) and self.stop_strings:
            text = self._tokenizer.decode(ids[:end], skip_special_tokens=False)
            if any(text.rstrip().endswith(s) for s in self.stop_strings):
                return ids[:end]
        return ids[: end + 1] if end < len(ids) else ids

    # ---- loss -------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (self.skip_zero_variance and self.model.training):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        adv = inputs["advantages"]  # (B,) or (B, T)
        keep = adv != 0 if adv.dim() == 1 else (adv != 0).any(dim=1)  # (B,)
        self._metrics["train"]["skipped_rows_frac"].append(1.0 - keep.float().mean().item())
        if keep.all():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not keep.any():
            # Every row would give exactly zero loss: a zero that still reaches every trainable
            # parameter, so the optimizer sees zero gradients exactly as plain TRL would.
            return sum((p * 0).sum() for p in model.parameters() if p.requires_grad)
        return super().compute_loss(model, _select_rows(inputs, keep), return_outputs, num_items_in_batch)

    def _compute_loss(self, model, inputs):
        with autocast(self.accelerator.device, self.autocast_setting):
            return super()._compute_loss(model, inputs)

    # ---- numerical guards (guards.py): report non-finite losses and rewards with the sample ----
    def _prepare_inputs(self, generation_batch):
        inputs = super()._prepare_inputs(generation_batch)
        self._last_inputs = inputs
        return inputs

    def training_step(self, model, inputs, num_items_in_batch):
        loss = super().training_step(model, inputs, num_items_in_batch)
        guard = find_guard(self.callback_handler.callbacks)
        if guard is not None and not is_finite(loss):
            decode = lambda ids: self.processing_class.decode(ids, skip_special_tokens=False)  # noqa: E731
            guard.flag("loss", loss=float(loss), **loss_sample(getattr(self, "_last_inputs", {}), decode))
        return loss

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N_all, F)
        guard = find_guard(self.callback_handler.callbacks)
        if guard is not None and self.model.training:
            offset = self.accelerator.process_index * len(prompts)
            rows = reward_problems(rewards, completions, offset)
            for r in rows[:3]:  # a few samples are enough to see what went wrong
                guard.flag("reward", row=r, of_rows=len(rows), rewards=rewards[r + offset].tolist(),
                           completion=str(completions[r])[:500])
        return rewards


def pad_left(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into (ids, mask), both (N, max_len)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def _select_rows(inputs: dict, keep: torch.Tensor) -> dict:
    """Keep rows `keep` of every per-row tensor, then drop padding columns no kept row uses."""
    b = keep.size(0)
    out = {k: (v[keep] if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.size(0) == b else v)
           for k, v in inputs.items()}
    if "prompt_mask" in out:
        first = int(out["prompt_mask"].any(dim=0).int().argmax())  # first column any row uses
        for k in _LEFT_PADDED:
            out[k] = out[k][:, first:]
    if "completion_mask" in out:
        used = out["completion_mask"].any(dim=0).nonzero()
        last = int(used.max()) + 1 if used.numel() else 1
        width = out["completion_mask"].size(1)
        for k in _RIGHT_PADDED:
            v = out.get(k)
            if isinstance(v, torch.Tensor) and v.dim() == 2 and v.size(1) == width:
                out[k] = v[:, :last]
    return out
