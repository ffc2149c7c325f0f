"""PNG plots of eval cards: each frame metric against the horizon step with 95% CI bands, for one run (best-of-N and
mean-of-N) or several runs on one plot (best-of-N per run).

They read the card (`report.json` as a dict), so a run plots the same whether it was just evaluated or loaded later.
Drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never changes the caller's backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CURVES = (("best", "best of {n}", "tab:blue"), ("mean", "mean of {n}", "tab:orange"))


def _steps(card: Mapping[str, Any], metric: str) -> list[int]:
    return [card["n_context"] + 1 + k for k in range(len(card["per_frame"][metric]["best"]["mean"]))]


def _band(axes: Axes, steps: list[int], curve: Mapping[str, list[float]], colour: str, label: str) -> None:
    mean, ci95 = curve["mean"], curve["ci95"]
    axes.plot(steps, mean, color=colour, marker="o", markersize=3, label=label)
    low = [m - c for m, c in zip(mean, ci95, strict=True)]
    high = [m + c for m, c in zip(mean, ci95, strict=True)]
    axes.fill_between(steps, low, high, color=colour, alpha=0.2, linewidth=0)


def _finish(figure: Figure, axes: Axes, card: Mapping[str, Any], metric: str, title: str, path: Path) -> Path:
    higher = card["metrics"].get(metric, {}).get("higher_is_better")
    direction = "" if higher is None else (" (higher is better)" if higher else " (lower is better)")
    axes.set_xlabel(f"predicted frame (after {card['n_context']} context frames)")
    axes.set_ylabel(metric.upper() + direction)
    axes.set_title(title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def plot_metric(card: Mapping[str, Any], metric: str, path: Path | str) -> Path:
    """`metric` per predicted frame of one run, best-of-N and mean-of-N with 95% CI bands, to the PNG `path`."""
    drawn = card["num_samples_drawn"]
    figure, axes = _figure()
    for aggregate, label, colour in CURVES:
        if aggregate == "mean" and drawn == 1:
            continue  # one sample: mean of N is the best curve again
        _band(axes, _steps(card, metric), card["per_frame"][metric][aggregate], colour, label.format(n=drawn))
    title = f"{metric.upper()} per frame, {card['num_videos']} videos, 95% CI"
    return _finish(figure, axes, card, metric, title, Path(path))


def plot_all(card: Mapping[str, Any], out_dir: Path | str) -> dict[str, Path]:
    """One `<metric>.png` per frame metric of the card in `out_dir`."""
    return {metric: plot_metric(card, metric, Path(out_dir) / f"{metric}.png") for metric in card["per_frame"]}


def plot_runs(runs: Sequence[tuple[str, Mapping[str, Any]]], out_dir: Path | str) -> dict[str, Path]:
    """Several runs `(label, card)` on one plot per frame metric (`compare_<metric>.png`): best-of-N per run with
    its 95% CI band. A metric is plotted when at least one run has it."""
    metrics = list(dict.fromkeys(m for _, card in runs for m in card.get("per_frame", {})))
    colours = [f"C{i}" for i in range(10)]
    paths = {}
    for metric in metrics:
        figure, axes = _figure()
        with_metric = [(label, card) for label, card in runs if metric in card.get("per_frame", {})]
        for i, (label, card) in enumerate(with_metric):
            curve = card["per_frame"][metric]["best"]
            _band(axes, _steps(card, metric), curve, colours[i % 10],
                  f"{label} (best of {card['num_samples_drawn']})")
        title = f"{metric.upper()} per frame, best of N, 95% CI"
        paths[metric] = _finish(figure, axes, with_metric[0][1], metric, title,
                                Path(out_dir) / f"compare_{metric}.png")
    return paths
