"""`vpkit data convert`: any generic source into vpkit's HDF5 format (`engine/h5videos.py`).

A source is a video file, a `.npy` array, a folder of frame images (one video), or a folder whose entries are any of
those (one video each, in natural order of their names; hidden entries ignored). Every video is read through the
`open_source` plugins in blocks (memory holds one block), optionally resized (shorter side, antialiased, centre crop)
and turned grey. A video that cannot be read is skipped with a warning naming it — one bad file should not cost the
whole split — and the conversion fails only when no video could be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from vpkit.core.errors import VpkitError
from vpkit.engine import h5videos
from vpkit.engine.predictor import preprocess
from vpkit.engine.video_source import open_video
from vpkit.plugins.sources.frames import SUFFIXES as IMAGE_SUFFIXES
from vpkit.plugins.sources.frames import natural_key


def video_entries(source: Path) -> list[Path]:
    """The videos of `source`: itself when it is one video, else its non-hidden entries in natural order."""
    if not source.exists():
        raise VpkitError(f"{source} does not exist; give a video file, a .npy array or a folder of videos.")
    if source.is_file():
        return [source]
    entries = sorted((p for p in source.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
        return [source]  # a folder of frames is one video
    if not entries:
        raise VpkitError(f"{source} is empty; give a video file, a .npy array or a folder of videos.")
    return entries


def _blocks(path: Path, size: int | None, grey: bool) -> Iterator[np.ndarray]:
    with open_video(str(path)) as source:
        for block in source.chunks(chunk=64):
            if size is None and not grey:
                yield block
                continue
            height, width = (size, size) if size is not None else block.shape[1:3]
            frames = preprocess(block, (1 if grey else 3, height, width))  # float [n, C, h, w] in [0, 1]
            yield frames.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def convert(source: Path | str, out: Path | str, *, size: int | None = None, grey: bool = False,
            warn: Callable[[str], None] = print, progress: Callable[[str], None] | None = None) -> tuple[Path, int, int]:
    """Write every readable video of `source` to `out` (an `.h5` file); returns (path, videos written, skipped)."""
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if out.suffix != ".h5":
        raise VpkitError(f"--out {out} must name an .h5 file (e.g. DIR/train.h5).")
    entries = video_entries(source)
    writer: h5videos.H5VideoWriter | None = None
    written = skipped = 0
    try:
        for entry in entries:
            try:
                blocks = _blocks(entry, size, grey)
                first = next(blocks, None)
                if first is None:
                    raise VpkitError(f"{entry} has no frames")
                if writer is None:
                    writer = h5videos.H5VideoWriter(out, first.shape[1:3], first.shape[3])
                elif first.shape[1:] != writer.frame_shape:
                    height, width, _ = writer.frame_shape
                    raise VpkitError(f"{entry} has {first.shape[2]}x{first.shape[1]} frames, the others "
                                     f"{width}x{height}: pass --size")
                writer.add_blocks(_chain(first, blocks), name=entry.name)
                written += 1
                if progress is not None:
                    progress(entry.name)
            except VpkitError as exc:
                skipped += 1
                warn(f"skipped {entry}: {exc}")
        if writer is None:
            raise VpkitError(f"No video of {source} could be read ({skipped} tried); nothing was written.")
        return writer.close(), written, skipped
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
