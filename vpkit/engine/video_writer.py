"""Streaming MP4 and GIF writers: frames go to an ffmpeg process one at a time, so memory stays bounded however
long the video is.

Both use the real ffmpeg binary that imageio-ffmpeg ships. Each writer encodes into a temporary name in the target's
folder and renames it into place only when the encoder finished cleanly, so an error or an interrupt never leaves a
partial file behind. Use them as context managers (an exception aborts), or call `close()` / `abort()`;
`close_all` finishes several writers before renaming any, so they appear together or not at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path

import numpy as np

from vpkit.core.errors import VpkitError

# x264 constant-rate factor: 18 is visually lossless for these synthetic panels at a few hundred kB per minute.
MP4_CRF = 18


class FfmpegWriter:
    """Stream uint8 RGB frames `[H, W, 3]` into ffmpeg through `imageio_ffmpeg.write_frames`. The frame size is
    fixed by the first frame.

    Subclasses give the codec, the output pixel format and extra output arguments. Writes to
    `.NAME.tmp-XXXX.SUFFIX` beside `path`; `close()` renames it to `path`.
    """

    format_name = "video"
    codec = ""
    pix_fmt = ""

    def __init__(self, path: Path | str, fps: float) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive; got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.tmp_path = self.path.parent / f".{self.path.stem}.tmp-{uuid.uuid4().hex[:8]}{self.path.suffix}"
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self._encoder: Generator[None, np.ndarray | None, None] | None = None
        self._finished = False
        self._closed = False

    # -- subclass hook ----------------------------------------------------------------------------------------
    def _output_args(self) -> list[str]:
        return []

    # -- writing ----------------------------------------------------------------------------------------------
    def _start(self, height: int, width: int) -> None:
        import imageio_ffmpeg

        self.size = (height, width)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._encoder = imageio_ffmpeg.write_frames(
            str(self.tmp_path), (width, height), fps=self.fps, codec=self.codec, pix_fmt_out=self.pix_fmt,
            quality=None, macro_block_size=1, ffmpeg_log_level="error", output_params=self._output_args())
        self._encoder.send(None)  # start the ffmpeg process

    def append(self, frame: np.ndarray) -> None:
        """Add one uint8 frame `[H, W, 3]` (RGB)."""
        if self._finished:
            raise RuntimeError(f"{self.path}: append after close")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be uint8 [H, W, 3]; got {frame.dtype} {frame.shape}")
        if self._encoder is None:
            self._start(frame.shape[0], frame.shape[1])
        elif frame.shape[:2] != self.size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {self.size}")
        assert self._encoder is not None
        try:
            self._encoder.send(np.ascontiguousarray(frame))
        except OSError as exc:
            raise VpkitError(f"ffmpeg stopped while writing {self.path}: {_last_line(exc)}") from exc
        self.frames_written += 1

    def extend(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            self.append(frame)

    def finish(self) -> None:
        """Flush and wait for the encoder; the output still has its temporary name. Raises `VpkitError` when
        ffmpeg failed (the temporary file is removed)."""
        if self._finished:
            return
        self._finished = True
        if self._encoder is None:
            raise VpkitError(f"No frames were written to {self.path}.")
        try:
            self._encoder.close()
            if not self.tmp_path.is_file():
                raise VpkitError(f"ffmpeg wrote nothing to {self.path}.")
        except OSError as exc:
            self._discard()
            raise VpkitError(f"ffmpeg could not write {self.path}: {_last_line(exc)}") from exc
        except BaseException:
            self._discard()
            raise

    def commit(self) -> Path:
        """Rename the finished temporary file to `path`."""
        self.finish()
        if not self._closed:
            os.replace(self.tmp_path, self.path)
            self._closed = True
        return self.path

    def close(self) -> Path:
        """Finish encoding and move the file into place. Returns the final path."""
        return self.commit()

    def abort(self) -> None:
        """Stop the encoder and delete the temporary file (idempotent; a committed file is left alone)."""
        if self._closed:
            return
        self._finished = True
        self._discard()

    def _discard(self) -> None:
        if self._encoder is not None:
            try:
                self._encoder.close()
            except OSError:
                pass  # the file is being thrown away; why ffmpeg failed no longer matters
        self.tmp_path.unlink(missing_ok=True)
        self._closed = True

    def __enter__(self) -> FfmpegWriter:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


class Mp4Writer(FfmpegWriter):
    """H.264 in MP4, yuv420p (plays everywhere). Odd frame sizes are padded with white to even ones, which
    yuv420p needs."""

    format_name = "MP4"
    codec = "libx264"
    pix_fmt = "yuv420p"

    def __init__(self, path: Path | str, fps: float, *, crf: int = MP4_CRF) -> None:
        super().__init__(path, fps)
        self.crf = crf

    def _output_args(self) -> list[str]:
        return ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2:0:0:white", "-preset", "medium", "-crf", str(self.crf),
                "-movflags", "+faststart", "-f", "mp4"]


class GifWriter(FfmpegWriter):
    """Looping GIF, one palette per frame (`palettegen=stats_mode=single`, `paletteuse=new=1`): ffmpeg never needs
    the whole video to build a global palette, so it streams in bounded memory and keeps each frame's colours."""

    format_name = "GIF"
    codec = "gif"
    pix_fmt = "pal8"

    def _output_args(self) -> list[str]:
        return ["-filter_complex", "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1",
                "-loop", "0", "-f", "gif"]


def open_writer(path: Path | str, fps: float) -> FfmpegWriter:
    """An MP4 or GIF writer, chosen by the suffix of `path`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return Mp4Writer(path, fps)
    if suffix == ".gif":
        return GifWriter(path, fps)
    raise VpkitError(f"Cannot write {path}: only .mp4 and .gif are supported.")


def close_all(writers: Sequence[FfmpegWriter]) -> list[Path]:
    """Finish every writer, then rename them all into place: either every file appears or none does."""
    try:
        for writer in writers:
            writer.finish()
        return [writer.commit() for writer in writers]
    except BaseException:
        abort_all(writers, remove_committed=True)
        raise


def abort_all(writers: Sequence[FfmpegWriter], *, remove_committed: bool = False) -> None:
    """Abort every writer; with `remove_committed`, also delete files already renamed into place."""
    for writer in writers:
        if writer._closed and remove_committed and writer.frames_written and writer.path.is_file():
            writer.path.unlink(missing_ok=True)
        writer.abort()
