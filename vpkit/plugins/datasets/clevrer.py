"""CLEVRER (Yi et al., ICLR 2020): synthetic videos of objects colliding, with the protocol DDLP (Daniel & Tamar,
TMLR 2024) uses.

Source: the public video zips of http://clevrer.csail.mit.edu/ (CC0), downloaded into ROOT/raw:

    ROOT/raw/video_train.zip         http://data.csail.mit.edu/clevrer/videos/train/video_train.zip
    ROOT/raw/video_validation.zip    http://data.csail.mit.edu/clevrer/videos/validation/video_validation.zip

Each holds `video_<5 digits>.mp4` files (480x320, 128 frames) in folders of 1000 (`video_00000-01000/...`); the
training videos are numbers 0-9999, the validation videos 10000-14999. No checksum is published: a zip must pass
zipfile's CRC test of every member, then its SHA-256 is pinned next to it (`engine/download.py`). The zips are read
in place (each video is copied to a temporary file and decoded with decord), never unpacked.

DDLP's own frame folders are accepted instead, split by split (a folder present wins over the zip):

    ROOT/raw/{train,valid,test}/<episode number>/<frame number>.png      (`valid` is the val split)

Their frames are stored as they are, resized to 128x128 (PIL bicubic, DDLP's loader) if they have another size.

Protocol (DDLP README and `datasets/clevrer_ds.py`): train = training videos 0-4999, val = validation videos 0-999
(files 10000-10999), test = validation videos 1000-1999 (files 11000-11999). Each video keeps frames 18..117 (100
frames), resized from 480x320 to 128x128 with an area filter. A training item is one window of `seq_len` =
timestep_horizon + 1 = 21 frames; every start of every episode is an item (5000 x 80 = 400,000 items). A val/test
item is one episode from its first frame, `test_seq_len` frames (50 by default, DDLP's eval horizon; its validation
during training unrolls 100 frames).

`colour_jitter` (off by default) adds RIVER's clip-consistent colour jitter to the training clips
(`vpkit/engine/augment.py`); the RIVER presets turn it on.

Differences from DDLP: DDLP's `extract_frames` decodes with OpenCV and resizes with `cv2.INTER_AREA`; vpkit decodes
with decord (ffmpeg) and resizes with PIL's "box" filter, the same area average but not bit-identical (a pixel or
two of rounding). DDLP keeps however many frames a short video has; vpkit skips a video without frames 18..117, and
skips a corrupt video, with a warning naming it. A split that finds fewer videos than its range is reported with a
warning.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from pydantic import Field

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import DatasetSpec
from vpkit.engine.augment import ColourJitterClips
from vpkit.engine.download import RemoteFile, fetch_file
from vpkit.engine.h5videos import H5Videos
from vpkit.engine.prepared import (
    RAW,
    PreparedConfig,
    PrepareOptions,
    episode_folders,
    need_files,
    open_split,
    resize_frames,
    split_counts,
    splits_ready,
    summary,
    write_split,
)

NAME = "clevrer"
SPLITS = ("train", "val", "test")
TRAIN_ZIP, VALIDATION_ZIP = "video_train.zip", "video_validation.zip"
# Where each zip is served; tests point these at a local mirror.
MIRRORS: dict[str, list[str]] = {
    TRAIN_ZIP: ["http://data.csail.mit.edu/clevrer/videos/train/"],
    VALIDATION_ZIP: ["http://data.csail.mit.edu/clevrer/videos/validation/"],
}
# split -> (zip, video numbers): DDLP README, "episodes 0-4999 from the training videos for training, 0-999 for
# validation and 1000-1999 for test from the validation videos" (the validation videos are numbered from 10000).
PROTOCOL: dict[str, tuple[str, range]] = {
    "train": (TRAIN_ZIP, range(5000)),
    "val": (VALIDATION_ZIP, range(10000, 11000)),
    "test": (VALIDATION_ZIP, range(11000, 12000)),
}
FOLDERS = {"train": "train", "val": "valid", "test": "test"}  # DDLP's frame folders (clevrer_ds.py:117-119)
FIRST_FRAME, EPISODE_FRAMES, SIZE = 18, 100, 128  # DDLP preprocess_clevrer(ep_len=100, start_frame=18), 128 px

_VIDEO = re.compile(r"(?:^|/)video_(\d{5})\.mp4$")


class ClevrerConfig(PreparedConfig):
    seq_len: int = Field(21, gt=0, description="frames per training clip (DDLP: timestep_horizon 20 + 1)")
    test_seq_len: int | None = Field(50, gt=0, description="frames per val/test episode from its first frame "
                                     "(DDLP's eval horizon 50; its training-time validation uses 100)")
    colour_jitter: bool = Field(False, description="RIVER's augmentation (configs/clevrer.yaml, aug: True): each "
                                "training clip gets one brightness, contrast and saturation factor in 1 +- 0.1 and "
                                "one hue shift in +-0.25, shared by its frames. Training clips only: RIVER also "
                                "jitters its validation clips, vpkit keeps val/test fixed")


def _check_zip(path: Path) -> None:
    """No checksum is published: a zip whose directory reads and whose every member passes its CRC is good."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise VpkitError(f"not a complete zip archive ({exc})") from None
    if bad is not None:
        raise VpkitError(f"damaged zip archive: {bad} fails its CRC check")


def _fetch(raw: Path, name: str, options: PrepareOptions) -> Path:
    if not (raw / name).is_file() and not options.download:
        raise need_files(NAME, raw.parent, [name], f"Download it from {MIRRORS[name][0]}{name} (or run without "
                         "--no-download).")
    return fetch_file(RemoteFile(name, verify=_check_zip), raw, mirrors=MIRRORS[name], progress=options.progress,
                      offline_hint=f"download {MIRRORS[name][0]}{name} yourself and put it in {raw}")


def _zip_videos(path: Path, numbers: range, options: PrepareOptions) -> Iterator[tuple[str, np.ndarray]]:
    """The videos of `path` whose number is in `numbers`, in order: frames 18..117, 128x128."""
    from vpkit.engine.video_source import open_video

    with zipfile.ZipFile(path) as archive:
        members = {}
        for member in archive.namelist():
            match = _VIDEO.search(member)
            if match and "__MACOSX" not in member and int(match[1]) in numbers:
                members[int(match[1])] = member
        if len(members) < len(numbers):
            options.warn(f"{path.name} holds {len(members)} of the {len(numbers)} videos "
                         f"video_{numbers[0]:05d}..video_{numbers[-1]:05d}.mp4.")
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".clevrer-") as scratch:
            copy = Path(scratch) / "video.mp4"
            for number in sorted(members):
                member = members[number]
                where = f"{path.name}:{member}"
                try:
                    with archive.open(member) as source, open(copy, "wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                    with open_video(str(copy)) as video:
                        if (video.num_frames or 0) < FIRST_FRAME + EPISODE_FRAMES:
                            options.warn(f"{where} has {video.num_frames} frames; frames {FIRST_FRAME}.."
                                         f"{FIRST_FRAME + EPISODE_FRAMES - 1} are needed: skipped.")
                            continue
                        blocks, count = [], 0
                        for block in video.chunks(start=FIRST_FRAME):
                            blocks.append(block[:EPISODE_FRAMES - count])
                            count += len(blocks[-1])
                            if count == EPISODE_FRAMES:
                                break
                except (VpkitError, zipfile.BadZipFile, zlib.error, OSError) as exc:
                    options.warn(f"{where} is corrupt, skipped: {str(exc).replace(str(copy), member)}")
                    continue
                # cv2.INTER_AREA in DDLP (clevrer_ds.py:76); PIL's "box" filter is the same area average.
                yield f"video_{number:05d}", resize_frames(np.concatenate(blocks), (SIZE, SIZE), "box")


def _folder_videos(folder: Path, options: PrepareOptions) -> Iterator[tuple[str, np.ndarray]]:
    """DDLP's episode folders `<number>/<i>.png` in numeric order, frames in the order of i."""
    for child, video in episode_folders(folder, options, "<number>/<frame number>.png"):
        if video.shape[1:3] != (SIZE, SIZE):  # DDLP's loader: img.resize((128, 128)), PIL's default filter
            video = resize_frames(video, (SIZE, SIZE), "bicubic")
        yield f"{folder.name}/{child.name}", video


def prepare(root: Path, options: PrepareOptions) -> str:
    """Download the two video zips into ROOT/raw (or use DDLP's frame folders there) and write the three splits."""
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, split_counts(root, SPLITS))
    raw = root / RAW
    folders = {split: raw / FOLDERS[split] for split in SPLITS if (raw / FOLDERS[split]).is_dir()}
    zips: dict[str, Path] = {}
    for split in SPLITS:
        name = PROTOCOL[split][0]
        if split not in folders and name not in zips:
            options.status(f"fetching {name}")
            zips[name] = _fetch(raw, name, options)
    counts = {}
    for split in SPLITS:
        if split in folders:
            videos = _folder_videos(folders[split], options)
        else:
            name, numbers = PROTOCOL[split]
            videos = _zip_videos(zips[name], numbers, options)
        options.status(f"converting {split}")
        _, counts[split] = write_split(root / f"{split}.h5", videos, options=options)
    return summary(NAME, root, counts)


def build(config: ClevrerConfig, split: str) -> H5Videos | ColourJitterClips:
    # DDLP's training set is every window of every episode; val/test one episode per item (clevrer_ds.py:148-183).
    clips = open_split(config, split, NAME, clips="all" if split == "train" else "first")
    if config.colour_jitter and split == "train":
        # Same seed as the clip starts: ColourJitterClips derives its draws from (seed, its own stream tag, index,
        # a global draw), never from the clip-start generator's manual_seed(seed) stream.
        return ColourJitterClips(clips, config.seed)
    return clips


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=ClevrerConfig,
        build=build,
        splits=SPLITS,
        description="CLEVRER videos of colliding objects, frames 18-117 at 128x128 (DDLP's protocol: train = "
                    "training videos 0-4999, val/test = validation videos 0-999 / 1000-1999)",
        source="http://clevrer.csail.mit.edu/ (video_train.zip, video_validation.zip)",
        size="~18 GB of zips (estimated: training ~12 GB, validation ~6 GB), ~34 GB converted (7000 x 100 frames of "
             "128x128, uncompressed uint8)",
        licence="CC0",
        prepare=prepare,
        access="download",
    ))
