"""Traffic, the street-camera video DDLP (Daniel and Tamar, TMLR 2024) trains on: 128x128 RGB, one long video.

Source: one numpy array, `img128np.npy`, uint8 `[N, 128, 128, 3]`: consecutive frames of a traffic camera
(courtesy of Ron Mokady), cropped to the box (60, 0, 480, 420) and resized bicubically to 128x128 by DDLP's
`datasets/traffic_ds.py` (`prepare_numpy_file`). DDLP's README (section "Datasets") links it on MEGA.nz, which cannot
be scripted, so it is fetched by hand: put it at `ROOT/raw/img128np.npy` (unpacked, if it arrives archived) and run
`vpkit data prepare traffic --root ROOT`. The array is read through a memory map, a block of frames at a time.

Splits, as DDLP's `TrafficDataset`: the frames are cut contiguously, in order, into train = the first
`int(0.8 * N)` frames, val = the next `int(0.1 * N)`, test = all the rest (so the test part takes the rounding
remainder). Episode boundaries of the camera footage are ignored, as in DDLP.
- `ROOT/train.h5` holds the train frames as ONE long video; training reads every start frame in order
  (`clips="all"`: `int(0.8 * N) - seq_len + 1` clips of `seq_len` = 11 frames, DDLP's `timestep_horizon + 1`).
  DDLP's train set has `int(0.8 * N)` items, item i starting at frame i, and shifts a window that would run past
  the end back so it ends on the last frame: its last `seq_len - 1` items repeat the final window. vpkit keeps each
  window once; since every window lies inside the one long video, nothing ever needs shifting.
- `ROOT/val.h5` and `ROOT/test.h5` hold DDLP's evaluation episodes: the part cut into non-overlapping 50-frame
  chunks from its first frame (`len // 50` of them); the remainder (< 50 frames) at the end of each part is in no
  episode, as in DDLP. Test clips are the first `test_seq_len` = 50 frames of each chunk (DDLP's
  `eval_gen_metrics.py` default horizon). Video names record the frames' indices in the .npy, e.g.
  `img128np.npy[987:1037]`.

`image_size` (default 128, the frames' own size) resizes at load time, as DDLP's loader does with torchvision's
`Resize(image_size)` on a PIL image: PIL bilinear. The files always keep the .npy's resolution.
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
from vpkit.engine.h5videos import H5VideoWriter
from vpkit.engine.prepared import (
    RAW,
    PreparedConfig,
    PrepareOptions,
    ResizedClips,
    need_files,
    open_split,
    split_counts,
    splits_ready,
    summary,
    write_split,
)

NAME = "traffic"
SPLITS = ("train", "val", "test")
NPY = "img128np.npy"
EPISODE = 50  # DDLP's ep_len for val/test
BLOCK = 256  # frames copied from the memory map at a time
README = "https://github.com/taldatech/ddlp#datasets"
MEGA = "https://mega.nz/file/8VFCGZza#R6ypaEtuZ-rXL2P8IpzVsBOqqiduqZXbZ1BGiyCjpE8"


class TrafficConfig(PreparedConfig):
    seq_len: int = Field(11, gt=0, description="frames per training clip (DDLP: timestep_horizon 10 + 1)")
    test_seq_len: int | None = Field(50, gt=0, description="frames per val/test clip (DDLP's 50-frame episodes; "
                                     "eval_gen_metrics.py's default horizon)")
    image_size: int = Field(128, gt=0, description="frames are resized to this at load time (PIL bilinear, as "
                            "torchvision's Resize in DDLP's loader) when it differs from the files' size")


def split_bounds(frames: int) -> dict[str, tuple[int, int]]:
    """DDLP's contiguous split of `frames` frames: {split: (first, end)}."""
    # DDLP's arithmetic, kept: int() of a float product (not frames * 8 // 10); the test part takes the remainder.
    train_size = int(0.8 * frames)
    valid_size = int(0.1 * frames)
    return {"train": (0, train_size), "val": (train_size, train_size + valid_size),
            "test": (train_size + valid_size, frames)}


def episodes(first: int, end: int, length: int = EPISODE) -> list[tuple[int, int]]:
    """The non-overlapping `length`-frame chunks of frames [first, end), from `first`; the remainder is dropped."""
    return [(first + i * length, first + (i + 1) * length) for i in range((end - first) // length)]


def _open_npy(path: Path) -> np.ndarray:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise VpkitError(f"{path} is not a readable .npy array ({exc}): it is truncated or not numpy's format; "
                         "fetch it again.") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4 or data.shape[-1] != 3:
        what = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise VpkitError(f"{path} holds {what}, not DDLP's Traffic frames (uint8 [N, 128, 128, 3]).")
    return data


def _blocks(data: np.ndarray, first: int, end: int) -> Iterator[np.ndarray]:
    for start in range(first, end, BLOCK):
        yield np.ascontiguousarray(data[start:min(start + BLOCK, end)])


def prepare(root: Path, options: PrepareOptions) -> str:
    """Split ROOT/raw/img128np.npy into ROOT/{train,val,test}.h5 (DDLP's 80/10/10 frames; 50-frame val/test)."""
    if splits_ready(root, SPLITS) and not options.force:
        return summary(NAME, root, split_counts(root, SPLITS))
    path = root / RAW / NPY
    if not path.is_file():
        (root / RAW).mkdir(parents=True, exist_ok=True)
        raise need_files(NAME, root, [NPY], f"It is DDLP's Traffic file (courtesy of Ron Mokady): download it from "
                         f"the MEGA.nz link in {README} ({MEGA}) in a browser; unpack it if it comes archived.")
    data = _open_npy(path)
    bounds = split_bounds(len(data))
    chunks = {split: episodes(*bounds[split]) for split in ("val", "test")}
    for split, found in chunks.items():
        if not found:
            first, end = bounds[split]
            raise VpkitError(f"{path} holds {len(data)} frames: its {split} part (frames {first}-{end}) has no whole "
                             f"{EPISODE}-frame episode; DDLP's Traffic needs at least {10 * EPISODE} frames.")
    options.status(f"traffic: {len(data)} frames; train {bounds['train'][1]} frames, val {len(chunks['val'])} and "
                   f"test {len(chunks['test'])} episodes of {EPISODE}")

    writer = H5VideoWriter(root / "train.h5", data.shape[1:3], 3, compression=options.compression)
    try:
        writer.add_blocks(_blocks(data, *bounds["train"]), name=f"{NPY}[{bounds['train'][0]}:{bounds['train'][1]}]")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    for split, found in chunks.items():
        write_split(root / f"{split}.h5", ((f"{NPY}[{a}:{b}]", np.ascontiguousarray(data[a:b])) for a, b in found),
                    options=options)
    return summary(NAME, root, split_counts(root, SPLITS))


def build(config: TrafficConfig, split: str) -> Any:
    if split not in SPLITS:
        raise VpkitError(f"traffic has splits {', '.join(SPLITS)}, not {split!r}.")
    clips = open_split(config, split, NAME, clips="all" if split == "train" else "first")
    if clips.frame_shape[1:] != (config.image_size, config.image_size):
        return ResizedClips(clips, config.image_size, "bilinear")
    return clips


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=TrafficConfig,
        build=build,
        splits=SPLITS,
        description="Traffic camera, 128x128 RGB (DDLP): one long video split 80/10/10 by frames; train clips "
                    "from every start frame, val/test 50-frame episodes",
        source=f"img128np.npy from DDLP's README ({README}, MEGA.nz), courtesy of Ron Mokady",
        size="48 KB a frame in img128np.npy (frame count not published); about the same again converted",
        licence="no licence published (courtesy of Ron Mokady, via DDLP); ask the authors before redistributing",
        prepare=prepare,
        access="by hand",
    ))
