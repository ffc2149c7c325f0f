"""Writing videos for people to look at: PNG grids and GIF panels of float videos `[N, T, C, H, W]` in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from torch import Tensor

BORDER_COLOURS = {"context": (40, 180, 40), "sample": (200, 40, 40), "truth": (60, 60, 200)}


def to_uint8(video: Tensor) -> np.ndarray:
    """float `[..., C, H, W]` in [0, 1] -> uint8 `[..., H, W, 3]` (grey repeated to RGB)."""
    video = video.detach().float().clamp(0, 1).cpu()
    if video.shape[-3] == 1:
        video = video.expand(*video.shape[:-3], 3, *video.shape[-2:])
    return (video.movedim(-3, -1) * 255).round().to(torch.uint8).numpy()


def add_border(frames: np.ndarray, colour: tuple[int, int, int], width: int = 2) -> np.ndarray:
    """uint8 images `[..., H, W, 3]` framed by `width` pixels of `colour`."""
    out = np.empty((*frames.shape[:-3], frames.shape[-3] + 2 * width, frames.shape[-2] + 2 * width, 3), np.uint8)
    out[...] = np.asarray(colour, np.uint8)
    out[..., width:-width, width:-width, :] = frames
    return out


def panel_frames(rows: Sequence[Tensor], kinds: Sequence[str] | None = None, pad: int = 2) -> np.ndarray:
    """Lay out several videos side by side, one column each, for every time step.

    `rows` holds videos `[T, C, H, W]` of equal T (shorter ones hold their last frame). `kinds` names each
    column's border colour (context/sample/truth). Returns uint8 `[T, H', W', 3]`.
    """
    length = max(v.shape[0] for v in rows)
    columns = []
    for i, video in enumerate(rows):
        if video.shape[0] < length:
            video = torch.cat([video, video[-1:].expand(length - video.shape[0], *video.shape[1:])])
        frames = to_uint8(video)
        if kinds is not None:
            frames = add_border(frames, BORDER_COLOURS.get(kinds[i], (128, 128, 128)))
        columns.append(frames)
    return join_columns(columns, pad)


def join_columns(columns: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """uint8 images `[..., H, W_i, 3]` side by side, `pad` white columns between them."""
    spacer = np.full((*columns[0].shape[:-2], pad, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for column in columns:
        parts += [column, spacer]
    return np.concatenate(parts[:-1], axis=-2)


def grid_image(videos: Tensor, pad: int = 2) -> np.ndarray:
    """`[N, T, C, H, W]` -> one uint8 image: a row per video, a column per frame."""
    frames = to_uint8(videos)  # N T H W 3
    n, t, h, w, _ = frames.shape
    out = np.full((n * (h + pad) - pad, t * (w + pad) - pad, 3), 255, np.uint8)
    for i in range(n):
        for j in range(t):
            out[i * (h + pad): i * (h + pad) + h, j * (w + pad): j * (w + pad) + w] = frames[i, j]
    return out


def save_png(path: Path | str, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, image)
    return path


def save_gif(path: Path | str, frames: np.ndarray, fps: float = 4.0) -> Path:
    """uint8 `[T, H, W, 3]` -> looping GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
    return path


def sample_panel_frames(context: Tensor, samples: Tensor, truth: Tensor | None = None) -> np.ndarray:
    """The frames of one video's panel: a column per sample (context then prediction), and one for the ground truth
    when given. `context` `[T0, C, H, W]`, `samples` `[S, horizon, C, H, W]`, `truth` `[horizon, C, H, W]` or None.
    Context frames play first in every column (green border), then predictions (red) or the true future (blue).
    Returns uint8 `[T0 + horizon, H', W', 3]`."""
    columns = [torch.cat([context, samples[s]]) for s in range(samples.shape[0])]
    if truth is not None:
        columns.append(torch.cat([context, truth]))
    n_ctx = context.shape[0]
    future_kinds = ["sample"] * samples.shape[0] + (["truth"] if truth is not None else [])
    frames = []
    for t in range(columns[0].shape[0]):
        kinds = ["context"] * len(columns) if t < n_ctx else future_kinds
        frames.append(panel_frames([c[t: t + 1] for c in columns], kinds)[0])
    return np.stack(frames)


def stack_panels(panels: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Stack equally long uint8 panels `[T, H, W, 3]` (e.g. one per video) top to bottom, white between."""
    width = max(p.shape[2] for p in panels)
    parts: list[np.ndarray] = []
    for panel in panels:
        if panel.shape[2] < width:
            fill = np.full((*panel.shape[:2], width - panel.shape[2], 3), 255, np.uint8)
            panel = np.concatenate([panel, fill], axis=2)
        parts += [panel, np.full((panel.shape[0], pad, width, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def save_sample_panels(
    path: Path | str, context: Tensor, samples: Tensor, truth: Tensor | None = None, fps: float = 4.0
) -> Path:
    """A GIF of one video: columns context+sample_k for each sample (and context+ground truth when given).

    `context` `[T0, C, H, W]`, `samples` `[S, H, C, H, W]`, `truth` `[H, C, H, W]` or None. Context frames play
    first in every column (green border), then predictions (red) or the true future (blue).
    """
    return save_gif(path, sample_panel_frames(context, samples, truth), fps=fps)
