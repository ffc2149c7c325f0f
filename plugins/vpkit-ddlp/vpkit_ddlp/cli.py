"""`vpkit ddlp ...`: the plugin's commands, added to the `vpkit` app through the `register_commands` hook.

- `vpkit ddlp particles CKPT VIDEO --out DIR`: numbered particles and their glimpse windows drawn on the frames
  (PNG per frame, a GIF, and particles.json), to pick the particles to edit.
- `vpkit ddlp edit CKPT VIDEO --particle K --move DY,DX | --scale F | --hide | --depth D | --swap-features A:B`:
  what-if editing; writes the input | original prediction | edited prediction side by side (GIF and MP4).

VIDEO is anything `vpkit predict` reads (a video file ffmpeg decodes, a folder of frames, a .npy array); frames are
fitted to the model the same way (resized to cover, centre-cropped, grey when the model is).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

app = typer.Typer(name="ddlp", help="DDLP tools: draw a video's particles, edit them and roll out (what-if).",
                  no_args_is_help=True)

DEFAULT_FPS = 8.0


# -- shared steps -----------------------------------------------------------------------------------------------------


def load_particle_model(path: Path, device: str, *, need_dynamics: bool):
    """(model in eval mode, checkpoint) for a `ddlp` (or, without `need_dynamics`, `dlp`) checkpoint."""
    from vpkit.core.checkpoint import load_model, read_checkpoint
    from vpkit.core.errors import VpkitError
    from vpkit.engine.runtime import resolve_device

    ckpt = read_checkpoint(path)
    wanted = ("ddlp",) if need_dynamics else ("ddlp", "dlp")
    if "export" in ckpt.meta or ckpt.model_key not in wanted:
        what = "an export directory" if "export" in ckpt.meta else f"a '{ckpt.model_key}' checkpoint"
        need = "a DDLP checkpoint (model 'ddlp')" if need_dynamics else "a DDLP or DLPv2 checkpoint ('ddlp', 'dlp')"
        raise VpkitError(f"{path} is {what}; this command needs {need}.")
    model, ckpt = load_model(path, device=resolve_device(device))
    return model.eval(), ckpt


def read_frames(source: str, frame_shape: tuple[int, int, int], count: int, start: int, stride: int,
                at_least: int) -> torch.Tensor:
    """Up to `count` frames `[T, C, H, W]` of `source` fitted to the model (as `vpkit predict` reads them); a
    VpkitError when fewer than `at_least` are there."""
    from vpkit.core.errors import VpkitError
    from vpkit.engine.predictor import FrameSelection, preprocess, selected_chunks
    from vpkit.engine.video_source import open_video

    selection = FrameSelection(start=start, stride=stride)
    frames: list[torch.Tensor] = []
    with open_video(source) as video:
        for block in selected_chunks(video, selection):
            frames.append(preprocess(block[: count - sum(len(f) for f in frames)], frame_shape))
            if sum(len(f) for f in frames) >= count:
                break
    got = sum(len(f) for f in frames)
    if got < at_least:
        raise VpkitError(f"{Path(source).name or source} gives {got} frame{'s' if got != 1 else ''}"
                         f"{selection.describe()}, fewer than the {at_least} needed. Use a smaller --context / "
                         "--frames or --start, or a longer video.")
    return torch.cat(frames)


def write_videos(out_dir: Path, stem: str, frames: np.ndarray, fps: float) -> list[Path]:
    """`stem`.gif and `stem`.mp4 of uint8 frames `[T, H, W, 3]`, written together or not at all."""
    from vpkit.engine.video_writer import abort_all, close_all, open_writer

    writers = [open_writer(out_dir / f"{stem}.gif", fps), open_writer(out_dir / f"{stem}.mp4", fps)]
    try:
        for frame in frames:
            for writer in writers:
                writer.append(np.ascontiguousarray(frame))
    except BaseException:
        abort_all(writers)
        raise
    return close_all(writers)


def _tile(frames: torch.Tensor | None, upscale: int, colour: tuple[int, int, int], size: tuple[int, int]) -> np.ndarray:
    from vpkit.engine.media import add_border, to_uint8

    if frames is None:  # the video ended: a grey tile
        image = np.full((size[0] * upscale, size[1] * upscale, 3), 200, np.uint8)
    else:
        image = to_uint8(frames)
        image = np.repeat(np.repeat(image, upscale, axis=0), upscale, axis=1)
    return add_border(image, colour)


def _header(names: list[str], tile_width: int, pad: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    from vpkit_ddlp.edit import _font

    width = len(names) * tile_width + (len(names) - 1) * pad
    image = Image.new("RGB", (width, 22), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = _font(14)
    for i, name in enumerate(names):
        draw.text((i * (tile_width + pad) + 4, 3), name, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def edit_panels(video: torch.Tensor, n_context: int, result: Any, upscale: int) -> np.ndarray:
    """One panel per time step: input | original | edited. Context frames (green): the input, and the decoded
    conditioning particles before and after the edits; then the video's continuation (blue, grey once it ended)
    beside the two predictions (red)."""
    from vpkit.engine.media import BORDER_COLOURS, join_columns

    context, sample, truth = BORDER_COLOURS["context"], BORDER_COLOURS["sample"], BORDER_COLOURS["truth"]
    horizon = result.original.shape[1]
    size = tuple(video.shape[-2:])
    panels = []
    for t in range(n_context + horizon):
        if t < n_context:
            tiles = [_tile(video[t], upscale, context, size), _tile(result.context[0, t], upscale, context, size),
                     _tile(result.edited_context[0, t], upscale, context, size)]
        else:
            real = video[t] if t < video.shape[0] else None
            tiles = [_tile(real, upscale, truth, size), _tile(result.original[0, t - n_context], upscale, sample, size),
                     _tile(result.edited[0, t - n_context], upscale, sample, size)]
        panels.append(join_columns(tiles))
    header = _header(["input", "original", "edited"], tiles[0].shape[1], 2)
    return np.stack([np.concatenate([header, p]) for p in panels])


# -- commands ---------------------------------------------------------------------------------------------------------


@app.command("edit")
def edit_command(
    checkpoint: Path = typer.Argument(..., help="A DDLP checkpoint directory (trained or `vpkit import ddlp`)."),
    source: str = typer.Argument(..., help="The video: a file ffmpeg reads, a folder of frames or a .npy array."),
    particle: int = typer.Option(None, "--particle", "-k", help="The particle to move / scale / hide / shift in "
                                 "depth (numbers from `vpkit ddlp particles`)."),
    move: str = typer.Option(None, "--move", help="DY,DX added to its position; (y, x) span [-1, 1] across the "
                             "frame, so 0.15,0 moves it down by 7.5% of the height."),
    scale: float = typer.Option(None, "--scale", help="Size factor (>1 enlarges): the scale logits are divided by "
                                "it, as the official GUI's multiplier."),
    hide: bool = typer.Option(False, "--hide", help="Make it fully transparent (z_t = 0)."),
    depth: float = typer.Option(None, "--depth", help="Added to its depth z_d (negative brings it to the front)."),
    swap_features: str = typer.Option(None, "--swap-features", help="A:B swaps the visual features of particles A "
                                      "and B (e.g. turn a ball into a cube)."),
    context: int = typer.Option(None, "--context", "-c", help="Conditioning frames (default: the checkpoint's)."),
    horizon: int = typer.Option(None, "--horizon", "-p", help="Frames to roll out (default: the checkpoint's "
                                "n_future)."),
    start: int = typer.Option(0, "--start", help="Where the context begins, in frames after --stride."),
    stride: int = typer.Option(1, "--stride", help="Use every k-th frame of the video."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: runs/ddlp-edit/<video name>)."),
    fps: float = typer.Option(DEFAULT_FPS, "--fps", help="Frame rate of the written GIF and MP4."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print only JSON: {gif, mp4, json, ...}."),
) -> None:
    """What-if: edit one particle (or swap two particles' features) in every conditioning frame, roll DDLP's
    dynamics forward, and write input | original | edited side by side (edit.gif, edit.mp4, edit.json)."""
    from vpkit.cli.console import console, print_json
    from vpkit_ddlp.edit import (
        ParticleEdit,
        parse_move,
        parse_swap,
        upscale_factor,
        what_if,
    )

    edit = ParticleEdit(particle=particle, move=parse_move(move) if move is not None else None, scale=scale,
                        hide=hide, depth=depth, swap_features=parse_swap(swap_features) if swap_features else None)
    model, ckpt = load_particle_model(checkpoint, device, need_dynamics=True)
    edit.check(model.config.n_kp_enc)
    n_context = context if context is not None else int(ckpt.meta["data"].get("n_context", model.config.n_context))
    horizon = horizon if horizon is not None else max(int(ckpt.meta["data"].get("n_future", 1)), 1)
    _positive(context=n_context, horizon=horizon)
    video = read_frames(source, model.frame_shape, n_context + horizon, start, stride, at_least=n_context)
    dev = next(model.parameters()).device
    result = what_if(model, video[None, :n_context].to(dev), [edit], horizon)
    frames = edit_panels(video, n_context, result, upscale_factor(video.shape[-1], 192))
    out = out if out is not None else Path("runs") / "ddlp-edit" / (Path(source).stem or "video")
    out.mkdir(parents=True, exist_ok=True)
    gif, mp4 = write_videos(out, "edit", frames, fps)
    summary = {"gif": str(gif), "mp4": str(mp4), "json": str(out / "edit.json"), "checkpoint": str(checkpoint),
               "source": source, "context": n_context, "horizon": horizon,
               "truth_frames": max(0, video.shape[0] - n_context),
               "edit": {k: v for k, v in vars(edit).items() if v is not None and v is not False},
               "particles": _particle_rows(result.particles, 0, n_context - 1),
               "edited_particles": _particle_rows(result.edited_particles, 0, n_context - 1)}
    (out / "edit.json").write_text(json.dumps(summary, indent=2) + "\n")
    if as_json:
        print_json({k: summary[k] for k in ("gif", "mp4", "json", "context", "horizon", "truth_frames", "edit")})
        return
    console.print(f"{n_context} context → {horizon} frames, edit {summary['edit']}; panels input | original | "
                  "edited", highlight=False, soft_wrap=True)
    console.print(f"GIF: [bold]{gif}[/]  MP4: [bold]{mp4}[/]", highlight=False, soft_wrap=True)


@app.command("particles")
def particles_command(
    checkpoint: Path = typer.Argument(..., help="A DDLP or DLPv2 checkpoint directory."),
    source: str = typer.Argument(..., help="The video: a file ffmpeg reads, a folder of frames or a .npy array."),
    frames: int = typer.Option(None, "--frames", "-n", help="Frames to encode (default: the checkpoint's "
                               "n_context)."),
    start: int = typer.Option(0, "--start", help="First frame, counted after --stride."),
    stride: int = typer.Option(1, "--stride", help="Use every k-th frame of the video."),
    min_transparency: float = typer.Option(0.0, "--min-transparency", help="Leave out particles whose "
                                           "transparency z_t is below this (0 draws all; boxes fade with z_t)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: runs/ddlp-particles/<video>)."),
    fps: float = typer.Option(4.0, "--fps", help="Frame rate of the GIF."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print only JSON: {pngs, gif, json}."),
) -> None:
    """Draw each particle's number and glimpse window on the video's frames (DDLP tracks them from frame to frame),
    to choose what `vpkit ddlp edit` changes. Writes frame_NNN.png, particles.gif and particles.json."""
    from vpkit.cli.console import console, print_json
    from vpkit.engine.media import save_png, to_uint8
    from vpkit.engine.video_writer import close_all, open_writer
    from vpkit_ddlp.edit import draw_particles, encode_video, upscale_factor

    model, ckpt = load_particle_model(checkpoint, device, need_dynamics=False)
    count = frames if frames is not None else max(int(ckpt.meta["data"].get("n_context", 1)), 1)
    _positive(frames=count)
    video = read_frames(source, model.frame_shape, count, start, stride, at_least=1)
    dev = next(model.parameters()).device
    particles = encode_video(model, video[None].to(dev))
    one = {name: value[0].cpu() for name, value in particles.items()}
    drawn = draw_particles(to_uint8(video), one, upscale=upscale_factor(video.shape[-1]),
                           min_transparency=min_transparency)
    out = out if out is not None else Path("runs") / "ddlp-particles" / (Path(source).stem or "video")
    out.mkdir(parents=True, exist_ok=True)
    pngs = [save_png(out / f"frame_{t:03d}.png", image) for t, image in enumerate(drawn)]
    writer = open_writer(out / "particles.gif", fps)
    for image in drawn:
        writer.append(np.ascontiguousarray(image))
    (gif,) = close_all([writer])
    rows = [_particle_rows(particles, 0, t) for t in range(video.shape[0])]
    (out / "particles.json").write_text(json.dumps({"checkpoint": str(checkpoint), "source": source,
                                                    "model": ckpt.model_key, "frames": rows}, indent=2) + "\n")
    if as_json:
        print_json({"pngs": [str(p) for p in pngs], "gif": str(gif), "json": str(out / "particles.json")})
        return
    console.print(f"{ckpt.model_key}: {model.config.n_kp_enc} particles on {len(pngs)} frame(s) → [bold]{out}[/] "
                  "(frame_NNN.png, particles.gif, particles.json)", highlight=False, soft_wrap=True)


def _particle_rows(particles: dict[str, torch.Tensor], video: int, t: int) -> list[dict[str, Any]]:
    """One frame's particles as JSON rows: index, position (y, x), scale (fraction of the frame per axis),
    transparency, depth."""
    z, scale = particles["z"][video, t].tolist(), torch.sigmoid(particles["z_scale"][video, t]).tolist()
    on, depth = particles["obj_on"][video, t].tolist(), particles["z_depth"][video, t].reshape(-1).tolist()
    return [{"particle": k, "y": round(z[k][0], 4), "x": round(z[k][1], 4), "scale_h": round(scale[k][0], 4),
             "scale_w": round(scale[k][1], 4), "transparency": round(on[k], 4), "depth": round(depth[k], 4)}
            for k in range(len(z))]


def _positive(**values: int) -> None:
    from vpkit.core.errors import VpkitError

    for name, value in values.items():
        if value < 1:
            raise VpkitError(f"--{name} must be at least 1; got {value}.")
