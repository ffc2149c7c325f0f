"""Cityscapes video snippets (Cordts et al., CVPR 2016) as SLAMP (Akan et al., ICCV 2021) uses them: 256x128, 17 Hz.

Source: `leftImg8bit_sequence_trainvaltest.zip` (324 GB) from https://www.cityscapes-dataset.com/downloads/ —
downloads need a registered account and acceptance of the licence, so `prepare` never downloads: it says what to
fetch. Unzipped in ROOT/raw it gives the layout read here:

    ROOT/raw/leftImg8bit_sequence/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png

Each annotated Cityscapes image comes with a 30-frame snippet (frames -19..+10 around it) at 17 Hz. vpkit groups the
files of a city by (city, seq), sorts them by frame number and cuts a snippet wherever the frame numbers stop being
consecutive (a seq may hold several snippets). SLAMP (kaanakan/slamp @ 8c64f86, `data/cityscapes.py`) instead cuts
the sorted file list of a city into consecutive groups of 30; the two agree when every snippet has 30 frames (a
snippet of another length is kept, with a warning). Frames are resized to 256x128 (w x h) with PIL's bicubic filter
(SLAMP calls `Image.resize((256, 128))` without a filter under its pinned pillow 7.0.0, whose default is bicubic).

Protocol (`CityScapesLoader.get_data_paths`):
- train.h5: every snippet of train/<city> (cities and files in sorted order), named `<city>_<seq>_<first frame>`.
  A training clip starts at any offset in [0, 30 - seq_len] of a snippet: SLAMP lists every (snippet, offset)
  pair and its DataLoader shuffles them; the train split reads every start of every snippet (`clips="all"`), which
  vpkit's trainer permutes per epoch in the same way.
- test.h5: the first 20 snippets of each test/<city> (SLAMP: `imgs[i] for i in range(0, 20 * 30, 30)`), 30 frames
  from the snippet's first frame (evaluate.py: n_past 10 + n_future 20).
- val.h5: the same protocol on val/<city> (the official validation cities). SLAMP has no validation split of its
  own: its 'val' loader reads the test folders.

Defaults: seq_len 20 (n_past 10 + n_future 10 in training), test_seq_len 30. SLAMP's train-time augmentation
(colour jitter, horizontal flip) is off by default and on with `augment=true` (`kitti.augment_clip`).

A frame that cannot be read is skipped with a warning naming it: it splits its train snippet in two; a val/test
snippet that contains one is left out (the other snippets stay those SLAMP picks). A city with fewer than 20
snippets gives what it has, with a warning (SLAMP's indexing would fail).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    open_split,
    split_videos,
    splits_ready,
    summary,
    write_split,
)
from vpkit.plugins.datasets.kitti import WORKERS, Augmented, read_resized, runs

NAME = "cityscapes"
SPLITS = ("train", "val", "test")
FOLDER = "leftImg8bit_sequence"
ARCHIVE = "leftImg8bit_sequence_trainvaltest.zip"
SITE = "https://www.cityscapes-dataset.com/downloads/"
SIZE = (256, 128)  # (width, height), SLAMP's CityScapesLoader(w=256, h=128)
FPS = 17.0
SNIPPET = 30
TEST_SNIPPETS = 20  # per city
_FRAME = re.compile(r"(.+)_(\d+)_(\d+)_leftImg8bit\.png$")


class CityscapesConfig(PreparedConfig):
    seq_len: int = Field(20, gt=0, le=SNIPPET, description="frames per training clip (SLAMP: n_past 10 + "
                         "n_future 10; at most 30)")
    test_seq_len: int | None = Field(30, gt=0, le=SNIPPET, description="frames per val/test clip (SLAMP's "
                                     "evaluation: 10 + 20)")
    augment: bool = Field(False, description="SLAMP's train-time augmentation: colour jitter and horizontal flip, "
                          "each with probability 1/2 per clip")


def snippets(city_folder: Path, warn: Callable[[str], None]) -> list[tuple[str, list[Path]]]:
    """(name, frame files in order) of each snippet of one city folder: files grouped by (city, seq), sorted by frame
    number, cut where the frame numbers jump."""
    groups: dict[tuple[str, str], list[tuple[int, Path]]] = {}
    for path in city_folder.iterdir():
        match = _FRAME.match(path.name)
        if match:
            groups.setdefault((match[1], match[2]), []).append((int(match[3]), path))
    out = []
    for (city, seq), frames in sorted(groups.items()):
        frames.sort()
        begin = 0
        for i in range(1, len(frames) + 1):
            if i == len(frames) or frames[i][0] != frames[i - 1][0] + 1:
                piece = frames[begin:i]
                name = f"{city}_{seq}_{piece[0][0]:06d}"
                if len(piece) != SNIPPET:
                    warn(f"snippet {name} of {city_folder} has {len(piece)} frames, not {SNIPPET} (SLAMP assumes 30)")
                out.append((name, [path for _, path in piece]))
                begin = i
    return out


def _cities(root: Path, split: str) -> list[Path]:
    folder = root / RAW / FOLDER / split
    return sorted(child for child in folder.iterdir() if child.is_dir())


def _check(root: Path) -> None:
    raw = root / RAW
    missing = [split for split in SPLITS if not (raw / FOLDER / split).is_dir()]
    if missing:
        raise need_files(NAME, root, [f"{FOLDER}/{split}/<city>/*_leftImg8bit.png" for split in missing],
                         f"Cityscapes needs an account: register at https://www.cityscapes-dataset.com, accept its "
                         f"licence, download {ARCHIVE} (324 GB) from {SITE} and unzip it in the raw folder, which gives "
                         f"raw/{FOLDER}/train, raw/{FOLDER}/val and raw/{FOLDER}/test.")
    for split in SPLITS:
        if not _cities(root, split):
            raise VpkitError(f"{raw / FOLDER / split} holds no city folder: unzip {ARCHIVE} there again.")


def _train_videos(root: Path, options: PrepareOptions, pool: ThreadPoolExecutor) -> Iterator[tuple[str, np.ndarray]]:
    for city in _cities(root, "train"):
        for name, paths in snippets(city, options.warn):
            options.status(f"cityscapes train: {name}")
            for start, video in runs(read_resized(paths, SIZE, options.warn, pool)):
                yield (name if start == 0 else f"{name}+{start}"), video


def _fixed_videos(root: Path, split: str, options: PrepareOptions, pool: ThreadPoolExecutor,
                  count: int, length: int) -> Iterator[tuple[str, np.ndarray]]:
    """The first `count` snippets of each city of `split`, `length` frames from their first frame."""
    for city in _cities(root, split):
        chosen = snippets(city, options.warn)[:count]
        if len(chosen) < count:
            options.warn(f"{city} holds {len(chosen)} snippets, fewer than the {count} SLAMP's test protocol takes")
        for name, paths in chosen:
            if len(paths) < length:
                options.warn(f"left out {split} snippet {name}: {len(paths)} frames, fewer than {length}")
                continue
            options.status(f"cityscapes {split}: {name}")
            frames = read_resized(paths[:length], SIZE, options.warn, pool)
            if any(frame is None for frame in frames):
                options.warn(f"left out {split} snippet {name}: a frame of it cannot be read")
                continue
            yield name, np.stack(frames)


def prepare(root: Path, options: PrepareOptions, *, test_snippets: int | None = None,
            test_length: int | None = None) -> str:
    """Check ROOT/raw (saying what to fetch when leftImg8bit_sequence is absent), then write the three splits."""
    test_snippets = test_snippets or TEST_SNIPPETS
    test_length = test_length or SNIPPET
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, {split: split_videos(root / f"{split}.h5") for split in SPLITS})
    _check(root)
    with ThreadPoolExecutor(WORKERS) as pool:
        for split in ("test", "val"):
            videos = _fixed_videos(root, split, options, pool, test_snippets, test_length)
            write_split(root / f"{split}.h5", videos, options, fps=FPS)
        write_split(root / "train.h5", _train_videos(root, options, pool), options, fps=FPS)
    return summary(NAME, root, {split: split_videos(root / f"{split}.h5") for split in SPLITS})


def build(config: CityscapesConfig, split: str):
    if split != "train":
        return open_split(config, split, NAME)
    clips = open_split(config, "train", NAME, clips="all")
    return Augmented(clips, config.seed) if config.augment else clips


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=CityscapesConfig,
        build=build,
        splits=SPLITS,
        description="Cityscapes leftImg8bit_sequence, 30-frame snippets at 256x128, 17 Hz (SLAMP): clips from any "
                    "offset of the train snippets; first 20 snippets per city for val and test",
        source=SITE + " (" + ARCHIVE + ")",
        size="324 GB zip; about 9.3 GB converted (8.8 GB train)",
        licence="Cityscapes licence: non-commercial research, registration required",
        prepare=prepare,
        access="registration",
    ))
