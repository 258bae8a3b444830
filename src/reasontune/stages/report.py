"""Reports: `compare` two evaluations (paired bootstrap) and a self-contained HTML page.

Folder kinds, detected by the files present:
  eval   DIR/metrics.json + DIR/completions.jsonl                       (reasontune eval)
  run    DIR/metrics.jsonl and/or DIR/reasontune_config.json           (reasontune train)
  demo   DIR/metrics.json with before/after + DIR/evals/<stage>/...     (reasontune demo)
Charts are matplotlib PNGs (Agg) inlined as base64; nothing is loaded from the network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from reasontune.stages.evaluate import STAGE_ORDER, eval_dirs, is_eval_dir, primary, read_json, read_jsonl, resolve_eval_dir
from reasontune.runs.metrics import paired_bootstrap
from reasontune.stages.report_plots import difficulty_bars, stage_bars, training_charts

logger = logging.getLogger(__name__)

TABLE_KEYS = ["n", "accuracy", "pass_at_k", "maj_at_k", "format_rate", "stop_rate", "mean_length", "length_p50",
              "length_p90", "truncation_rate", "sample_accuracy"]
STAGE_NAMES = {"before": "base", "warmup": "warm-up", "after": "GRPO"}  # the demo's stages, as the headline says them


# ------------------------------------------------------------------------------ compare
def _pairs(recs_a: list[dict], recs_b: list[dict]) -> list[tuple[dict, dict]]:
    """(a, b) greedy records of the same question, in A's order; a repeated question counts once."""
    by_a, by_b = {}, {}
    for recs, by in ((recs_a, by_a), (recs_b, by_b)):
        for r in primary(recs):
            by.setdefault(r.get("question"), r)
    return [(r, by_b[q]) for q, r in by_a.items() if q in by_b]


def _example(ra: dict, rb: dict) -> dict:
    return {"question": ra.get("question"), "answer": ra.get("answer"), "extracted_a": ra.get("extracted"),
            "extracted_b": rb.get("extracted"), "completion_a": ra.get("completion"),
            "completion_b": rb.get("completion")}


def compare(dir_a, dir_b, *, examples: int = 3, resamples: int = 2000, seed: int = 0) -> dict:
    """Metrics side by side, paired bootstrap CI on accuracy(b) - accuracy(a), disagreeing problems."""
    da, db = resolve_eval_dir(dir_a), resolve_eval_dir(dir_b)
    ma, mb = read_json(da / "metrics.json"), read_json(db / "metrics.json")
    pairs = _pairs(read_jsonl(da / "completions.jsonl"), read_jsonl(db / "completions.jsonl"))
    boot = paired_bootstrap([float(a["correct"]) for a, _ in pairs], [float(b["correct"]) for _, b in pairs],
                            resamples=resamples, seed=seed)
    table = []
    for key in TABLE_KEYS:
        va, vb = ma.get(key), mb.get(key)
        if va is None and vb is None:
            continue
        diff = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        table.append({"metric": key, "a": va, "b": vb, "diff": diff})
    only_a = [_example(a, b) for a, b in pairs if a["correct"] and not b["correct"]]
    only_b = [_example(a, b) for a, b in pairs if b["correct"] and not a["correct"]]
    return {"a": str(da), "b": str(db), "table": table, "paired": boot,
            "counts": {"paired": len(pairs), "both_right": sum(a["correct"] and b["correct"] for a, b in pairs),
                       "both_wrong": sum(not a["correct"] and not b["correct"] for a, b in pairs),
                       "only_a_right": len(only_a), "only_b_right": len(only_b)},
            "only_a_right": only_a[:examples], "only_b_right": only_b[:examples]}


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3f}"
    return str(v)


def _md_cell(text, limit: int = 160) -> str:
    s = " ".join(str(text if text is not None else "–").split())
    s = s if len(s) <= limit else s[:limit - 1] + "…"
    return s.replace("|", "\\|")


def compare_markdown(res: dict) -> str:
    p, c = res["paired"], res["counts"]
    lines = [f"# Comparison\n\n- A: `{res['a']}`\n- B: `{res['b']}`\n", "| metric | A | B | B − A |",
             "|---|---:|---:|---:|"]
    for row in res["table"]:
        diff = "–" if row["diff"] is None else f"{row['diff']:+.3f}"
        lines.append(f"| {row['metric']} | {_fmt(row['a'])} | {_fmt(row['b'])} | {diff} |")
    if p["n"]:
        lines.append(f"\nPaired over {p['n']} problems present in both: accuracy A {p['mean_a']:.3f}, "
                     f"B {p['mean_b']:.3f}, difference {p['diff']:+.3f} "
                     f"({p['confidence']:.0%} bootstrap CI [{p['low']:+.3f}, {p['high']:+.3f}], "
                     f"{p['resamples']} resamples, seed {p['seed']}).")
        lines.append(f"Both right {c['both_right']}, both wrong {c['both_wrong']}, only A right "
                     f"{c['only_a_right']}, only B right {c['only_b_right']}.")
    else:
        lines.append("\nNo problem appears in both evaluations: no paired difference.")
    for key, title in (("only_a_right", "A right, B wrong"), ("only_b_right", "B right, A wrong")):
        if res[key]:
            lines += [f"\n## {title}\n", "| question | gold | A | B |", "|---|---|---|---|"]
            lines += [f"| {_md_cell(e['question'])} | {_md_cell(e['answer'], 40)} | {_md_cell(e['extracted_a'], 40)} "
                      f"| {_md_cell(e['extracted_b'], 40)} |" for e in res[key]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ CLI
def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="compare two evaluations (paired bootstrap CI on accuracy)")
    p.add_argument("dir_a", help="eval folder (or a demo/run folder holding one)")
    p.add_argument("dir_b", help="eval folder (or a demo/run folder holding one)")
    p.add_argument("--out", help="also write the Markdown table to this file")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object on the last line")
    p.set_defaults(func=cmd_compare)
    p = subparsers.add_parser("report", help="self-contained HTML report for a run, eval or demo folder")
    p.add_argument("path", help="run, eval or demo folder")
    p.add_argument("--out", help="HTML file (default: PATH/report.html)")
    p.set_defaults(func=cmd_report)


def cmd_compare(args) -> int:
    from reasontune.runs.folder import atomic_write_text

    try:
        res = compare(args.dir_a, args.dir_b)
    except FileNotFoundError as e:
        from reasontune.config import ConfigError

        raise ConfigError(str(e)) from None
    md = compare_markdown(res)
    if args.out:
        atomic_write_text(args.out, md)
    print(json.dumps(res, default=str) if args.json else md)
    return 0


def cmd_report(args) -> int:
    print(f"report: {build_report(args.path, args.out)}")
    return 0


# ------------------------------------------------------------------------------ HTML
CSS = ('body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}'
       'main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}h1{font-size:26px;margin:0 0 4px}'
       'h2{font-size:19px;margin:34px 0 10px;border-bottom:2px solid #dde1e8;padding-bottom:4px}'
       '.sub{color:#5b6475;margin:0 0 18px}'
       'table{border-collapse:collapse;background:#fff;font-size:14px;box-shadow:0 1px 2px #0001}'
       'th,td{padding:5px 12px;border-bottom:1px solid #e6e9ef;text-align:right}'
       'th:first-child,td:first-child{text-align:left}th{background:#eef1f6}'
       '.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(370px,1fr));gap:14px}'
       'figure{margin:0;background:#fff;padding:8px;box-shadow:0 1px 2px #0001;border-radius:6px}'
       'figure img{width:100%;display:block}'
       '.card{background:#fff;border-radius:6px;box-shadow:0 1px 2px #0001;padding:12px 16px;margin:0 0 16px}'
       '.q{font-weight:600;margin-bottom:6px}.gold{color:#5b6475;font-size:13px}'
       '.cols{display:grid;gap:12px;grid-template-columns:repeat(auto-fit,minmax(320px,1fr))}'
       'pre{white-space:pre-wrap;word-break:break-word;font:13px/1.45 ui-monospace,Menlo,Consolas,monospace;background:#fafbfc;border:1px solid #e6e9ef;border-radius:4px;padding:8px;margin:4px 0 0;max-height:360px;overflow:auto}'
       '.reason{background:#eaf2ff}.pre{opacity:.45}.answer{background:#fff1c7;font-weight:600}'
       '.mk{color:#7a4fc4;font-weight:600}'
       '.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;margin-right:4px;color:#fff}'
       '.ok{background:#2e9d5b}.bad{background:#c8443b}.meta{background:#7b8496}.stage{font-weight:600;font-size:13px}'
       '.kv{color:#5b6475;font-size:13px}.head{font-size:18px;margin:0 0 8px}code{font-size:13px}')


def highlight(text: str, fmt: dict) -> str:
    """HTML-escaped completion with the reasoning and answer blocks wrapped in styled spans."""
    import html

    text = text or ""
    rs, re_, ss, se = (fmt.get(k, "") for k in ("reasoning_start", "reasoning_end", "solution_start", "solution_end"))
    spans = []
    if re_ and re_ in text:
        a = text.find(rs) if rs and rs in text else 0
        spans.append((a, text.index(re_) + len(re_), "reason"))
    if ss and ss in text:
        a = text.index(ss)
        b = text.index(se, a) + len(se) if se and se in text[a:] else len(text)
        if not spans or a >= spans[0][1]:
            spans.append((a, b, "answer"))
    out, pos = [], 0

    def esc(s: str) -> str:
        s = html.escape(s)
        for m in (rs, re_, ss, se):
            if m:
                s = s.replace(html.escape(m), f'<span class="mk">{html.escape(m)}</span>')
        return s
    for a, b, cls in sorted(spans):
        pre = (f'<span class="mk pre" title="from the prompt">{html.escape(rs)}</span>'
               if cls == "reason" and a == 0 and rs and not text.startswith(rs) and fmt.get("prefill_reasoning") else "")
        out += [esc(text[pos:a]), f'<span class="{cls}">{pre}{esc(text[a:b])}</span>']
        pos = b
    out.append(esc(text[pos:]))
    return "".join(out)


def _badge(ok: bool, yes: str, no: str) -> str:
    return f'<span class="badge {"ok" if ok else "bad"}">{yes if ok else no}</span>'


def samples_html(recs: dict[str, list[dict]], fmt: dict, n: int = 6) -> str:
    """Cards for up to n problems of the last stage (half right, half wrong), every stage side by side."""
    import html

    last = primary(list(recs.values())[-1])
    right, wrong = [r for r in last if r.get("correct")], [r for r in last if not r.get("correct")]
    chosen = right[: n // 2] + wrong[: n - min(len(right), n // 2)]
    chosen = (chosen + right[n // 2:])[:n]
    by_stage = {s: {r.get("question"): r for r in primary(rs)} for s, rs in recs.items()}
    cards = []
    for r in sorted(chosen, key=lambda r: r.get("index", 0)):
        cols = []
        for stage, lookup in list(by_stage.items())[-3:]:
            x = lookup.get(r.get("question"))
            if x is not None:
                cols.append(f'<div><span class="stage">{html.escape(stage)}</span> '
                            f'{_badge(x.get("correct"), "correct", "wrong")}{_badge(x.get("format_ok"), "format", "no format")}'
                            f'<span class="badge meta">{x.get("num_tokens")} tok{" · cut" if x.get("truncated") else ""}</span>'
                            f'<pre>{highlight(x.get("completion", ""), fmt)}</pre></div>')
        cards.append(f'<div class="card"><div class="q">{html.escape(str(r.get("question")))}</div>'
                     f'<div class="gold">gold answer: <code>{html.escape(str(r.get("answer")))}</code></div>'
                     f'<div class="cols">{"".join(cols)}</div></div>')
    return "".join(cards)


def _table(stages: dict[str, dict]) -> str:
    keys = [k for k in TABLE_KEYS if any(m.get(k) is not None for m in stages.values())]
    head = "".join(f"<th>{s}</th>" for s in stages)
    body = "".join(f"<tr><td>{k.replace('_at_k', '@k')}</td>" + "".join(f"<td>{_fmt(m.get(k))}</td>" for m in stages.values()) + "</tr>"
                   for k in keys)
    return f"<table><tr><th>metric</th>{head}</tr>{body}</table>"


def _collect(p: Path) -> tuple[dict, dict, list, dict, dict]:
    """(stage metrics, stage records, training log rows, demo summary, format markers)."""
    from reasontune.config import FormatConfig

    evs = eval_dirs(p)
    stages = {s: read_json(d / "metrics.json") for s, d in evs.items()}
    recs = {s: read_jsonl(d / "completions.jsonl") for s, d in evs.items()}
    demo = read_json(p / "metrics.json") if (p / "metrics.json").is_file() and not is_eval_dir(p) else {}
    for s in STAGE_ORDER:
        if isinstance(demo.get(s), dict) and "accuracy" in demo[s] and s not in stages:
            stages[s] = demo[s]
    rows = read_jsonl(p / "metrics.jsonl") or read_jsonl(p / "train" / "metrics.jsonl")
    cfg = read_json(p / "reasontune_config.json") if (p / "reasontune_config.json").is_file() else {}
    fmt = {**vars(FormatConfig()), **cfg.get("format", {})}
    fmt.update(next((m["format"] for m in stages.values() if isinstance(m.get("format"), dict)), {}))
    return stages, recs, rows, {**demo, "config": cfg}, fmt


def headline(stages: dict[str, dict], accs: list[tuple[str, float]]) -> str:
    """Every stage in order (base -> warm-up -> GRPO), each step's gain, and whether the model stops on its own."""
    import html

    chain = " → ".join(f"{html.escape(STAGE_NAMES.get(s, s))} {a:.3f}" for s, a in accs)
    gains = ", ".join(f"{html.escape(STAGE_NAMES.get(b, b))} over {html.escape(STAGE_NAMES.get(a, a))} "
                      f"<b>{y - x:+.3f}</b>" for (a, x), (b, y) in zip(accs, accs[1:]))
    stops = [(s, stages[s].get("stop_rate")) for s, _ in accs if stages[s].get("stop_rate") is not None]
    stop = ("; stops on its own " + " → ".join(f"{v:.2f}" for _, v in stops)) if stops else ""
    return f"accuracy {chain} ({gains}){stop}"


def labels_sentence(p: Path, demo: dict) -> str:
    """'learned from N worked solutions and M answers': a demo's metrics.json, else the run's status.json."""
    from reasontune.runs.labels import sentence

    labels = demo.get("labels")
    return sentence(run_status(p).get("labels") if labels is None else labels)


def run_status(p: Path) -> dict:
    """RUN/status.json (a demo's: OUT/train/status.json), or {} when the folder has none."""
    return next((read_json(f) for f in (p / "status.json", p / "train" / "status.json") if f.is_file()), {})


def watched_lines(st: dict, stage: str = "grpo") -> list[str]:
    """What the watcher checked in `stage`, from RUN/status.json: the conditions it evaluated (and which of them
    fired), and those it could not (why). A condition that did not run is never reported as 'no warning'."""
    cov = (st.get("watched") or {}).get(stage)
    if cov is None:
        return [f"Which conditions the watcher (watch.py) could check during {stage} was not recorded (status.json "
                "has no `watched`): no claim is made for the conditions that did not warn."]
    fired = {w.get("condition") for w in st.get("warnings") or [] if w.get("stage", stage) == stage}
    said = [f"fired {', '.join(c for c in cov['checked'] if c in fired)}"] if fired & set(cov["checked"]) else []
    quiet = [c for c in cov["checked"] if c not in fired]
    said += [f"no warning from {', '.join(quiet)}"] if quiet else []
    out = [f"The watcher (watch.py) checked {len(cov['checked'])} conditions over {cov['logged_steps']} logged "
           f"{stage} steps (window {cov['window']}): {'; '.join(said) or 'none'}."]
    if cov.get("not_checked"):
        out.append("Not checked: " + "; ".join(f"{c} ({why})" for c, why in cov["not_checked"].items()) + ".")
    return out


def warnings_html(p: Path) -> str:
    """The watcher's warnings (watch.py) from RUN/status.json (a demo's: OUT/train/), and what it checked, as the
    report's first section."""
    import html

    st = run_status(p)
    items = "".join(f"<li><b>{html.escape(str(w.get('condition')))}</b> ({html.escape(str(w.get('stage')))} step "
                    f"{w.get('step')}): {html.escape(str(w.get('message')))}</li>" for w in st.get("warnings") or [])
    stop = (f"<p class='head'>stopped: {html.escape(str(st.get('reason')))}</p>"
            if st.get("status") == "stopped" and st.get("reason") else "")
    checked = "".join(f"<p class='kv'>{html.escape(line)}</p>" for stage in (st.get("watched") or {})
                      for line in watched_lines(st, stage))
    if not (items or checked):
        return ""
    return f"<h2>Warnings while training</h2>{stop}" + (f"<ul class='card'>{items}</ul>" if items else "") + checked


def build_report(path, out=None) -> Path:
    """Write one self-contained HTML page for a run / eval / demo folder; returns the file's path."""
    import html
    import time

    p = Path(path)
    stages, recs, rows, demo, fmt = _collect(p)
    if not stages and not rows:
        raise FileNotFoundError(f"{str(p)!r} holds no metrics.jsonl, metrics.json or evaluation to report on")
    kind = "demo" if len(stages) > 1 or "wall_seconds" in demo else ("training run" if rows else "evaluation")
    cfg = demo.get("config") or {}
    facts = {"model": (cfg.get("model") or {}).get("name") or next((m.get("model") for m in stages.values()
                                                                   if m.get("model")), None),
             "dataset": (cfg.get("data") or {}).get("dataset") or next((m.get("dataset") for m in stages.values()
                                                                         if m.get("dataset")), None),
             "logged steps": len(rows) or None, "wall time (s)": demo.get("wall_seconds")}
    sub = " · ".join(f"{k}: {html.escape(str(v if not isinstance(v, float) else round(v, 1)))}"
                     for k, v in facts.items() if v is not None)
    parts = [f"<h1>reasontune report: {html.escape(p.resolve().name)}</h1><p class='sub'>{kind} · {sub}</p>",
             warnings_html(p)]
    accs = [(s, m["accuracy"]) for s, m in stages.items() if isinstance(m.get("accuracy"), (int, float))]
    if len(accs) > 1:
        parts.append(f"<p class='head'>{headline(stages, accs)}</p>")
    if learned := labels_sentence(p, demo):
        parts.append(f"<p class='head'>The model {html.escape(learned)}.</p>")
    if stages:
        parts.append("<h2>Evaluation</h2>" + _table(stages))
        figs = [stage_bars(stages)] + [u for u in [difficulty_bars(stages)] if u]
        parts.append('<div class="grid" style="margin-top:14px">' + "".join(f'<figure><img src="{u}"></figure>'
                                                                             for u in figs) + "</div>")
    if rows:
        parts.append("<h2>Training curves</h2><div class='grid'>" + "".join(
            f'<figure><img alt="{html.escape(t)}" src="{u}"></figure>' for t, u in training_charts(rows)) + "</div>")
    if any(recs.values()):
        recs = {s: r for s, r in recs.items() if r}
        parts.append("<h2>Samples</h2>" + samples_html(recs, fmt))
    for key, title in (("timings", "Timings (s)"), ("grpo", "GRPO summary"), ("settings", "Settings")):
        if demo.get(key):
            parts.append(f"<h2>{title}</h2><pre>{html.escape(json.dumps(demo[key], indent=2))}</pre>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>reasontune report: "
            f"{html.escape(p.resolve().name)}</title><style>{CSS}</style></head><body><main>{''.join(parts)}"
            f"<p class='kv'>generated {time.strftime('%Y-%m-%d %H:%M')}</p></main></body></html>")
    from reasontune.runs.folder import atomic_write_text

    target = Path(out) if out else p / "report.html"
    atomic_write_text(target, page)
    return target
