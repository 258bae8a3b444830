"""Run configuration: dataclasses with `help` metadata, validated in `__post_init__`.

One place defines every default. YAML recipes and CLI flags only override fields that
they name, so a default never lives in two places. Validation here is cheap and runs
before any model or dataset loads (issue: fail fast on bad input).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any



class ConfigError(ValueError):
    """A bad configuration value. The message names the field, the value and the fix."""


def _f(default, help: str, **kw):
    """A dataclass field with help metadata (TRL style)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _check(cond: bool, name: str, value: Any, fix: str) -> None:
    if not cond:
        raise ConfigError(f"{name}={value!r} is invalid: {fix}")


DEFAULT_MODEL = "smollm2-135m"
# Where code rewards run model-written programs (rewards/sandbox.py); the first is the default.
CODE_SANDBOXES = ("auto", "bwrap", "unshare", "unsafe_local")
# What the watcher (watch.py) checks while training runs; grpo.stop_on names some of them.
WATCH_CONDITIONS = ("zero_variance", "truncation", "no_format", "no_right_answers", "entropy_collapse",
                    "entropy_rise", "length_shrink", "low_learning_rate", "nonfinite")
# eval's completion budget when neither eval.max_new_tokens nor grpo.max_completion_length sets one
DEFAULT_MAX_NEW_TOKENS = 256
RECIPE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelConfig:
    name: str = _f(DEFAULT_MODEL, "Hub id, local folder, .gguf file, or 'smollm2-135m' (embedded default).")
    gguf_file: str | None = _f(None, "GGUF file name inside `name` when `name` is a hub id or folder.")
    backend: str = _f("auto", "auto | unsloth | transformers. auto picks Unsloth on CUDA when it imports.")
    dtype: str = _f("auto", "auto | float32 | bfloat16 | float16: dtype of the frozen base (auto: bf16/fp16 on CUDA; bf16 on a CPU where it measures faster, else float32).")
    max_seq_length: int = _f(1024, "Prompt + completion token budget.")
    load_in_4bit: bool = _f(False, "4-bit base weights (bitsandbytes / Unsloth, CUDA only).")
    fast_inference: bool = _f(False, "Unsloth only: attach a vLLM engine for generation.")
    gpu_memory_utilization: float = _f(0.9, "Unsloth/vLLM only: fraction of GPU memory for vLLM.")
    chat_template: str | None = _f(
        None, "None keeps the tokenizer's template; 'reasoning' installs one whose generation prompt "
        "ends with the reasoning-start marker (for base models without a template).")

    def __post_init__(self):
        _check(bool(self.name), "model.name", self.name, "give a hub id, a folder, a .gguf file or 'smollm2-135m'")
        _check(self.backend in ("auto", "unsloth", "transformers"), "model.backend", self.backend,
               "use one of auto, unsloth, transformers")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"), "model.dtype", self.dtype,
               "use one of auto, float32, bfloat16, float16")
        _check(self.max_seq_length > 0, "model.max_seq_length", self.max_seq_length, "use a positive integer")
        _check(self.chat_template in (None, "reasoning"), "model.chat_template", self.chat_template,
               "use null (tokenizer's own) or 'reasoning'")


@dataclass
class LoraConfig:
    r: int = _f(32, "LoRA rank.")
    alpha: int = _f(64, "LoRA alpha (the recipe uses 2 x rank).")
    dropout: float = _f(0.0, "LoRA dropout.")
    target_modules: list[str] = _f(RECIPE_TARGETS, "Module names that get LoRA adapters.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward (saves memory, costs time).")
    top_layers: int | None = _f(
        None, "LoRA on the last N decoder layers only: backward then stops at the lowest adapted layer, "
        "which cuts the step time on a CPU. None adapts every layer.")

    def __post_init__(self):
        _check(self.top_layers is None or self.top_layers > 0, "lora.top_layers", self.top_layers,
               "use a positive number of layers or null for all")
        _check(self.r > 0, "lora.r", self.r, "use a positive rank such as 16 or 32")
        _check(self.alpha > 0, "lora.alpha", self.alpha, "use a positive alpha, usually 2 x rank")
        _check(0.0 <= self.dropout < 1.0, "lora.dropout", self.dropout, "use a value in [0, 1)")
        _check(bool(self.target_modules), "lora.target_modules", self.target_modules, "name at least one module")


@dataclass
class FormatConfig:
    """Reasoning markers and the system prompt that asks for them."""

    reasoning_start: str = _f("<start_working_out>", "Marker that opens the working-out.")
    reasoning_end: str = _f("<end_working_out>", "Marker that closes the working-out.")
    solution_start: str = _f("<SOLUTION>", "Marker that opens the final answer.")
    solution_end: str = _f("</SOLUTION>", "Marker that closes the final answer.")
    system_prompt: str | None = _f(None, "System prompt; None derives the recipe's prompt from the markers.")
    code_system_prompt: str | None = _f(
        None, "System prompt of code rows (rows with a `tests` column: HumanEval, MBPP, procedural:code); None uses "
        "format.system_prompt when that is set, else derives one from the markers that asks for the complete "
        "Python code (whole functions, def line included) in a ```python fenced block inside the answer block.")
    prefill_reasoning: bool = _f(
        True, "End every generation prompt with the reasoning-start marker, so completions begin inside the "
        "reasoning block (the recipe does this through its chat template; this works with any template).")

    def __post_init__(self):
        names = ["reasoning_start", "reasoning_end", "solution_start", "solution_end"]
        values = [getattr(self, n) for n in names]
        for n, v in zip(names, values):
            _check(isinstance(v, str) and v.strip() != "", f"format.{n}", v, "markers must be non-empty strings")
        _check(len(set(values)) == 4, "format markers", values, "the four markers must all differ")

    @property
    def prompt(self) -> str:
        if self.system_prompt:
            return self.system_prompt
        return (
            "You are given a problem. Think about the problem and provide your working out. "
            f"Place it between {self.reasoning_start} and {self.reasoning_end}. "
            f"Then, provide your solution between {self.solution_start}{self.solution_end}"
        )

    @property
    def code_prompt(self) -> str:
        """The system prompt of a code row: code_system_prompt, else system_prompt, else the derived one."""
        if self.code_system_prompt:
            return self.code_system_prompt
        if self.system_prompt:
            return self.system_prompt
        return (
            "You are given a programming problem. Think about the problem and provide your working out. "
            f"Place it between {self.reasoning_start} and {self.reasoning_end}. "
            f"Then, provide your solution between {self.solution_start}{self.solution_end}: the complete Python "
            "code in a ```python fenced block, every function whole, its def line included."
        )

    def prompt_for(self, code: bool) -> str:
        """The system prompt of a row: `code_prompt` for a code row (one with tests), else `prompt`."""
        return self.code_prompt if code else self.prompt


@dataclass
class DataConfig:
    dataset: str = _f("procedural:arithmetic", "hub id, local file, procedural:NAME or rg:TASK.")
    config_name: str | None = _f(None, "Hub dataset config (e.g. 'main' for gsm8k); None picks the adapter's.")
    split: str = _f("train", "Split to read from a hub set or file.")
    question_column: str | None = _f(None, "Column holding the question (overrides detection).")
    answer_column: str | None = _f(None, "Column holding the reference answer (overrides detection).")
    numeric_only: bool = _f(False, "Keep only rows whose answer is a number (the recipe does).")
    max_prompt_quantile: float | None = _f(0.9, "Drop prompts longer than this token-length quantile; None keeps all.")
    train_size: int = _f(2000, "Rows generated for procedural sources (train split).")
    test_size: int = _f(200, "Held-out rows (procedural: generated; others: split off).")
    sample: int | None = _f(None, "Keep a random sample of N training rows.")
    difficulty: list[int] | None = _f(None, "Procedural difficulty levels to draw from; None uses the source's default.")
    seed: int = _f(0, "Seed for generation, shuffling and splitting.")

    def __post_init__(self):
        _check(bool(self.dataset), "data.dataset", self.dataset, "name a dataset spec such as procedural:arithmetic")
        q = self.max_prompt_quantile
        _check(q is None or 0.0 < q <= 1.0, "data.max_prompt_quantile", q, "use a value in (0, 1] or null")
        _check(self.train_size > 0, "data.train_size", self.train_size, "use a positive integer")
        _check(self.test_size >= 0, "data.test_size", self.test_size, "use 0 or more")
        _check(self.sample is None or self.sample > 0, "data.sample", self.sample, "use a positive integer or null")


@dataclass
class RewardsConfig:
    names: list[str] = _f(
        ["format_exact", "format_approx", "answer_check", "number_check"],
        "Reward names from the registry, a preset name (recipe, verified), or dotted paths 'pkg.mod:fn'.")
    weights: list[float] | None = _f(None, "One weight per reward (0 logs without training); None: all 1.0.")
    on_error: str = _f("none", "What a raising reward does: 'none' (skip that sample, count it) or 'raise'.")
    eos_token: str | None = _f(None, "EOS text allowed after the closing answer marker; None uses the tokenizer's.")
    answers_only: bool = _f(
        False, "The rewards see the reference answers only: the `worked` column (worked solutions) never reaches a "
        "reward in GRPO or eval, so step_check checks right, grounded lines without a reference path, and a reward "
        "that needs worked solutions is refused. The SFT warm-up still trains on its worked solutions (counted).")
    code_sandbox: str = _f(
        CODE_SANDBOXES[0], "Where code rewards (code_tests) run model-written programs: auto (bubblewrap, else "
        "unshare's namespaces, else refuse, naming the fix), bwrap, unshare, or unsafe_local (no isolation, "
        "rlimits and seccomp only: opt in for trusted output only). See docs/security.md.")

    def __post_init__(self):
        _check(bool(self.names), "rewards.names", self.names, "name at least one reward or a preset")
        _check(self.code_sandbox in CODE_SANDBOXES, "rewards.code_sandbox", self.code_sandbox,
               f"use one of {', '.join(CODE_SANDBOXES)}")
        _check(self.on_error in ("none", "raise"), "rewards.on_error", self.on_error, "use 'none' or 'raise'")
        if self.weights is not None:
            _check(len(self.weights) == len(self.names), "rewards.weights", self.weights,
                   f"give one weight per reward ({len(self.names)} rewards: {self.names})")


@dataclass
class WarmupConfig:
    kind: str = _f("none", "'none' or 'sft': supervised formatting warm-up before GRPO.")
    examples: int = _f(64, "Worked solutions used by the warm-up.")
    epochs: float = _f(2.0, "Warm-up epochs.")
    learning_rate: float = _f(2e-4, "Warm-up learning rate.")
    batch_size: int = _f(8, "Warm-up batch size (per step of gradient accumulation).")
    gradient_accumulation_steps: int = _f(1, "Warm-up gradient accumulation: batch_size x this per optimizer step.")

    def __post_init__(self):
        _check(self.kind in ("none", "sft"), "warmup.kind", self.kind, "use 'none' or 'sft'")
        _check(self.examples > 0, "warmup.examples", self.examples, "use a positive integer")
        _check(self.learning_rate > 0, "warmup.learning_rate", self.learning_rate, "use a learning rate > 0")
        _check(self.batch_size > 0 and self.gradient_accumulation_steps > 0, "warmup.batch_size",
               (self.batch_size, self.gradient_accumulation_steps),
               "use a positive batch_size and gradient_accumulation_steps")


@dataclass
class GRPOSettings:
    """The subset of TRL's GRPOConfig that reasontune sets; `extra` passes anything else through."""

    learning_rate: float = _f(5e-6, "Optimizer learning rate.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    warmup_ratio: float = _f(0.1, "Fraction of steps for LR warm-up.")
    lr_scheduler_type: str = _f("linear", "LR schedule.")
    optim: str = _f("auto", "Optimizer; 'auto' uses adamw_8bit on CUDA with bitsandbytes, else adamw_torch.")
    per_device_train_batch_size: int = _f(4, "Completions per device per step (TRL counts completions).")
    gradient_accumulation_steps: int = _f(1, "Gradient accumulation steps.")
    num_generations: int = _f(4, "Completions per prompt (the GRPO group).")
    max_prompt_length: int | None = _f(
        None, "Prompt token budget: longer training prompts are dropped (the count is logged). None: the "
        "longest prompt, measured from the data.")
    max_completion_length: int | None = _f(None, "Completion budget; None: max_seq_length - max_prompt_length.")
    max_steps: int = _f(100, "Optimizer steps.")
    max_seconds: float | None = _f(
        None, "Wall-clock budget for GRPO: stop (and save) after the first step that ends past it. "
        "None: no budget. Pair it with a constant learning-rate schedule, since a decaying one assumes max_steps.")
    temperature: float = _f(1.0, "Sampling temperature for rollouts.")
    min_p: float | None = _f(None, "min-p sampling (the recipe uses 0.1 with vLLM).")
    top_p: float = _f(1.0, "Nucleus sampling.")
    beta: float = _f(0.0, "KL coefficient (0 needs no reference model).")
    loss_type: str = _f("dapo", "TRL loss type (grpo, dr_grpo, dapo, bnpo, ...).")
    logging_steps: int = _f(1, "Log every N steps.")
    save_steps: int = _f(50, "Checkpoint every N steps.")
    max_nonfinite_steps: int = _f(
        3, "Stop the run (status failed) after this many steps with a non-finite loss, gradient or reward; "
        "each such step's update is skipped and logged with the offending sample to RUN/nonfinite.jsonl.")
    watch_window: int = _f(10, "Logged steps the watcher (watch.py) averages over; trends (format, entropy, length) "
                           "compare the latest window with the first.")
    stop_on: list[str] = _f([], f"Watcher conditions that stop the run with a checkpoint (status stopped, exit 3): "
                            f"any of {', '.join(WATCH_CONDITIONS)}; or a comma-separated string. Off by default.")
    stop_at_solution_end: bool = _f(
        True, "End a completion `stop_grace_tokens` tokens after the closing answer marker when the model has not "
        "written EOS by then (GRPO with reasontune's decode, eval, advise, ask). The model's own EOS is always sampled, "
        "never appended. False: completions end at EOS or the budget only (TRL's and vLLM's generation always do).")
    stop_grace_tokens: int = _f(
        4, "Tokens after the closing answer marker in which the model's own EOS must come (see stop_at_solution_end); "
        "eval's stop_rate counts completions that close the answer and end with EOS within them.")
    skip_zero_variance: bool = _f(True, "Skip forward/backward for groups whose rewards are all equal.")
    dynamic_sampling: bool = _f(
        False, "DAPO's dynamic sampling (arXiv 2503.14476): after a batch is generated and scored, keep its groups "
        "whose rewards are not all equal and generate more groups from further training prompts until the batch "
        "is full of them, at most `dynamic_sampling_max_rounds` extra rounds a step (engines/dynamic.py). "
        "Advantages stay per group. One process, reasontune's own generation (not vLLM, not Unsloth).")
    dynamic_sampling_max_rounds: int = _f(
        3, "Most extra generation rounds a step under dynamic_sampling (each generates as many groups as the "
        "batch has); past it, or when another round would end past the time budget, the step trains on what it "
        "has and its all-equal groups are skipped as without the option.")
    shared_prompt: bool = _f(
        True, "CPU loss forward: run each distinct prompt of a micro-batch once and let its completions attend to "
        "its KV cache (same loss and gradients, up to rounding), with the micro-batches grouped by prompt where "
        "that changes no update (DAPO/CISPO, one optimizer step per generation). Off under Unsloth, several "
        "processes, gradient checkpointing, or a cache that is not plain full attention.")
    old_logps_from_first_pass: bool = _f(
        True, "With num_iterations > 1 (grpo.extra): take the old log-probs from the loss's first pass over a generation, "
        "where the model is still the one that sampled (each generation's first pass is one optimizer step), "
        "instead of TRL's extra no-grad forward over every row when it generates. The first pass's ratio is then "
        "exactly 1. Off under Unsloth, vLLM, or when a first pass spans optimizer steps.")
    bf16: str = _f("auto", "auto | true | false: bf16 autocast for the frozen base (auto: when the CPU/GPU supports it).")
    curriculum: str = _f(
        "none", "none | adaptive: draw each batch's prompts per value of `curriculum_column`, in proportion to the "
        "fraction of that value's recent groups whose answers were mixed (the groups with answer signal), at least "
        "`curriculum_floor` each (curriculum.py). One process only.")
    curriculum_column: str = _f("difficulty", "Dataset column naming each prompt's level, for curriculum: adaptive.")
    curriculum_floor: float = _f(0.05, "Least sampling probability of any level under curriculum: adaptive.")
    report_to: list[str] = _f([], "Passed to TRL (tensorboard, wandb, ...).")
    use_vllm: bool = _f(False, "TRL's vLLM generation (needs vllm).")
    vllm_mode: str = _f("colocate", "colocate | server.")
    vllm_importance_sampling_correction: bool = _f(
        True, "Correct for the gap between vLLM's sampling and the trained model's probabilities (TRL's default; "
        "Unsloth's patched config turns it off unless it is passed, so reasontune always passes it).")
    extra: dict = _f({}, "More GRPOConfig keyword arguments, passed through unchanged.")

    def __post_init__(self):
        _check(self.learning_rate > 0, "grpo.learning_rate", self.learning_rate, "use a learning rate > 0, e.g. 5e-6")
        _check(self.num_generations >= 2, "grpo.num_generations", self.num_generations,
               "GRPO compares completions within a group: use 2 or more")
        _check(self.per_device_train_batch_size > 0, "grpo.per_device_train_batch_size",
               self.per_device_train_batch_size, "use a positive integer")
        _check(self.gradient_accumulation_steps > 0, "grpo.gradient_accumulation_steps",
               self.gradient_accumulation_steps, "use a positive integer")
        _check(self.max_steps > 0, "grpo.max_steps", self.max_steps, "use a positive number of steps")
        _check(self.max_prompt_length is None or self.max_prompt_length > 0, "grpo.max_prompt_length",
               self.max_prompt_length, "use a positive number of tokens, or null to measure it from the data")
        _check(self.max_seconds is None or self.max_seconds > 0, "grpo.max_seconds", self.max_seconds,
               "use a positive number of seconds, or null for no budget")
        _check(self.max_nonfinite_steps >= 1, "grpo.max_nonfinite_steps", self.max_nonfinite_steps,
               "use 1 or more (1 stops at the first non-finite step)")
        _check(self.watch_window >= 1, "grpo.watch_window", self.watch_window, "use 1 or more logged steps, e.g. 10")
        _check(isinstance(self.stop_on, list) and all(isinstance(s, str) and s in WATCH_CONDITIONS
                                                      for s in self.stop_on), "grpo.stop_on", self.stop_on,
               f"name watcher conditions from {list(WATCH_CONDITIONS)}")
        _check(self.temperature > 0, "grpo.temperature", self.temperature, "use a temperature > 0")
        _check(self.stop_grace_tokens >= 1, "grpo.stop_grace_tokens", self.stop_grace_tokens,
               "use 1 or more tokens (the EOS itself is one)")
        _check(self.bf16 in ("auto", "true", "false"), "grpo.bf16", self.bf16, "use auto, true or false")
        _check(self.curriculum in ("none", "adaptive"), "grpo.curriculum", self.curriculum, "use none or adaptive")
        _check(0 < self.curriculum_floor <= 0.5, "grpo.curriculum_floor", self.curriculum_floor,
               "use a probability in (0, 0.5], e.g. 0.05")
        _check(self.vllm_mode in ("colocate", "server"), "grpo.vllm_mode", self.vllm_mode, "use colocate or server")
        self._check_dynamic_sampling()

    def _check_dynamic_sampling(self) -> None:
        _check(self.dynamic_sampling_max_rounds >= 1, "grpo.dynamic_sampling_max_rounds",
               self.dynamic_sampling_max_rounds, "use 1 or more extra rounds a step (or grpo.dynamic_sampling: false)")
        if not self.dynamic_sampling:
            return
        _check(not self.use_vllm, "grpo.dynamic_sampling", self.dynamic_sampling,
               "it refills through reasontune's own generation, not TRL's vLLM path: set grpo.use_vllm: false, or "
               "grpo.dynamic_sampling: false")
        # a group's advantages must not depend on the other groups of the batch, or a refilled batch changes them
        _check(self.extra.get("scale_rewards", "group") != "batch", "grpo.dynamic_sampling", self.dynamic_sampling,
               "grpo.extra.scale_rewards='batch' scales advantages by the whole batch's std: use 'group' or 'none', "
               "or grpo.dynamic_sampling: false")
        _check(self.extra.get("multi_objective_aggregation", "sum_then_normalize") != "normalize_then_sum",
               "grpo.dynamic_sampling", self.dynamic_sampling,
               "grpo.extra.multi_objective_aggregation='normalize_then_sum' normalises advantages over the whole "
               "batch: use 'sum_then_normalize', or grpo.dynamic_sampling: false")

    def check_batch(self, num_processes: int = 1) -> None:
        total = self.per_device_train_batch_size * self.gradient_accumulation_steps * num_processes
        _check(total % self.num_generations == 0, "grpo.per_device_train_batch_size", self.per_device_train_batch_size,
               f"batch {self.per_device_train_batch_size} x grad-accum {self.gradient_accumulation_steps} x "
               f"{num_processes} process(es) = {total} must be divisible by num_generations={self.num_generations}")
        _check(not (self.dynamic_sampling and num_processes > 1), "grpo.dynamic_sampling", self.dynamic_sampling,
               f"it runs in one process ({num_processes} here: each would refill differently): launch one process, "
               "or set grpo.dynamic_sampling: false")


# What `reasontune train` runs after the optional SFT warm-up (RunConfig.method).
METHODS = ("grpo", "expert_iteration")


@dataclass
class ExpertIterationConfig:
    """Expert iteration (STaR, RFT, ReST-EM, RAFT): rounds of sampling, keeping what verifies, and SFT on it.

    Not called "RFT" here: in this project RFT is reinforcement fine-tuning (GRPO, `reasontune advise`)."""

    rounds: int = _f(50, "Most rounds; the time budget (grpo.max_seconds) usually ends the run first.")
    problems_per_round: int = _f(64, "Training problems sampled each round, taken in turn from the shuffled split.")
    samples: int = _f(8, "Completions sampled per problem (K).")
    temperature: float = _f(1.0, "Sampling temperature (grpo.top_p and grpo.min_p apply too).")
    keep_per_problem: int = _f(2, "Most distinct verified completions kept per problem each round.")
    epochs: float = _f(1.0, "SFT epochs over each round's kept completions.")
    learning_rate: float | None = _f(None, "SFT learning rate of a round; None: warmup.learning_rate.")
    batch_size: int | None = _f(None, "SFT batch size of a round; None: warmup.batch_size.")

    def __post_init__(self):
        for name in ("rounds", "problems_per_round", "samples", "keep_per_problem"):
            _check(getattr(self, name) > 0, f"expert_iteration.{name}", getattr(self, name), "use a positive integer")
        _check(self.temperature > 0, "expert_iteration.temperature", self.temperature,
               "use a temperature > 0: greedy samples of one problem are all the same completion")
        _check(self.epochs > 0, "expert_iteration.epochs", self.epochs, "use a positive number of epochs")
        _check(self.learning_rate is None or self.learning_rate > 0, "expert_iteration.learning_rate",
               self.learning_rate, "use a learning rate > 0, or null for warmup.learning_rate")
        _check(self.batch_size is None or self.batch_size > 0, "expert_iteration.batch_size", self.batch_size,
               "use a positive batch size, or null for warmup.batch_size")


@dataclass
class EvalConfig:
    limit: int = _f(200, "Held-out problems to evaluate.")
    samples: int = _f(1, "Completions per problem; >1 adds pass@k and maj@k at `temperature`.")
    temperature: float = _f(1.0, "Sampling temperature when samples > 1 (greedy otherwise).")
    sample_limit: int | None = _f(None, "When samples > 1, sample only the first N of the evaluated problems "
                                  "(pass@k on a subset costs less than on all); None samples every one.")
    max_new_tokens: int | None = _f(None, "Generation budget; None uses grpo.max_completion_length.")
    batch_size: int = _f(32, "Prompts per generation batch.")
    engine: str = _f("auto", "auto | transformers | vllm: who generates for eval, advise and ask (auto: vLLM on "
                     "CUDA when it imports, our decode elsewhere; engines/__init__.py).")
    max_prompt_quantile: float | None = _f(None, "Evaluate only prompts up to this token-length quantile; None "
                                           "grades every row (a length filter biases accuracy towards easy "
                                           "problems). `reasontune eval` on a file or a test split only.")

    def __post_init__(self):
        _check(self.limit > 0, "eval.limit", self.limit, "use a positive integer")
        q = self.max_prompt_quantile
        _check(q is None or 0.0 < q <= 1.0, "eval.max_prompt_quantile", q, "use a value in (0, 1] or null")
        _check(self.samples > 0, "eval.samples", self.samples, "use a positive integer")
        _check(self.sample_limit is None or self.sample_limit > 0, "eval.sample_limit", self.sample_limit,
               "use a positive integer or null")
        _check(self.batch_size > 0, "eval.batch_size", self.batch_size, "use a positive integer")
        _check(self.engine in ("auto", "transformers", "vllm"), "eval.engine", self.engine,
               "use one of auto, transformers, vllm")


SECTIONS = {
    "model": ModelConfig, "lora": LoraConfig, "format": FormatConfig, "data": DataConfig,
    "rewards": RewardsConfig, "warmup": WarmupConfig, "grpo": GRPOSettings, "eval": EvalConfig,
    "expert_iteration": ExpertIterationConfig,
}


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    expert_iteration: ExpertIterationConfig = field(default_factory=ExpertIterationConfig)
    method: str = _f("grpo", "What trains after the optional warm-up: 'grpo', or 'expert_iteration' (sample, keep the "
                     "completions whose answer verifies, SFT on them; the `expert_iteration` section).")
    output_dir: str = _f("runs/latest", "Run folder.")
    seed: int = _f(42, "Global seed for torch / sampling.")
    overwrite: bool = _f(False, "Replace an existing run in output_dir.")
    resume: bool = _f(False, "Continue the run in output_dir from its last checkpoint.")

    def __post_init__(self):
        _check(self.method in METHODS, "method", self.method, f"use one of {', '.join(METHODS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
