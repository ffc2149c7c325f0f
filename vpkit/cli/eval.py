"""`vpkit eval`: the best-of-N protocol on a checkpoint's test set; a Rich table, `report.json`, plots and a GIF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from vpkit.cli.console import console, err_console, print_json
from vpkit.core.errors import VpkitError

DEFAULT_METRICS = ("psnr", "ssim", "lpips")


def default_out_dir(checkpoint: Path) -> Path:
    """`RUN/eval` for a checkpoint inside a run (`RUN/checkpoints/NAME`), `./eval` otherwise."""
    resolved = checkpoint.resolve()
    if resolved.parent.name == "checkpoints":
        return resolved.parent.parent / "eval"
    return Path("eval")


def _metric_names(metrics: list[str] | None) -> tuple[list[str], bool]:
    """The metric names (comma-separated and/or repeated) and whether the user chose them."""
    if not metrics:
        return list(DEFAULT_METRICS), False
    names = [name.strip() for item in metrics for name in item.split(",") if name.strip()]
    if not names:
        raise VpkitError("--metrics is empty; name at least one metric (e.g. --metrics psnr,ssim).")
    return list(dict.fromkeys(names)), True


def _stack_examples(examples: list[dict[str, Any]], first_metric: str) -> tuple[Any, Any, Any]:
    """Stack the example videos top to bottom (white rows between) into one context / samples / truth triple.

    The sample columns are the best sample by `first_metric`, then the random draws kept by the evaluator.
    """
    import torch

    def column(video: Any, pad: bool) -> Any:
        if not pad:
            return video
        spacer = torch.ones(*video.shape[:-2], 2, video.shape[-1])
        return torch.cat([video, spacer], dim=-2)

    last = len(examples) - 1
    context = torch.cat([column(e["context"], i < last) for i, e in enumerate(examples)], dim=-2)
    truth = torch.cat([column(e["truth"], i < last) for i, e in enumerate(examples)], dim=-2)
    per_video = [torch.cat([e["best"][first_metric][None], e["samples"]]) for e in examples]
    n_columns = min(v.shape[0] for v in per_video)
    samples = torch.cat([column(v[:n_columns], i < last) for i, v in enumerate(per_video)], dim=-2)
    return context, samples, truth


def eval_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint or export directory (e.g. "
                                      "runs/svg-smmnist/checkpoints/best, or its -onnx export)."),
    samples: int = typer.Option(100, "--samples", "-n", help="Samples per test video (best of N)."),
    metrics: list[str] = typer.Option(None, "--metrics", help="Metrics, comma-separated or repeated "
                                      "(default: psnr,ssim,lpips; lpips is skipped when its AlexNet is missing)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: RUN/eval, or ./eval)."),
    videos: int = typer.Option(None, "--videos", help="Score only the first N test videos (default: all)."),
    horizon: int = typer.Option(None, "--horizon", help="Frames to predict (default: test clip length - context)."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Test videos per batch (samples are batched too)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling generator."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available for the "
                               "torch and trt backends, cpu for onnx)."),
    backend: str = typer.Option(None, "--backend", help="torch, onnx or trt (default: torch for a checkpoint, "
                                "the export's format for an export directory)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the graphs (torch backend)."),
    lpips_backbone: Path = typer.Option(None, "--lpips-backbone", help="torchvision's alexnet-owt-7be5be79.pth "
                                        "for LPIPS (default: torchvision's cache under $TORCH_HOME/hub/checkpoints)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of the table."),
) -> None:
    """Evaluate a checkpoint or an export with the SRVP protocol: N samples per test video, best per video per
    metric, mean ± 95% CI over videos (also mean-of-N and worst-of-N)."""
    import torch

    from vpkit.core.config import build_config
    from vpkit.core.plugins import get_host
    from vpkit.engine import evaluator, media, plots
    from vpkit.engine.runtime import load_runtime

    names, explicit = _metric_names(metrics)
    if samples < 1:
        raise VpkitError("--samples must be at least 1.")
    host = get_host()
    runtime = load_runtime(checkpoint, backend=backend, device=device, compile=compile)
    dev = runtime.device
    model, meta = runtime.model, runtime.meta
    data_meta = meta["data"]
    dspec = host.datasets.get(data_meta["name"])
    data_cfg = build_config(dspec.config_cls, data_meta.get("config", {}), what=f"data config in {checkpoint}")
    dataset = dspec.build(data_cfg, "test")
    n_context = int(data_meta["n_context"])
    clip_length = int(torch.as_tensor(dataset[0]).shape[0])
    horizon = horizon if horizon is not None else clip_length - n_context
    if horizon < 1:
        raise VpkitError(f"Test clips of {data_meta['name']} have {clip_length} frames, no more than the "
                         f"{n_context} context frames; pass --horizon.")

    options = {"device": str(dev), "lpips_backbone": str(lpips_backbone) if lpips_backbone else None}
    built, skipped = [], {}
    for name in names:
        try:
            built.append(evaluator.build_metric(name, options))
        except VpkitError as exc:
            if explicit or name != "lpips":
                raise
            skipped[name] = str(exc)
            err_console.print(f"[yellow]warning: skipping lpips: {exc}[/]", highlight=False, soft_wrap=True)

    result = evaluator.evaluate(
        model, dataset, n_context=n_context, horizon=horizon, num_samples=samples, metrics=built,
        num_videos=videos, batch_size=batch_size, seed=seed, device=dev, progress=True, backend=runtime.runner,
    )

    out_dir = out or default_out_dir(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_meta = meta.get("train", {})
    report = result.to_report(
        checkpoint={"path": str(Path(checkpoint).resolve()), "step": train_meta.get("step"),
                    "model": runtime.model_key, "plugin": meta.get("plugin", {}),
                    "created": meta.get("created"), "backend": runtime.describe(),
                    **({"export": {k: meta["export"][k] for k in ("format", "precision", "source")}}
                       if "export" in meta else {})},
        dataset={"name": data_meta["name"], "split": "test", "config": data_meta.get("config", {}),
                 "frame_shape": data_meta.get("frame_shape")},
        skipped_metrics=skipped,
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_paths = plots.plot_all(result, out_dir)
    gif = None
    if result.examples:
        context, sample_columns, truth = _stack_examples(result.examples, built[0].name)
        gif = media.save_sample_panels(out_dir / "samples.gif", context, sample_columns, truth)

    if as_json:
        print_json(report)
        return
    _print_table(result, runtime.model_key, data_meta["name"])
    console.print(f"Report: [bold]{out_dir / 'report.json'}[/]  plots: "
                  + ", ".join(str(p) for p in plot_paths.values()) + (f"  samples: {gif}" if gif else ""))


def _print_table(result: Any, model_key: str, dataset: str) -> None:
    from rich.table import Table

    p = result.protocol
    table = Table(title=f"{model_key} on {dataset}: {p['num_videos']} videos, {p['n_context']} → {p['horizon']} "
                        f"frames, {p['num_samples_drawn']} samples, mean ± 95% CI")
    table.add_column("metric")
    for aggregate in ("best", "mean", "worst"):
        table.add_column(f"{aggregate} of {p['num_samples_drawn']}", justify="right")
    for name, rows in result.summary.items():
        arrow = "↑" if result.metrics[name]["higher_is_better"] else "↓"
        digits = 2 if name == "psnr" else 4
        cells = [f"{rows[a]['mean']:.{digits}f} ± {rows[a]['ci95']:.{digits}f}" for a in ("best", "mean", "worst")]
        table.add_row(f"{name} {arrow}", *cells)
    console.print(table)
