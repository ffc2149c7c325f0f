"""Human3.6M (Ionescu et al., TPAMI 2014) as SRVP (Franceschi et al., ICML 2020) uses it: 64x64 RGB, 1 frame in 8.

Source: http://vision.imar.ro/human3.6m/ — access is granted by the dataset's owners after registration, so
`prepare` never downloads: it names the archives to fetch. Layout under ROOT/raw, the one SRVP's
`preprocessing/human/convert.py` reads (`<data_dir>/S<n>/Videos/<video>`; its README: extract every subject's video
archive in the same folder):

    ROOT/raw/S<n>/Videos/<action>.<camera>.mp4      e.g. ROOT/raw/S1/Videos/Directions 1.54138969.mp4

for subjects S1, S5, S6, S7, S8 (train) and S9, S11 (test), 50 fps, about 1000x1000.

Conversion (convert.py): every video of those folders except those whose name starts with `_` (`_ALL...`), each
frame cropped to the box (100, 100, 900, 900), then resized to 64x64 with LANCZOS (crop first, then resize). Videos
are decoded with decord (`vpkit.engine.video_source`) instead of imageio's ffmpeg pipe: the same frames on the
files tried, and a video's length is the frame count decord reads from the container's index.

Splits (SRVP names each converted video `S<n>-<file name without .mp4>`; its loaders read them in sorted order):
- train.h5: every train-subject video at the full 50 fps, named `S<n>-<stem>`, in the sorted order of SRVP's npz
  names (`data/human.py`), so `holdout` indices are SRVP's. Loading keeps one frame in 8 (`step` 8, args.py
  `--subsampling 8`); a training item is a random video and a random start (data/human.py `__getitem__`), videos
  shorter than a clip left out.
- val: SRVP's 95/5 holdout (`RandomState(42)`, data/base.py `get_fold`) of train.h5's videos, read from their first
  frame (SRVP draws random clips of the held-out videos; vpkit's val is fixed).
- test.h5: make_test_set.py's clips. With `RandomState(42)`, for each of 1000 clips: a video index over the sorted
  test names (S9 and S11), then `t0 = randint(length - 417 + 1)` where 417 = (53 - 1) * 8 + 1, the same draws in
  the same order. SRVP keeps the 417 raw frames and subsamples when loading; test.h5 holds the 53 frames
  `t0, t0 + 8, ..., t0 + 416` of each clip, named `S<n>-<stem>@<t0>`, and is read with step 1 (so `step` applies
  to train and val only).

Defaults from SRVP's README command for Human3.6M: seq_len 16, test_seq_len 53 (`--seq_len_test 53`), step 8.

Damaged input: a train video that cannot be decoded is skipped with a warning naming it. A test video that cannot
be opened is left out of the draw with a warning naming it (every draw after that differs from SRVP's, since the
draw indexes the sorted list); a drawn clip whose frames cannot be decoded is left out with a warning naming the
video, start and frame (the draws go on unchanged).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import DatasetSpec
from vpkit.engine.prepared import (
    RAW,
    PreparedConfig,
    PrepareOptions,
    need_files,
    open_holdout,
    open_split,
    resize_frames,
    split_videos,
    splits_ready,
    summary,
    write_split,
)

NAME = "human36m"
SPLITS = ("train", "test")
TRAIN_SUBJECTS = (1, 5, 6, 7, 8)  # convert.py train_subjects
TEST_SUBJECTS = (9, 11)  # convert.py test_subjects
CROP = (100, 100, 900, 900)  # (left, top, right, bottom), applied before the resize
IMAGE_SIZE = 64
FPS = 50.0
SUBSAMPLING = 8
TEST_SIZE = 1000
TEST_LENGTH = 53
SEED = 42
SITE = "http://vision.imar.ro/human3.6m/"
WORKERS = min(4, os.cpu_count() or 1)


class Human36MConfig(PreparedConfig):
    seq_len: int = Field(16, gt=0, description="frames per training clip (SRVP: 8 conditioning + 8 predicted)")
    test_seq_len: int | None = Field(53, gt=0, description="frames per val/test clip (SRVP: 8 + 45; the test file "
                                     "holds 53)")
    step: int = Field(SUBSAMPLING, gt=0, description="keep every step-th frame of train/val videos (SRVP: 8 of "
                      "50 fps); the test file is stored already subsampled")


def _open(path: Path) -> Any:
    from vpkit.engine.video_source import open_video

    return open_video(str(path))


def convert(path: Path, start: int = 0, stride: int = 1, count: int | None = None) -> np.ndarray:
    """Frames `start, start + stride, ...` (`count` of them, or to the end) of one video, cropped to `CROP` then
    resized to 64x64 with LANCZOS (convert.py): uint8 [T, 64, 64, 3]."""
    blocks = []
    got = 0
    with _open(path) as video:
        for block in video.chunks(start=start, stride=stride):
            if count is not None:
                block = block[:count - got]
            blocks.append(resize_frames(block, (IMAGE_SIZE, IMAGE_SIZE), "lanczos", box=CROP))
            got += len(block)
            if count is not None and got >= count:
                break
    if not blocks or (count is not None and got < count):
        raise VpkitError(f"{path} ends after {got} frames")
    return np.concatenate(blocks)


def videos_of(raw: Path, subjects: Iterable[int]) -> list[tuple[str, Path]]:
    """(SRVP's name `S<n>-<stem>`, file) of each video of `subjects`, `_ALL` videos left out, in the sorted order of
    SRVP's npz file names (`S<n>-<stem>.npz`)."""
    found = []
    for subject in subjects:
        for path in (raw / f"S{subject}" / "Videos").iterdir():
            if path.suffix.lower() == ".mp4" and not path.name.startswith("_") and path.is_file():
                found.append((f"S{subject}-{path.stem}", path))
    return sorted(found, key=lambda item: item[0] + ".npz")


def test_draws(lengths: list[int], size: int = TEST_SIZE, seq_len: int = TEST_LENGTH,
               subsampling: int = SUBSAMPLING, seed: int = SEED,
               names: list[str] | None = None) -> list[tuple[int, int]]:
    """make_test_set.py's (video index, t0) pairs over videos of `lengths` (in sorted-name order)."""
    rng = np.random.RandomState(seed)
    span = (seq_len - 1) * subsampling + 1
    draws = []
    for _ in range(size):
        video = rng.randint(len(lengths))
        if lengths[video] < span:
            raise VpkitError(f"test video {names[video] if names else video} has {lengths[video]} frames, fewer "
                             f"than the {span} a clip spans: SRVP's draw fails there too (randint of a negative "
                             "range)")
        draws.append((int(video), int(rng.randint(lengths[video] - span + 1))))
    return draws


def _ordered(pool: ThreadPoolExecutor, work: Callable[[Any], Any], items: Iterable[Any], ahead: int) -> Iterator[Any]:
    """`pool.map(work, items)` with at most `ahead` results pending (memory holds a few decoded videos at most)."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(work, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _check(root: Path) -> None:
    raw = root / RAW
    missing = [subject for subject in (*TRAIN_SUBJECTS, *TEST_SUBJECTS)
               if not (raw / f"S{subject}" / "Videos").is_dir()
               or not any(p.suffix.lower() == ".mp4" for p in (raw / f"S{subject}" / "Videos").iterdir())]
    if missing:
        raise need_files(NAME, root, [f"S{s}/Videos/*.mp4 (the Videos archive of subject S{s}, e.g. Videos_S{s}.tgz)"
                                      for s in missing],
                         f"Human3.6M needs an account granted by its owners: register at {SITE}, then download, for "
                         "each subject listed, its Videos archive (Training Data, by subject) and extract it in the "
                         "raw folder (`tar -xzf Videos_S1.tgz -C raw`), which gives raw/S1/Videos/<action>.<camera>"
                         ".mp4 (SRVP's layout).")


def prepare(root: Path, options: PrepareOptions, *, test_size: int | None = None, test_length: int | None = None,
            subsampling: int | None = None) -> str:
    """Check ROOT/raw (naming the subjects' archives to fetch when any is absent), then write ROOT/train.h5 and
    ROOT/test.h5. The keywords (default: SRVP's 1000 clips of 53 frames, one in 8) exist for miniature tests."""
    test_size = test_size or TEST_SIZE
    test_length = test_length or TEST_LENGTH
    subsampling = subsampling or SUBSAMPLING
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, {split: split_videos(root / f"{split}.h5") for split in SPLITS})
    _check(root)
    raw = root / RAW

    # test first: it is the protocol, and cheap (only the drawn frames are decoded)
    tests, lengths = [], []
    for name, path in videos_of(raw, TEST_SUBJECTS):
        try:
            with _open(path) as video:
                lengths.append(int(video.num_frames))
            tests.append((name, path))
        except VpkitError as exc:
            options.warn(f"left {path} out of the test draw ({exc}): the test clips then differ from SRVP's")
    if not tests:
        raise VpkitError(f"No test video of {', '.join(f'S{s}' for s in TEST_SUBJECTS)} in {raw} can be read.")
    options.status("human36m test: drawing SRVP's clips")
    draws = test_draws(lengths, test_size, test_length, subsampling, names=[str(path) for _, path in tests])

    def clip(draw: tuple[int, int]) -> tuple[str, np.ndarray | str]:
        index, t0 = draw
        name, path = tests[index]
        try:
            return f"{name}@{t0}", convert(path, t0, subsampling, test_length)
        except VpkitError as exc:
            return f"{name}@{t0}", str(exc)

    def train(item: tuple[str, Path]) -> tuple[str, np.ndarray | str]:
        name, path = item
        try:
            return name, convert(path)
        except VpkitError as exc:
            return name, str(exc)

    def kept(results: Iterator[tuple[str, np.ndarray | str]], what: str) -> Iterator[tuple[str, np.ndarray]]:
        for name, frames in results:
            options.status(f"human36m {what}: {name}")
            if isinstance(frames, str):
                options.warn(f"skipped {what} {name}: {frames}")
            else:
                yield name, frames

    with ThreadPoolExecutor(WORKERS) as pool:
        write_split(root / "test.h5", kept(_ordered(pool, clip, draws, 4 * WORKERS), "test clip"), options,
                    fps=FPS / subsampling)
        write_split(root / "train.h5", kept(_ordered(pool, train, videos_of(raw, TRAIN_SUBJECTS), WORKERS),
                                            "train video"), options, fps=FPS)
    return summary(NAME, root, {split: split_videos(root / f"{split}.h5") for split in SPLITS})


def build(config: Human36MConfig, split: str):
    if split == "test":  # stored subsampled: read every frame
        return open_split(config.model_copy(update={"step": 1}), "test", NAME)
    return open_holdout(config, split, NAME)


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=Human36MConfig,
        build=build,
        splits=("train", "val", "test"),
        description="Human3.6M videos at 64x64 RGB (SRVP): crop (100,100,900,900) then LANCZOS; S1,5,6,7,8 train "
                    "(95/5 val), one frame in 8; SRVP's 1000 test clips of 53 frames from S9, S11 (seed 42)",
        source=SITE,
        size="the seven subjects' video archives (tens of GB); roughly 20 GB converted (train.h5 at 50 fps), "
             "0.65 GB test.h5",
        licence="Human3.6M licence: academic, non-commercial use; registration approved by its owners",
        prepare=prepare,
        access="registration",
    ))
