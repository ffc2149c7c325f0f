"""The `h5` dataset: videos in vpkit's HDF5 format (`vpkit data convert`), `DATA_ROOT/{train,val,test}.h5`.

Training reads a clip of `seq_len` frames from a random start of each video; val and test read `test_seq_len`
frames from the first frame of each video (a fixed protocol). `step` keeps every step-th frame. Without a `val.h5`,
validation reads `test.h5` and says so once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

import vpkit
from vpkit.core.config import BaseConfig
from vpkit.core.errors import VpkitError
from vpkit.core.specs import DatasetSpec
from vpkit.engine.h5videos import H5Videos


class H5Config(BaseConfig):
    data_root: str | None = Field(None, description="folder holding train.h5, test.h5 and optionally val.h5")
    seq_len: int = Field(15, gt=0, description="frames per training clip")
    test_seq_len: int | None = Field(None, gt=0, description="frames per test clip (default: seq_len)")
    step: int = Field(1, gt=0, description="keep every step-th frame")
    seed: int = Field(0, description="seed of the random training clip starts")


def build(config: H5Config, split: str) -> H5Videos:
    if config.data_root is None:
        raise VpkitError("The h5 dataset needs its folder: pass --set data.data_root=DIR, DIR holding train.h5 and "
                         "test.h5 from `vpkit data convert`.")
    path = Path(config.data_root).expanduser() / f"{split}.h5"
    if split == "val" and not path.is_file():
        path = path.with_name("test.h5")
        warnings.warn(f"{path.parent} has no val.h5: validation reads test.h5 (the best checkpoint is then picked "
                      "on the test videos).", stacklevel=2)
    if split == "train":
        return H5Videos(path, config.seq_len, step=config.step, clips="random", seed=config.seed)
    return H5Videos(path, config.test_seq_len or config.seq_len, step=config.step, clips="first")


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name="h5",
        config_cls=H5Config,
        build=build,
        splits=("train", "val", "test"),
        description="your own videos in vpkit's HDF5 format (vpkit data convert SRC --out DIR/train.h5)",
        source="your files, converted with vpkit data convert",
        size="about H×W×C bytes per frame (uncompressed uint8)",
        licence="yours",
    ))
