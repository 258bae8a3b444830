"""`reasontune ask`: the base model's and the tuned model's answers to the same question, side by side.

    reasontune ask --run runs/demo "Tom has 12 apples and buys 30 more. How many?" --answer 42
    reasontune ask --adapter runs/demo/warmup/adapter --file questions.txt
    reasontune ask --run runs/demo --engine vllm "..."    # vLLM generates (engines/vllm.py)

Both answer the training prompt (the folder's system prompt and format), greedily, one base model
in memory: the tuned answer is the same weights with the adapter switched on (`--engine vllm`: one
vLLM engine, the adapter's LoRARequest off for the base answer and on for the tuned one). On a
terminal the two columns stream with `rich` (vLLM's answers appear when finished); through a pipe
(or --plain) the finished columns are printed as text.
With a reference answer (`--answer`, or `question<TAB>answer` lines in --file) each answer shows
its extracted value, whether it is right, and the run's reward scores.
A code run (its rewards run tests: code_tests) asks with the code system prompt (format.code_prompt) and
shows the program each model gives (rewards/code.py's extract_code); a code answer is checked by tests,
which a typed question does not have, so --answer is refused there: `reasontune eval --run RUN` runs them.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from reasontune.config import ConfigError


@dataclass
class Answer:
    text: str = ""
    extracted: str | None = None
    correct: bool | None = None
    rewards: dict = field(default_factory=dict)
    code: bool = False  # a code run's answer: `extracted` is the program


def read_questions(args) -> list[tuple[str, str | None]]:
    """(question, reference answer or None) from the positional questions or --file."""
    items = [(q, args.answer) for q in args.questions]
    if args.file:
        p = Path(args.file)
        if not p.is_file():
            raise ConfigError(f"--file {args.file!r}: no such file; give a text file with one question per line")
        for line in p.read_text().splitlines():
            if line.strip():
                q, _, a = line.partition("\t")
                items.append((q.strip(), a.strip() or None))
    if not items:
        raise ConfigError("ask: no question; pass one (reasontune ask --run RUN \"question\") or --file FILE")
    if args.answer is not None and len(args.questions) != 1:
        raise ConfigError("--answer goes with exactly one question; in --file write question<TAB>answer lines")
    return items


class _Stream:
    """A transformers streamer that hands each finished piece of text to `on_text`."""

    def __init__(self, tokenizer, prompt_len: int, on_text):
        self.tok, self.skip, self.on_text, self.ids = tokenizer, prompt_len, on_text, []

    def put(self, value):
        ids = value.reshape(-1).tolist()
        if self.skip:  # the first call carries the prompt
            ids, self.skip = ids[self.skip:], 0
        self.ids += ids
        self.on_text(self.tok.decode(self.ids, skip_special_tokens=True))

    def end(self):
        pass


def answer(model, tok, prompt: str, cfg, max_new: int, on_text, tuned: bool):
    """Greedy Generation of the base (adapter off) or tuned model, ended by the run's StopRule as eval ends
    it; text streamed to on_text as it grows."""
    import contextlib

    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from reasontune.engines.generation import _eos_ids, _StopCheck, apply_stop_rule, completion_budgets, to_generation
    from reasontune.models.prompting import stop_rule

    rule = stop_rule(cfg)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    n = ids["input_ids"].shape[1]
    (max_new,) = completion_budgets([n], max_new, cfg.model.max_seq_length)  # eval's cap, and vLLM's
    if not max_new:
        return to_generation(tok, [], "limit")
    check = _StopCheck(tok, rule)

    class _Rule(StoppingCriteria):  # the StopRule inside HF generate (EOS is HF's own stop)
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor([check(i, row[n:].tolist()) for i, row in enumerate(input_ids)],
                                dtype=torch.bool, device=input_ids.device)

    off = contextlib.nullcontext() if tuned or not hasattr(model, "disable_adapter") else model.disable_adapter()
    stream = _Stream(tok, n, on_text)
    with off, torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new, do_sample=False, streamer=stream,
                             stopping_criteria=StoppingCriteriaList([_Rule()]), pad_token_id=tok.pad_token_id)
    return apply_stop_rule(tok, out[0, n:].tolist(), _eos_ids(model, tok), rule, max_new)


def score(g, gold: str | None, cfg, funcs, question: str, prompt: str, row: dict | None = None) -> Answer:
    """Grade and score a Generation as eval does (scoring.score: the arguments GRPO's rewards get)."""
    from reasontune.rewards import extract_answer, grade, is_code_run, rg_columns
    from reasontune.rewards.scoring import score as score_rows

    text = g.text
    if is_code_run(cfg):
        from reasontune.rewards.code import extract_code

        return Answer(text, extract_code(text, cfg.format), code=True)
    if gold is None:
        return Answer(text, extract_answer(text, cfg.format))
    row = {"question": question, "answer": gold, **(row or {})}
    pred, right = grade(text, str(gold), cfg.format, **rg_columns(row))
    rewards = score_rows(funcs, [row], [prompt], [text], [g.token_ids])[0] if funcs else {}
    return Answer(text, pred, right, rewards)


def summary(a: Answer) -> str:
    if a.code:
        lines = len(a.extracted.splitlines()) if a.extracted else 0
        return f"code: {lines} lines" if a.extracted else "code: (none: no answer block, fence or def at the start)"
    line = f"answer: {a.extracted if a.extracted is not None else '(none)'}"
    if a.correct is not None:
        line += "  right" if a.correct else "  wrong"
    if a.rewards:
        line += "  rewards: " + ", ".join(f"{k} {'-' if v is None else f'{v:g}'}" for k, v in a.rewards.items())
    return line


def plain_columns(question: str, left: Answer, right: Answer, width: int) -> str:
    """The two answers as text columns (for pipes and logs)."""
    col = max(20, (width - 3) // 2)

    def lines(a: Answer) -> list[str]:
        out = []
        for para in (a.text.strip().splitlines() or [""]) + ["", summary(a)]:
            out += textwrap.wrap(para, col) or [""]
        return out

    head = [f"Q: {question}", f"{'base model':<{col}} | tuned model", f"{'-' * col}-+-{'-' * col}"]
    a, b = lines(left), lines(right)
    rows = [f"{x:<{col}} | {y}" for x, y in zip(a + [""] * (len(b) - len(a)), b + [""] * (len(a) - len(b)))]
    return "\n".join(head + rows) + "\n"


def _rich_table(question: str, texts: dict, sums: dict):
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"Q: {question}", title_justify="left", expand=True, show_lines=True)
    t.add_column("base model", ratio=1)
    t.add_column("tuned model", ratio=1)
    t.add_row(Text(texts["base"]), Text(texts["tuned"]))  # Text: model output is never read as markup
    if sums["base"] or sums["tuned"]:
        t.add_row(Text(sums["base"], style="dim"), Text(sums["tuned"], style="dim"))
    return t


def vllm_answer(engine, prompt: str, cfg, max_new: int, on_text, tuned: bool):
    """ask's greedy answer from a VLLMEngine: the adapter's LoRARequest on (tuned) or off (base), the run's
    StopRule applied as eval applies it. Not streamed: the finished text goes to on_text."""
    from reasontune.models.prompting import stop_rule

    g = engine.generate([prompt], max_new_tokens=max_new, temperature=0.0, stop=stop_rule(cfg),
                        use_adapter=tuned, max_length=cfg.model.max_seq_length)[0][0]
    on_text(g.text)
    return g


def _ask_one(generate, tok, cfg, funcs, question, gold, console) -> dict[str, Answer]:
    """Both answers to one question, streamed side by side on a terminal, printed as columns otherwise.
    generate(prompt, on_text, tuned) -> Generation: `answer` (our model) or `vllm_answer` (vLLM)."""
    from reasontune.data import chat_messages
    from reasontune.models.prompting import render_prompt
    from reasontune.rewards import is_code_run

    prompt = render_prompt(tok, chat_messages(question, cfg.format, code=is_code_run(cfg)), cfg.format)
    texts, sums, got = {"base": "", "tuned": ""}, {"base": "", "tuned": ""}, {}
    live = None
    if console is not None:
        from rich.live import Live

        live = Live(_rich_table(question, texts, sums), console=console, refresh_per_second=8)
        live.start()
    try:
        for kind in ("base", "tuned"):
            def on_text(text, kind=kind):
                texts[kind] = text
                if live is not None:
                    live.update(_rich_table(question, texts, sums))

            g = generate(prompt, on_text, kind == "tuned")
            texts[kind] = g.text
            got[kind] = score(g, gold, cfg, funcs, question, prompt)
            sums[kind] = summary(got[kind])
            if live is not None:
                live.update(_rich_table(question, texts, sums))
    finally:
        if live is not None:
            live.stop()
    if console is None:
        sys.stdout.write(plain_columns(question, got["base"], got["tuned"], shutil.get_terminal_size((100, 20))[0]))
        sys.stdout.flush()
    return got


def cmd_ask(args) -> int:
    from reasontune.engines import open_engine
    from reasontune.stages.evaluate import config_for_eval, max_new_tokens_for
    from reasontune.rewards import is_code_run, run_reward_funcs

    if not (args.run or args.adapter):
        raise ConfigError("ask: pass --run RUN or --adapter DIR (the tuned model to compare with its base)")
    items = read_questions(args)
    cfg, adapter = config_for_eval(args)  # an unknown --engine is refused here (eval.engine's check)
    if is_code_run(cfg) and any(g is not None for _, g in items):
        raise ConfigError("ask: this run scores code (rewards.names has code_tests): its answers are checked by "
                          "running tests, not against a reference answer; drop --answer (and the TAB answers of "
                          "--file), and measure with `reasontune eval --run RUN` on a code set")
    max_new = max_new_tokens_for(cfg)  # --max-new-tokens (eval.max_new_tokens), else the run's GRPO budget
    # engines.open_engine picks (and logs) the engine before any model loads: vllm asked for and missing is refused
    engine = open_engine(cfg, adapter=adapter)
    tok = engine.tokenizer
    if engine.name == "vllm":
        def generate(prompt, on_text, tuned):
            return vllm_answer(engine, prompt, cfg, max_new, on_text, tuned)
    else:  # our decode streams token by token, the adapter switched off for the base answer
        model = engine.model.eval()

        def generate(prompt, on_text, tuned):
            return answer(model, tok, prompt, cfg, max_new, on_text, tuned)
    funcs = run_reward_funcs(cfg, tok.eos_token, max_new)[0] if any(g is not None for _, g in items) else []
    console = None
    if not args.plain and sys.stdout.isatty():
        try:
            from rich.console import Console

            console = Console()
        except ImportError:  # rich is a dependency; a stripped install still gets the plain columns
            console = None
    try:
        for question, gold in items:
            _ask_one(generate, tok, cfg, funcs, question, gold, console)
    finally:
        engine.close()
    return 0


def register(subparsers) -> None:
    from reasontune.stages.evaluate import add_source_args

    p = subparsers.add_parser("ask", help="base vs tuned answers to your questions, side by side")
    p.add_argument("questions", nargs="*", help="question(s) to ask both models")
    add_source_args(p)
    p.add_argument("--file", help="questions, one per line; 'question<TAB>answer' adds the reference answer")
    p.add_argument("--answer", help="reference answer for the one question: shows right/wrong and reward scores")
    p.add_argument("--plain", action="store_true", help="text columns when done, no live view (default in pipes)")
    p.set_defaults(func=cmd_ask)
