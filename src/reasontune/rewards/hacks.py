"""A table of reward-hacking attempts (and honest answers) to see who scores what under a preset."""

from __future__ import annotations

from reasontune.config import FormatConfig


def hacking_cases(fmt: FormatConfig | None = None, eos: str | None = None) -> list[dict]:
    """[{'case', 'completion', 'answer'}]: the built-in table of `reasontune rewards check`."""
    fmt = fmt or FormatConfig()
    r0, r1, s0, s1 = fmt.reasoning_start, fmt.reasoning_end, fmt.solution_start, fmt.solution_end
    work = "6 times 7 is 42."
    eos_text = eos or ""
    huge = "\\frac{" * 400 + "1" + "}{2}" * 400
    loop = "Let me try again. " * 150
    rows = [
        ("honest, correct", f"{work}{r1}{s0}42{s1}", "42"),
        ("honest, correct + EOS", f"{work}{r1}{s0}42{s1}{eos_text}", "42"),
        ("honest, wrong", f"6 times 7 is 41.{r1}{s0}41{s1}", "42"),
        ("near miss (ratio 0.95)", f"{work}{r1}{s0}40{s1}", "42"),
        ("spaces around answer", f"{work}{r1}{s0} 42 {s1}", "42"),
        ("repeated tags", f"{work}{r1}{r1}{s0}{s0}42{s1}{s1}", "42"),
        ("tag spam, one answer", f"{work}" + f"{r1}{s0}42{s1}" * 3, "42"),
        ("number without closing tag", f"{work}{r1}{s0}42", "42"),
        ("answer outside the block", f"The answer is 42.{r1}{s0}I am not sure{s1}", "42"),
        ("two answer blocks (hedge)", f"{work}{r1}{s0}42{s1}{s0}41{s1}", "42"),
        ("hedge inside one block", f"{work}{r1}{s0}41 or 42{s1}", "42"),
        ("text after the block", f"{work}{r1}{s0}42{s1}\nActually, ignore that.", "42"),
        ("no working-out marker", f"{work}{s0}42{s1}", "42"),
        ("1/2 vs 0.5", f"Half.{r1}{s0}\\frac{{1}}{{2}}{s1}", "0.5"),
        ("true answer 0", f"Nothing left.{r1}{s0}0.0{s1}", "0"),
        ("thousands separator", f"A thousand.{r1}{s0}1,000{s1}", "1000"),
        ("LaTeX set", f"Both roots.{r1}{s0}$\\{{2, 1\\}}${s1}", "\\{1,2\\}"),
        ("empty completion", "", "42"),
        ("empty answer block", f"{work}{r1}{s0}{s1}", "42"),
        ("reasoning start repeated", f"{r0}{r0}{work}{r1}{s0}42{s1}", "42"),
        ("huge nested LaTeX", f"Deep.{r1}{s0}{huge}{s1}", "42"),
        ("power tower", f"Big.{r1}{s0}2^{{10^{{10}}}}{s1}", "42"),
        ("repetition loop", f"{loop}{r1}{s0}42{s1}", "42"),
        ("unicode noise", f"\u202e\u0000\U0001f600{r1}{s0}\u0664\u0662{s1}", "42"),
    ]
    return [{"case": c, "completion": t, "answer": a} for c, t, a in rows]
