"""reasontune's GRPO step: TRL's GRPOTrainer with a stop at the answer and two levers that keep what it
learns unchanged.

1. Completions end at the model's own EOS, at the budget, or `grpo.stop_grace_tokens` after the closing
   answer marker (generation.StopRule, the same rule eval, advise and ask use). Every token is sampled and
   scored as TRL scores it: nothing is appended. This used to stop at the marker and append EOS, so the
   token after the marker was never sampled: its policy gradient, A_i * (1 - p_i) per row, summed to
   about zero over each group (advantages are centred), nothing held p(EOS) there, and after 56 demo
   steps the tuned model wrote on past its answer in every client (issue 22). Now a completion that does
   not stop is scored with what it wrote after the marker (format_exact 0), and TRL counts it as clipped.
   Compute runs under the autocast dtype that measured fastest on this device (speed.py) and in
   inference mode.
2. On a CPU, per-token log-probs come from the completion positions' hidden states in chunks
   (logps.hidden_logps: no (B, C, V) logits kept for the backward pass), not TRL's fused LM head:
   its CPU fallback (TRL runs it in Triton on GPUs) took 12 of a 36 s step for 32 completions of
   SmolLM2. Same numbers up to float rounding, the model's logit post-processing included (Gemma's
   softcap, Granite's and Cohere's scales: logps.logit_post); a model whose logits that cannot reproduce
   (checked once on one row) goes to TRL's path, with the reason logged.
3. Rows whose advantage is exactly zero (every completion of the group scored the same) contribute
   exactly zero to the DAPO/CISPO loss when beta == 0 and no MoE router loss is on: their forward and
   backward are skipped. The
   loss normaliser of those losses is the token count of the whole generation batch, computed
   before we drop rows, so the gradient of the rows that remain is bit-for-bit the same sum.
"""

from __future__ import annotations

import logging

import torch
from trl import GRPOTrainer

from reasontune.engines.guards import find_guard, is_finite, loss_sample, reward_problems
from reasontune.engines.logps import frozen_head, head_mismatch, hidden_logps_at, logit_post, raw_hidden, token_logps
from reasontune.engines.shared_prompt import shared_prompt_hidden, why_not
from reasontune.models.speed import autocast, lora_inputs_uncast, release_step_memory

logger = logging.getLogger(__name__)

# Per-row tensors in TRL's prepared inputs, by which end their padding is on.
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_RIGHT_PADDED = ("completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps",
                 "tool_mask", "sampling_per_token_logps", "importance_sampling_ratio")
# Loss types whose normaliser does not depend on which rows are in the micro-batch.
SKIP_SAFE_LOSSES = ("dapo", "cispo")


class ReasonTuneGRPOTrainer(GRPOTrainer):
    def __init__(self, *args, stop_rule=None, skip_zero_variance: bool = True,
                 autocast_setting: str = "auto", curriculum: tuple | None = None, shared_prompt: bool = True,
                 old_logps_from_first_pass: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        # Unsloth's import replaces trl.GRPOTrainer with its own patched class (unsloth 2026.10.9,
        # models/rl.py: `trl.GRPOTrainer = created_module.UnslothGRPOTrainer`), which has its own
        # generation, log-probs and loss: our CPU levers below would bypass them, so they are off.
        self.under_unsloth = under_unsloth(type(self))
        self.stop_rule = stop_rule  # generation.StopRule or None (end at EOS or the budget only)
        self.autocast_setting = autocast_setting
        self.skip_zero_variance = skip_zero_variance and not self.under_unsloth and self._skip_is_exact()
        self.shared_prompt = shared_prompt and self._shared_prompt_runs()
        # a micro-batch's rows grouped by prompt (few distinct prompts to forward) where that changes no update
        self.group_micro_batches = self.shared_prompt and self._regroup_is_exact()
        self.old_logps_from_first_pass = old_logps_from_first_pass and self._first_pass_is_old_policy()
        self._captured: list | None = None  # the loss's log-probs, while a first pass records them
        if self.old_logps_from_first_pass:
            logger.info("num_iterations=%d: the old log-probs come from each generation's first pass (no extra "
                        "forward when it generates)", self.num_iterations)
        logger.info("GRPO in effect: loss_type=%s beta=%s use_vllm=%s vllm_importance_sampling_correction=%s%s",
                    self.loss_type, self.beta, self.use_vllm,
                    getattr(self.args, "vllm_importance_sampling_correction", None),
                    " (Unsloth's patched trainer: reasontune's generation, log-prob and row-skip levers off)"
                    if self.under_unsloth else "")
        # (column, LevelStats, is_right(text, row)) for curriculum.py's adaptive sampling, or None
        self.curriculum = curriculum
        if curriculum is not None and self.accelerator.num_processes > 1:
            # every rank must draw the same prompts, and each rank sees only its own groups' answers
            logger.warning("curriculum: adaptive is off with %d processes: uniform sampling",
                           self.accelerator.num_processes)
            self.curriculum = None

    def _get_train_sampler(self, dataset=None):
        if self.curriculum is None:
            return super()._get_train_sampler(dataset)
        from reasontune.engines.curriculum import CurriculumSampler

        column, stats, _ = self.curriculum
        ds = self.train_dataset if dataset is None else dataset
        return CurriculumSampler(ds[column], stats, mini_repeat_count=self.num_generations,
                                 batch_size=self.args.generation_batch_size // self.num_generations,
                                 repeat_count=self.num_iterations * self.args.steps_per_generation,
                                 seed=self.args.seed)

    def _skip_is_exact(self) -> bool:
        why = []
        if self.beta != 0.0:
            why.append(f"beta={self.beta} (the KL term is non-zero on every row)")
        if self.loss_type not in SKIP_SAFE_LOSSES:
            why.append(f"loss_type={self.loss_type} normalises per micro-batch")
        if self.accelerator.num_processes > 1:
            # Ranks would drop different rows: DDP needs a forward/backward on every rank and TRL
            # all-gathers per-row metrics inside the loss, which must have the same size everywhere.
            why.append(f"{self.accelerator.num_processes} processes (ranks must keep equal rows)")
        if getattr(self, "_entropy_bonus_enabled", False) or getattr(self, "top_entropy_quantile", 1.0) < 1.0:
            why.append("an entropy term depends on all rows")
        if getattr(self, "aux_loss_enabled", False):
            # MoE load balancing (TRL adds router_aux_loss_coef x aux_loss): computed over every token of
            # the micro-batch, so dropping rows changes it; TRL's switch is output_router_logits in the
            # config and a non-zero coefficient (Qwen3-MoE's default 0.001).
            why.append(f"the router's auxiliary loss (router_aux_loss_coef={getattr(self, 'router_aux_loss_coef', None)}) "
                       "depends on all rows")
        if why:
            logger.info("zero-advantage skipping off: %s", "; ".join(why))
        return not why

    def _shared_prompt_runs(self) -> bool:
        why = []
        if self.under_unsloth:
            why.append("Unsloth's trainer computes its own log-probs")
        if self.accelerator.num_processes > 1:
            why.append(f"{self.accelerator.num_processes} processes (DDP expects one forward per backward)")
        if self.accelerator.device.type != "cpu":
            why.append("not a CPU (TRL's fused LM head computes the log-probs)")
        reason = why_not(self.model)
        if reason:
            why.append(reason)
        if why:
            logger.info("shared prompt off: %s", "; ".join(why))
        return not why

    def _regroup_is_exact(self) -> bool:
        """Grouping the rows of a generation batch by prompt across its micro-batches changes no update when
        every micro-batch of a generation goes into the same optimizer step and the loss is a sum over rows
        with one normaliser for the whole generation batch (DAPO/CISPO, no entropy mask, no router loss)."""
        a = self.args
        return (a.steps_per_generation == a.gradient_accumulation_steps and self.loss_type in SKIP_SAFE_LOSSES
                and getattr(self, "top_entropy_quantile", 1.0) >= 1.0 and not getattr(self, "aux_loss_enabled", False))

    def _first_pass_is_old_policy(self) -> bool:
        """With num_iterations > 1 TRL runs a no-grad forward over every row when it generates, for the old
        log-probs (2.3 s of a 7 s demo step). When a generation's first pass over its micro-batches is exactly one
        optimizer step, the model in that pass is the one that sampled: the pass's own log-probs, detached, are the
        old ones (the ratio is exactly 1 there), and the later passes read them."""
        a = self.args
        return (self.num_iterations > 1 and not self.under_unsloth and not self.use_vllm
                and a.steps_per_generation == a.gradient_accumulation_steps)

    # ---- generation -------------------------------------------------------------------------
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        a = self.args
        plain = not (self.use_vllm or images or multimodal_fields or self.use_transformers_continuous_batching
                     or self.under_unsloth)
        if not plain or (a.top_k not in (None, 0)) or a.repetition_penalty != 1.0 or a.generation_kwargs:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        from trl.models.utils import unwrap_model_for_generation

        from reasontune.engines.generation import _decode_batch, _StopCheck, merged_lora

        tok = self._tokenizer
        with (
            unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                        gather_deepspeed3_params=a.ds3_gather_for_generation) as model,
            torch.inference_mode(),
            autocast(self.accelerator.device, self.autocast_setting),
            merged_lora(model),
        ):
            was_training = model.training
            model.eval()  # no dropout while sampling, as in HF generate
            try:
                # Finished rows leave the batch; rows end at EOS, the budget, or the stop rule's grace after the marker.
                outs = _decode_batch(model, [list(p) for p in prompt_ids], tok.pad_token_id,
                                     max_new_tokens=self.max_completion_length,
                                     sampling=(self.temperature, a.top_p, a.min_p),
                                     eos=set(self.eos_token_ids), stop=_StopCheck(tok, self.stop_rule),
                                     timings=getattr(self, "step_timings", None))  # steptime.StepTimes
            finally:
                model.train(was_training)
        if self.accelerator.device.type == "cpu":
            # glibc keeps the decode's freed memory (KV cache, merged weights: 0.4-0.6 GB for 64 rows); the
            # micro-batches would otherwise run on top of it (measured before the preallocated KV cache:
            # step peak 3.1 GB without this trim, 2.6 GB with it); not where the heap is kept for reuse
            release_step_memory()
        return [ids for ids, _ in outs], None  # exactly the sampled tokens

    # ---- log-probs --------------------------------------------------------------------------
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **extra):
        out = self._token_logps(model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy,
                                compute_aux_loss, **extra)
        if self._captured is not None and torch.is_grad_enabled():  # a first pass's loss: its old log-probs
            self._captured.append(out[0].detach())  # (b, C)
        return out

    def _token_logps(self, model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy,
                     compute_aux_loss, **extra):
        head = frozen_head(model, any_post=True)  # None: a trainable or unusual head: take the logits as they come
        post = logit_post(model)  # applied to the head's output, as the model's forward would (softcap, scale)
        plain = (self.accelerator.device.type == "cpu" and not compute_aux_loss and not self.under_unsloth
                 and all(v is None for v in extra.values())
                 and (head is not None or not self._entropy_needs_grad()))  # token_logps' entropy has no grad
        if plain and head is not None:
            if not hasattr(self, "_own_head_refused"):  # checked once: the model's logits on one row
                self._own_head_refused = head_mismatch(model, head, post, input_ids, attention_mask)
                if self._own_head_refused:
                    logger.warning("own CPU log-probs off, TRL's fused LM head computes them: %s",
                                   self._own_head_refused)
            plain = not self._own_head_refused
        if not plain:  # multimodal, MoE aux loss, a GPU (TRL's Triton kernel), or logits we cannot reproduce
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **extra)
        t, c = input_ids.size(1), logits_to_keep
        # Position i predicts token i + 1: positions T-C-1 .. T-2 predict the C completion tokens. An index
        # tensor (not an int) keeps the hidden-state slice contiguous for one plain lm_head matmul.
        keep = torch.arange(t - c - 1, t - 1, device=input_ids.device)
        bs = batch_size or input_ids.size(0)
        logps, ents = [], []
        for start in range(0, input_ids.size(0), bs):
            ids, mask = input_ids[start:start + bs], attention_mask[start:start + bs]
            if head is None:
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
                lp, ent = token_logps(logits / self.temperature, ids[:, -c:], compute_entropy)  # (b, C, V) kept
            else:
                lp, ent = self._hidden_logps(model, head, post, ids, mask, keep, compute_entropy)
            pad = mask[:, -c:] == 0  # TRL scores padding as 0 (label -100); the loss masks it either way
            logps.append(lp.masked_fill(pad, 0.0))
            ents.append(ent.masked_fill(pad, 0.0) if compute_entropy else None)
        return torch.cat(logps), (torch.cat(ents) if compute_entropy else None), None

    def _hidden_logps(self, model, head, post, ids, mask, keep, compute_entropy):
        """(log-probs, entropies or None), each (b, C), from the hidden states: the micro-batch's distinct
        prompts once (shared_prompt.py) when grpo.shared_prompt is on and some rows share theirs; the LM head only
        at the completion's unmasked positions (the rest are 0, as the caller masks them)."""
        c = keep.numel()
        shared = shared_prompt_hidden(model, ids, mask, c) if self.shared_prompt else None
        if shared is None:
            hidden = raw_hidden(model, input_ids=ids, attention_mask=mask, logits_to_keep=keep,
                                use_cache=False)  # (b, C, H), before the forward's softcap or scale
            return hidden_logps_at(hidden, head.weight, ids[:, -c:], mask[:, -c:] != 0, self.temperature,
                                   compute_entropy, post)
        hidden, cu = shared  # (b, C', H): the completion columns no row uses are left out, scored 0 below
        lp, ent = hidden_logps_at(hidden, head.weight, ids[:, -c:][:, :cu], mask[:, -c:][:, :cu] != 0,
                                  self.temperature, compute_entropy, post)
        pad = (0, c - cu)
        return torch.nn.functional.pad(lp, pad), (torch.nn.functional.pad(ent, pad) if ent is not None else None)

    def _entropy_needs_grad(self) -> bool:
        return bool(getattr(self, "_entropy_bonus_enabled", False))

    # ---- loss -------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keep = None  # (B,) the rows with a non-zero advantage, where zero-advantage rows are skipped; None: all
        if self.skip_zero_variance and self.model.training:
            adv = inputs["advantages"]  # (B,) or (B, T)
            keep = adv != 0 if adv.dim() == 1 else (adv != 0).any(dim=1)
        first_pass = (self.old_logps_from_first_pass and self.model.training
                      and inputs.get("old_per_token_logps") is None)
        self._captured = [] if first_pass else None
        try:
            out = self._loss_on_rows(model, inputs, keep, return_outputs, num_items_in_batch)
            if first_pass:
                # `inputs` is TRL's buffered micro-batch: the next passes over this generation read these
                inputs["old_per_token_logps"] = first_pass_logps(inputs, self._captured, keep)
        finally:
            self._captured = None
        return out

    def _loss_on_rows(self, model, inputs, keep, return_outputs, num_items_in_batch):
        if keep is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._metrics["train"]["skipped_rows_frac"].append(1.0 - keep.float().mean().item())
        timings = getattr(self, "step_timings", None)  # steptime.StepTimes: rows/skipped
        if timings is not None:
            timings["rows_skipped"] += int((~keep).sum())
        if keep.all():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not keep.any():
            # Every row would give exactly zero loss: a zero that still reaches every trainable
            # parameter, so the optimizer sees zero gradients exactly as plain TRL would.
            return sum((p * 0).sum() for p in model.parameters() if p.requires_grad)
        return super().compute_loss(model, _select_rows(inputs, keep), return_outputs, num_items_in_batch)

    def _generate_and_score_completions(self, inputs):
        # The old (and reference) log-probs TRL computes here for num_iterations > 1 must come from the same
        # numerics as the loss's: under the same autocast, or the ratio is not 1 on the first pass (bf16 loss
        # against fp32 old log-probs: the clip then fires on noise). tests/test_trainer_eos.py checks it.
        if self.under_unsloth:
            return super()._generate_and_score_completions(inputs)
        iterations = self.num_iterations
        if self.old_logps_from_first_pass:
            # TRL skips its old log-probs forward when one generation feeds one optimizer step (its test reads
            # num_iterations); the first pass records them instead (compute_loss)
            self.num_iterations = 1
        try:
            with autocast(self.accelerator.device, self.autocast_setting):
                return super()._generate_and_score_completions(inputs)
        finally:
            self.num_iterations = iterations

    def _compute_loss(self, model, inputs):
        if self.under_unsloth:
            return super()._compute_loss(model, inputs)
        with autocast(self.accelerator.device, self.autocast_setting), lora_inputs_uncast(model):
            return super()._compute_loss(model, inputs)

    # ---- numerical guards (guards.py): report non-finite losses and rewards with the sample ----
    def _prepare_inputs(self, generation_batch):
        before = getattr(self, "_buffered_inputs", None)
        inputs = super()._prepare_inputs(generation_batch)
        if self.group_micro_batches and self.model.training and self._buffered_inputs is not before:
            # TRL just generated, shuffled the rows and split them into micro-batches: regroup them by prompt
            # (each micro-batch a few groups), in a random order of prompts
            self._buffered_inputs = group_by_prompt(self._buffered_inputs)
            inputs = self._buffered_inputs[self._step % self.args.steps_per_generation]
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
        if self.curriculum is not None and self.model.training:
            from reasontune.engines.curriculum import observe_groups

            column, stats, is_right = self.curriculum
            observe_groups(stats, inputs, completions, self.num_generations, column, is_right)
            for level, w in stats.weights().items():
                self._metrics["train"][f"curriculum/weight_{level}"].append(w)
        guard = find_guard(self.callback_handler.callbacks)
        if guard is not None and self.model.training:
            offset = self.accelerator.process_index * len(prompts)
            rows = reward_problems(rewards, completions, offset)
            for r in rows[:3]:  # a few samples are enough to see what went wrong
                guard.flag("reward", row=r, of_rows=len(rows), rewards=rewards[r + offset].tolist(),
                           completion=str(completions[r])[:500])
        return rewards


def under_unsloth(cls: type) -> bool:
    """True when `cls` derives from Unsloth's patched TRL trainer (UnslothGRPOTrainer)."""
    return any(c.__name__.startswith("Unsloth") or c.__module__.startswith(("unsloth", "unsloth_compiled_cache"))
               for c in cls.__mro__)


def group_by_prompt(batches: list[dict]) -> list[dict]:
    """The rows of TRL's micro-batches, reordered so that rows with the same prompt are adjacent (the prompts
    in a random order), split again into as many micro-batches of the same sizes."""
    from trl.trainer.utils import split_tensor_dict

    if any(not isinstance(v, (torch.Tensor, list)) and v is not None for b in batches for v in b.values()):
        return batches  # something we do not know how to concatenate: TRL's order stays

    def joined(key):
        vals = [b[key] for b in batches]
        if vals[0] is None or (isinstance(vals[0], torch.Tensor) and vals[0].dim() == 0):
            return vals[0]
        return torch.cat(vals) if isinstance(vals[0], torch.Tensor) else [x for v in vals for x in v]

    whole = {k: joined(k) for k in batches[0]}
    _, prompt = torch.unique(torch.cat([whole["prompt_ids"], whole["prompt_mask"]], dim=1), dim=0,
                             return_inverse=True)  # (N,) each row's prompt
    rank = torch.randperm(int(prompt.max()) + 1)[prompt.cpu()]  # a random order of the prompts
    order = torch.sort(rank, stable=True).indices
    ordered = {k: (v if v is None or (isinstance(v, torch.Tensor) and v.dim() == 0)
                   else v[order.to(v.device)] if isinstance(v, torch.Tensor) else [v[i] for i in order.tolist()])
               for k, v in whole.items()}
    return split_tensor_dict(ordered, len(batches))


def first_pass_logps(inputs: dict, captured: list, kept: torch.Tensor | None) -> torch.Tensor:
    """The micro-batch's old log-probs (B, C) from its first pass: the loss's log-probs of the rows it kept
    (`kept`, None for all), each row's completion columns from the left; rows it skipped (zero advantage, skipped
    again on every pass) and padding are 0, as TRL scores padding."""
    mask = inputs["completion_mask"]  # (B, C)
    if kept is not None and not kept.any():  # no forward ran: no row of it is ever trained on
        return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    if len(captured) != 1:
        raise RuntimeError(f"the first pass's loss computed log-probs {len(captured)} times, expected once: "
                           "set grpo.old_logps_from_first_pass=false and report this")
    lp = captured[0]  # (b, C') with C' <= C: _select_rows drops padding columns no kept row uses
    full = torch.zeros(mask.shape, dtype=lp.dtype, device=mask.device)
    full[slice(None) if kept is None else kept, :lp.size(1)] = lp
    return full


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
