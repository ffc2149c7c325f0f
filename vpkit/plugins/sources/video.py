"""Video files: anything ffmpeg reads (mp4, mkv, avi, mov, webm, ...), decoded with decord on the CPU.

decord indexes every packet when it opens a file, so `num_frames` is exact and reading from any frame seeks to the
nearest key frame. Frames are decoded a chunk at a time with `get_batch`; a long video is never held in memory.

What a damaged file does, as measured with decord 0.6.0: an MP4 cut short loses its index (the `moov` box is written
last) and fails to open; one with damaged frame data opens and fails while decoding, which is reported with the frame
number. Containers whose index is rebuilt from the bytes present (Matroska, AVI without its index) read as a shorter
video, as ffmpeg plays them.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.source import VideoSource
from vpkit.plugins.sources import index_blocks

SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".asf", ".flv", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".3gp", ".ogv", ".vob", ".mxf", ".y4m", ".dv",
})

# Decoder threads: ffmpeg's frame threading scales to about the core count; more only adds latency and memory.
NUM_THREADS = min(4, os.cpu_count() or 1)
# Most bytes decoded per `get_batch`. decord allocates a fresh array for every batch and glibc maps blocks over
# 32 MiB straight from the kernel, so a big batch faults in every page again: 64 frames of 640x360 (44 MB) decode
# 10-25% slower than 16 to 24 (11-16 MB); see benchmarks/decode.py --batch-mb.
BATCH_BYTES = 16 * 2**20


def container_of(head: bytes) -> str | None:
    """The container a file's first bytes announce (`"MP4/QuickTime"`, `"AVI"`, ...), or `None` if none is known."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return "MP4/QuickTime"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "ASF/WMV"
    if head[:3] == b"FLV":
        return "FLV"
    if head[:4] == b"OggS":
        return "Ogg"
    if head[:4] == b"\x00\x00\x01\xba":
        return "MPEG program stream"
    if len(head) > 188 and head[0] == head[188] == 0x47:
        return "MPEG transport stream"
    if head[:9] == b"YUV4MPEG2":
        return "Y4M"
    return None


@functools.cache
def _decord() -> Any:
    """decord, imported on first use with ffmpeg's own log lines off (we raise clearer errors instead)."""
    try:
        import decord
    except ImportError as error:
        raise VpkitError("reading video files needs decord: pip install decord") from error
    decord.logging.set_level(decord.logging.QUIET)
    return decord


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null: decord logs a failed open there whatever the ffmpeg log level."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): nothing to silence
        saved = None
    if saved is None:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _as_numpy(batch: Any) -> np.ndarray:
    """A decord NDArray as numpy without copying it (`asnumpy()` copies: 20-40% slower in all)."""
    from torch.utils.dlpack import from_dlpack

    return from_dlpack(batch.to_dlpack()).numpy()


class DecordVideo(VideoSource):
    """A video file read with decord's `VideoReader` on the CPU."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        path = Path(uri)
        if path.stat().st_size == 0:
            raise VpkitError(f"{uri} is empty (0 bytes)")
        with open(path, "rb") as file:
            container = container_of(file.read(512))
        decord = _decord()
        try:
            self._reader = self._open_reader()
        except (RuntimeError, decord.DECORDError) as error:
            if container is None:
                raise VpkitError(f"{uri} is not a video ffmpeg can read") from error
            raise VpkitError(f"{uri} is truncated or corrupt (ffmpeg cannot open this {container} file); "
                             "copy it again or re-encode it") from error
        self.num_frames = len(self._reader)
        if self.num_frames == 0:
            raise VpkitError(f"{uri} has no video frames")
        fps = self._reader.get_avg_fps()
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        first = self._decode(range(1))
        self.size = (int(first.shape[1]), int(first.shape[2]))

    def chunks(self, start: int = 0, stride: int = 1, chunk: int = 64) -> Iterator[np.ndarray]:
        """As `VideoSource.chunks`; a block holds at most `BATCH_BYTES` (24 frames of 640x360, 2 of 1080p) whatever
        `chunk` asks, the size decord decodes fastest."""
        height, width = self.size
        batch = max(1, min(chunk, BATCH_BYTES // (height * width * 3)))
        for indices in index_blocks(start, stride, batch, self.num_frames):
            yield self._decode(indices)

    def _decode(self, indices: range) -> np.ndarray:
        if self._reader is None:
            raise ValueError(f"{self.uri} is closed")
        decord = _decord()
        try:
            frames = _as_numpy(self._reader.get_batch(list(indices)))
        except decord.DECORDError:
            frames = self._decode_one_by_one(indices)
        if len(frames) < len(indices):
            raise VpkitError(f"{self.uri} is truncated or corrupt (could not decode frame {indices[len(frames)]})")
        return frames

    def _open_reader(self) -> Any:
        decord = _decord()
        with _stderr_silenced():
            return decord.VideoReader(self.uri, ctx=decord.cpu(0), num_threads=NUM_THREADS)

    def _decode_one_by_one(self, indices: range) -> np.ndarray:
        """After a failed batch, find the frame that fails (or decode the batch if the error does not repeat).

        The reader is opened afresh first: after an error decord's decoder can fail on any frame, even ones it
        decoded before, which would name the wrong frame."""
        decord = _decord()
        self._reader = self._open_reader()
        frames = []
        for index in indices:
            try:
                frames.append(_as_numpy(self._reader.get_batch([index]))[0])
            except decord.DECORDError as error:
                raise VpkitError(f"{self.uri} is truncated or corrupt (could not decode frame {index})") from error
        return np.stack(frames)

    def close(self) -> None:
        self._reader = None


@vpkit.hookimpl
def open_source(uri: str) -> VideoSource | None:
    """Claim files with a video suffix, or whose first bytes name a video container."""
    path = Path(uri)
    if not path.is_file():
        return None
    if path.suffix.lower() not in SUFFIXES:
        with open(path, "rb") as file:
            if container_of(file.read(512)) is None:
                return None
    return DecordVideo(uri)
