"""The VideoSource contract: what `open_source` plugins return and `vpkit predict` reads.

A source streams uint8 RGB frames `[n, H, W, 3]` in chunks, so a long video is never held in memory. Sources know
their frame size up front; their length and frame rate when the container says so.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np


class VideoSource(ABC):
    """A readable video: a file ffmpeg decodes, a folder of frames, an array file, ...

    `size` is `(height, width)` of the decoded frames. `num_frames` and `fps` are `None` when unknown without
    decoding the whole video. Use as a context manager, or call `close()`.
    """

    uri: str
    size: tuple[int, int]
    num_frames: int | None = None
    fps: float | None = None

    @abstractmethod
    def chunks(self, start: int = 0, stride: int = 1, chunk: int = 64) -> Iterator[np.ndarray]:
        """Frames `start, start + stride, ...` to the end, as uint8 arrays `[n <= chunk, H, W, 3]` (RGB; grey
        sources repeat their channel). Raises `VpkitError` on a corrupt or truncated stream, naming the frame."""

    def frames(self, start: int = 0, stride: int = 1) -> Iterator[np.ndarray]:
        """The same frames one at a time, `[H, W, 3]` uint8."""
        for block in self.chunks(start, stride):
            yield from block

    def close(self) -> None:
        """Release the file handles (idempotent)."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
