"""KITTI raw (Geiger et al., IJRR 2013) as SLAMP (Akan et al., ICCV 2021) uses it: both colour cameras at 310x92.

Source: the KITTI raw data, https://www.cvlibs.net/datasets/kitti/raw_data.php (free for non-commercial use; the
downloads need a registered account, so `prepare` never downloads: it names the drives' zips to fetch). Each
drive's "synced+rectified data" zip (`2011_09_26_drive_0001_sync.zip`, ...) unzips to the layout read here:

    ROOT/raw/<day>/<day>_drive_<NNNN>_sync/image_02/data/<frame:010d>.png    (left colour camera)
    ROOT/raw/<day>/<day>_drive_<NNNN>_sync/image_03/data/<frame:010d>.png    (right colour camera)

The drives and their frame counts and static segments are SLAMP's (kaanakan/slamp @ 8c64f86, `data/kitti.py`:
`train_folders` (32 drives) and `test_folders` (28); `data/lengths.txt`; `data/static-ranges.txt`), shipped as
`vpkit/data/kitti_drives.json`. Both cameras of every drive are used. Frames are resized to 310x92 (w x h) with
PIL's bicubic filter: SLAMP calls `Image.resize((310, 92))` without a filter under its pinned pillow 7.0.0, whose
default is bicubic. 10 fps.

Protocol (`data/kitti.py`, `Kittiloader.get_data_paths`): a clip may start at frame i of a camera folder when its
`seq_len` frames avoid the static ranges (both ends inclusive). SLAMP's loops stop one start early — `range(begin,
start - seq_len)` and `range(begin, length - seq_len)` — so a clip never uses the frame just before a static range
nor a drive's last frame; that quirk is kept (see `segments`). Each drive/camera's non-static stretches, less that
last frame, are stored as separate videos:

- train.h5: every stretch of every train drive, both cameras, named `<drive>/<camera>@<first frame>`. The train
  split reads every start of every stretch (`clips="all"`): exactly SLAMP's list of (folder, start) pairs, which its
  DataLoader shuffles, for any `seq_len`; vpkit's trainer draws a permutation of them per epoch in the same way.
- val: SLAMP validates on the train drives (`val_folders = train_folders`), one clip per camera folder from its
  first valid start (`arange_val_paths`): here the first stretch of each train drive/camera long enough for
  `test_seq_len` frames, from its first frame (SLAMP's val clips have the training length, 20, so a drive whose
  first stretch holds 20 to 29 frames starts later here).
- test.h5: the same for the test drives — one 30-frame clip per camera folder from its first valid start (SLAMP's
  evaluate.py: n_past 10 + n_future 20), in lengths.txt order, image_02 before image_03, named as above. That is
  52 clips: drives 0048 (22 frames) and 0052 (static from frame 30) of 2011_09_26 have no valid start, in SLAMP too.

Defaults: seq_len 20 (n_past 10 + n_future 10 in training), test_seq_len 30. SLAMP's train-time augmentation
(ColorJitter brightness/contrast/saturation 0.8-1.2 and hue +-0.1 in random order, and a horizontal flip, each with
probability 1/2 and one draw per clip) is off by default and on with `augment=true`: it is applied to the train
clips from a generator seeded by (seed, clip index, one draw of torch's global generator, which vpkit's trainer
seeds per batch), on float frames quantised back to uint8.

Differences from SLAMP's code: SLAMP's loader reads `.jpg` copies of the frames (`ext='jpg'` is never overridden;
how they were made is not published): vpkit reads KITTI's PNGs. A frame that cannot be read splits its stretch
(skipped, with a warning naming the file); a test or val clip that needs it is left out, with a warning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import DatasetSpec
from vpkit.engine.prepared import (
    RAW,
    PreparedConfig,
    PrepareOptions,
    need_files,
    open_split,
    read_frames,
    resize_frames,
    resolve_root,
    split_path,
    split_videos,
    splits_ready,
    summary,
    write_split,
)
from vpkit.engine.seeding import read_generator

NAME = "kitti"
SPLITS = ("train", "test")
CAMERAS = ("image_02", "image_03")
SIZE = (310, 92)  # (width, height), SLAMP's Kittiloader(w=310, h=92)
RESAMPLE = "bicubic"  # pillow 7.0.0's default filter for Image.resize, which SLAMP calls without one
FPS = 10.0
TEST_LENGTH = 30
SITE = "https://www.cvlibs.net/datasets/kitti/raw_data.php"
WORKERS = min(8, os.cpu_count() or 1)


class KittiConfig(PreparedConfig):
    seq_len: int = Field(20, gt=0, description="frames per training clip (SLAMP: n_past 10 + n_future 10)")
    test_seq_len: int | None = Field(30, gt=0, description="frames per val/test clip (SLAMP's evaluation: 10 + 20; "
                                     "the test file holds 30)")
    augment: bool = Field(False, description="SLAMP's train-time augmentation: colour jitter and horizontal flip, "
                          "each with probability 1/2 per clip")


# -- SLAMP's drive lists ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drives:
    """SLAMP's train and test drives, and per drive its day, frame count and static ranges (inclusive)."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    info: dict[str, tuple[str, int, tuple[tuple[int, int], ...]]]

    def folder(self, raw: Path, drive: str, camera: str) -> Path:
        return raw / self.info[drive][0] / drive / camera / "data"


def load_drives() -> Drives:
    """`vpkit/data/kitti_drives.json` (SLAMP's data/kitti.py lists, lengths.txt and static-ranges.txt)."""
    text = resources.files("vpkit").joinpath("data/kitti_drives.json").read_text()
    data = json.loads(text)
    info = {name: (day, int(frames), tuple((int(a), int(b)) for a, b in static))
            for name, (day, frames, static) in data["drives"].items()}
    return Drives(tuple(data["train"]), tuple(data["test"]), info)


DRIVES = load_drives()


def segments(frames: int, static: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The stretches `[first, end)` of a drive's frames where SLAMP lets a clip lie.

    SLAMP (`get_data_paths`) lists starts `range(begin, start - seq_len)` before each static range `[start, end]`
    and `range(begin, length - seq_len)` after the last, `begin` moving to `end + 1`: a clip of any length then lies
    in `[begin, start - 1)` or `[begin, length - 1)`. Quirk kept: the frame before a static range and the last frame
    are never used."""
    out = []
    begin = 0
    for start, end in static:
        if start - 1 > begin:
            out.append((begin, start - 1))
        begin = end + 1
    if frames - 1 > begin:
        out.append((begin, frames - 1))
    return out


# -- reading frames ---------------------------------------------------------------------------------------------------


def read_resized(paths: Sequence[Path], size: tuple[int, int], warn: Callable[[str], None],
                 pool: ThreadPoolExecutor | None = None) -> list[np.ndarray | None]:
    """Each file as a uint8 RGB frame resized to `size` = (w, h) (bicubic), or None (with a warning naming the file)
    when it is missing or cannot be decoded."""

    def one(path: Path) -> np.ndarray | str:
        if not path.is_file():
            return f"{path} is missing"
        try:
            return resize_frames(read_frames([path]), size, RESAMPLE)[0]
        except VpkitError as exc:
            return str(exc)

    results = list(pool.map(one, paths) if pool is not None else map(one, paths))
    out: list[np.ndarray | None] = []
    for result in results:
        if isinstance(result, str):
            warn(f"skipped a frame: {result}")
            out.append(None)
        else:
            out.append(result)
    return out


def runs(frames: Sequence[np.ndarray | None], first: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(index of its first frame, frames) of each run of readable frames in `frames` (None = unreadable)."""
    begin = None
    for i, frame in enumerate([*frames, None]):
        if frame is None:
            if begin is not None:
                yield first + begin, np.stack(frames[begin:i])
            begin = None
        elif begin is None:
            begin = i


def frame_paths(folder: Path, first: int, end: int) -> list[Path]:
    return [folder / f"{i:010d}.png" for i in range(first, end)]


# -- augmentation (off by default) ------------------------------------------------------------------------------------


def augment_clip(clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SLAMP's train-time augmentation of one uint8 clip `[T, C, H, W]`, one draw for the whole clip: with
    probability 1/2 ColorJitter (brightness, contrast and saturation factors in [0.8, 1.2], hue shift in [-0.1, 0.1],
    applied in a random order as torchvision's `ColorJitter.get_params`), with probability 1/2 a horizontal flip."""
    from torchvision.transforms.v2 import functional as F

    jitter, flip = (torch.rand(2, generator=generator) > 0.5).tolist()
    if flip:
        clip = clip.flip(-1)
    if not jitter:
        return clip
    order = torch.randperm(4, generator=generator).tolist()
    factors = torch.empty(3).uniform_(0.8, 1.2, generator=generator).tolist()
    hue = float(torch.empty(1).uniform_(-0.1, 0.1, generator=generator))
    ops = (lambda x: F.adjust_brightness(x, factors[0]), lambda x: F.adjust_contrast(x, factors[1]),
           lambda x: F.adjust_saturation(x, factors[2]), lambda x: F.adjust_hue(x, hue))
    out = clip.float() / 255
    for k in order:
        out = ops[k](out)
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


class Augmented(torch.utils.data.Dataset):
    """Clips of `clips` with `augment_clip` applied, each read's draws from `read_generator` (stream "augment"):
    vpkit's trainer seeds the global generator per batch, so a batch is the same on any worker."""

    def __init__(self, clips: Any, seed: int) -> None:
        self.clips, self.seed = clips, seed
        self.frame_shape, self.fps, self.skipped, self.path = clips.frame_shape, clips.fps, clips.skipped, clips.path

    def __len__(self) -> int:
        return len(self.clips)

    def locate(self, index: int) -> tuple[int, int]:
        return self.clips.locate(index)

    def __getitem__(self, index: int) -> torch.Tensor:
        return augment_clip(self.clips[index], read_generator(self.seed, "augment", index))


# -- prepare ----------------------------------------------------------------------------------------------------------


def _check(root: Path, drives: Drives) -> None:
    raw = root / RAW
    missing = [drive for drive in (*drives.train, *drives.test)
               if not all(drives.folder(raw, drive, camera).is_dir() for camera in CAMERAS)]
    if missing:
        raise need_files(NAME, root, [f"{drive}.zip ({drive}/image_02 and image_03)" for drive in missing],
                         f"KITTI raw needs a (free, non-commercial) account: register at {SITE}, download each drive's "
                         "[synced+rectified data] zip listed above and unzip it in the raw folder, which gives "
                         "raw/<day>/<drive>/image_02/data/0000000000.png and raw/<day>/<drive>/image_03/data/... "
                         "(e.g. raw/2011_09_26/2011_09_26_drive_0001_sync/image_02/data/0000000000.png).")


def _count(folder: Path, frames: int, warn: Callable[[str], None]) -> None:
    found = sum(1 for _ in folder.glob("*.png"))
    if found != frames:
        warn(f"{folder} holds {found} frames; SLAMP's lengths.txt says {frames} (its count is used)")


def _train_videos(raw: Path, drives: Drives, options: PrepareOptions,
                  pool: ThreadPoolExecutor) -> Iterator[tuple[str, np.ndarray]]:
    for drive in drives.train:
        _, frames, static = drives.info[drive]
        for camera in CAMERAS:
            folder = drives.folder(raw, drive, camera)
            _count(folder, frames, options.warn)
            for first, end in segments(frames, static):
                options.status(f"kitti train: {drive}/{camera} frames {first}-{end - 1}")
                loaded = read_resized(frame_paths(folder, first, end), SIZE, options.warn, pool)
                for start, video in runs(loaded, first):
                    yield f"{drive}/{camera}@{start}", video


def test_starts(drives: Drives, names: Sequence[str], length: int) -> list[tuple[str, str, int]]:
    """(drive, camera, first valid start) of SLAMP's test clips of `length` frames (`arange_val_paths`): per drive in
    the order given, image_02 then image_03; a drive with no valid start has none."""
    out = []
    for drive in names:
        _, frames, static = drives.info[drive]
        first = next((a for a, b in segments(frames, static) if b - a >= length), None)
        if first is not None:
            out.extend((drive, camera, first) for camera in CAMERAS)
    return out


def _test_videos(raw: Path, drives: Drives, options: PrepareOptions, pool: ThreadPoolExecutor,
                 length: int) -> Iterator[tuple[str, np.ndarray]]:
    starts = test_starts(drives, drives.test, length)
    for drive in drives.test:
        if not any(d == drive for d, _, _ in starts):
            options.warn(f"{drive} has no {length} consecutive non-static frames: no test clip (as in SLAMP)")
    for drive, camera, first in starts:
        options.status(f"kitti test: {drive}/{camera}@{first}")
        loaded = read_resized(frame_paths(drives.folder(raw, drive, camera), first, first + length), SIZE,
                              options.warn, pool)
        if any(frame is None for frame in loaded):
            options.warn(f"left out the test clip {drive}/{camera}@{first}: a frame of it cannot be read")
            continue
        yield f"{drive}/{camera}@{first}", np.stack(loaded)


def prepare(root: Path, options: PrepareOptions, *, test_length: int | None = None) -> str:
    """Check ROOT/raw (naming the drive zips to fetch when any is absent), then write ROOT/train.h5 and test.h5."""
    test_length = test_length or TEST_LENGTH
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, {split: split_videos(root / f"{split}.h5") for split in SPLITS})
    drives = DRIVES
    _check(root, drives)
    raw = root / RAW
    with ThreadPoolExecutor(WORKERS) as pool:
        write_split(root / "test.h5", _test_videos(raw, drives, options, pool, test_length), options, fps=FPS)
        write_split(root / "train.h5", _train_videos(raw, drives, options, pool), options, fps=FPS)
    return summary(NAME, root, {split: split_videos(root / f"{split}.h5") for split in SPLITS})


# -- build ------------------------------------------------------------------------------------------------------------


def first_stretches(names: Sequence[str], lengths: Sequence[int], span: int) -> list[int]:
    """Per drive/camera (in file order), the index of its first stored stretch of at least `span` frames."""
    chosen: dict[str, int] = {}
    for index, (name, length) in enumerate(zip(names, lengths, strict=True)):
        folder = name.rsplit("@", 1)[0]
        if folder not in chosen and length >= span:
            chosen[folder] = index
    return list(chosen.values())


def stored_index(config: PreparedConfig, name: str) -> tuple[list[str], np.ndarray]:
    """(names, lengths) of the videos in `config.data_root/train.h5`."""
    import h5py

    path = split_path(resolve_root(config, name), "train", name)
    with h5py.File(path, "r") as file:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in file["names"][:]]
        lengths = file["lengths"][:]
    return names, lengths


def build(config: KittiConfig, split: str):
    if split == "test":
        return open_split(config, "test", NAME)
    if split == "val":
        names, lengths = stored_index(config, NAME)
        span = ((config.test_seq_len or config.seq_len) - 1) * config.step + 1
        videos = first_stretches(names, lengths, span)
        if not videos:
            raise VpkitError(f"No stretch of train.h5 holds the {span} frames a val clip needs.")
        return open_split(config, "val", NAME, file="train", videos=videos, clips="first")
    clips = open_split(config, "train", NAME, clips="all")
    return Augmented(clips, config.seed) if config.augment else clips


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=KittiConfig,
        build=build,
        splits=("train", "val", "test"),
        description="KITTI raw, both colour cameras at 310x92, 10 fps (SLAMP): its 32 train and 28 test drives, "
                    "static stretches excluded; test = one 30-frame clip per camera of each test drive",
        source=SITE,
        size="the 60 drives' synced+rectified zips (tens of GB); 3.8 GB converted (train), 0.13 GB (test)",
        licence="CC BY-NC-SA 3.0, non-commercial; registration required",
        prepare=prepare,
        access="registration",
    ))
