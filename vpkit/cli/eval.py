"""`vpkit eval`: the best-of-N protocol on a checkpoint's test set; a Rich table, `report.json`, plots and a GIF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from vpkit.cli.console import console, err_console, print_json
from vpkit.core.errors import VpkitError

DEFAULT_METRICS = ("psnr", "ssim", "lpips")
DEFAULT_SAMPLES = 100


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


def eval_command(
    targets: list[Path] = typer.Argument(..., help="A checkpoint or export directory to evaluate (e.g. "
                                         "runs/svg-smmnist/checkpoints/best, or its -onnx export); with --compare, "
                                         "two or more report.json files."),
    compare: bool = typer.Option(False, "--compare", help="Compare eval cards side by side instead of evaluating: "
                                 "vpkit eval --compare a.json b.json [--out DIR for the curves of every run]."),
    profile: str = typer.Option(None, "--profile", help="Metric conventions: vpkit (default), srvp, svg, ddlp or "
                                "openstl; sets the SSIM window and range, the PSNR reduction, the LPIPS network and "
                                "the FVD convention so the numbers match that paper's own."),
    samples: int = typer.Option(None, "--samples", "-n", help="Samples per test video, best of N (default: the "
                                "profile's, 100 for stochastic protocols)."),
    metrics: list[str] = typer.Option(None, "--metrics", help="Metrics, comma-separated or repeated: psnr, ssim, "
                                      "lpips, fvd (default: psnr,ssim,lpips; lpips is skipped when its backbone is "
                                      "missing)."),
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
    lpips_backbone: Path = typer.Option(None, "--lpips-backbone", help="torchvision's ImageNet weights for the "
                                        "LPIPS trunk: alexnet-owt-7be5be79.pth, or vgg16-397923af.pth for the ddlp "
                                        "profile (default: torchvision's cache under $TORCH_HOME/hub/checkpoints)."),
    i3d: Path = typer.Option(None, "--i3d", help="The I3D TorchScript file i3d_torchscript.pt for FVD (default: "
                             "$VPKIT_CACHE_DIR/i3d/, downloaded there once when the network allows)."),
    i3d_sha256: str = typer.Option(None, "--i3d-sha256", help="Refuse an I3D file whose SHA-256 differs."),
    fvd_sample: str = typer.Option(None, "--fvd-sample", help="Which sample of each video FVD scores: random "
                                   "(default), first, all, or best-<metric> (SLAMP's protocol; favours the "
                                   "selection)."),
    fvd_context: bool = typer.Option(None, "--fvd-context/--fvd-no-context", help="Score the conditioning frames "
                                     "with the predicted ones in FVD (default: the profile's; yes for all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of the table."),
    sampling: dict[str, Any] | None = None,
) -> None:
    """Evaluate a checkpoint or an export with the best-of-N protocol (N samples per test video, best per video
    per metric, mean ± 95% CI over videos; also mean-of-N and worst-of-N) and FVD over the whole test set; or
    compare eval cards with --compare. A model's sampling options (e.g. RIVER's --steps, --refine) are applied
    and recorded on the card."""
    if compare:
        if sampling:
            raise VpkitError("Sampling options apply to a checkpoint being evaluated, not to --compare.")
        _compare_command(targets, out, as_json)
        return
    if len(targets) != 1:
        raise VpkitError(f"vpkit eval takes one checkpoint, got {len(targets)} paths; to compare reports pass "
                         "--compare a.json b.json.")
    if targets[0].suffix == ".json":
        raise VpkitError(f"{targets[0]} is a report, not a checkpoint; to compare reports pass --compare.")
    _evaluate_command(targets[0], profile=profile, samples=samples, metrics=metrics, out=out, videos=videos,
                      horizon=horizon, batch_size=batch_size, seed=seed, device=device, backend=backend,
                      compile=compile, lpips_backbone=lpips_backbone, i3d=i3d, i3d_sha256=i3d_sha256,
                      fvd_sample=fvd_sample, fvd_context=fvd_context, as_json=as_json, sampling=sampling or {})


def _evaluate_command(checkpoint: Path, *, profile: str | None, samples: int | None, metrics: list[str] | None,
                      out: Path | None, videos: int | None, horizon: int | None, batch_size: int, seed: int,
                      device: str | None, backend: str | None, compile: bool, lpips_backbone: Path | None,
                      i3d: Path | None, i3d_sha256: str | None, fvd_sample: str | None, fvd_context: bool | None,
                      as_json: bool, sampling: dict[str, Any]) -> None:
    import torch

    from vpkit.core.config import build_config
    from vpkit.core.plugins import get_host
    from vpkit.engine import evaluator, plots, profiles, report, sheet
    from vpkit.engine.runtime import load_runtime

    chosen = profiles.get_profile(profile or profiles.DEFAULT_PROFILE)
    names, explicit = _metric_names(metrics)
    samples = samples if samples is not None else (chosen.num_samples or DEFAULT_SAMPLES)
    if samples < 1:
        raise VpkitError("--samples must be at least 1.")
    host = get_host()
    for name in names:
        host.metrics.get(name)  # an unknown metric fails before the model is loaded
    runtime = load_runtime(checkpoint, backend=backend, device=device, compile=compile, sampling=sampling)
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

    options = {**chosen.options, "device": str(dev),
               "lpips_backbone": str(lpips_backbone) if lpips_backbone else None,
               "i3d": str(i3d) if i3d else None, "i3d_sha256": i3d_sha256}
    built, skipped = [], {}
    for name in names:
        try:
            built.append(evaluator.build_metric(name, options))
        except VpkitError as exc:
            if explicit or name != "lpips":
                raise
            skipped[name] = str(exc)
            err_console.print(f"[yellow]warning: skipping lpips: {escape(str(exc))}[/]", highlight=False,
                              soft_wrap=True)

    dataset_card = {"name": data_meta["name"], "split": "test", "config": data_meta.get("config", {}),
                    "frame_shape": data_meta.get("frame_shape")}
    result = evaluator.evaluate(
        model, dataset, n_context=n_context, horizon=horizon, num_samples=samples, metrics=built,
        num_videos=videos, batch_size=batch_size, seed=seed, device=dev, progress=True, backend=runtime.runner,
        fvd_context=chosen.fvd_context if fvd_context is None else fvd_context,
        fvd_sample=fvd_sample or chosen.fvd_sample,
        real_stats_key={"dataset": data_meta["name"], "split": "test", "config": data_meta.get("config", {})},
    )

    out_dir = out or default_out_dir(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_meta = meta.get("train", {})
    card = result.to_report(
        profile=chosen.card(),
        checkpoint={"path": str(Path(checkpoint).resolve()), "step": train_meta.get("step"),
                    "model": runtime.model_key, "plugin": meta.get("plugin", {}),
                    "created": meta.get("created"), "backend": runtime.describe(),
                    **({"sampling": runtime.sampling} if runtime.sampling else {}),
                    **({"export": {k: meta["export"][k] for k in ("format", "precision", "source")}}
                       if "export" in meta else {})},
        dataset=dataset_card,
        skipped_metrics=skipped,
    )
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(card, indent=2) + "\n")
    written = {f"{name} curve": path for name, path in plots.plot_all(card, out_dir).items()}
    frame_metrics = [m.name for m in built if not m.is_set_level]
    if result.examples and frame_metrics:
        png, gif = sheet.save_sample_sheet(result.examples, frame_metrics[0], out_dir / "samples.png",
                                           out_dir / "samples.gif")
        written.update({"samples": png, "samples (animated)": gif})

    for warning in result.warnings:
        err_console.print(f"[yellow]warning: {escape(warning)}[/]", highlight=False, soft_wrap=True)
    if as_json:
        print_json(card)
        return
    loaded = report.Report.from_dict(card, label=runtime.model_key, path=report_path)
    for table in report.summary_tables(loaded):
        console.print(table)
    console.print(f"Eval card: [bold]{escape(str(report_path))}[/]")
    for what, path in written.items():
        console.print(f"  {what}: {escape(str(path))}", highlight=False)


def _compare_command(paths: list[Path], out: Path | None, as_json: bool) -> None:
    from vpkit.engine import plots, report

    if len(paths) < 2:
        raise VpkitError("--compare needs two or more report.json files.")
    reports = [report.load_report(path) for path in paths]
    tables, warnings = report.compare(reports)
    if as_json:
        print_json({"reports": [str(p) for p in paths], "warnings": warnings})
    else:
        for table in tables:
            console.print(table)
    for warning in [w for r in reports for w in r.warnings] + warnings:
        err_console.print(f"[yellow]warning: {escape(warning)}[/]", highlight=False, soft_wrap=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        labels = report.unique_labels([r.label for r in reports])
        runs = [(label, r.data) for label, r in zip(labels, reports, strict=True)]
        for name, path in plots.plot_runs(runs, out).items():
            console.print(f"  {name} curves: {escape(str(path))}", highlight=False)
