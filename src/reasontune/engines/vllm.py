"""vLLM as an eval/advise/ask engine: the model folder in vLLM's offline `LLM`, a reasontune adapter
through vLLM's LoRA support (`enable_lora`, one `LoRARequest`), so the base model and the tuned model
are one engine (ask compares both) and no merged copy is written.

Same prompts as our decode: rendered by our tokenizer and handed over as token ids (a string would be
re-tokenized by vLLM with add_special_tokens, adding a BOS our decode never sees). Same sampling
(temperature, top_p, min_p, n) and the same EOS ids. The same budget: vLLM ends a sequence at max_model_len
(model.max_seq_length) tokens, prompt included, so each prompt's max_tokens is generation.completion_budgets',
the rule our decode applies when given the same `max_length`. vLLM generates with no stop strings, up to EOS
or the budget, and generation.apply_stop_rule applies the stop rule to the full ids.

vLLM's `LLM` starts worker processes with spawn: a script that uses this engine needs an
`if __name__ == "__main__":` guard (the `reasontune` command has one). On a CPU, `VLLM_CPU_KVCACHE_SPACE`
(GiB) sizes the KV cache; reasontune sets 1 GiB when it is unset (vLLM's default takes 4 GiB).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks (0.32.0)
CPU_KVCACHE_GIB = "1"


def _eos_ids(path: str, tokenizer) -> set[int]:
    """The ids our decode ends at: generation_config.json's eos_token_id(s) and the tokenizer's EOS."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    gc = Path(path) / "generation_config.json"
    if gc.is_file():
        eos = json.loads(gc.read_text()).get("eos_token_id")
        ids |= {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
    return ids


def lora_rank_bound(adapter: str) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds the adapter's rank."""
    r = int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 16))
    return next(x for x in LORA_RANKS if x >= r)


def _dtype_name(cfg) -> str:
    """The dtype our decode loads the base in (models.torch_dtype), so both engines run the same weights."""
    from reasontune.models import torch_dtype

    return str(torch_dtype(cfg.model)).replace("torch.", "")


class VLLMEngine:
    name = "vllm"

    def __init__(self, cfg, adapter: str | None = None, max_model_len: int | None = None):
        import torch

        from reasontune.models import load_tokenizer, resolve_model_path

        self.path = resolve_model_path(cfg.model)
        self.tokenizer = load_tokenizer(self.path, cfg.model, cfg.format)
        self.eos = _eos_ids(self.path, self.tokenizer)
        self.seed, self.adapter = cfg.seed, adapter
        cuda = torch.cuda.is_available()
        if not cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
        from vllm import LLM

        self.max_model_len = max_model_len or cfg.model.max_seq_length
        kw = dict(model=self.path, tokenizer=self.path, dtype=_dtype_name(cfg), seed=cfg.seed,
                  max_model_len=self.max_model_len,
                  enforce_eager=not cuda)  # CUDA graphs / torch.compile warm-up costs more than a CPU eval gains
        if cuda:
            kw["gpu_memory_utilization"] = cfg.model.gpu_memory_utilization
        if adapter:
            kw.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_bound(adapter))
        logger.info("vllm: LLM(%s)", ", ".join(f"{k}={v}" for k, v in kw.items()))
        self.llm = LLM(**kw)

    def _lora(self, use_adapter: bool):
        if not (use_adapter and self.adapter):
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("adapter", 1, str(Path(self.adapter).resolve()))

    def generate(self, prompts, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                 min_p: float | None = None, num_return_sequences: int = 1, stop=None,
                 progress: bool = False, desc: str = "generate", use_adapter: bool = True,
                 max_length: int | None = None, **_decode_only) -> list[list]:
        """generation.generate's contract: result[i][j] is prompt i, sample j; prompt + completion within
        max_length and the engine's max_model_len. batch_size and autocast_setting (our decode's) are accepted
        and unused: vLLM schedules its own batches."""
        from vllm import SamplingParams

        from reasontune.engines.generation import apply_stop_rule, as_stop_rule, completion_budgets, to_generation
        from reasontune.models.prompting import render_chat

        if max_new_tokens <= 0 or num_return_sequences <= 0:
            raise ValueError("max_new_tokens and num_return_sequences must be positive")
        enc = [self.tokenizer(render_chat(self.tokenizer, p), add_special_tokens=False)["input_ids"]
               for p in prompts]
        budget = completion_budgets([len(e) for e in enc], max_new_tokens,
                                    min(max_length or self.max_model_len, self.max_model_len))
        greedy = temperature <= 0
        n = 1 if greedy else num_return_sequences
        # One seed per prompt (the run's seed + index): reproducible, and prompts do not share a random stream.
        params = [SamplingParams(n=n, temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                                 min_p=0.0 if greedy or min_p is None else min_p, max_tokens=budget[i],
                                 seed=None if greedy else self.seed + i, stop_token_ids=sorted(self.eos),
                                 detokenize=False)
                  for i in range(len(enc)) if budget[i]]
        outs = iter(self.llm.generate([{"prompt_token_ids": ids} for ids, b in zip(enc, budget) if b],
                                      sampling_params=params, use_tqdm=progress, lora_request=self._lora(use_adapter))
                    if params else [])
        result = []
        for b in budget:
            # generated without stop strings (to EOS or the budget): the stop rule applied to the ids after the fact
            # gives what our decode gives for the same samples (generation.apply_stop_rule)
            gens = ([apply_stop_rule(self.tokenizer, list(o.token_ids), set(self.eos), as_stop_rule(stop), b)
                     for o in next(outs).outputs] if b
                    else [to_generation(self.tokenizer, [], "limit") for _ in range(n)])  # the prompt fills the cap
            result.append(gens * num_return_sequences if greedy else gens)
        if greedy:  # copies, as our decode returns them
            from reasontune.engines.generation import _copy

            result = [[_copy(g) for g in r] for r in result]
        return result

    def close(self) -> None:
        """Free the engine (its worker processes and KV cache) before the process goes on."""
        import gc

        llm, self.llm = self.llm, None
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm, engine, core
        gc.collect()


@contextlib.contextmanager
def loadable_cpu_weights():
    """vLLM engines built inside keep their linear weights as plain tensors, so TRL's colocate weight sync
    can write into them.

    On a CPU, vLLM 0.32's UnquantizedLinearMethod.process_weights_after_loading (layers/linear.py:216) hands
    each 2-D weight to layers/utils.py:dispatch_cpu_unquantized_gemm(remove_weight=True), which packs it for
    oneDNN (or sgl-kernel on AMX) and replaces `layer.weight` by an empty Parameter with no weight_loader.
    TRL 1.15's sync (generation/vllm_generation.py:511, `model.load_weights`) then fails at linear.py:1341
    (AttributeError: 'Parameter' object has no attribute 'weight_loader'), and even a loader would miss the
    packed copy. Inside this context 2-D weights take vLLM's own unpacked branch (`layer.cpu_linear =
    torch.nn.functional.linear`, the weight kept, as for MLA's kv_b_proj): slower matmuls, weights that
    follow the policy. The dispatcher is imported at call time, so the module attribute is what to swap.
    Only for an engine built in this process (TRL's colocate mode: external_launcher)."""
    import torch
    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm

    def keep_weight(layer, remove_weight):
        if layer.weight.is_meta or layer.weight.ndim != 2:
            return original(layer, remove_weight)
        layer.cpu_linear = torch.nn.functional.linear
        return None

    utils.dispatch_cpu_unquantized_gemm = keep_weight
    try:
        yield
    finally:
        utils.dispatch_cpu_unquantized_gemm = original
