"""PHYRE rollouts (Bakhtin et al., NeurIPS 2019) as DDLP (Daniel & Tamar, TMLR 2024) rendered and reads them.

Source: frames made with DDLP's `datasets/phyre_preparation.py` (https://github.com/taldatech/ddlp; it needs the
`phyre` simulator package: ball_within_template, fold 0, 2 solving actions per training task and 1 per val/test
task, stride 7, templates 12, 13, 16, 20 and 21 left out), or the authors' copy linked from DDLP's README (MEGA.nz).
Neither can be scripted here, so access is by hand. Layout under ROOT/raw (or one folder deeper, as an archive
unpacks):

    ROOT/raw/{train,valid,test}/<5-digit episode>/<5-digit frame>.png      128x128, `valid` is the val split

Episodes are the folders whose name is a number, in numeric order; frames are the `<number>.png` files in numeric
order (DDLP `datasets/phyre_ds.py`). Episodes have different lengths.

What is stored: every frame of every episode, at 128x128 (resized with PIL's default filter, bicubic, as DDLP's
loader does, only if a copy has another size), in true RGB. DDLP's script writes RGB arrays with `cv2.imwrite`,
which takes them for BGR: the PNGs hold red and blue swapped, and conversion swaps them back.

What the loader does, each behind a config option whose default is DDLP's (`datasets/phyre_ds.py`):
- `drop_last` = 30: the last 30 frames of each episode are dropped (3 s at 10 fps of the idle end: the task counts
  as solved after the goal holds for 3 s); an episode with no frame left is left out (`skipped` counts them);
- `episode_length` = 100: an episode is cut to 100 frames, and a shorter one is padded to 100 by repeating its
  last frame;
- `swap_rb` = True: red and blue as DDLP's loader sees them (the PNGs' channel order); False gives true colours;
- `invert` = True: colours inverted, DDLP's `img = 1 - img` (255 - x in uint8 is exactly 1 - x/255).

Protocol (DDLP): a training item is a window of `seq_len` = timestep_horizon + 1 = 16 frames; each episode gives
episode_length - seq_len + 1 = 85 items, and a window that runs past the episode's real end (after drop_last) is
moved back to end there (or starts at 0, padding included, when the episode is shorter than a window). A val/test
item is one episode from its first frame, padded, `test_seq_len` frames (50 by default, DDLP's eval horizon; its
validation during training unrolls 60 frames).

Differences from DDLP: none in the frames a model sees, at 128x128. A damaged PNG: DDLP reads what it can
(`LOAD_TRUNCATED_IMAGES`); vpkit skips that episode with a warning naming the file. DDLP fails on an episode of 30
frames or fewer; vpkit keeps it on disk (warning) and leaves it out when reading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
    episode_folders,
    need_files,
    open_split,
    resize_frames,
    split_counts,
    splits_ready,
    summary,
    write_split,
)

NAME = "phyre"
SPLITS = ("train", "val", "test")
FOLDERS = {"train": "train", "val": "valid", "test": "test"}  # DDLP phyre_ds.py:31-32 maps val to valid
SIZE = 128
DROP_LAST, EPISODE_LENGTH = 30, 100  # DDLP phyre_ds.py:25,37: cutoff = 3 * fps (10), ep_len 100
FETCH = ("Make them with DDLP's datasets/phyre_preparation.py (https://github.com/taldatech/ddlp; needs the `phyre` "
         "package, pip install phyre) or download the authors' copy linked in DDLP's README "
         "(https://mega.nz/file/lIkDnZZD#Ym4vlAqd3egCljoujya33KHaua7AwmusmbUw27OdIHE), then put its train, valid and "
         "test folders in the raw folder.")


class PhyreConfig(PreparedConfig):
    seq_len: int = Field(16, gt=0, description="frames per training clip (DDLP: timestep_horizon 15 + 1)")
    test_seq_len: int | None = Field(50, gt=0, description="frames per val/test episode from its first frame, "
                                     "padded (DDLP's eval horizon 50; its training-time validation uses 60)")
    drop_last: int = Field(DROP_LAST, ge=0, description="frames dropped from the end of each episode (DDLP: 30, "
                           "the 3 s idle end at 10 fps)")
    episode_length: int = Field(EPISODE_LENGTH, gt=0, description="episodes cut to this many frames, shorter ones "
                                "padded by repeating the last frame (DDLP: 100)")
    swap_rb: bool = Field(True, description="red and blue swapped as DDLP's loader reads its PNGs (cv2 wrote RGB as "
                          "BGR); False: true colours")
    invert: bool = Field(True, description="colours inverted, DDLP's img = 1 - img")


# -- conversion -------------------------------------------------------------------------------------------------------


def _tree(raw: Path) -> Path | None:
    """The folder holding train/, valid/ and test/: ROOT/raw or one of its sub-folders."""
    candidates = [raw, *sorted(child for child in raw.iterdir() if child.is_dir())] if raw.is_dir() else []
    for base in candidates:
        if all((base / folder).is_dir() for folder in FOLDERS.values()):
            return base
    return None


def _videos(folder: Path, options: PrepareOptions) -> Iterator[tuple[str, np.ndarray]]:
    for child, video in episode_folders(folder, options, "<5-digit episode>/<5-digit frame>.png"):
        if len(video) <= DROP_LAST:
            options.warn(f"{child} has {len(video)} frames, not more than the {DROP_LAST} DDLP drops at the end: "
                         "stored, but left out when read with drop_last=30.")
        if video.shape[1:3] != (SIZE, SIZE):  # DDLP's loader: img.resize((128, 128)), PIL's default filter
            video = resize_frames(video, (SIZE, SIZE), "bicubic")
        # DDLP's phyre_preparation.py saves RGB with cv2.imwrite, which expects BGR: undo the swap (see `swap_rb`).
        yield f"{folder.name}/{child.name}", np.ascontiguousarray(video[..., ::-1])


def prepare(root: Path, options: PrepareOptions) -> str:
    """Convert DDLP's PHYRE frame folders in ROOT/raw to ROOT/{train,val,test}.h5 (every frame, true RGB)."""
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, split_counts(root, SPLITS))
    tree = _tree(root / RAW)
    if tree is None:
        raise need_files(NAME, root, [f"{folder}/<5-digit episode>/<5-digit frame>.png (128x128)"
                                      for folder in FOLDERS.values()], FETCH)
    counts = {}
    for split, folder in FOLDERS.items():
        options.status(f"converting {tree / folder}")
        _, counts[split] = write_split(root / f"{split}.h5", _videos(tree / folder, options), options=options)
    return summary(NAME, root, counts)


# -- reading ----------------------------------------------------------------------------------------------------------


class PhyreClips(torch.utils.data.Dataset):
    """DDLP's PHYRE items from a split file, uint8 `[T, C, H, W]`: see the module docstring.

    `train=True`: item i is window i % W of episode i // W, W = episode_length - span + 1, moved back inside the
    episode's real length; otherwise item i is episode i from its first frame. Frames past an episode's real end
    repeat its last frame."""

    def __init__(self, path: Path, clip_length: int, *, step: int = 1, train: bool, episode_length: int,
                 drop_last: int, swap_rb: bool, invert: bool) -> None:
        import h5py

        self.path, self.clip_length, self.step, self.train = Path(path), clip_length, step, train
        self.swap_rb, self.invert = swap_rb, invert
        self.span = (clip_length - 1) * step + 1
        with h5py.File(self.path, "r") as file:
            starts, lengths = file["starts"][:], file["lengths"][:]
            self.frame_shape = (int(file.attrs["channels"]), int(file.attrs["height"]), int(file.attrs["width"]))
        real = np.minimum(lengths - drop_last, episode_length)  # DDLP phyre_ds.py:69-77: paths[:-cutoff][:ep_len]
        keep = real >= 1
        self.skipped = int((~keep).sum())
        self._starts, self._real = starts[keep], real[keep]
        if not len(self._starts):
            raise VpkitError(f"No episode of {self.path} has a frame left once the last {drop_last} are dropped.")
        self.windows = episode_length - self.span + 1
        if train and self.windows < 1:
            raise VpkitError(f"A training clip spans {self.span} frames, more than episode_length={episode_length}.")
        self.fps = None
        self._file: Any = None

    def __len__(self) -> int:
        return len(self._starts) * self.windows if self.train else len(self._starts)

    def locate(self, index: int) -> tuple[int, int]:
        """(episode, first frame) of item `index`."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        if not self.train:
            return index, 0
        episode, first = divmod(index, self.windows)
        real = int(self._real[episode])
        if first + self.span > real:  # DDLP phyre_ds.py:92-101: a window past the real end is moved back
            first = 0 if self.span > real else real - self.span
        return episode, first

    def __getitem__(self, index: int) -> torch.Tensor:
        import h5py

        episode, first = self.locate(index)
        # Frames past the real end repeat the last real frame (DDLP pads to ep_len with paths[-1]).
        picks = np.minimum(first + np.arange(self.clip_length) * self.step, int(self._real[episode]) - 1)
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        begin = int(self._starts[episode])
        block = self._file["frames"][begin + picks[0]: begin + picks[-1] + 1]
        frames = block[picks - picks[0]]
        if self.swap_rb:
            frames = frames[..., ::-1]
        if self.invert:
            frames = 255 - frames
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None  # each process opens its own handle
        return state


def build(config: PhyreConfig, split: str) -> PhyreClips:
    # open_split checks the file (and names the prepare command when it is missing); the clips need each episode's
    # real length, so they are cut here rather than by H5Videos, which would leave out episodes shorter than a clip.
    checked = open_split(config.model_copy(update={"seq_len": 1, "test_seq_len": 1, "step": 1}), split, NAME,
                         clips="first")
    train = split == "train"
    return PhyreClips(checked.path, config.seq_len if train else config.test_seq_len or config.seq_len,
                      step=config.step, train=train, episode_length=config.episode_length,
                      drop_last=config.drop_last, swap_rb=config.swap_rb, invert=config.invert)


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=PhyreConfig,
        build=build,
        splits=SPLITS,
        description="PHYRE ball-within-template rollouts rendered by DDLP at 128x128, read as DDLP does (last 30 "
                    "frames dropped, padded to 100, colours inverted)",
        source="https://github.com/taldatech/ddlp (datasets/phyre_preparation.py, or the authors' MEGA.nz copy)",
        size="not published; 48 KB per stored frame (128x128 RGB, uncompressed): ~10 GB for ~3,000 episodes of "
             "~70 frames (an estimate)",
        licence="PHYRE: Apache-2.0; DDLP's code: MIT",
        prepare=prepare,
        access="by hand",
    ))
