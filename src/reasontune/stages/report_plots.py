"""The report's charts: training curves from RUN/metrics.jsonl and bars per stage and level, as PNG data URIs.

Apart from report.py's tables and HTML, so the report reads as text and the charts as charts. matplotlib's Agg
canvas only: no pyplot state, no GUI backend.
"""

from __future__ import annotations


def _png(fig) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float = 5.2, h: float = 3.0):
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state, no GUI backend

    fig = Figure(figsize=(w, h))
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


CURVE_PANELS = [("Reward (mean ± std)", ["reward"]), ("Reward components", ["rewards/"]),
                ("Zero-variance group fraction", ["frac_reward_zero_std"]),
                ("Completion length (tokens)", ["completions/mean_length", "completions/min_length",
                                                "completions/max_length"]),
                ("KL", ["kl"]), ("Entropy", ["entropy"]), ("Loss", ["loss"]), ("Learning rate", ["learning_rate"]),
                ("Clip ratio", ["clip_ratio/"]), ("Step time (s)", ["step_time"]),
                ("Step time by part (s)", ["time/"]), ("Rows trained and skipped", ["rows/"])]


def _series(rows: list[dict], key: str) -> tuple[list, list]:
    pts = [(r.get("step", i), r[key]) for i, r in enumerate(rows)
           if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [p[1] for p in pts]


def training_charts(rows: list[dict]) -> list[tuple[str, str]]:
    """(title, PNG data URI) per panel, for whichever numeric keys the log holds."""
    numeric = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    used, out = {"step", "epoch", "reward_std"}, []
    for title, pats in CURVE_PANELS + [("Other: " + k, [k]) for k in numeric]:
        keys = [k for k in numeric if any(k == p or (p.endswith("/") and k.startswith(p)) for p in pats)]
        keys = [k for k in keys if k not in used and not (title == "Reward components" and k.endswith("/std"))]
        if not keys or (title.startswith("Other") and len(out) >= 16):
            continue
        used.update(keys + [k[:-len("/mean")] + "/std" for k in keys if k.endswith("/mean")])
        fig, ax = _figure()
        for k in keys:
            x, y = _series(rows, k)
            ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, lw=1.6, label=k.replace("rewards/", ""))
            if k == "reward" and any("reward_std" in r for r in rows):
                xs, sd = _series(rows, "reward_std")
                if len(xs) == len(x):
                    ax.fill_between(x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)], alpha=0.2)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        if title.startswith("Zero-variance"):
            ax.set_ylim(-0.02, 1.02)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        out.append((title, _png(fig)))
    return out


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _bars(ax, xs: list[float], vals: list, w: float, **kw) -> None:
    """Bars for the measured values only: a missing metric is no bar at 0.0 but a 'not measured' note."""
    drawn = [(x, _number(v)) for x, v in zip(xs, vals) if _number(v) is not None]
    if drawn:
        bars = ax.bar([x for x, _ in drawn], [v for _, v in drawn], w, **kw)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    for x, v in zip(xs, vals):
        if _number(v) is None:
            ax.text(x, 0.02, "not measured", rotation=90, ha="center", va="bottom", fontsize=7, color="#777")


def stage_bars(stages: dict[str, dict]) -> str:
    fig, ax = _figure(5.6, 3.2)
    names, w = list(stages), 0.38
    for j, (key, color) in enumerate((("accuracy", "#3b7dd8"), ("format_rate", "#e0a526"))):
        _bars(ax, [i + (j - 0.5) * w for i in range(len(names))], [stages[s].get(key) for s in names], w,
              label=key.replace("_", " "), color=color)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.12)
    ax.set_title("Accuracy and format rate" + (" by stage" if len(names) > 1 else ""), fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def difficulty_bars(stages: dict[str, dict]) -> str | None:
    with_levels = {s: m["by_difficulty"] for s, m in stages.items() if m.get("by_difficulty")}
    if not with_levels:
        return None
    levels = sorted({lv for d in with_levels.values() for lv in d}, key=lambda v: (len(v), v))
    fig, ax = _figure(5.6, 3.2)
    w = 0.8 / len(with_levels)
    for j, (stage, d) in enumerate(with_levels.items()):
        vals = [(d.get(lv) or {}).get("accuracy") for lv in levels]
        _bars(ax, [i + (j - (len(with_levels) - 1) / 2) * w for i in range(len(levels))], vals, w, label=stage,
              color=f"C{j}")
    ax.set_xticks(range(len(levels)), [f"level {lv}" for lv in levels])
    ax.set_ylim(0, 1.12)
    ax.set_title("Accuracy by difficulty", fontsize=11)
    ax.legend(fontsize=8)
    return _png(fig)
