"""vpkit's on-disk video format: one HDF5 file per split, uint8 frames of every video back to back, and an index.

Layout of `SPLIT.h5` (format `vpkit-h5/1`):

- `frames`: uint8 `[total_frames, H, W, C]` (C = 1 or 3), chunked `[CHUNK_FRAMES, H, W, C]` along time, so reading
  one clip touches only the chunks that hold its frames;
- `starts`, `lengths`: int64 `[videos]`, where each video's frames begin in `frames` and how many there are;
- `names`: the videos' names (their source file or folder), UTF-8 strings;
- attributes `format`, `height`, `width`, `channels` and, when known, `fps`.

`H5VideoWriter` appends videos and writes the file under a temporary name, renamed only on a clean close: a file
named `SPLIT.h5` is always complete. `H5Videos` is a torch `Dataset` of clips that opens the file lazily in each
process that reads it (so DataLoader workers each have their own handle) and never loads a split into memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpkit.core.errors import VpkitError
from vpkit.engine.seeding import read_generator

FORMAT = "vpkit-h5/1"
CHUNK_FRAMES = 4
REQUIRED = ("frames", "starts", "lengths")
CLIP_MODES = ("random", "first", "all")


def _h5py() -> Any:
    import h5py

    return h5py


class H5VideoWriter:
    """Append uint8 videos `[T, H, W, C]` of one split to `path`; use as a context manager."""

    def __init__(self, path: Path | str, frame_size: tuple[int, int], channels: int, *, fps: float | None = None,
                 compression: str | None = None) -> None:
        if channels not in (1, 3):
            raise VpkitError(f"vpkit's HDF5 format holds grey or RGB frames, not {channels} channels.")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        height, width = frame_size
        self._file = _h5py().File(self._tmp, "w")
        self._frames = self._file.create_dataset(
            "frames", shape=(0, height, width, channels), maxshape=(None, height, width, channels), dtype=np.uint8,
            chunks=(CHUNK_FRAMES, height, width, channels), compression=compression)
        self._file.attrs.update({"format": FORMAT, "height": height, "width": width, "channels": channels})
        if fps is not None:
            self._file.attrs["fps"] = float(fps)
        self._starts: list[int] = []
        self._lengths: list[int] = []
        self._names: list[str] = []

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every frame in the file."""
        return tuple(self._frames.shape[1:])

    def add(self, frames: np.ndarray, name: str = "") -> None:
        """Append one whole video."""
        self.add_blocks([frames], name)

    def add_blocks(self, blocks: Iterable[np.ndarray], name: str = "") -> int:
        """Append one video given as consecutive blocks of frames (memory holds one block); returns its length. If
        a block is refused or the iterator fails, the video's frames written so far are dropped."""
        expected = self._frames.shape[1:]
        start = self._frames.shape[0]
        try:
            for frames in blocks:
                frames = np.asarray(frames)
                if frames.dtype != np.uint8:
                    raise VpkitError(f"video {name!r}: frames must be uint8 (0..255), got {frames.dtype}; scale and "
                                     "cast them first.")
                if frames.ndim != 4 or frames.shape[1:] != expected:
                    raise VpkitError(f"video {name!r}: frames must be [T, {', '.join(map(str, expected))}], got "
                                     f"{list(frames.shape)}.")
                end = self._frames.shape[0]
                self._frames.resize(end + len(frames), axis=0)
                self._frames[end:] = frames
        except BaseException:
            self._frames.resize(start, axis=0)
            raise
        length = self._frames.shape[0] - start
        if length == 0:
            raise VpkitError(f"video {name!r} has no frames.")
        self._starts.append(start)
        self._lengths.append(length)
        self._names.append(name)
        return length

    def close(self) -> Path:
        """Write the index and give the file its final name."""
        if self._file is None:
            return self.path
        if not self._lengths:
            self.abort()
            raise VpkitError(f"No video was written to {self.path}: the split is empty.")
        self._file.create_dataset("starts", data=np.asarray(self._starts, np.int64))
        self._file.create_dataset("lengths", data=np.asarray(self._lengths, np.int64))
        self._file.create_dataset("names", data=self._names, dtype=_h5py().string_dtype())
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop what was written: no file is left under either name."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> H5VideoWriter:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_videos(path: Path | str, videos: Iterable[tuple[str, np.ndarray]], *, fps: float | None = None,
                 compression: str | None = None) -> Path:
    """Write `(name, uint8 [T, H, W, C])` pairs to `path`; the frame size is the first video's."""
    writer: H5VideoWriter | None = None
    try:
        for name, frames in videos:
            if writer is None:
                frames = np.asarray(frames)
                if frames.ndim != 4:
                    raise VpkitError(f"video {name!r}: frames must be [T, H, W, C], got {list(frames.shape)}.")
                writer = H5VideoWriter(path, frames.shape[1:3], frames.shape[3], fps=fps, compression=compression)
            writer.add(frames, name)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise VpkitError(f"No video to write to {path}: the source is empty.")
    return writer.close()


def _open(path: Path) -> Any:
    if not path.is_file():
        raise VpkitError(f"{path} does not exist; convert the split first (vpkit data prepare / convert).")
    try:
        file = _h5py().File(path, "r")
    except OSError as exc:
        raise VpkitError(f"{path} is not a readable HDF5 file ({exc}); it is truncated or not vpkit's format: "
                         "convert the split again.") from None
    missing = [key for key in REQUIRED if key not in file]
    if missing:
        present = ", ".join(sorted(file.keys())) or "nothing"
        file.close()
        raise VpkitError(f"{path} lacks {', '.join(missing)} (it holds {present}): not vpkit's HDF5 format "
                         f"({FORMAT}); convert the source with vpkit data convert.")
    fmt = file.attrs.get("format")
    if fmt != FORMAT:
        file.close()
        raise VpkitError(f"{path} is format {fmt!r}, not {FORMAT}; convert the source again with this vpkit.")
    return file


class H5Videos(torch.utils.data.Dataset):
    """Clips of `clip_length` frames, every `step`-th frame, from one split file, as uint8 `[T, C, H, W]`.

    - `clips="random"`: item i is video i from a random start drawn at each read (training) from
      `read_generator(seed, "clip start", i)`: the same for a batch on any DataLoader worker and after a resume;
    - `clips="first"`: item i is video i from its first frame (a fixed test protocol);
    - `clips="all"`: every start of every video, in order.

    `videos` keeps only those videos (indices into the file, e.g. a train/validation split). Videos shorter than a
    clip are left out (`skipped` counts them). `rgb` repeats grey frames to three equal channels (PIL's
    `convert("RGB")`, as the HDF5 files of RIVER's KTH hold them). The file opens on the first read in each process.
    """

    def __init__(self, path: Path | str, clip_length: int, *, step: int = 1, clips: str = "random",
                 seed: int | None = None, videos: Sequence[int] | None = None, rgb: bool = False) -> None:
        if clip_length < 1 or step < 1:
            raise VpkitError("clip_length and step must be at least 1.")
        if clips not in CLIP_MODES:
            raise VpkitError(f"Unknown clips mode {clips!r}; choose one of {', '.join(CLIP_MODES)}.")
        self.path = Path(path)
        self.clip_length, self.step, self.clips = clip_length, step, clips
        self.span = (clip_length - 1) * step + 1
        with _open(self.path) as file:
            starts = file["starts"][:]
            lengths = file["lengths"][:]
            channels = int(file.attrs["channels"])
            if rgb and channels != 1:
                raise VpkitError(f"{self.path} holds {channels}-channel frames; rgb repeats grey (1-channel) ones.")
            self.frame_shape = (3 if rgb else channels, int(file.attrs["height"]), int(file.attrs["width"]))
            self.fps = float(file.attrs["fps"]) if "fps" in file.attrs else None
        if videos is not None:
            chosen = np.asarray(videos, dtype=np.int64)
            if chosen.size and (chosen.min() < 0 or chosen.max() >= len(starts)):
                raise VpkitError(f"{self.path} holds {len(starts)} videos; video {int(chosen.max())} was asked for.")
            starts, lengths = starts[chosen], lengths[chosen]
            if not len(starts):
                raise VpkitError(f"No video of {self.path} was selected: the split is empty.")
        keep = lengths >= self.span
        self.skipped = int((~keep).sum())
        self._starts, self._lengths = starts[keep], lengths[keep]
        if len(self._starts) == 0:
            raise VpkitError(f"No video in {self.path} has the {self.span} frames a clip of {clip_length} "
                             f"(every {step}) needs; the longest has {int(lengths.max(initial=0))}.")
        self._offsets = np.cumsum(np.concatenate([[0], self._lengths - self.span + 1]))
        self.seed = seed or 0
        self._file: Any = None

    def __len__(self) -> int:
        return int(self._offsets[-1]) if self.clips == "all" else len(self._starts)

    def locate(self, index: int) -> tuple[int, int]:
        """(video, first frame in it) of item `index` (random modes draw the start)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self.clips == "all":
            video = int(np.searchsorted(self._offsets, index, side="right") - 1)
            return video, int(index - self._offsets[video])
        if self.clips == "first":
            return index, 0
        room = int(self._lengths[index]) - self.span + 1
        return index, int(torch.randint(room, (1,), generator=read_generator(self.seed, "clip start", index)))

    def __getitem__(self, index: int) -> torch.Tensor:
        video, first = self.locate(index)
        if self._file is None:
            self._file = _open(self.path)
        begin = int(self._starts[video]) + first
        frames = self._file["frames"][begin: begin + self.span: self.step]  # reads only this clip's chunks
        clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        return clip.expand(-1, 3, -1, -1).contiguous() if clip.shape[1] != self.frame_shape[0] else clip

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None  # each process opens its own handle
        return state


def read_info(path: Path | str, sample_frames: int = 256) -> dict[str, Any]:
    """What `vpkit data info` prints about a split file: counts, lengths, resolution, the value range of a sample
    of frames, and warnings for the usual mistakes."""
    path = Path(path)
    with _open(path) as file:
        lengths = file["lengths"][:]
        frames = file["frames"]
        picks = np.unique(np.linspace(0, frames.shape[0] - 1, min(sample_frames, frames.shape[0])).astype(int))
        sample = frames[picks]
        info = {
            "path": str(path), "format": FORMAT, "videos": len(lengths), "frames": int(frames.shape[0]),
            "length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())},
            "height": int(file.attrs["height"]), "width": int(file.attrs["width"]),
            "channels": int(file.attrs["channels"]), "fps": float(file.attrs["fps"]) if "fps" in file.attrs else None,
            "value_range": [int(sample.min()), int(sample.max())],
        }
    warnings = []
    if info["value_range"][1] <= 1:
        warnings.append("every sampled pixel is 0 or 1: the frames were probably in [0, 1] and cast to uint8 "
                        "without scaling by 255.")
    elif info["value_range"][1] < 32:
        warnings.append(f"the brightest sampled pixel is {info['value_range'][1]} of 255: check the source's scaling.")
    if info["channels"] == 3 and sample.size and np.allclose(sample[..., 0], sample[..., 1]) and np.allclose(
            sample[..., 1], sample[..., 2]):
        warnings.append("the three channels are equal: the videos are grey; converting with 1 channel saves 3x.")
    info["warnings"] = warnings
    return info
