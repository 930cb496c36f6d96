"""Charts of a run's metrics: loss (raw, smoothed, validation), learning rate, grad norm,
throughput; and one loss chart overlaying several runs.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot global state, works
headless) and written atomically (``recipekit.runtime.atomic_io.atomic_save_figure``), so a reader never
sees half a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from recipekit.runtime.atomic_io import atomic_save_figure

Rows = list[dict[str, Any]]


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, TensorBoard style: ``weight`` 0 = raw, 0.99 = very smooth."""
    smoothed, last = [], None
    for value in values:
        last = value if last is None else weight * last + (1 - weight) * value
        smoothed.append(last)
    return smoothed


def series(rows: Rows, key: str, kind: str = "train") -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in rows of one kind."""
    points = [(r["step"], r[key]) for r in rows if r.get("kind") == kind and r.get(key) is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _axes(title: str, ylabel: str):
    figure = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def loss_figure(rows: Rows, title: str, smoothing: float = 0.9) -> Figure:
    figure, axes = _axes(f"{title}: loss", "loss")
    steps, losses = series(rows, "loss")
    if steps:
        marker = "o" if len(steps) == 1 else None  # a line through one point draws nothing
        axes.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, marker=marker, label="train (raw)")
        axes.plot(steps, ema(losses, smoothing), color="tab:blue", linewidth=2, marker=marker,
                  label=f"train (EMA {smoothing})")
    eval_steps, eval_losses = series(rows, "eval_loss", kind="eval")
    if eval_steps:
        axes.plot(eval_steps, eval_losses, color="tab:orange", marker="o", linewidth=2, label="validation")
    axes.legend()
    return figure


def single_metric_figure(rows: Rows, key: str, title: str, ylabel: str, color: str) -> Figure:
    figure, axes = _axes(title, ylabel)
    steps, values = series(rows, key)
    axes.plot(steps, values, color=color, linewidth=2, marker="o" if len(steps) == 1 else "." if len(steps) < 50 else None,
              label=key)
    if key == "learning_rate":
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    axes.legend()
    return figure


def answer_quality_figure(rows: Rows, title: str) -> Figure:
    """Similarity and ROUGE-L of the answers generated at each evaluation (plugins.generation_eval)."""
    figure, axes = _axes(f"{title}: answer quality on validation questions", "score vs reference")
    for key, color in (("eval_similarity", "tab:blue"), ("eval_rougeL", "tab:orange")):
        steps, values = series(rows, key, kind="eval")
        if steps:
            axes.plot(steps, values, color=color, marker="o", linewidth=2, label=key)
    axes.legend()
    return figure


def comparison_figure(runs: dict[str, Rows], smoothing: float = 0.9) -> Figure:
    """Smoothed training loss and validation loss of several runs on one chart."""
    figure, axes = _axes("loss: " + " vs ".join(runs), "loss")
    colors = [f"C{i}" for i in range(10)]
    for (name, rows), color in zip(runs.items(), colors * 10):
        steps, losses = series(rows, "loss")
        if steps:
            axes.plot(steps, ema(losses, smoothing), color=color, linewidth=2, marker="o" if len(steps) == 1 else None,
                      label=f"{name} train (EMA)")
        eval_steps, eval_losses = series(rows, "eval_loss", kind="eval")
        if eval_steps:
            axes.plot(eval_steps, eval_losses, color=color, linestyle="--", marker="o", label=f"{name} validation")
    axes.legend()
    return figure


def render_run_charts(rows: Rows, out_dir: str | Path, title: str, smoothing: float = 0.9) -> list[Path]:
    """Write loss.png, learning_rate.png, grad_norm.png (and throughput.png, answer_quality.png when logged)."""
    out = Path(out_dir)
    written = [atomic_save_figure(loss_figure(rows, title, smoothing), out / "loss.png")]
    charts = [
        ("learning_rate", "learning-rate schedule", "learning rate", "tab:green", "learning_rate.png"),
        ("grad_norm", "gradient norm", "grad norm", "tab:red", "grad_norm.png"),
        ("tokens_per_second", "throughput (non-padding tokens/s)", "tokens / s", "tab:purple", "throughput.png"),
    ]
    for key, what, ylabel, color, name in charts:
        if series(rows, key)[0]:
            written.append(atomic_save_figure(single_metric_figure(rows, key, f"{title}: {what}", ylabel, color), out / name))
    if series(rows, "eval_similarity", kind="eval")[0]:
        written.append(atomic_save_figure(answer_quality_figure(rows, title), out / "answer_quality.png"))
    return written
