"""A video saved as one `.npy` array, memory-mapped so that only the frames asked for are read.

Accepted: uint8 (0-255) or float (0-1) frames laid out `[T, H, W]` (grey), `[T, H, W, C]` or `[T, C, H, W]` with
C = 1 or 3. When both layouts fit (`[T, 3, W, 3]`), channels-last wins. Float values are checked per chunk, as they
are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.source import VideoSource
from vpkit.plugins.sources import index_blocks

CHANNELS = (1, 3)
LAYOUTS = "[T, H, W], [T, H, W, C] or [T, C, H, W] with C = 1 or 3"
# Slack on the [0, 1] check: float32 arithmetic can land a hair outside (e.g. 1.0000001) in a valid file.
FLOAT_SLACK = 1e-3


class NpyVideo(VideoSource):
    """Frames of a memory-mapped `.npy` array."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            self._frames = np.load(uri, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:
            raise VpkitError(f"{uri} is not a valid .npy file ({error})") from error
        shape, dtype = self._frames.shape, self._frames.dtype
        if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
            raise VpkitError(f"{uri} holds {dtype} values; save frames as uint8 (0-255) or float (0-1)")
        if len(shape) == 3:
            self._channels_axis = None
        elif len(shape) == 4 and shape[3] in CHANNELS:
            self._channels_axis = 3
        elif len(shape) == 4 and shape[1] in CHANNELS:
            self._channels_axis = 1
        else:
            raise VpkitError(f"{uri} has shape {list(shape)}; a video array is {LAYOUTS}")
        if shape[0] == 0 or 0 in shape[1:]:
            raise VpkitError(f"{uri} has shape {list(shape)}: it holds no frames")
        self.size = (shape[2], shape[3]) if self._channels_axis == 1 else (shape[1], shape[2])
        self.num_frames = shape[0]
        self.fps = None

    def chunks(self, start: int = 0, stride: int = 1, chunk: int = 64) -> Iterator[np.ndarray]:
        for indices in index_blocks(start, stride, chunk, self.num_frames):
            block = np.asarray(self._frames[indices.start:indices.stop:indices.step])
            if block.dtype != np.uint8:
                block = self._to_uint8(block, indices)
            if self._channels_axis is None:
                block = block[..., None]
            elif self._channels_axis == 1:
                block = block.transpose(0, 2, 3, 1)
            if block.shape[-1] == 1:
                block = np.broadcast_to(block, (*block.shape[:3], 3))
            yield np.ascontiguousarray(block)

    def _to_uint8(self, block: np.ndarray, indices: range) -> np.ndarray:
        inside = (block >= -FLOAT_SLACK) & (block <= 1 + FLOAT_SLACK)  # NaN is outside too
        if not inside.all():
            bad = int(np.argmin(inside.reshape(len(block), -1).all(axis=1)))
            values = block[bad][~inside[bad]]
            raise VpkitError(f"{self.uri} frame {indices[bad]} has values outside [0, 1] (e.g. {values.flat[0]:g}); "
                             "save float frames scaled to [0, 1], or uint8")
        return (np.clip(block, 0, 1) * 255 + 0.5).astype(np.uint8)

    def close(self) -> None:
        self._frames = None


@vpkit.hookimpl
def open_source(uri: str) -> VideoSource | None:
    """Claim `.npy` files."""
    path = Path(uri)
    return NpyVideo(uri) if path.suffix.lower() == ".npy" and path.is_file() else None
