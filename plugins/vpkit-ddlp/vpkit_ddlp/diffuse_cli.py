"""`vpkit generate CKPT -n 16 --horizon 100 --out DIR`: unconditional videos from a trained diffuse-ddlp checkpoint,
written as GIF and MP4 (one file pair per video) and a PNG strip of their first frames."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer

from vpkit.core.errors import VpkitError


def generate_command(
    checkpoint: Path = typer.Argument(..., help="A diffuse-ddlp checkpoint directory (RUN/checkpoints/last)."),
    n: int = typer.Option(16, "-n", "--num-videos", help="Videos to generate."),
    horizon: int = typer.Option(100, "--horizon", help="Frames per video, the diffusion's first frames included "
                                "(official: 100)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: runs/generate/<checkpoint name>)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling generator: the same seed gives the same videos."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Videos sampled at once by the diffusion."),
    fps: float = typer.Option(None, "--fps", help="Frame rate of the written videos (default: the model's, "
                              "official 1 / 0.06 s)."),
    mp4: bool = typer.Option(True, "--mp4/--no-mp4", help="Also write MP4 beside each GIF."),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available)."),
    as_json: bool = typer.Option(False, "--json", help="Print only JSON: {videos: [...], frames, seconds}."),
) -> None:
    """Generate videos with DiffuseDDLP: diffusion samples the first frames' particles, DDLP rolls them out."""
    import time

    from vpkit.cli.console import console, print_json
    from vpkit.core.checkpoint import load_model
    from vpkit.engine.media import to_uint8
    from vpkit.engine.runtime import resolve_device
    from vpkit.engine.video_writer import abort_all, close_all, open_writer
    from vpkit_ddlp.diffuse import DiffuseDDLP, generate

    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, device=dev)
    if not isinstance(model, DiffuseDDLP):
        raise VpkitError(f"{checkpoint} holds model '{ckpt.model_key}'; `vpkit generate` needs a diffuse-ddlp "
                         "checkpoint (vpkit train --model diffuse-ddlp).")
    out = out or Path("runs") / "generate" / Path(checkpoint).resolve().parent.parent.name
    started = time.perf_counter()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    videos = generate(model, n, horizon, generator, batch_size=batch_size)
    frames = to_uint8(videos)  # [n, T, H, W, 3]
    rate = fps or model.config.fps
    written: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    for i, video in enumerate(frames):
        suffixes = (".gif", ".mp4") if mp4 else (".gif",)
        writers = [open_writer(out / f"video_{i:03d}{s}", rate) for s in suffixes]
        try:
            for writer in writers:
                writer.extend(video)
        except BaseException:
            abort_all(writers)
            raise
        written += [str(p) for p in close_all(writers)]
    seconds = time.perf_counter() - started
    (out / "generate.json").write_text(json.dumps({"checkpoint": str(checkpoint), "n": n, "horizon": horizon,
                                                   "seed": seed, "files": written}, indent=2) + "\n")
    if as_json:
        print_json({"videos": written, "frames": horizon, "seconds": round(seconds, 3), "out": str(out)})
        return
    console.print(f"Wrote {n} videos of {horizon} frames to [bold]{out}[/] ({len(written)} files, {seconds:.1f} s).")
