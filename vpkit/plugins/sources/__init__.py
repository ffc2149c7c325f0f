"""Built-in video sources, one `open_source` plugin each: `video` (any file ffmpeg reads, decoded with decord),
`frames` (a folder of frame images) and `array` (a `.npy` file). Each claims only its own kind of input and returns
`None` otherwise, so the order plugins are asked in does not matter."""

from __future__ import annotations

from collections.abc import Iterator

from vpkit.core.errors import VpkitError


def index_blocks(start: int, stride: int, chunk: int, num_frames: int) -> Iterator[range]:
    """The frame indices `start, start + stride, ... < num_frames` in runs of at most `chunk`.

    `start` and `stride` come from the user (`vpkit predict --start/--stride`), so bad values are a `VpkitError`.
    """
    if start < 0:
        raise VpkitError(f"the start frame must be 0 or more, got {start}")
    if stride < 1:
        raise VpkitError(f"the frame stride must be 1 or more, got {stride}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    indices = range(start, num_frames, stride)
    for first in range(0, len(indices), chunk):
        yield indices[first:first + chunk]
