"""BAIR robot pushing, action-free (Ebert et al. 2017, `softmotion30_44k`), as SVG and SRVP use it: 64x64 RGB.

Source: http://rail.eecs.berkeley.edu/datasets/bair_robot_pushing_dataset_v0.tar (~30 GB, no published checksum: the
tar's structure is checked — every member complete, the end-of-archive block present — and its SHA-256 pinned).
`vpkit data prepare bair --root DIR` downloads it into `DIR/raw`, or uses what is already there: the tar
(`DIR/raw/bair_robot_pushing_dataset_v0.tar`, preferred when present) or its extracted folder
(`DIR/raw/softmotion30_44k/{train,test}/*.tfrecords`). The tar is read member by member, never extracted.

Each TFRecord holds `tf.train.Example`s (read without TensorFlow, `engine/tfrecord.py`), one video each, with the
features `{t}/image_aux1/encoded`, `{t}/image_main/encoded`, `{t}/endeffector_pos`, `{t}/action` for t in 0..29.
`{t}/image_aux1/encoded` is NOT an encoded image: it holds the 64*64*3 raw RGB bytes of frame t, as both official
converters read it (`Image.frombytes('RGB', (64, 64), ...)`) and TFDS too (`np.frombuffer` + reshape). The
action-free protocol keeps image_aux1 only.

Splits (`DIR/train.h5`, `DIR/test.h5`, 30 frames per video):
- train.h5: every train video (43,264), files in sorted name order, then record order. SRVP lists its converted
  folders `processed_data/train/<file stem>/<record k:03d>` with `sorted(os.listdir)` at both levels, which is the
  same order (stems sorted as strings, 256 records per file so the 3-digit k sorts numerically), so `val` — SRVP's
  95/5 holdout of train videos with `RandomState(42)` (`holdout`) — holds the same videos; `train` the other 95%.
  Video names are `<file stem>/<record index from 0>` (SRVP's folders count records from 1).
- test.h5: all 256 test videos; `test` reads each from frame 0 (`clips="first"`), 30 frames (SRVP `--nt_gen 30`).
Defaults: `seq_len` 12 (SRVP `--seq_len 12`; SVG n_past 2 + n_future 10), random starts in training.
`val` reads `test_seq_len` frames from frame 0 of each held-out video, a fixed protocol (SRVP validates on random
12-frame clips of them).

A damaged input stops preparation with one line naming the file and record (a bad CRC, a truncated record, an
Example without the image_aux1 frames): records are not skipped, since the test protocol needs all 256 videos and a
damaged file means the download is damaged. test.h5 is written first; if train.h5 then fails, test.h5 is removed.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydantic import Field

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import DatasetSpec
from vpkit.engine.download import RemoteFile, fetch_file
from vpkit.engine.prepared import (
    RAW,
    PreparedConfig,
    PrepareOptions,
    holdout,
    need_files,
    open_holdout,
    open_split,
    split_videos,
    splits_ready,
    summary,
    write_split,
)
from vpkit.engine.tfrecord import parse_example, read_records

NAME = "bair"
TAR = "bair_robot_pushing_dataset_v0.tar"
MIRRORS: tuple[str, ...] = ("http://rail.eecs.berkeley.edu/datasets/",)  # tests point this at a local server
FOLDER = "softmotion30_44k"
SPLITS = ("train", "test")
FRAMES = 30
SIZE = 64
FRAME_BYTES = SIZE * SIZE * 3
KEYS = tuple(f"{t}/image_aux1/encoded" for t in range(FRAMES))
TEST_VIDEOS = 256
_BLOCK = 512


class BAIRConfig(PreparedConfig):
    seq_len: int = Field(12, gt=0, description="frames per training clip (SRVP --seq_len 12; SVG 2 context + 10 "
                         "predicted)")
    test_seq_len: int | None = Field(30, gt=0, description="frames per val/test clip, from frame 0 (SRVP's test: "
                                     "all 30 frames)")


def _shard(name: str) -> tuple[str, str] | None:
    """(split, file stem) of a path `.../softmotion30_44k/{train,test}/NAME.tfrecords`, else None."""
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    if len(parts) < 3 or parts[-3] != FOLDER or parts[-2] not in SPLITS or not parts[-1].endswith(".tfrecords"):
        return None
    return parts[-2], parts[-1].removesuffix(".tfrecords")


def check_tar(path: Path) -> None:
    """Refuse a tar that is not the complete BAIR archive: a member cut short, no end-of-archive block after the
    last member (a tar cut at a member boundary, or a damaged header), or no train/test TFRecords."""
    size = path.stat().st_size
    try:
        with tarfile.open(path, "r:") as archive:
            members = archive.getmembers()
            end = archive.offset  # where the header after the last member is: the end-of-archive block
    except (tarfile.TarError, OSError) as exc:
        raise VpkitError(f"{path.name} is not a readable tar ({exc})") from None
    for member in members:
        if member.offset_data + member.size > size:
            raise VpkitError(f"{path.name} is truncated: {member.name} is cut short")
    with open(path, "rb") as source:
        source.seek(end)
        block = source.read(_BLOCK)
    if len(block) < _BLOCK or block.count(0) != _BLOCK:
        raise VpkitError(f"{path.name} is truncated or damaged after {members[-1].name if members else 'its start'} "
                         f"(no end-of-archive block at byte {end})")
    found = {shard[0] for m in members if m.isfile() and (shard := _shard(m.name))}
    if found != set(SPLITS):
        missing = " and ".join(f"{FOLDER}/{split}/*.tfrecords" for split in SPLITS if split not in found)
        raise VpkitError(f"{path.name} holds no {missing}: it is not the BAIR archive")


REMOTE = RemoteFile(TAR, verify=check_tar)

Opener = Callable[[], BinaryIO]  # opens one TFRecord file (a tar member or a file)


@contextmanager
def _source(root: Path, options: PrepareOptions) -> Iterator[tuple[str, dict[str, list[tuple[str, str, Opener]]]]]:
    """(where, {split: [(file stem, file label, opener)] in sorted stem order}) from the tar or the folder."""
    raw = root / RAW
    folder = raw / FOLDER
    tar = raw / TAR
    if not tar.is_file() and not folder.is_dir() and not options.download:
        raise need_files(NAME, root, [f"{TAR} (~30 GB), or its extracted {FOLDER}/{{train,test}}/*.tfrecords"],
                         f"Fetch it from {MIRRORS[0]}{TAR} (or run without --no-download).")
    shards: dict[str, list[tuple[str, str, Opener]]] = {split: [] for split in SPLITS}

    def in_order() -> dict[str, list[tuple[str, str, Opener]]]:
        return {split: sorted(files, key=lambda file: file[0]) for split, files in shards.items()}

    if tar.is_file() or not folder.is_dir():
        options.status(f"bair: {TAR}")
        hint = f"put {TAR} from {MIRRORS[0]} (or its extracted {FOLDER} folder) in {raw} and run again"
        path = fetch_file(REMOTE, raw, mirrors=MIRRORS, progress=options.progress, offline_hint=hint)
        with tarfile.open(path, "r:") as archive:
            for member in archive.getmembers():
                shard = _shard(member.name) if member.isfile() else None
                if shard is not None:
                    shards[shard[0]].append((shard[1], f"{TAR}:{member.name}",
                                             lambda m=member: archive.extractfile(m)))
            yield TAR, in_order()
        return
    for split in SPLITS:
        for path in (folder / split).glob("*.tfrecords"):
            if path.is_file():
                shards[split].append((path.name.removesuffix(".tfrecords"), str(path),
                                      lambda p=path: open(p, "rb")))  # noqa: SIM115
    yield str(folder), in_order()


def decode_video(record: bytes) -> np.ndarray:
    """The 30 image_aux1 frames of one serialized Example: uint8 [30, 64, 64, 3]."""
    features = parse_example(record, keys=KEYS)
    frames = np.empty((FRAMES, SIZE, SIZE, 3), np.uint8)
    for t, key in enumerate(KEYS):
        value = features.get(key)
        if value is None:
            present = sorted(parse_example(record))
            shown = ", ".join(present[:4]) + (", ..." if len(present) > 4 else "")
            raise VpkitError(f"it has no {key!r} feature (it has {len(present)}: {shown or 'none'})")
        if not isinstance(value, list) or len(value) != 1 or len(value[0]) != FRAME_BYTES:
            got = f"{len(value[0])} bytes" if isinstance(value, list) and len(value) == 1 else "another kind"
            raise VpkitError(f"{key!r} is not the {FRAME_BYTES} raw bytes of a {SIZE}x{SIZE} RGB frame ({got})")
        frames[t] = np.frombuffer(value[0], np.uint8).reshape(SIZE, SIZE, 3)
    return frames


def _records(stream: BinaryIO, label: str, where: str) -> Iterator[bytes]:
    try:
        yield from read_records(stream, name=label)
    except VpkitError as exc:
        if where != TAR:
            raise
        raise VpkitError(f"{exc} Delete {TAR} and run again to download it anew.") from None


def _videos(where: str, split: str, files: list[tuple[str, str, Opener]],
            options: PrepareOptions) -> Iterator[tuple[str, np.ndarray]]:
    if not files:
        raise VpkitError(f"{where} holds no {FOLDER}/{split}/*.tfrecords: the {split} split is empty.")
    count = 0
    for stem, label, opener in files:
        options.status(f"bair {split}: {stem} ({count} videos so far)")
        with opener() as stream:
            for index, record in enumerate(_records(stream, label, where)):
                try:
                    frames = decode_video(record)
                except VpkitError as exc:
                    raise VpkitError(f"{label}: record {index}: {exc}.") from None
                count += 1
                yield f"{stem}/{index}", frames
    if not count:
        raise VpkitError(f"{where}: {FOLDER}/{split} holds no video: the {split} split is empty.")
    if split == "test" and count != TEST_VIDEOS:
        options.warn(f"{where}: the test split holds {count} videos, not BAIR's {TEST_VIDEOS}.")


def prepare(root: Path, options: PrepareOptions) -> str:
    """Download (unless in ROOT/raw), read the TFRecords and write ROOT/test.h5 then ROOT/train.h5."""
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, _counts(root))
    if options.size not in (None, SIZE):
        raise VpkitError(f"BAIR's frames are {SIZE}x{SIZE}: --size {options.size} does not apply.")
    with _source(root, options) as (where, shards):
        write_split(root / "test.h5", _videos(where, "test", shards["test"], options), options)
        try:
            write_split(root / "train.h5", _videos(where, "train", shards["train"], options), options)
        except BaseException:
            (root / "test.h5").unlink(missing_ok=True)
            raise
    return summary(NAME, root, _counts(root))


def _counts(root: Path) -> dict[str, int]:
    train, val = holdout(split_videos(root / "train.h5"))
    return {"train": len(train), "val": len(val), "test": split_videos(root / "test.h5")}


def build(config: BAIRConfig, split: str):
    if split == "test":
        return open_split(config, "test", NAME)
    return open_holdout(config, split, NAME)


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=BAIRConfig,
        build=build,
        splits=("train", "val", "test"),
        description="BAIR robot pushing (action-free), 64x64 RGB, 30-frame videos (SVG/SRVP): 43,264 train "
                    "videos (SRVP's 95/5 val holdout), the 256 test videos from frame 0",
        source=MIRRORS[0] + TAR,
        size="30 GB tar; about 16 GB converted (train.h5 15.9 GB, test.h5 94 MB)",
        licence="no licence published; cite Ebert, Finn, Lee and Levine, CoRL 2017",
        prepare=prepare,
        access="download",
    ))
