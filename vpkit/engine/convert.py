"""`vpkit data convert`: any generic source into vpkit's HDF5 format (`engine/h5videos.py`).

A source is a video file, a `.npy` array, a folder of frame images (one video), a folder whose entries are any of
those (one video each, in natural order of their names; hidden entries ignored), or RIVER's HDF5 layout (a
`shard_0001.hdf5` file or a split folder of them: group `len` with one int64 per video, one group per video holding
one uint8 `[H, W, 3]` dataset per frame; `dataset/convert_to_h5.py` in Araachie/river). Every video is read through the
`open_source` plugins in blocks (memory holds one block), optionally resized (shorter side, antialiased, centre crop)
and turned grey. A video that cannot be read is skipped with a warning naming it — one bad file should not cost the
whole split — and the conversion fails only when no video could be read.

A folder laid out by split (`train|val|valid|test/<video>/...`, the frame-folder layout RIVER's and DDLP's scripts
read, or RIVER's `OUT/<split>/shard_0001.hdf5`) converts in one go with `convert_splits` into `OUT/<split>.h5`
(`valid` is written as `val.h5`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
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


def river_shards(source: Path) -> list[Path]:
    """RIVER's shard files in `source` (a shard or a split folder), or [] when it is not RIVER's layout."""
    candidates = [source] if source.is_file() else sorted(source.glob("shard_*.hdf5")) if source.is_dir() else []
    shards = []
    for path in candidates:
        if path.suffix.lower() not in (".hdf5", ".h5"):
            continue
        try:
            with h5py.File(path, "r") as file:
                if isinstance(file.get("len"), h5py.Group):
                    shards.append(path)
        except OSError:
            continue
    return shards


def _river_videos(shards: list[Path]) -> Iterator[tuple[str, Callable[[], Iterator[np.ndarray]]]]:
    """(name, blocks of one video) for every video of RIVER's shards, in index order."""
    for shard in shards:
        with h5py.File(shard, "r") as file:
            indices = sorted(file["len"].keys(), key=int)

        def blocks(shard: Path = shard, index: str = "") -> Iterator[np.ndarray]:
            with h5py.File(shard, "r") as file:
                if index not in file:
                    raise VpkitError(f"{shard.name} lists video {index} in 'len' but has no group {index}")
                length = int(file["len"][index][()])
                group = file[index]
                missing = [str(t) for t in range(length) if str(t) not in group]
                if missing:
                    raise VpkitError(f"{shard.name} video {index} lacks frames {', '.join(missing[:3])}")
                for first in range(0, length, 64):
                    yield np.stack([group[str(t)][()] for t in range(first, min(first + 64, length))])

        for index in indices:
            yield f"{shard.stem}/{index}", functools.partial(blocks, index=index)


def _resized(blocks: Iterator[np.ndarray], size: int | None, grey: bool) -> Iterator[np.ndarray]:
    for block in blocks:
        if block.ndim == 3:
            block = block[..., None]
        if block.shape[-1] == 1 and not grey:
            block = np.repeat(block, 3, axis=-1)
        if size is None and not grey:
            yield block
            continue
        height, width = (size, size) if size is not None else block.shape[1:3]
        frames = preprocess(block, (1 if grey else 3, height, width))  # float [n, C, h, w] in [0, 1]
        yield frames.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _source_blocks(path: Path) -> Iterator[np.ndarray]:
    with open_video(str(path)) as source:
        yield from source.chunks(chunk=64)


def convert(source: Path | str, out: Path | str, *, size: int | None = None, grey: bool = False,
            warn: Callable[[str], None] = print, progress: Callable[[str], None] | None = None) -> tuple[Path, int, int]:
    """Write every readable video of `source` to `out` (an `.h5` file); returns (path, videos written, skipped)."""
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if out.suffix != ".h5":
        raise VpkitError(f"--out {out} must name an .h5 file (e.g. DIR/train.h5).")
    shards = river_shards(source) if source.exists() else []
    if shards:
        videos = [(name, f"{source} video {name}", read) for name, read in _river_videos(shards)]
        if not videos:
            raise VpkitError(f"{source} is RIVER's layout but holds no video ('len' is empty).")
    else:
        videos = [(entry.name, str(entry), functools.partial(_source_blocks, entry)) for entry in video_entries(source)]
    writer: h5videos.H5VideoWriter | None = None
    written = skipped = 0
    try:
        for name, label, read in videos:
            try:
                blocks = _resized(read(), size, grey)
                first = next(blocks, None)
                if first is None:
                    raise VpkitError("it has no frames")
                if writer is None:
                    writer = h5videos.H5VideoWriter(out, first.shape[1:3], first.shape[3])
                elif first.shape[1:] != writer.frame_shape:
                    height, width, _ = writer.frame_shape
                    raise VpkitError(f"it has {first.shape[2]}x{first.shape[1]} frames, the others "
                                     f"{width}x{height}: pass --size")
                writer.add_blocks(_chain(first, blocks), name=name)
                written += 1
                if progress is not None:
                    progress(name)
            except (VpkitError, OSError, KeyError) as exc:
                skipped += 1
                warn(f"skipped {label}: {exc}")
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


SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "test": "test"}


def split_folders(source: Path) -> dict[str, Path]:
    """vpkit split name -> folder, for the split folders of `source` ({} when it is not laid out by split)."""
    if not source.is_dir():
        return {}
    found = {}
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and p.name in SPLIT_FOLDERS):
        split = SPLIT_FOLDERS[folder.name]
        if split in found:
            raise VpkitError(f"{source} has both {found[split].name}/ and {folder.name}/: keep one.")
        found[split] = folder
    return found


def convert_splits(source: Path | str, out_dir: Path | str, **kwargs) -> dict[str, tuple[Path, int, int]]:
    """Convert every split folder of `source` into `out_dir/<split>.h5`; returns split -> (path, written, skipped).
    A split that fails leaves the splits converted before it in place and no file of its own."""
    source, out_dir = Path(source).expanduser(), Path(out_dir).expanduser()
    folders = split_folders(source)
    if not folders:
        raise VpkitError(f"{source} has no train/, val/ (or valid/) or test/ folder; convert a single split with "
                         "--out FILE.h5.")
    return {split: convert(folder, out_dir / f"{split}.h5", **kwargs) for split, folder in folders.items()}
