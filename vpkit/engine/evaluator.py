"""The stochastic evaluation protocol of SRVP (`test.py`), which SLAMP copies.

For every test video: the first `n_context` frames are the context, the next `horizon` frames the truth. The model
draws `num_samples` futures; every metric scores every predicted frame of every sample; each sample's score is its
mean over the predicted frames. Per video and per metric independently, the best sample is kept (so the best-PSNR
and best-SSIM samples may differ); the mean and the worst over samples are kept too. The summary is the mean over
videos ± 1.96·σ/√n, σ being the population standard deviation over videos (numpy's default, as SRVP prints it).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import math
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vpkit.core.errors import VpkitError
from vpkit.core.model import Backend
from vpkit.core.specs import MetricSpec
from vpkit.engine.set_metrics import SetScoring

REPORT_FORMAT = "vpkit-eval-card/2"
SELECTION_RULE = "best per video per metric"
# Bytes of predicted frames one `predict` call may return; a batch of videos × samples above this is split along
# the samples. Model activations scale with the same count, so this also bounds the sampling memory.
PREDICTION_BUDGET_BYTES = 256 * 2**20
# On the CPU, rows (videos × samples) per `predict` call: convolution throughput peaks around 64 rows on 2 cores
# and falls beyond (SVG-LP smmnist: 53 ms per video-sample at 64 rows, 67 at 256, 83 at 1600; benchmarks/eval.py).
CPU_ROWS_PER_CALL = 64
# Random (not selected) samples kept per example video for GIFs.
EXAMPLE_SAMPLES = 3
AGGREGATES = ("best", "mean", "worst")
_REPORT_SECTIONS = ("created", "metrics", "versions", "summary", "per_frame", "per_video", "set_metrics",
                    "warnings")


@dataclass(frozen=True)
class BuiltMetric:
    """A metric ready to score: its spec and the callable `build(options)` returned.

    The callable may carry a `settings` dict (window, backbone path, ...) that the eval card records.
    """

    spec: MetricSpec
    score: Callable[[Tensor, Tensor], Tensor]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def settings(self) -> dict[str, Any]:
        return dict(getattr(self.score, "settings", {}) or {})

    @property
    def is_set_level(self) -> bool:
        return self.spec.level == "set"


def build_metric(metric: str | MetricSpec, options: Mapping[str, Any] | None = None) -> BuiltMetric:
    """Look a metric up by name (or take its spec) and build it with `options` (`device`, backbone paths...)."""
    if isinstance(metric, str):
        from vpkit.core.plugins import get_host

        metric = get_host().metrics.get(metric)
    return BuiltMetric(metric, metric.build(dict(options or {})))


@dataclass
class EvalResult:
    """What `evaluate` measured.

    - `summary[metric][aggregate]` = `{"mean", "ci95", "std"}` for each frame metric, aggregate in best / mean /
      worst of N: mean and 95% CI over videos, and the population std over every (video, predicted frame) score
      of the chosen samples (the ± DDLP reports).
    - `per_frame[metric][aggregate]` = `{"mean": [horizon], "ci95": [horizon]}`: the curve over horizon steps
      (for "best", the frames of each video's best sample, chosen by its frame-averaged score).
    - `per_video[metric]` = `{"best", "mean", "worst": [num_videos] floats, "best_sample": [num_videos] ints}`.
    - `set_metrics[metric]`: a set-level metric's value (FVD) and every choice behind it (see `SetScoring`).
    - `examples`: the first videos' `context` `[T0, C, H, W]`, `truth` `[horizon, C, H, W]`, a few random
      `samples` `[k, horizon, C, H, W]`, and the `best` and `worst` sample per frame metric (with `best_score`,
      `worst_score`), float in [0, 1] on the CPU.
    - `protocol`: every choice the numbers depend on; `warnings`: what the reader must know about them.
    """

    summary: dict[str, dict[str, dict[str, float]]]
    per_frame: dict[str, dict[str, dict[str, list[float]]]]
    per_video: dict[str, dict[str, list[float] | list[int]]]
    examples: list[dict[str, Any]]
    protocol: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    set_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def best_mean(self, metric: str) -> float:
        """The headline number: best-of-N averaged over videos."""
        return self.summary[metric]["best"]["mean"]

    def to_report(self, **card: Any) -> dict[str, Any]:
        """An eval card: the numbers next to every protocol choice (top-level keys: n_context, horizon,
        num_samples, selection, num_videos, seed, BatchNorm statistics...), metric setting and library version.

        `card` adds what the evaluator cannot know (checkpoint path and step, dataset, model...).
        """
        report: dict[str, Any] = {"format": REPORT_FORMAT, **_jsonable(self.protocol)}
        clashes = sorted(set(card) & (set(report) | set(_REPORT_SECTIONS)))
        if clashes:
            raise ValueError(f"eval card fields {clashes} would overwrite the evaluator's own")
        report.update({k: _jsonable(v) for k, v in card.items()})
        report.update({
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "metrics": _jsonable(self.metrics),
            "versions": library_versions(),
            "summary": self.summary,
            "per_frame": self.per_frame,
            "per_video": self.per_video,
            "set_metrics": _jsonable(self.set_metrics),
            "warnings": list(self.warnings),
        })
        return report


def library_versions() -> dict[str, str]:
    """Versions of the libraries the numbers depend on."""
    from vpkit import __version__

    versions = {"vpkit": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for dist in ("torchvision", "lpips", "numpy"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def confidence_interval(values: Tensor) -> tuple[float, float]:
    """Mean and 95% half-width 1.96·σ/√n of `values` `[n]` (σ with ddof 0, as SRVP's `np.std`)."""
    values = values.double()
    n = values.numel()
    std = values.std(unbiased=False).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


def _curve(values: Tensor) -> dict[str, list[float]]:
    """Per-step mean and CI of `values` `[videos, horizon]`."""
    values = values.double()
    n = values.shape[0]
    std = values.std(dim=0, unbiased=False) if n > 1 else torch.zeros(values.shape[1], dtype=torch.float64)
    return {"mean": values.mean(dim=0).tolist(), "ci95": (1.96 * std / math.sqrt(n)).tolist()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, Tensor):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@contextmanager
def sampling_mode(model: nn.Module) -> Iterator[None]:
    """Put `model` in eval mode for sampling; restore every module's mode and every normalisation buffer on exit,
    so evaluating never changes the model. Which BatchNorm statistics a model samples with is the model's own
    setting (e.g. SVG's `sampling_batchnorm`), recorded on the eval card."""
    modes = {module: module.training for module in model.modules()}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    saved = [{name: buf.detach().clone() for name, buf in m.named_buffers(recurse=False) if buf is not None}
             for m in norms]
    model.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(module, name).copy_(value)
        for module, training in modes.items():
            module.training = training


def batchnorm_at_sampling(model: nn.Module) -> str:
    """What the eval card says about BatchNorm while sampling: the model's own setting, or running statistics."""
    setting = getattr(getattr(model, "config", None), "sampling_batchnorm", None)
    if setting is not None:
        return f"{setting} statistics (model.sampling_batchnorm)"
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return "running statistics (eval mode)" if has_bn else "no BatchNorm"


def _load_videos(dataset: Any, indices: list[int]) -> Tensor:
    """A batch of dataset items `[B, T, C, H, W]` (datasets may build a whole batch with `__getitems__`)."""
    getitems = getattr(dataset, "__getitems__", None)
    items = getitems(indices) if getitems is not None else [dataset[i] for i in indices]
    if isinstance(items, Tensor):
        return items
    return torch.stack([torch.as_tensor(item) for item in items])


def _to_unit(videos: Tensor, device: torch.device) -> Tensor:
    videos = videos.to(device)
    if videos.dtype == torch.uint8:
        return videos.float() / 255
    return videos.float()


def _better(higher_is_better: bool) -> Callable[[Tensor, Tensor], Tensor]:
    return torch.gt if higher_is_better else torch.lt


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]Evaluating"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    n_context: int,
    horizon: int,
    num_samples: int,
    metrics: Sequence[str | MetricSpec | BuiltMetric],
    metric_options: Mapping[str, Any] | None = None,
    num_videos: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    keep_examples: int = 4,
    samples_per_call: int | None = None,
    backend: Backend | None = None,
    fvd_context: bool = True,
    fvd_sample: str = "random",
    real_stats_key: Mapping[str, Any] | None = None,
) -> EvalResult:
    """Score `model` on the first `num_videos` videos of `dataset` (all by default) with the best-of-N protocol.

    `metrics` are names, specs or already built metrics; names and specs are built with `metric_options` (its
    `device` defaults to `device`). Samples come from a CPU `torch.Generator` seeded with `seed`, so a run is
    reproducible for the same seed, batch size and `samples_per_call` (default: as many samples per `predict`
    call as fit in 256 MiB of predicted frames, and on the CPU at most 64 rows of videos × samples).
    Deterministic models (`model.stochastic` false) draw one sample.
    `backend` runs the model's graphs (an exported runtime's; default: the model's own, eagerly).

    Set-level metrics (FVD) score one clip per video, the conditioning frames included when `fvd_context`;
    `fvd_sample` picks it: "random" (default), "first", "all" (every sample) or "best-<frame metric>" (only when
    asked). `real_stats_key` (dataset name, config, split) enables the real-statistics cache; None computes them.
    """
    if n_context < 1 or horizon < 1 or num_samples < 1 or batch_size < 1:
        raise VpkitError("n_context, horizon, num_samples and batch_size must all be at least 1.")
    device = torch.device(device)
    options = {"device": str(device), **dict(metric_options or {})}
    built = [m if isinstance(m, BuiltMetric) else build_metric(m, options) for m in metrics]
    if not built:
        raise VpkitError("No metric to evaluate; pass at least one (e.g. --metrics psnr).")
    names = [m.name for m in built]
    if len(set(names)) != len(names):
        raise VpkitError(f"A metric is listed twice: {', '.join(names)}.")
    frame_metrics = [m for m in built if not m.is_set_level]
    set_level = [m for m in built if m.is_set_level]

    total_videos = len(dataset)
    n_videos = total_videos if num_videos is None else min(num_videos, total_videos)
    if n_videos < 1:
        raise VpkitError("The test set is empty; nothing to evaluate.")
    stochastic = bool(getattr(model, "stochastic", True))
    drawn = num_samples if stochastic else 1

    generator = torch.Generator().manual_seed(seed)
    run_on = {"backend": backend} if backend is not None else {}
    scores: dict[str, dict[str, list[Tensor]]] = {
        m.name: {"avg": [], "curve_best": [], "curve_mean": [], "curve_worst": [], "best_sample": []}
        for m in frame_metrics}
    examples: list[dict[str, Any]] = []
    chunk: int | None = None
    set_scoring: list[SetScoring] = []

    with sampling_mode(model), torch.no_grad(), _progress(progress) as bar:
        task = bar.add_task("eval", total=n_videos)
        for start in range(0, n_videos, batch_size):
            indices = list(range(start, min(start + batch_size, n_videos)))
            videos = _to_unit(_load_videos(dataset, indices), device)
            if videos.shape[1] < n_context + horizon:
                raise VpkitError(
                    f"Test videos have {videos.shape[1]} frames but n_context + horizon = {n_context + horizon}; "
                    f"lower --horizon to at most {videos.shape[1] - n_context}.")
            context = videos[:, :n_context]
            truth = videos[:, n_context:n_context + horizon]
            batch = len(indices)
            if start == 0:
                set_scoring = [
                    SetScoring(m, n_context=n_context, horizon=horizon, drawn=drawn, include_context=fvd_context,
                               sample=fvd_sample, seed=seed, num_videos=n_videos, frame_shape=tuple(truth.shape[2:]),
                               real_key=real_stats_key,
                               higher_is_better={f.name: f.spec.higher_is_better for f in frame_metrics})
                    for m in set_level]
            for scoring in set_scoring:
                scoring.begin_batch(context, truth)
            if chunk is None:  # sized on a full batch, so every batch draws its samples the same way
                future_bytes = truth[0].numel() * 4
                fits = max(1, PREDICTION_BUDGET_BYTES // (future_bytes * batch_size))
                if device.type == "cpu":
                    fits = min(fits, max(1, CPU_ROWS_PER_CALL // batch_size))
                chunk = min(drawn, samples_per_call or fits)
            n_keep = max(0, min(keep_examples - start, batch))
            batch_examples = [{"context": context[i].cpu(), "truth": truth[i].cpu(), "samples": [],
                               "best": {}, "best_score": {}, "worst": {}, "worst_score": {}} for i in range(n_keep)]
            per_sample: dict[str, list[Tensor]] = {m.name: [] for m in frame_metrics}  # [B, s, horizon] per chunk

            for first in range(0, drawn, chunk):
                count = min(chunk, drawn - first)
                pred = model.predict(context, horizon, num_samples=count, generator=generator, **run_on)
                expected = (batch, count, horizon, *truth.shape[2:])
                if tuple(pred.shape) != expected:
                    raise VpkitError(f"model.predict returned shape {tuple(pred.shape)}, expected {expected} "
                                     f"[B, S, horizon, C, H, W]; the model plugin breaks the predict contract.")
                if not torch.isfinite(pred).all():
                    bad = sorted({indices[i] for i in torch.nonzero(~torch.isfinite(pred))[:, 0].tolist()})
                    raise VpkitError(f"The model predicted NaN or Inf frames for test videos {bad[:5]}; "
                                     f"the checkpoint is broken (check training for divergence).")
                flat = pred.reshape(batch * count, horizon, *pred.shape[3:])
                target = truth.repeat_interleave(count, dim=0)
                averages = {}
                for metric in frame_metrics:
                    frame_scores = metric.score(flat, target).reshape(batch, count, horizon).double().cpu()
                    per_sample[metric.name].append(frame_scores)
                    averages[metric.name] = frame_scores.mean(dim=2)
                    _update_examples(batch_examples, metric, frame_scores, pred)
                for scoring in set_scoring:
                    scoring.add_samples(first, pred, averages)
                for i, example in enumerate(batch_examples):
                    room = EXAMPLE_SAMPLES - sum(s.shape[0] for s in example["samples"])
                    if room > 0:
                        example["samples"].append(pred[i, :room].float().cpu())

            for scoring in set_scoring:
                scoring.end_batch()
            for metric in frame_metrics:
                frames = torch.cat(per_sample[metric.name], dim=1)  # [B, S, horizon]
                average = frames.mean(dim=2)  # [B, S]
                # argmax/argmin return the first optimum, as SRVP's strict "better than" keeps the earliest sample.
                best = average.argmax(dim=1) if metric.spec.higher_is_better else average.argmin(dim=1)
                worst = average.argmin(dim=1) if metric.spec.higher_is_better else average.argmax(dim=1)
                rows = torch.arange(batch)
                table = scores[metric.name]
                table["avg"].append(average)
                table["best_sample"].append(best)
                table["curve_best"].append(frames[rows, best])
                table["curve_worst"].append(frames[rows, worst])
                table["curve_mean"].append(frames.mean(dim=1))
            for example in batch_examples:
                example["samples"] = torch.cat(example["samples"])
                example["best_score"] = {k: float(v) for k, v in example["best_score"].items()}
                example["worst_score"] = {k: float(v) for k, v in example["worst_score"].items()}
            examples.extend(batch_examples)
            bar.advance(task, batch)

    summary: dict[str, dict[str, dict[str, float]]] = {}
    per_frame: dict[str, dict[str, dict[str, list[float]]]] = {}
    per_video: dict[str, dict[str, list[float] | list[int]]] = {}
    for metric in frame_metrics:
        table = scores[metric.name]
        average = torch.cat(table["avg"])  # [V, S]
        best_sample = torch.cat(table["best_sample"])
        rows = torch.arange(average.shape[0])
        worst_values = average.min(dim=1).values if metric.spec.higher_is_better else average.max(dim=1).values
        per_video_values = {"best": average[rows, best_sample], "mean": average.mean(dim=1), "worst": worst_values}
        summary[metric.name] = {}
        for aggregate, values in per_video_values.items():
            mean, ci95 = confidence_interval(values)
            pairs = torch.cat(table[f"curve_{aggregate}"]).double()  # [V, horizon]: the chosen samples' frames
            std = pairs.std(unbiased=False).item() if pairs.numel() > 1 else 0.0
            summary[metric.name][aggregate] = {"mean": mean, "ci95": ci95, "std": std}
        per_frame[metric.name] = {agg: _curve(torch.cat(table[f"curve_{agg}"])) for agg in AGGREGATES}
        per_video[metric.name] = {agg: v.tolist() for agg, v in per_video_values.items()}
        per_video[metric.name]["best_sample"] = best_sample.tolist()

    protocol = {
        "n_context": n_context,
        "horizon": horizon,
        "num_samples": num_samples,
        "num_samples_drawn": drawn,
        "selection": SELECTION_RULE,
        "score_per_sample": "metric averaged over the predicted frames (context frames excluded)",
        "also_reported": ["mean of N", "worst of N"],
        "confidence_interval": "mean ± 1.96·σ/√n over videos, σ with ddof 0 (SRVP)",
        "num_videos": n_videos,
        "test_set_size": total_videos,
        "seed": seed,
        "generator": "torch.Generator on the CPU, seeded once, drawn in video-batch order",
        "batch_size": batch_size,
        "samples_per_call": chunk,
        "batchnorm_at_sampling": batchnorm_at_sampling(model),
        "device": str(device),
    }
    metric_cards = {
        m.name: {"higher_is_better": m.spec.higher_is_better, "description": m.spec.description,
                 "plugin": m.spec.plugin, "level": m.spec.level, "settings": m.settings}
        for m in built
    }
    set_results, warnings = {}, []
    for scoring in set_scoring:
        set_results[scoring.name], said = scoring.result()
        warnings.extend(said)
    return EvalResult(summary, per_frame, per_video, examples, protocol, metric_cards, set_results, warnings)


def _update_examples(examples: list[dict[str, Any]], metric: BuiltMetric, frame_scores: Tensor, pred: Tensor) -> None:
    """Keep each example video's best and worst sample so far for `metric` (strictly better replaces, as in
    SRVP; strictly worse for the worst)."""
    if not examples:
        return
    average = frame_scores.mean(dim=2)
    higher = metric.spec.higher_is_better
    for end, better in (("best", _better(higher)), ("worst", _better(not higher))):
        for i, example in enumerate(examples):
            j = int(average[i].argmax() if (end == "best") == higher else average[i].argmin())
            value = average[i, j]
            current = example[f"{end}_score"].get(metric.name)
            if current is None or bool(better(value, current)):
                example[f"{end}_score"][metric.name] = value
                example[end][metric.name] = pred[i, j].float().cpu()
