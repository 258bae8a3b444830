"""Supervised formatting warm-up (and `reasontune sft`): TRL's SFTTrainer on worked solutions.

Targets are the data's worked solutions written in the reasoning format (prompting.render_target),
so after the warm-up the model knows the format before GRPO starts. Loss on the completion only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .config import ConfigError, RunConfig

logger = logging.getLogger(__name__)


def sft_rows(ds, tokenizer, cfg: RunConfig, n: int | None):
    """prompt/completion text pairs from rows that have a worked solution."""
    from .prompting import render_prompt, render_target

    if "worked" not in ds.column_names:
        raise ConfigError(f"SFT needs worked solutions, but dataset {cfg.data.dataset!r} has no 'worked' column "
                          f"(columns: {ds.column_names}); use a source with solutions or --warmup none")
    ds = ds.filter(lambda r: bool(r["worked"]))
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    eos = tokenizer.eos_token or ""
    return ds.map(lambda r: {"prompt": render_prompt(tokenizer, r["prompt"], cfg.format),
                             "completion": render_target(r["worked"], r["answer"], cfg.format, eos)},
                  remove_columns=ds.column_names)


def warmup_sft(cfg: RunConfig, model, tokenizer, train_ds, run=None, out_dir: str | None = None) -> dict:
    """Train the (LoRA) model in place on cfg.warmup.examples worked solutions."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from .train import MetricsCallback

    w = cfg.warmup
    data = sft_rows(train_ds, tokenizer, cfg, w.examples)
    out = Path(out_dir or cfg.output_dir) / "warmup"
    args = SFTConfig(
        output_dir=str(out), num_train_epochs=w.epochs, learning_rate=w.learning_rate,
        per_device_train_batch_size=w.batch_size, lr_scheduler_type="constant", logging_steps=1,
        save_strategy="no", report_to="none", seed=cfg.seed, use_cpu=not torch.cuda.is_available(),
        completion_only_loss=True, max_length=cfg.model.max_seq_length, bf16=False, disable_tqdm=False,
        dataloader_num_workers=0,
    )
    callbacks = [MetricsCallback(run, stage="warmup")] if run is not None else []
    t0 = time.perf_counter()
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=callbacks)
    result = trainer.train()
    secs = time.perf_counter() - t0
    logger.info("warm-up: %d examples, %.1f epochs, loss %.3f, %.0f s", len(data), w.epochs,
                result.training_loss, secs)
    return {"examples": len(data), "loss": result.training_loss, "seconds": secs}
