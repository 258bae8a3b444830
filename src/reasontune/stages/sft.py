"""Supervised formatting warm-up (and `reasontune sft`): TRL's SFTTrainer on worked solutions.

Targets are the data's worked solutions written in the reasoning format (prompting.render_target),
so after the warm-up the model knows the format before GRPO starts. Loss on the completion only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from reasontune.config import ConfigError, RunConfig
from reasontune.data.worked import count_worked, sft_rows, warmup_examples  # noqa: F401  (their home is data/)

logger = logging.getLogger(__name__)


def warmup_sft(cfg: RunConfig, model, tokenizer, train_ds, run=None, out_dir: str | None = None,
               callbacks=(), resume_from: str | None = None) -> dict:
    """Train the (LoRA) model in place on cfg.warmup.examples worked solutions; `callbacks` go to the trainer.

    Checkpoints are written only when a callback asks (train()'s GracefulStop on a signal), into
    OUT/warmup/checkpoint-N; `resume_from` continues from one (optimizer, schedule, data position, RNG)."""
    from reasontune.runs.callbacks import MetricsCallback
    from reasontune.runs.watch import Watch

    w = cfg.warmup
    data = sft_rows(train_ds, tokenizer, cfg, w.examples)
    watch = Watch(cfg.grpo.watch_window, run=run, stage="warmup")  # warns only: grpo.stop_on is GRPO's
    callbacks = [watch] + ([MetricsCallback(run, stage="warmup")] if run is not None else []) + list(callbacks)
    trainer, result, secs = sft_train(cfg, model, tokenizer, data, Path(out_dir or cfg.output_dir) / "warmup",
                                      epochs=w.epochs, learning_rate=w.learning_rate, batch_size=w.batch_size,
                                      gradient_accumulation_steps=w.gradient_accumulation_steps, callbacks=callbacks,
                                      resume_from=resume_from)
    logger.info("warm-up: %d examples, %.1f epochs, loss %.3f, %.0f s", len(data), w.epochs,
                result.training_loss, secs)
    steps = trainer.state.global_step
    # the worked solutions it trained on: all of them after an epoch, fewer when a time budget stopped it sooner
    seen = min(len(data), steps * w.batch_size * w.gradient_accumulation_steps)
    return {"examples": len(data), "examples_seen": seen, "loss": result.training_loss, "seconds": secs,
            "steps": steps, "warned": [w["condition"] for w in watch.warnings]}


def sft_train(cfg: RunConfig, model, tokenizer, data, out: Path, *, epochs: float, learning_rate: float,
              batch_size: int, gradient_accumulation_steps: int = 1, callbacks=(), resume_from: str | None = None):
    """(trainer, train result, seconds of trainer.train() alone: the training seconds every compare arm counts):
    TRL's SFT (our LeanSFTTrainer) on prompt/completion rows, loss on the completion, in place on the (LoRA) model.
    The warm-up, `reasontune sft` and expert iteration's rounds all train here."""
    import torch
    from trl import SFTConfig

    from reasontune.engines.sft_trainer import LeanSFTTrainer

    args = SFTConfig(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
        lr_scheduler_type="constant", logging_steps=1,
        save_strategy="no", report_to="none", seed=cfg.seed, use_cpu=not torch.cuda.is_available(),
        completion_only_loss=True, max_length=cfg.model.max_seq_length, disable_tqdm=False,
        # TRL defaults both to True. bf16 autocast only where it measured faster (speed.py): on a CPU
        # without native bf16 it is ~30x slower.
        bf16=_sft_bf16(cfg), gradient_checkpointing=cfg.lora.gradient_checkpointing,
        dataloader_num_workers=0,
    )
    trainer = LeanSFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                             callbacks=list(callbacks))
    t0 = time.perf_counter()  # trainer.train() only: the training seconds every compare arm counts
    result = trainer.train(resume_from_checkpoint=resume_from)
    return trainer, result, time.perf_counter() - t0


def _sft_bf16(cfg: RunConfig) -> bool:
    """bf16 autocast for SFT on a CPU when our measured choice says so; on CUDA the weights carry the dtype."""
    import torch

    from reasontune.models.speed import autocast_dtype

    return not torch.cuda.is_available() and autocast_dtype("cpu", cfg.grpo.bf16) == torch.bfloat16


# ------------------------------------------------------------------- `reasontune sft`: SFT as a run of its own
def check_worked(ds, cfg: RunConfig) -> int:
    """The number of worked solutions; ConfigError when there are none."""
    n = count_worked(ds)
    if n == 0:
        cols = ds.column_names
        why = "has no 'worked' column" if "worked" not in cols else "has a 'worked' column but every value is empty"
        raise ConfigError(f"reasontune sft needs worked solutions, but dataset {cfg.data.dataset!r} {why} "
                          f"(columns: {cols}): give data with a worked-solution column (e.g. procedural:arithmetic, "
                          "gsm8k, openr1-math) or train by RFT instead (reasontune train)")
    return n


def run_sft(cfg: RunConfig, model=None, tokenizer=None, datasets=None, examples: int | None = None,
            callbacks=()) -> dict:
    """SFT on the worked solutions into a run folder (config, status, metrics.jsonl, adapter/).

    `examples` caps the worked solutions used (None: all of them); epochs, learning rate and batch
    size come from cfg.warmup. Returns {'summary': ..., 'run_dir': ...} like `train`.
    """
    from transformers import set_seed

    from reasontune.config import override
    from reasontune.models import check_model_spec
    from reasontune.runs.folder import RunFolder, check_output_dir

    check_model_spec(cfg.model)
    check_output_dir(cfg)
    if datasets is None:  # the data check needs no model: fail before loading one
        from reasontune.data import build_datasets

        datasets = build_datasets(cfg.data, cfg.format, tokenizer=None)
    n = check_worked(datasets["train"], cfg)
    cfg = override(cfg, {"warmup.kind": "sft", "warmup.examples": min(examples or n, n)})
    run = RunFolder(cfg.output_dir)
    if cfg.overwrite and run.path.exists():
        from reasontune.runs.folder import clear_run

        clear_run(run.path)
    run.start(cfg, extra={"stage": "sft"})
    try:
        set_seed(cfg.seed)
        if model is None:
            from reasontune.models import load_model_and_tokenizer

            model, tokenizer, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
        summary = warmup_sft(cfg, model, tokenizer, datasets["train"], run=run, out_dir=str(run.path),
                             callbacks=callbacks)
        from reasontune.export.portable import save_adapter

        save_adapter(model, tokenizer, run.path / "adapter", cfg, "SFT")
    except BaseException as e:
        run.set_status("failed", error=f"{type(e).__name__}: {e}")
        raise
    from reasontune.runs.labels import total

    summary["labels"] = total(summary["examples_seen"], None)  # worked solutions only: no reward read an answer
    run.set_status("done", **summary)
    return {"summary": summary, "run_dir": str(run.path)}


def register(subparsers) -> None:
    from reasontune.config.args import add_config_args

    p = subparsers.add_parser("sft", help="supervised fine-tuning on the data's worked solutions (LoRA)")
    add_config_args(p, train=True)
    p.add_argument("--examples", type=int, default=None, help="worked solutions to train on (default: all)")
    p.add_argument("--epochs", type=float, default=None, help="epochs (warmup.epochs)")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    p.set_defaults(func=cmd_sft)


def cmd_sft(args) -> int:
    """--learning-rate and --batch-size set the SFT values (warmup.*), not GRPO's."""
    import json

    from reasontune.config.args import config_from_args
    from reasontune.config import override

    ns = type(args)(**{**vars(args), "learning_rate": None, "batch_size": None})
    cfg = config_from_args(ns)
    cfg = override(cfg, {"warmup.learning_rate": args.learning_rate, "warmup.batch_size": args.batch_size,
                         "warmup.epochs": args.epochs})
    if args.examples is not None and args.examples <= 0:
        raise ConfigError(f"--examples={args.examples} is invalid: use a positive number of worked solutions")
    result = run_sft(cfg, examples=args.examples)
    print(json.dumps({**result["summary"], "run_dir": result["run_dir"]}) if args.json
          else f"run folder: {result['run_dir']} (adapter: {result['run_dir']}/adapter)")
    return 0
