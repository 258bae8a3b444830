"""Expert iteration (`method: expert_iteration`): sample, keep what verifies, fine-tune on it, repeat.

The label-free baseline GRPO is measured against (STaR, Zelikman et al. 2022; RFT, Yuan et al. 2023; ReST-EM;
RAFT, Xiong et al. 2025). Each round takes the next `problems_per_round` training problems, samples
`samples` completions of each at `temperature` with the engine eval uses (engines.open_engine: our decode, or
vLLM where `eval.engine` picks it), keeps those whose answer verifies (`rewards.grade`, eval's definition of
right) in the strict format, at most `keep_per_problem` distinct ones per problem, and trains on them with the
SFT path the warm-up uses (stages/sft.sft_train), continuing from the current weights (RAFT's way; STaR restarts
from the base each round). It reads the reference answers only, never a worked solution: its SFT targets are
the model's own completions, cut after the closing answer marker and ended with EOS.

`reasontune train --method expert_iteration` runs it after the optional SFT warm-up, into the same run folder as
GRPO: a metrics.jsonl row per round, status.json (labels, warnings), the watcher on the conditions that apply
(runs/watch.py STAGE_CONDITIONS), grpo.max_seconds as its time budget, a checkpoint per finished round
(`--resume` restarts after the last one), and adapter/ at the end.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from reasontune.config import RunConfig

logger = logging.getLogger(__name__)

STATE_FILE = "expert_state.json"  # in RUN/checkpoints/checkpoint-N (N: the last finished round)


def answer_end(text: str, fmt) -> str | None:
    """The completion up to and including its first closing answer marker (what a clean target ends with before
    EOS); None when it never closes an answer block. Text past the marker is what the stop rule's grace tokens
    let through, and a target must not teach it."""
    at = text.find(fmt.solution_end)
    return None if at < 0 else text[: at + len(fmt.solution_end)]


def select_verified(rows: list[dict], gens: list[list], fmt, keep_per_problem: int) -> tuple[list, dict]:
    """([(problem index, target text)], counts): per problem, the distinct completions whose answer verifies in the
    strict format, at most `keep_per_problem`, first sampled first. `gens[i]` are problem i's samples."""
    from reasontune.rewards import grade, has_format, rg_columns

    kept: list[tuple[int, str]] = []
    n = {"samples": 0, "right": 0, "problems_solved": 0, "kept": 0, "duplicates": 0, "capped": 0, "unformatted": 0}
    for i, (row, samples) in enumerate(zip(rows, gens)):
        answer, cols, seen, solved = str(row.get("answer")), rg_columns(row), set(), False
        for g in samples:
            n["samples"] += 1
            right = grade(g.text, answer, fmt, **cols)[1]  # the pass rate counts what eval would count right
            n["right"] += right
            solved |= right
            target = answer_end(g.text, fmt)
            if target is None or not grade(target, answer, fmt, **cols)[1]:
                continue
            if not has_format(target, fmt):
                n["unformatted"] += 1
                continue
            key = " ".join(target.split())  # the same completion up to white space is one completion
            if key in seen:
                n["duplicates"] += 1
            elif len(seen) >= keep_per_problem:
                n["capped"] += 1
            else:
                seen.add(key)
                kept.append((i, target))
        n["problems_solved"] += solved
    n["kept"] = len(kept)
    return kept, n


class Problems:
    """The training problems in a seeded order, taken in turn, wrapping round; `cursor` and `seen` resume."""

    def __init__(self, n: int, seed: int, cursor: int = 0, seen=()):
        self.order = list(range(n))
        random.Random(seed).shuffle(self.order)
        self.cursor, self.seen = cursor, set(seen)

    def take(self, k: int) -> list[int]:
        idx = [self.order[(self.cursor + j) % len(self.order)] for j in range(min(k, len(self.order)))]
        self.cursor += len(idx)
        self.seen.update(idx)
        return idx


def open_sampler(cfg: RunConfig, model, tokenizer, run):
    """The engine eval's `eval.engine` picks: our decode on the model in memory, or vLLM on this round's weights
    saved to RUN/sampler (vLLM serves a folder, not an in-memory model)."""
    from reasontune.engines import open_engine, pick_engine

    if pick_engine(cfg.eval.engine)[0] != "vllm":
        return open_engine(cfg, model, tokenizer, name="transformers")
    from reasontune.export.portable import save_adapter

    save_adapter(model, tokenizer, run.path / "sampler", cfg, "expert iteration's sampler (this round's weights)")
    return open_engine(cfg, adapter=str(run.path / "sampler"), name="vllm")


def sample_round(cfg: RunConfig, engine, tokenizer, rows: list[dict]) -> tuple[list[str], list[list]]:
    """(rendered prompts, samples per prompt) for one round."""
    from reasontune.models.prompting import render_prompt, stop_rule

    e = cfg.expert_iteration
    prompts = [render_prompt(tokenizer, r["prompt"], cfg.format) for r in rows]
    gens = engine.generate(prompts, max_new_tokens=completion_budget(cfg), temperature=e.temperature,
                           top_p=cfg.grpo.top_p, min_p=cfg.grpo.min_p, num_return_sequences=e.samples,
                           stop=stop_rule(cfg), batch_size=cfg.eval.batch_size, progress=True,
                           desc=f"expert iteration: {len(prompts)} problems x {e.samples}",
                           autocast_setting=cfg.grpo.bf16)
    return prompts, gens


def completion_budget(cfg: RunConfig) -> int:
    """GRPO's completion budget when set (the one the run's adapter records), else eval's."""
    from reasontune.stages.evaluate import max_new_tokens_for

    return cfg.grpo.max_completion_length or max_new_tokens_for(cfg)


def train_round(cfg: RunConfig, model, tokenizer, prompts: list[str], kept: list, out: Path, callbacks) -> dict:
    """SFT on the kept completions (prompt + target + EOS, loss on the completion)."""
    import datasets

    from reasontune.stages.sft import sft_train

    if not kept:
        return {"loss": None, "sft_steps": 0, "sft_seconds": 0.0}
    e, w, eos = cfg.expert_iteration, cfg.warmup, tokenizer.eos_token or ""
    data = datasets.Dataset.from_list([{"prompt": prompts[i], "completion": t + eos} for i, t in kept])
    trainer, result, seconds = sft_train(cfg, model, tokenizer, data, out, epochs=e.epochs,
                                         learning_rate=e.learning_rate or w.learning_rate,
                                         batch_size=e.batch_size or w.batch_size, callbacks=callbacks)
    return {"loss": result.training_loss, "sft_steps": trainer.state.global_step, "sft_seconds": seconds}


def round_row(r: int, counts: dict, gens: list[list], trained: dict, seconds: dict, problems: Problems) -> dict:
    """The round's metrics.jsonl row. The pass rate is also logged as `rewards/verified/mean` and the samples'
    lengths under GRPO's keys, so the watcher reads them as it reads GRPO's."""
    from reasontune.models.speed import rss_mb

    flat = [g for s in gens for g in s]
    pass_rate = counts["right"] / max(1, counts["samples"])
    return {"step": r, "round": r, "stage": "expert_iteration", "problems": len(gens), **counts,
            "pass_rate": pass_rate, "rewards/verified/mean": pass_rate, "problems_seen": len(problems.seen),
            "completions/mean_length": sum(g.num_tokens for g in flat) / max(1, len(flat)),
            "completions/max_length": max((g.num_tokens for g in flat), default=0),
            "completions/clipped_ratio": sum(g.truncated for g in flat) / max(1, len(flat)),
            **trained, **seconds, "rss_mb": rss_mb()}


def save_round(model, run, r: int, state: dict) -> None:
    """RUN/checkpoints/checkpoint-r: the LoRA weights after round r and `state` (where the problems stand, the
    warm-up's examples); older rounds' checkpoints go (one is enough to restart from)."""
    import shutil

    from reasontune.runs.folder import atomic_write_json

    root = run.path / "checkpoints"
    folder = root / f"checkpoint-{r}"
    model.save_pretrained(str(folder))
    atomic_write_json(folder / STATE_FILE, {**state, "round": r})
    for old in root.glob("checkpoint-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)


def restore(model, checkpoint: str) -> dict:
    """Load a finished round's LoRA weights into `model`; its state (round, cursor, seen problems, SFT examples)."""
    import json

    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    set_peft_model_state_dict(model, load_peft_weights(checkpoint))
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def expert_iteration(cfg: RunConfig, run, model, tokenizer, train_ds, stopper, sft_examples: int = 0,
                     resume_from: str | None = None) -> dict:
    """Rounds until `expert_iteration.rounds`, the time budget, a signal or a watcher stop; the summary train()
    records in status.json."""
    from reasontune.runs.callbacks import TimeBudget
    from reasontune.runs.labels import expert_labels, total
    from reasontune.runs.watch import RewardScale, Watch
    from reasontune.rewards.scoring import label_free

    rows = [dict(r) for r in label_free(train_ds, True)]  # answers only: no worked solution past this line
    state = restore(model, resume_from) if resume_from else {"round": 0, "cursor": 0, "seen": [],
                                                             "sft_examples": sft_examples}
    if resume_from:
        run.truncate_metrics(state["round"], stage="expert_iteration")
        logger.info("expert iteration: resuming after round %d (%s)", state["round"], resume_from)
    problems = Problems(len(rows), cfg.seed, state["cursor"], state["seen"])
    if not resume_from:  # round 0: the warm-up's weights, so a signal in round 1 does not cost the warm-up again
        save_round(model, run, 0, {**state, "seconds": 0.0})
    watch = Watch(cfg.grpo.watch_window, cfg.grpo.stop_on, run, stage="expert_iteration",
                  scales={"verified": RewardScale("answer", 0.0, 1.0)})  # the pass rate is an answer level
    t0 = time.perf_counter()
    deadline = t0 + cfg.grpo.max_seconds if cfg.grpo.max_seconds else float("inf")
    r, last, out_of_time, loss = state["round"], 0.0, False, None
    while r < cfg.expert_iteration.rounds and not (stopper.requested or watch.stopped):
        if time.perf_counter() + last > deadline:  # another round like the last would end past the budget
            out_of_time = True
            break
        row = one_round(cfg, run, model, tokenizer, rows, problems, r + 1, [stopper, TimeBudget(deadline=deadline)])
        if stopper.requested:  # a signal mid-round: the round is not finished; --resume redoes it
            break
        r, last, loss = r + 1, row["round_seconds"], row["loss"] if row["loss"] is not None else loss
        run.append_metrics(row)
        for w in watch.observe(row, r):
            run.add_warning(w)
        save_round(model, run, r, {"cursor": problems.cursor, "seen": sorted(problems.seen),
                                   "sft_examples": state["sft_examples"], "seconds": time.perf_counter() - t0})
    if not stopper.requested:
        from reasontune.export.portable import save_adapter

        stage = "SFT warm-up, then expert iteration" if cfg.warmup.kind == "sft" else "expert iteration"
        save_adapter(model, tokenizer, run.path / "adapter", cfg, stage)
    return {"global_step": r, "stage": "expert_iteration", "method": "expert_iteration", "rounds": r,
            "train_loss": loss, "expert_seconds": time.perf_counter() - t0, "stopped_by_time_budget": out_of_time,
            "labels": total(state["sft_examples"], expert_labels(len(problems.seen))),
            "warned": [w["condition"] for w in watch.warnings], **({"stopped_by": watch.stopped} if watch.stopped else {})}


def one_round(cfg: RunConfig, run, model, tokenizer, rows: list[dict], problems: Problems, r: int,
              callbacks) -> dict:
    """Sample, select, train: round r's metrics row."""
    t0 = time.perf_counter()
    batch = [rows[i] for i in problems.take(cfg.expert_iteration.problems_per_round)]
    engine = open_sampler(cfg, model, tokenizer, run)
    try:
        prompts, gens = sample_round(cfg, engine, tokenizer, batch)
    finally:
        engine.close()
    sampled = time.perf_counter() - t0
    kept, counts = select_verified(batch, gens, cfg.format, cfg.expert_iteration.keep_per_problem)
    trained = train_round(cfg, model, tokenizer, prompts, kept, run.path / "expert_sft", callbacks)
    row = round_row(r, counts, gens, trained, {"sample_seconds": sampled, "round_seconds": time.perf_counter() - t0},
                    problems)
    logger.info("expert iteration round %d: pass rate %.3f, %d of %d problems solved, kept %d (%d duplicates, %d over "
                "the cap), SFT loss %s in %d steps, %.0f s", r, row["pass_rate"], counts["problems_solved"],
                len(batch), counts["kept"], counts["duplicates"], counts["capped"],
                "n/a" if row["loss"] is None else f"{row['loss']:.3f}", row["sft_steps"], row["round_seconds"])
    return row
