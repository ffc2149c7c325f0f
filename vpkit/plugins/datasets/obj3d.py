"""OBJ3D: G-SWM's 3D scenes of objects colliding on a floor, with the protocol DDLP (Daniel & Tamar, TMLR 2024) uses.

Source: `OBJ3D.zip` (~7 GB) from the Google Drive link in G-SWM's README (https://github.com/zhixuan-lin/G-SWM,
https://drive.google.com/file/d/1XSLW3qBtcxxvV-5oiRruVTlDlQ_Yatzm/view); a copy is on Hugging Face as
https://huggingface.co/datasets/taldatech/OBJ3D. Google Drive cannot be scripted reliably, so access is by hand.

Layout under ROOT/raw (the zip unpacked there; `ROOT/raw/OBJ3D/{train,val,test}` as the zip unpacks is accepted
too, and so is the zip itself, `ROOT/raw/OBJ3D.zip`, read without unpacking it):

    ROOT/raw/{train,val,test}/<episode number>/test_<frame number>.png     100 frames of 128x128 per episode

Episodes are the folders whose name is a number, in numeric order; frames are the `test_<i>.png` files in the order
of i (DDLP `datasets/obj3d_ds.py`). G-SWM's README gives 2920 / 200 / 200 episodes.

Conversion keeps the frames at their native resolution, in RGB: the alpha channel of RGBA files is dropped, as DDLP
keeps `ToTensor()(img)[:3]`. `image_size` is applied when a clip is read, with PIL's default filter (bicubic) as
DDLP's `img.resize((res, res))`: 64 for DDLP's `obj3d` config (the default here), 128 (the native size: no resize)
for its `obj3d128` config.

Protocol (DDLP): a training item is one window of `seq_len` = timestep_horizon + 1 = 11 frames; every start of every
episode is an item, in order (2920 x 90 = 262,800 items). A val/test item is one episode from its first frame,
`test_seq_len` frames long: 50 by default, the horizon of DDLP's `eval/eval_gen_metrics.py` (its validation during
training unrolls 100 frames: set test_seq_len=100).

Differences from DDLP:
- DDLP resizes the RGBA image, then drops alpha (Pillow premultiplies by alpha when it resizes RGBA); vpkit drops
  alpha at conversion, then resizes. The two agree exactly wherever alpha is 255.
- A damaged PNG: DDLP reads what it can (`LOAD_TRUNCATED_IMAGES`); vpkit skips that episode with a warning naming
  the file. An episode without 100 frames is kept, with a warning (DDLP's windows assume 100 frames).
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
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
    ResizedClips,
    need_files,
    open_split,
    read_frames,
    split_videos,
    splits_ready,
    summary,
    write_split,
)

NAME = "obj3d"
SPLITS = ("train", "val", "test")
EPISODE_FRAMES = 100
ZIP_NAME = "OBJ3D.zip"
SOURCE = "https://github.com/zhixuan-lin/G-SWM (OBJ3D.zip, Google Drive)"
FETCH = ("Download OBJ3D.zip (~7 GB) from the Google Drive link in G-SWM's README, "
         "https://github.com/zhixuan-lin/G-SWM (https://drive.google.com/file/d/1XSLW3qBtcxxvV-5oiRruVTlDlQ_Yatzm/"
         "view), or the copy at https://huggingface.co/datasets/taldatech/OBJ3D. Put OBJ3D.zip itself in the raw "
         "folder, or unzip it there (OBJ3D/train, OBJ3D/val and OBJ3D/test, or train, val and test directly).")

_FRAME = re.compile(r"test_(\d+)\.png")
_MEMBER = re.compile(r"(?:^|/)(train|val|test)/(\d+)/test_(\d+)\.png$")


class Obj3DConfig(PreparedConfig):
    seq_len: int = Field(11, gt=0, description="frames per training clip (DDLP: timestep_horizon 10 + 1)")
    test_seq_len: int | None = Field(50, gt=0, description="frames per val/test episode from its first frame "
                                     "(DDLP's eval horizon 50; its training-time validation uses 100)")
    image_size: int = Field(64, gt=0, description="frame side at load time, PIL bicubic as DDLP (64: DDLP's obj3d "
                            "config; 128: obj3d128, the native size)")


# -- finding the episodes ---------------------------------------------------------------------------------------------


def _tree(raw: Path) -> Path | None:
    """The folder holding train/, val/ and test/: ROOT/raw itself or ROOT/raw/OBJ3D."""
    for base in (raw, raw / "OBJ3D"):
        if all((base / split).is_dir() for split in SPLITS):
            return base
    return None


def _tree_episodes(folder: Path) -> list[tuple[str, list[Path]]]:
    """(name, frame files in order) of each episode folder, in numeric order (DDLP obj3d_ds.py:29-50)."""
    episodes = []
    for child in folder.iterdir():
        if child.is_dir() and child.name.isdigit():
            frames = [(int(match[1]), path) for path in child.iterdir() if (match := _FRAME.fullmatch(path.name))]
            episodes.append((int(child.name), child.name, [path for _, path in sorted(frames)]))
    return [(name, frames) for _, name, frames in sorted(episodes)]


def _zip_episodes(archive: zipfile.ZipFile) -> dict[str, list[tuple[str, list[str]]]]:
    """{split: [(name, member names in order)]} from OBJ3D.zip's entries."""
    found: dict[str, dict[int, list[tuple[int, str]]]] = {split: {} for split in SPLITS}
    for member in archive.namelist():
        match = _MEMBER.search(member)
        if match and "__MACOSX" not in member:
            found[match[1]].setdefault(int(match[2]), []).append((int(match[3]), member))
    return {split: [(str(number), [name for _, name in sorted(frames)]) for number, frames in sorted(eps.items())]
            for split, eps in found.items()}


def _read_members(archive: zipfile.ZipFile, members: list[str]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    frames = []
    for member in members:
        try:
            with archive.open(member) as file, Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError, zipfile.BadZipFile, zlib.error) as exc:
            raise VpkitError(f"{archive.filename}:{member} cannot be read as an image ({exc}).") from None
    return np.stack(frames)


def _videos(episodes: list[tuple[str, Any]], read: Callable[[Any], np.ndarray], where: str,
            options: PrepareOptions) -> Iterator[tuple[str, np.ndarray]]:
    for name, frames in episodes:
        if not frames:
            options.warn(f"{where}/{name} holds no test_<i>.png frame: skipped.")
            continue
        try:
            video = read(frames)
        except VpkitError as exc:
            options.warn(f"{where}/{name} skipped: {exc}")
            continue
        if len(video) != EPISODE_FRAMES:
            options.warn(f"{where}/{name} has {len(video)} frames, not {EPISODE_FRAMES}: kept as it is.")
        yield name, video


def prepare(root: Path, options: PrepareOptions) -> str:
    """Convert the unpacked OBJ3D.zip (or the zip) in ROOT/raw to ROOT/{train,val,test}.h5 at native size."""
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, {split: split_videos(root / f"{split}.h5") for split in SPLITS})
    raw = root / RAW
    tree = _tree(raw) if raw.is_dir() else None
    counts: dict[str, int] = {}
    if tree is not None:
        for split in SPLITS:
            episodes = _tree_episodes(tree / split)
            if not episodes:
                raise VpkitError(f"{tree / split} holds no episode folder (<number>/test_<i>.png): the copy of "
                                 "OBJ3D is incomplete.")
            options.status(f"{split}: {len(episodes)} episodes in {tree / split}")
            _, counts[split] = write_split(root / f"{split}.h5", _videos(episodes, read_frames, str(tree / split),
                                                                        options), options=options)
        return summary(NAME, root, counts)
    if (raw / ZIP_NAME).is_file():
        try:
            archive = zipfile.ZipFile(raw / ZIP_NAME)
        except (zipfile.BadZipFile, OSError) as exc:
            raise VpkitError(f"{raw / ZIP_NAME} is not a complete zip archive ({exc}); download it again.") from None
        with archive:
            listing = _zip_episodes(archive)
            for split in SPLITS:
                if not listing[split]:
                    raise VpkitError(f"{raw / ZIP_NAME} holds no {split}/<number>/test_<i>.png frame: it is not "
                                     "G-SWM's OBJ3D.zip, or it is incomplete.")
                options.status(f"{split}: {len(listing[split])} episodes in {ZIP_NAME}")
                videos = _videos(listing[split], lambda members: _read_members(archive, members),
                                 f"{ZIP_NAME}:{split}", options)
                _, counts[split] = write_split(root / f"{split}.h5", videos, options=options)
        return summary(NAME, root, counts)
    raise need_files(NAME, root, [f"{ZIP_NAME}, or its train/, val/ and test/ folders of <episode>/test_<i>.png"],
                     FETCH)


# -- reading ----------------------------------------------------------------------------------------------------------


def build(config: Obj3DConfig, split: str) -> ResizedClips:
    # DDLP's training set is every window of every episode; val/test one episode per item (obj3d_ds.py:52-87).
    clips = open_split(config, split, NAME, clips="all" if split == "train" else "first")
    # PIL's default filter for RGB, what DDLP's `img.resize((self.res, self.res))` applies (obj3d_ds.py:64).
    return ResizedClips(clips, config.image_size, "bicubic")


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=Obj3DConfig,
        build=build,
        splits=SPLITS,
        description="G-SWM's OBJ3D: 3D objects colliding, 100-frame episodes at 128x128, read at image_size "
                    "(DDLP's protocol: every 11-frame window for training)",
        source=SOURCE,
        size="~7 GB zip, ~16 GB converted (uncompressed uint8 at 128x128)",
        licence="no licence stated for the data (G-SWM's code is GPL-3.0); research use",
        prepare=prepare,
        access="by hand",
    ))
