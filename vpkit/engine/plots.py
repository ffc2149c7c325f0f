"""PNG plots of an evaluation: each metric against the horizon step, best-of-N and mean-of-N with 95% CI bands.

Drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never changes the caller's backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from vpkit.engine.evaluator import EvalResult

CURVES = (("best", "best of {n}", "tab:blue"), ("mean", "mean of {n}", "tab:orange"))


def plot_metric(result: EvalResult, metric: str, path: Path | str) -> Path:
    """Write `metric` per predicted frame (x: frame index after the context) to the PNG `path`."""
    protocol = result.protocol
    n_context, drawn = protocol["n_context"], protocol["num_samples_drawn"]
    curves = result.per_frame[metric]
    steps = [n_context + 1 + k for k in range(len(curves["best"]["mean"]))]

    figure = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for aggregate, label, colour in CURVES:
        if aggregate == "mean" and drawn == 1:
            continue  # one sample: mean of N is the best curve again
        mean, ci95 = curves[aggregate]["mean"], curves[aggregate]["ci95"]
        axes.plot(steps, mean, color=colour, marker="o", markersize=3, label=label.format(n=drawn))
        low = [m - c for m, c in zip(mean, ci95, strict=True)]
        high = [m + c for m, c in zip(mean, ci95, strict=True)]
        axes.fill_between(steps, low, high, color=colour, alpha=0.2, linewidth=0)
    higher = result.metrics.get(metric, {}).get("higher_is_better")
    direction = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
    axes.set_xlabel(f"predicted frame (after {n_context} context frames)")
    axes.set_ylabel(metric.upper() + direction)
    axes.set_title(f"{metric.upper()} per frame, {protocol['num_videos']} videos, 95% CI")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_all(result: EvalResult, out_dir: Path | str) -> dict[str, Path]:
    """One `<metric>.png` per metric in `out_dir`."""
    return {metric: plot_metric(result, metric, Path(out_dir) / f"{metric}.png") for metric in result.per_frame}
