"""Shapes, DDLP's single-image toy set for DLPv2: random coloured shapes on a cyan background, generated on the fly.

Source: DDLP's `datasets/shapes_ds.py` (`generate_shape_dataset_torch`), which draws each image with scikit-image's
`skimage.draw.random_shapes` on a 64x64 canvas: 2 to 5 shapes (rectangles, circles, triangles, ellipses) of size 11
to 13, non-overlapping, up to 100 placement trials each, colours drawn from intensities 0..200 in every channel
(`intensity_range=((0, 200),)`). The background, white (255) there, is recoloured to cyan (0, 255, 255) by zeroing the
red channel wherever it is 255 (no shape reaches 255). Nothing is stored on disk: there is nothing to prepare.

Items are uint8 `[1, 3, 64, 64]`, a one-frame "video" (T = 1). Splits: train has `num_train` = 40,000 images and
val `num_val` = 2,000, as DDLP. DDLP has no test split (it scores DLPv2 on val); vpkit's `test` is one more draw of
`num_val` images, independent of val, so `vpkit eval` has a held-out set.

What differs: DDLP regenerates the sets without a seed on every run, so no two runs see the same images. vpkit
seeds image i of a split with (`seed`, split, i), so a run is reproducible and any image can be drawn alone (and by
any DataLoader worker) without generating the whole set first.

scikit-image is not a dependency of vpkit: it is imported when an image is drawn, and its absence is an error that
says `pip install scikit-image`.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field

import vpkit
from vpkit.core.config import BaseConfig
from vpkit.core.errors import VpkitError
from vpkit.core.specs import DatasetSpec

NAME = "shapes"
SPLITS = ("train", "val", "test")
# generate_shape_dataset_torch's arguments, all passed on to random_shapes
MIN_SHAPES, MAX_SHAPES = 2, 5
MIN_SIZE, MAX_SIZE = 11, 13
INTENSITY = ((0, 200),)
NUM_TRIALS = 100


class ShapesConfig(BaseConfig):
    num_train: int = Field(40_000, gt=0, description="training images (DDLP: 40,000)")
    num_val: int = Field(2_000, gt=0, description="validation images, and as many test images (DDLP: 2,000 val)")
    image_size: int = Field(64, gt=0, description="side of the square canvas (DDLP's shapes.json: 64)")
    seed: int = Field(0, description="image i of a split is drawn from (seed, split, i)")


def _random_shapes() -> Callable[..., Any]:
    try:
        from skimage.draw import random_shapes
    except ImportError:
        raise VpkitError("The shapes dataset draws its images with scikit-image, which is not installed: "
                         "pip install scikit-image") from None
    return random_shapes


def draw(size: int, seed: int) -> np.ndarray:
    """One Shapes image, uint8 [size, size, 3], drawn from `seed` (DDLP's random_shapes call and cyan recolouring)."""
    random_shapes = _random_shapes()
    # scikit-image 0.19-0.20 names the seed `random_seed`, later versions `rng`; both seed numpy's default_rng
    key = "rng" if "rng" in inspect.signature(random_shapes).parameters else "random_seed"
    image, _ = random_shapes((size, size), max_shapes=MAX_SHAPES, min_shapes=MIN_SHAPES, min_size=MIN_SIZE,
                             max_size=MAX_SIZE, intensity_range=INTENSITY, allow_overlap=False,
                             num_trials=NUM_TRIALS, **{key: seed})
    image = np.array(image, dtype=np.uint8)
    red = image[..., 0]
    red[red == 255] = 0  # white background -> cyan; DDLP's G and B assignments (255 -> 255) change nothing
    return image


def image_seed(seed: int, split: str, index: int) -> int:
    """The seed of image `index` of `split`: (seed, split, index) mixed by numpy's SeedSequence."""
    words = [seed & (2**64 - 1), zlib.crc32(split.encode()), index]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ShapesImages(torch.utils.data.Dataset):
    """`count` Shapes images of one split, drawn on demand as uint8 `[1, 3, size, size]`."""

    def __init__(self, count: int, size: int, seed: int, split: str) -> None:
        self.count, self.size, self.seed, self.split = count, size, seed, split
        self.frame_shape = (3, size, size)
        self.fps = None

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.count:
            raise IndexError(index)
        image = draw(self.size, image_seed(self.seed, self.split, index))
        return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()


def build(config: ShapesConfig, split: str) -> ShapesImages:
    if split not in SPLITS:
        raise VpkitError(f"shapes has splits {', '.join(SPLITS)}, not {split!r}.")
    _random_shapes()  # fail now, not in a DataLoader worker, when scikit-image is missing
    count = config.num_train if split == "train" else config.num_val
    return ShapesImages(count, config.image_size, config.seed, split)


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=ShapesConfig,
        build=build,
        splits=SPLITS,
        description="Shapes (DDLP/DLPv2): single 64x64 images of 2-5 random coloured shapes on cyan, drawn on the "
                    "fly with scikit-image (seeded); 40,000 train, 2,000 val (and 2,000 test)",
        source="generated (DDLP's generate_shape_dataset_torch: skimage.draw.random_shapes)",
        size="none (needs scikit-image)",
        licence="synthetic; no terms",
        prepare=None,
        access="generated",
    ))
