"""`vpkit predict`: predict the future of a video with a checkpoint or an export, written as an MP4 and a GIF of
panels (context | sample 1..K | ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vpkit.cli.console import console, print_json


def _progress_bar(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]Predicting"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def predict_command(
    source: str = typer.Argument(..., help="A video file ffmpeg can read (.mp4, .mkv, .avi, ...), a folder of "
                                 "frame images, or a .npy array of frames [T, H, W(, C)]."),
    model: Path = typer.Option(..., "--model", "-m", help="Checkpoint directory or export directory "
                               "(from `vpkit export`)."),
    context: int = typer.Option(None, "--context", "-c", help="Context frames fed to the model (default: the "
                                "model's training context)."),
    horizon: int = typer.Option(None, "--horizon", "-p", help="Frames to predict; may exceed the training horizon "
                                "(default: the model's training horizon)."),
    samples: int = typer.Option(None, "--samples", "-k", help="Sampled futures shown side by side (default: 3 for "
                                "a stochastic model, 1 for a deterministic one)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling generator: the same seed gives the same "
                             "samples."),
    backend: str = typer.Option(None, "--backend", "-b", help="torch, onnx or trt (default: the export's own "
                                "format, torch for a checkpoint)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available for torch "
                               "and trt, cpu for onnx)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model's graphs (torch backend only)."),
    start: int = typer.Option(0, "--start", help="Where the context begins, in frames after --stride / --fps "
                              "(0 = the first frame)."),
    stride: int = typer.Option(1, "--stride", help="Use every k-th frame of the video."),
    fps: float = typer.Option(None, "--fps", help="Resample the video to this frame rate (nearest frame; needs a "
                              "source that knows its rate). Not with --stride."),
    sliding: bool = typer.Option(False, "--sliding", help="Predict along the whole video: windows of context + "
                                 "horizon frames hopping by horizon, so predictions tile the video. Streams: memory "
                                 "stays bounded on long videos."),
    out: Path = typer.Option(None, "--out", "-o", help="Output MP4 (default: runs/predict/<source name>.mp4); the "
                             "GIF is written beside it with .gif."),
    as_json: bool = typer.Option(False, "--json", help="Print only JSON: {mp4, gif, frames, windows, backend, ...}."),
    sampling: dict[str, Any] | None = None,
) -> None:
    """Predict a video's future with a checkpoint or an export. Frames are resized (shorter side, antialiased),
    centre-cropped and turned grey as the model needs. Writes an MP4 and a GIF: the context plays in every column
    (green border), then each sample's prediction (red) beside the ground truth (blue) while the video continues.
    Nothing is written when anything fails. A model's sampling options (e.g. RIVER's --steps, --refine) change how
    it samples without retraining."""
    from vpkit.engine.predictor import FrameSelection, default_output
    from vpkit.engine.runtime import load_runtime
    from vpkit.engine.video_source import open_video

    selection = FrameSelection(start=start, stride=stride, fps=fps)
    out = out if out is not None else default_output(source)
    with open_video(source) as video:
        runtime = load_runtime(model, backend=backend, device=device, compile=compile, sampling=sampling)
        result = _predict(runtime, video, out, as_json, context=context, horizon=horizon,
                          num_samples=samples, seed=seed, selection=selection, sliding=sliding)
    if as_json:
        print_json(result.to_json())
        return
    height, width = result.panel_size
    windows = f"{result.windows} window{'s' if result.windows != 1 else ''}"
    truth = f", ground truth for {result.truth_frames}" if result.truth_frames else ", no ground truth (video ended)"
    console.print(f"{result.runtime}: {result.context} context → {result.horizon} predicted frames, "
                  f"{result.num_samples} sample{'s' if result.num_samples != 1 else ''}, {windows}{truth}",
                  highlight=False, soft_wrap=True)
    console.print(f"Panels {' | '.join(result.columns)} ({width}x{height}, {result.frames} frames at "
                  f"{result.fps:g} fps; borders: green context, red prediction, blue ground truth)",
                  highlight=False, soft_wrap=True)
    console.print(f"MP4: [bold]{result.mp4}[/]  GIF: [bold]{result.gif}[/]", highlight=False, soft_wrap=True)


def _predict(runtime: Any, video: Any, out: Path, as_json: bool, **options: Any) -> Any:
    """`predict_video` under a progress bar on stderr (none with --json). The bar appears with the first written
    frame, so an input rejected up front prints its error line alone."""
    from vpkit.engine.predictor import predict_video

    bar = _progress_bar(not as_json)
    task = None

    def update(done: int, total: int | None) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("predict", total=total)
        bar.update(task, completed=done, total=total)

    try:
        return predict_video(runtime, video, out, **options, on_progress=update)
    finally:
        if task is not None:  # a bar never started must not print (Rich ends a stopped bar with a newline)
            bar.stop()
