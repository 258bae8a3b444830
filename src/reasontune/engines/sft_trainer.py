"""TRL's SFTTrainer with a leaner CPU loss.

TRL 1.16 scores SFT tokens with its fused LM head. Without Triton (a CPU) that kernel scores every
position, prompt included, in one tile: for the demo's warm-up batch (8 x ~170 tokens) the fp32
(B*T, 49152) tile and its temporaries were most of the 3.5 GB peak. Here only the completion
positions are scored, in chunks (logps.hidden_logps_stats), with the same loss, entropy and token
accuracy. Everything else (GPU, label smoothing, custom loss functions, MoE aux loss) is TRL's.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from reasontune.engines.logps import frozen_head, head_as_identity, hidden_logps_stats
from reasontune.models.speed import lora_inputs_uncast


class LeanSFTTrainer(SFTTrainer):
    def _lean(self, model, inputs, return_outputs) -> torch.nn.Linear | None:
        plain = (self.accelerator.device.type == "cpu" and not return_outputs and not self.aux_loss_enabled
                 and self.compute_loss_func is None and self.label_smoother is None
                 and self.args.loss_type == "nll" and "attention_mask" in inputs)
        return frozen_head(model) if plain else None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        head = self._lean(model, inputs, return_outputs)
        if head is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"][:, 1:]  # (B, T-1): position t predicts token t + 1
        mask = labels != -100
        # accelerate runs model.forward under autocast when mixed precision is on (our CPU bf16 choice)
        with head_as_identity(model), lora_inputs_uncast(model, self.accelerator.mixed_precision in ("bf16", "fp16")):
            hidden = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits  # (B, T, H)
        lp, ent, top1 = hidden_logps_stats(hidden[:, :-1][mask][None], head.weight, labels[mask][None])  # (1, N)
        n = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -lp.sum() / torch.as_tensor(n).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages the gradients across ranks
        self._log_metrics(inputs, mask, ent, top1)
        return loss

    def _log_metrics(self, inputs, mask, ent, top1) -> None:
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        n = gather(mask.sum()).sum()
        for name, v in (("entropy", ent), ("mean_token_accuracy", top1)):
            self._metrics[mode][name].append((gather(v.detach().sum()).sum() / n).item() if n > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
