"""What every prepared dataset shares: its config, where its split files live, and how `prepare` talks.

A prepared dataset lives in one folder, DATA_ROOT, written by `vpkit data prepare NAME --root DATA_ROOT`:

- `DATA_ROOT/raw/`: the original files (downloaded there, or put there by hand when a licence forbids scripting);
- `DATA_ROOT/{train,val,test}.h5`: the splits in vpkit's HDF5 format (`engine/h5videos.py`), written atomically,
  so a split file that exists is complete.

Test files hold the paper's fixed test clips where the paper fixes them (KTH's 1000 clips, BAIR's 256 videos), so
`clips="first"` reads the protocol exactly. A dataset plugin's `build` opens a split with `open_split`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from vpkit.core.config import BaseConfig
from vpkit.core.errors import VpkitError
from vpkit.engine.h5videos import H5Videos, H5VideoWriter

RAW = "raw"


class PreparedConfig(BaseConfig):
    """The settings every prepared dataset has; a plugin subclasses it to change defaults or add its own."""

    data_root: str | None = Field(None, description="folder written by `vpkit data prepare NAME --root DIR` "
                                  "(or pass --data-root DIR to train/eval)")
    seq_len: int = Field(20, gt=0, description="frames per training clip")
    test_seq_len: int | None = Field(None, gt=0, description="frames per test clip (default: seq_len)")
    step: int = Field(1, gt=0, description="keep every step-th frame")
    seed: int = Field(0, description="seed of the random training clip starts")


@dataclass
class PrepareOptions:
    """How `prepare(root, options)` should behave. `warn` and `status` print through the CLI."""

    force: bool = False  # rebuild the split files even when they exist
    download: bool = True  # False: use only what is already in ROOT/raw
    progress: bool = True  # download progress bars
    size: int | None = None  # frame size for datasets prepared at several (KTH: 64 or 128); None: the paper's
    compression: str | None = None  # h5py filter of the split files: None (fastest reads) or "lzf" (smaller)
    warn: Callable[[str], None] = print
    status: Callable[[str], None] = field(default=lambda text: None)


def resolve_root(config: PreparedConfig, name: str) -> Path:
    if config.data_root is None:
        raise VpkitError(f"The {name} dataset needs its folder: prepare it with `vpkit data prepare {name} --root DIR`"
                         f", then pass --data-root DIR (or --set data.data_root=DIR).")
    root = Path(config.data_root).expanduser()
    if not root.is_dir():
        raise VpkitError(f"{root} does not exist: prepare it with `vpkit data prepare {name} --root {root}`.")
    return root


def split_path(root: Path, split: str, name: str) -> Path:
    path = root / f"{split}.h5"
    if not path.is_file():
        raise VpkitError(f"{path} is missing: run `vpkit data prepare {name} --root {root}` (it writes "
                         f"{split}.h5 there).")
    return path


def open_split(config: PreparedConfig, split: str, name: str, *, clips: str | None = None, file: str | None = None,
               videos: Sequence[int] | None = None, rgb: bool = False) -> H5Videos:
    """The clips of `split`: random starts for training (`clips="random"`), the first frames otherwise, unless
    `clips` says. `file` reads another split's file (a validation split carved out of train.h5); `rgb` repeats grey
    frames to three channels."""
    root = resolve_root(config, name)
    path = split_path(root, file or split, name)
    train = split == "train"
    length = config.seq_len if train else config.test_seq_len or config.seq_len
    mode = clips or ("random" if train else "first")
    return H5Videos(path, length, step=config.step, clips=mode, seed=config.seed if train else None, videos=videos,
                    rgb=rgb)


def open_holdout(config: PreparedConfig, split: str, name: str, **kwargs) -> H5Videos:
    """`train` or `val` carved out of `train.h5` by SRVP's 95/5 `holdout` (other keywords go to `open_split`)."""
    if split not in ("train", "val"):
        raise VpkitError(f"{name}: a holdout split is train or val, not {split!r}.")
    train, val = holdout(split_videos(split_path(resolve_root(config, name), "train", name)))
    return open_split(config, split, name, file="train", videos=train if split == "train" else val, **kwargs)


def holdout(count: int, fraction: float = 0.05, seed: int = 42) -> tuple[list[int], list[int]]:
    """SRVP's train/validation split of `count` videos: shuffle the indices with `RandomState(seed)` and keep the
    first `int((1 - fraction) * count)` for training (`data/base.py`, `get_fold`). Returns (train, val), sorted."""
    order = list(range(count))
    np.random.RandomState(seed).shuffle(order)
    n_train = int((1 - fraction) * count)
    return sorted(order[:n_train]), sorted(order[n_train:])


def split_videos(path: Path) -> int:
    """How many videos a split file holds (without reading frames)."""
    import h5py

    with h5py.File(path, "r") as file:
        return int(file["lengths"].shape[0])


def split_counts(root: Path, splits: Sequence[str]) -> dict[str, int]:
    """split -> number of videos in `root/<split>.h5`."""
    return {split: split_videos(root / f"{split}.h5") for split in splits}


def need_files(name: str, root: Path, missing: Iterable[str], fetch: str) -> VpkitError:
    """The error `prepare` raises when files it cannot download are absent: what to fetch, from where, and where to
    put them, then the command to run again."""
    listed = "\n".join(f"  - {item}" for item in missing)
    return VpkitError(f"{name}: these files are not in {root / RAW}:\n{listed}\n{fetch}\nPut them there and run "
                      f"`vpkit data prepare {name} --root {root}` again.")


def write_split(path: Path, videos: Iterable[tuple[str, np.ndarray]], options: PrepareOptions | None = None, *,
                fps: float | None = None) -> tuple[Path, int]:
    """Write `(name, uint8 [T, H, W, C])` videos to `path` atomically, compressed as `options.compression` says;
    returns (path, videos written)."""
    status = options.status if options is not None else None
    compression = options.compression if options is not None else None
    writer: H5VideoWriter | None = None
    count = 0
    try:
        for name, frames in videos:
            if frames.ndim == 3:
                frames = frames[..., None]
            if writer is None:
                writer = H5VideoWriter(path, frames.shape[1:3], frames.shape[3], fps=fps, compression=compression)
            writer.add(frames, name=name)
            count += 1
            if status is not None:
                status(f"{path.name}: {count} videos ({name})")
        if writer is None:
            raise VpkitError(f"No video for {path}: the split is empty.")
        return writer.close(), count
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos", "box")


def resize_frames(frames: np.ndarray, size: tuple[int, int], resample: str = "bicubic",
                  box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Resize uint8 frames `[T, H, W, C]` to `size` = (width, height) with PIL's filter `resample` (what the
    official preprocessing scripts call: `Image.resize`), optionally cropping `box` = (left, top, right, bottom)
    first. Aspect ratio is not kept: the papers squash."""
    from PIL import Image

    if resample not in RESAMPLING:
        raise ValueError(f"resample must be one of {RESAMPLING}, not {resample!r}")
    method = getattr(Image.Resampling, resample.upper())
    grey = frames.shape[-1] == 1
    out = []
    for frame in frames:
        image = Image.fromarray(frame[..., 0] if grey else frame)
        if box is not None:
            image = image.crop(box)
        out.append(np.asarray(image.resize(size, method)))
    result = np.stack(out)
    return result[..., None] if grey else result


class ResizedClips(torch.utils.data.Dataset):
    """The clips of an `H5Videos`, each frame resized to `size` x `size` with PIL's `resample` filter when the stored
    frames have another size (a no-op otherwise). Items are uint8 `[T, C, size, size]`."""

    def __init__(self, clips: H5Videos, size: int, resample: str = "bicubic") -> None:
        self.clips, self.size, self.resample = clips, size, resample
        channels, height, width = clips.frame_shape
        self.resize = (height, width) != (size, size)
        self.frame_shape = (channels, size, size)
        self.fps, self.skipped, self.path = clips.fps, clips.skipped, clips.path

    def __len__(self) -> int:
        return len(self.clips)

    def locate(self, index: int) -> tuple[int, int]:
        """(video, first frame in it) of item `index`."""
        return self.clips.locate(index)

    def __getitem__(self, index: int) -> torch.Tensor:
        clip = self.clips[index]
        if not self.resize:
            return clip
        frames = resize_frames(clip.permute(0, 2, 3, 1).numpy(), (self.size, self.size), self.resample)
        return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


def read_frames(paths: Sequence[Path], mode: str = "RGB") -> np.ndarray:
    """Frame image files as uint8 `[T, H, W, C]` (`mode` "RGB" or "L"); a damaged file is a VpkitError naming it."""
    from PIL import Image, UnidentifiedImageError

    frames = []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert(mode)))
        except (OSError, UnidentifiedImageError) as exc:
            raise VpkitError(f"{path} cannot be read as an image ({exc}).") from None
    if not frames:
        raise VpkitError("no frames")
    array = np.stack(frames)
    return array[..., None] if mode == "L" else array


def episode_folders(folder: Path, options: PrepareOptions, layout: str) -> Iterator[tuple[Path, np.ndarray]]:
    """(episode folder, uint8 RGB frames) for the `<number>/<number>.png` episodes of `folder` (DDLP's layout), both
    in numeric order. An episode without frames or with an unreadable frame is skipped with a warning naming it;
    `layout` describes the expected names in the error raised when there is no episode at all."""
    episodes = sorted((int(child.name), child) for child in folder.iterdir() if child.is_dir() and child.name.isdigit())
    if not episodes:
        raise VpkitError(f"{folder} holds no episode folder ({layout}).")
    for _, child in episodes:
        frames = sorted((int(path.stem), path) for path in child.glob("*.png") if path.stem.isdigit())
        if not frames:
            options.warn(f"{child} holds no <number>.png frame: skipped.")
            continue
        try:
            yield child, read_frames([path for _, path in frames])
        except VpkitError as exc:
            options.warn(f"{child} skipped: {exc}")


def splits_ready(root: Path, splits: Sequence[str]) -> bool:
    return all((root / f"{split}.h5").is_file() for split in splits)


def summary(name: str, root: Path, counts: dict[str, int]) -> str:
    parts = ", ".join(f"{split} {count}" for split, count in counts.items())
    return (f"{name} ready in {root} ({parts} videos). Train on it with `vpkit train --dataset {name} "
            f"--data-root {root}`; check a split with `vpkit data info {root / 'test.h5'}`.")
