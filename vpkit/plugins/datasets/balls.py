"""Balls-Interaction (G-SWM, Lin et al. 2020) as DDLP uses it: 64x64 RGB, three bouncing, colliding balls.

Source: G-SWM's generator, https://github.com/zhixuan-lin/G-SWM, config `balls_interaction`
(`scripts/dataset_balls/{gen,config}.py`: 100 frames an episode, 3 circles of size 8 in 5 colours, speed 3, elastic
collisions, non-overlapping first frame; 5000 / 200 / 200 episodes seeded 7 / 8 / 9). It is not downloadable by
script: generate it with
    git clone https://github.com/zhixuan-lin/G-SWM && cd G-SWM
    python scripts/dataset_balls/gen.py -g balls_interaction --output-dir ./data
(`sh scripts/gen_data_balls.sh` makes it along with three other ball datasets), or fetch the copy DDLP's authors
generated (MEGA.nz link in DDLP's README), and put the three files at `ROOT/raw/{train,val,test}.hdf5` (the folder
the generator writes, `ROOT/raw/BALLS_INTERACTION/`, is also looked in). Each holds `imgs` uint8
`[N, 100, 64, 64, 3]` and per-object annotations `positions [N, 100, 3, 2]`, `sizes`, `ids`, `in_camera`,
`velocities`, `masses`, `layers`, `present`, `colors`, `shapes`.

Conversion: `imgs` only, one episode at a time, into `ROOT/{train,val,test}.h5` (episode i of `SPLIT.hdf5` is video
i of `SPLIT.h5`, named `SPLIT.hdf5#i`). The three files are checked before any split is written: one that is not
HDF5, has no `imgs`, or whose `imgs` is not uint8 `[N, T, H, W, 3]` stops preparation with an error naming it and
what it holds; a split whose episode count differs from G-SWM's gets a warning.

Protocol, as DDLP's `datasets/balls_ds.py`: training reads every start offset of every episode in order
(`clips="all"`, DDLP's continuous indexing: `episodes x (100 - seq_len + 1)` clips of `seq_len` = 11 frames,
`timestep_horizon + 1`); val/test read each episode from its first frame, `test_seq_len` = 50 frames (DDLP's
`eval_gen_metrics.py` default horizon; its loader returns all 100, which `test_seq_len=100` reads).

What differs: DDLP's loader also returns the episode's `pos`, `size`, `id` and `in_camera` annotations with each
clip (used for G-SWM-style tracking metrics). vpkit's items are frames only, so those are not converted; they stay
in `ROOT/raw/*.hdf5`, index-aligned with the videos, for whoever needs them.
"""

from __future__ import annotations

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
    need_files,
    open_split,
    split_counts,
    splits_ready,
    summary,
    write_split,
)

NAME = "balls"
SPLITS = ("train", "val", "test")
EPISODES = {"train": 5000, "val": 200, "test": 200}  # G-SWM's balls_interaction config
GENERATED = "BALLS_INTERACTION"  # the folder G-SWM's gen.py writes the files to
GSWM = "https://github.com/zhixuan-lin/G-SWM"
DDLP_README = "https://github.com/taldatech/ddlp#datasets"


class BallsConfig(PreparedConfig):
    seq_len: int = Field(11, gt=0, description="frames per training clip (DDLP: timestep_horizon 10 + 1)")
    test_seq_len: int | None = Field(50, gt=0, description="frames per val/test clip from each episode's start "
                                     "(eval_gen_metrics.py's default horizon; the files hold 100)")


def _find(raw: Path, split: str) -> Path | None:
    for path in (raw / f"{split}.hdf5", raw / GENERATED / f"{split}.hdf5"):
        if path.is_file():
            return path
    return None


def _open(path: Path) -> Any:
    """G-SWM's file, its `imgs` checked: an error naming the file and what it holds otherwise."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as exc:
        raise VpkitError(f"{path} is not a readable HDF5 file ({exc}): it is truncated or not G-SWM's format; "
                         "generate or fetch it again.") from None
    if "imgs" not in file or not isinstance(file["imgs"], h5py.Dataset):
        held = ", ".join(sorted(file.keys())) or "nothing"
        file.close()
        raise VpkitError(f"{path} has no 'imgs' array (it holds {held}): not G-SWM's Balls-Interaction file.")
    imgs = file["imgs"]
    if imgs.dtype != np.uint8 or imgs.ndim != 5 or imgs.shape[-1] != 3 or 0 in imgs.shape:
        what = f"{imgs.dtype} {list(imgs.shape)}"
        file.close()
        raise VpkitError(f"{path}: 'imgs' is {what}, not G-SWM's uint8 [episodes, 100, 64, 64, 3].")
    return file


def _episodes(path: Path, split: str) -> Iterator[tuple[str, np.ndarray]]:
    """The `imgs` of a G-SWM file, one episode at a time (h5py reads only that episode)."""
    with _open(path) as file:
        imgs = file["imgs"]
        for index in range(len(imgs)):
            try:
                episode = imgs[index]
            except OSError as exc:
                raise VpkitError(f"{path}: episode {index} cannot be read ({exc}): the file is damaged.") from None
            yield f"{split}.hdf5#{index}", episode


def prepare(root: Path, options: PrepareOptions) -> str:
    """Convert ROOT/raw/{train,val,test}.hdf5 (G-SWM's generator output) to ROOT/{train,val,test}.h5."""
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, split_counts(root, SPLITS))
    raw = root / RAW
    raw.mkdir(parents=True, exist_ok=True)
    found = {split: _find(raw, split) for split in SPLITS}
    missing = [f"{split}.hdf5" for split, path in found.items() if path is None]
    if missing:
        raise need_files(NAME, root, missing, f"Generate them with G-SWM's script ({GSWM}): `python "
                         "scripts/dataset_balls/gen.py -g balls_interaction --output-dir ./data` writes "
                         f"data/{GENERATED}/{{train,val,test}}.hdf5; or download DDLP's copy (MEGA.nz link in "
                         f"{DDLP_README}).")
    paths = {split: path for split, path in found.items() if path is not None}
    for split, path in paths.items():  # every file checked before any split is written
        with _open(path) as file:
            count = len(file["imgs"])
        if count != EPISODES[split]:
            options.warn(f"{path} holds {count} episodes; G-SWM's balls_interaction {split} split has "
                         f"{EPISODES[split]}.")
    for split, path in paths.items():
        options.status(f"balls {split}: {path}")
        write_split(root / f"{split}.h5", _episodes(path, split), options=options)
    return summary(NAME, root, split_counts(root, SPLITS))


def build(config: BallsConfig, split: str) -> Any:
    if split not in SPLITS:
        raise VpkitError(f"balls has splits {', '.join(SPLITS)}, not {split!r}.")
    return open_split(config, split, NAME, clips="all" if split == "train" else "first")


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=BallsConfig,
        build=build,
        splits=SPLITS,
        description="Balls-Interaction (G-SWM), 64x64 RGB, 3 colliding balls, 100-frame episodes (DDLP): "
                    "5000/200/200 episodes; train clips from every start, val/test from the first frame",
        source=f"generated with G-SWM's scripts/dataset_balls/gen.py -g balls_interaction ({GSWM})",
        size="~6.6 GB raw (the three .hdf5 files), ~6.6 GB converted",
        licence="synthetic; G-SWM's generator is GPL-3.0",
        prepare=prepare,
        access="by hand",
    ))
