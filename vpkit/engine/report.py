"""Reading eval cards (`report.json`): validation, the summary table of one run, and runs side by side.

A card says which profile, protocol and metric settings its numbers come from; `compare` lays several cards out
column by column and says which of those choices differ, since numbers under different choices are not comparable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from vpkit.core.errors import VpkitError

CURRENT_FORMAT = "vpkit-eval-card/2"
OLDER_FORMATS = ("vpkit-eval-card/1",)
AGGREGATES = ("best", "mean", "worst")
# Protocol fields whose difference makes numbers incomparable, then those merely worth seeing.
PROTOCOL_FIELDS = ("dataset", "profile", "n_context", "horizon", "num_samples_drawn", "num_videos", "selection",
                   "batchnorm_at_sampling")
INFO_FIELDS = ("seed", "backend", "vpkit", "torch")


@dataclass
class Report:
    """An eval card, the label it goes by in tables and plots, and what reading it found."""

    data: dict[str, Any]
    label: str
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any], label: str | None = None, path: Path | None = None) -> Report:
        fmt = data.get("format")
        name = str(path) if path is not None else "the report"
        if not isinstance(fmt, str) or not fmt.startswith("vpkit-eval-card/"):
            raise VpkitError(f"{name} is not a vpkit eval card (no 'format': 'vpkit-eval-card/N'); pass the "
                             "report.json that vpkit eval wrote.")
        warnings = []
        if fmt in OLDER_FORMATS:
            warnings.append(f"{name} was written by an older vpkit ({fmt}): it records no metric profile or FVD; "
                            "its numbers follow the srvp conventions of that version.")
        elif fmt != CURRENT_FORMAT:
            raise VpkitError(f"{name} is a {fmt} card, written by a newer vpkit than this one (reads "
                             f"{CURRENT_FORMAT}); upgrade vpkit to read it.")
        for key in ("summary", "metrics"):
            if not isinstance(data.get(key), dict):
                raise VpkitError(f"{name} has no '{key}' section; it is damaged or not an eval card.")
        return cls(data, label or default_label(data, path), path, warnings)

    @property
    def profile(self) -> dict[str, Any]:
        return self.data.get("profile") or {"name": "srvp (card/1)", "spread": "ci95"}

    @property
    def spread(self) -> str | None:
        return self.profile.get("spread", "ci95")

    @property
    def frame_metrics(self) -> list[str]:
        return list(self.data["summary"])

    @property
    def set_metrics(self) -> dict[str, dict[str, Any]]:
        return self.data.get("set_metrics") or {}

    def higher_is_better(self, metric: str) -> bool:
        return bool(self.data["metrics"].get(metric, {}).get("higher_is_better", True))

    def protocol(self, key: str) -> Any:
        data = self.data
        if key == "dataset":
            dataset = data.get("dataset") or {}
            return f"{dataset.get('name')} {dataset.get('split', '')}".strip() if dataset else None
        if key == "profile":
            return self.profile.get("name")
        if key == "backend":
            return (data.get("checkpoint") or {}).get("backend")
        if key in ("vpkit", "torch"):
            return (data.get("versions") or {}).get(key)
        return data.get(key)


def default_label(data: dict[str, Any], path: Path | None) -> str:
    """`RUN/NAME` for a checkpoint `RUN/checkpoints/NAME`, else the report's folder."""
    checkpoint = Path(str((data.get("checkpoint") or {}).get("path") or ""))
    if checkpoint.parent.name == "checkpoints":
        return f"{checkpoint.parent.parent.name}/{checkpoint.name}"
    if checkpoint.name:
        return checkpoint.name
    return path.parent.name if path is not None else "run"


def load_report(path: Path | str) -> Report:
    path = Path(path)
    if not path.is_file():
        raise VpkitError(f"{path} does not exist; pass the report.json written by vpkit eval.")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VpkitError(f"{path} is not valid JSON ({exc}); pass the report.json written by vpkit eval.") from None
    if not isinstance(data, dict):
        raise VpkitError(f"{path} is not a vpkit eval card; pass the report.json written by vpkit eval.")
    return Report.from_dict(data, path=path)


def _digits(metric: str) -> int:
    return 2 if metric in ("psnr", "fvd") else 4


def format_value(row: dict[str, Any], metric: str, spread: str | None) -> str:
    digits = _digits(metric)
    text = f"{row['mean']:.{digits}f}"
    if spread == "ci95" and row.get("ci95") is not None:
        text += f" ± {row['ci95']:.{digits}f}"
    elif spread == "std" and row.get("std") is not None:
        text += f" ± {row['std']:.{digits}f}"
    return text


def _spread_words(spread: str | None) -> str:
    return {"ci95": "mean ± 95% CI over videos", "std": "mean ± std over (video, frame) pairs"}.get(
        spread or "", "mean")


def summary_tables(report: Report) -> list[Table]:
    """The table of one run: each frame metric's best / mean / worst of N, then each set metric."""
    data = report.data
    drawn = data.get("num_samples_drawn", "?")
    dataset = (data.get("dataset") or {}).get("name", "?")
    model = (data.get("checkpoint") or {}).get("model", report.label)
    table = Table(title=f"{model} on {dataset}: {data.get('num_videos')} videos, {data.get('n_context')} → "
                        f"{data.get('horizon')} frames, {drawn} samples, profile {report.profile.get('name')}, "
                        f"{_spread_words(report.spread)}")
    table.add_column("metric")
    for aggregate in AGGREGATES:
        table.add_column(f"{aggregate} of {drawn}", justify="right")
    for metric, rows in data["summary"].items():
        arrow = "↑" if report.higher_is_better(metric) else "↓"
        table.add_row(f"{metric} {arrow}", *[format_value(rows[a], metric, report.spread) for a in AGGREGATES])
    for metric, entry in report.set_metrics.items():
        arrow = "↑" if report.higher_is_better(metric) else "↓"
        how = f"{entry['sample']} sample, {entry['frames']} frames, {entry['num_fake']} videos"
        table.add_row(f"{metric} {arrow}", f"{entry['value']:.{_digits(metric)}f}", f"[dim]{how}[/]", "")
    return [table]


def _settings(report: Report, metric: str) -> Any:
    return (report.data["metrics"].get(metric) or {}).get("settings")


def compare(reports: Sequence[Report]) -> tuple[list[Table], list[str]]:
    """Runs side by side: a table of the numbers (best of N for frame metrics, the value for set metrics; the best
    run per row in bold green), a table of the protocol choices that differ, and warnings."""
    if len(reports) < 2:
        raise VpkitError("Comparing needs two or more eval cards.")
    labels = unique_labels([r.label for r in reports])
    metrics = list(dict.fromkeys(m for r in reports for m in r.frame_metrics))
    set_metrics = list(dict.fromkeys(m for r in reports for m in r.set_metrics))
    numbers = Table(title="Eval cards side by side (best of N; FVD: its value)")
    numbers.add_column("metric")
    for label, report in zip(labels, reports, strict=True):
        numbers.add_column(f"{label}\n[dim]{report.profile.get('name')}[/]", justify="right")
    for metric in metrics + set_metrics:
        is_set = metric in set_metrics
        higher = next(r.higher_is_better(metric) for r in reports if metric in r.data["metrics"])
        values: list[float | None] = []
        cells: list[str] = []
        for report in reports:
            if is_set and metric in report.set_metrics:
                value = report.set_metrics[metric]["value"]
                values.append(value)
                cells.append(f"{value:.{_digits(metric)}f}")
            elif not is_set and metric in report.data["summary"]:
                row = report.data["summary"][metric]["best"]
                values.append(row["mean"])
                cells.append(format_value(row, metric, report.spread))
            else:
                values.append(None)
                cells.append("—")
        present = [v for v in values if v is not None]
        if len(present) > 1:
            best = max(present) if higher else min(present)
            cells = [f"[bold green]{c}[/]" if v == best else c for c, v in zip(cells, values, strict=True)]
        numbers.add_row(f"{metric} {'↑' if higher else '↓'}", *cells)

    differences = Table(title="Choices that differ")
    differences.add_column("choice")
    for label in labels:
        differences.add_column(label)
    warnings: list[str] = []
    for key in PROTOCOL_FIELDS + INFO_FIELDS:
        values = [_show(r.protocol(key)) for r in reports]
        if len(set(values)) > 1:
            differences.add_row(key, *values)
            if key in PROTOCOL_FIELDS:
                warnings.append(f"The runs differ in {key} ({', '.join(values)}): their numbers are not comparable.")
    for metric in metrics + set_metrics:
        settings = [_settings(r, metric) for r in reports if metric in r.data["metrics"]]
        if len({json.dumps(s, sort_keys=True) for s in settings}) > 1:
            shown = [_show(_settings(r, metric)) if metric in r.data["metrics"] else "—" for r in reports]
            differences.add_row(f"{metric} settings", *shown)
            warnings.append(f"{metric} was computed with different settings: its numbers are not comparable.")
    for metric in set_metrics:
        for key in ("sample", "include_context", "frames", "num_fake", "identity"):
            values = [_show(r.set_metrics.get(metric, {}).get(key)) for r in reports]
            if len(set(values)) > 1:
                differences.add_row(f"{metric} {key}", *values)
                warnings.append(f"{metric} differs in {key} ({', '.join(values)}): not comparable.")
    tables = [numbers] + ([differences] if differences.row_count else [])
    return tables, warnings


def unique_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label} #{seen[label]}")
    return out


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items() if k not in ("backbone", "file"))
    return "—" if value is None else str(value)
