"""A folder of frame images (png, jpg, bmp, tiff, webp, ...), in natural order of their file names.

Natural order compares the digits in a name as numbers, so `frame_2.png` comes before `frame_10.png` whether or not
the numbers are zero-padded. Files of other kinds and hidden files in the folder are ignored. Opening reads every
image's header (not its pixels) to check that all frames have one size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.source import VideoSource
from vpkit.plugins.sources import index_blocks

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders the digit runs in `name` by value: `a2 < a10`. Text parts compare case-insensitively."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


def _rgb(image: Image.Image) -> np.ndarray:
    """Any PIL image as uint8 RGB `[H, W, 3]`; 16-bit grey keeps its top byte rather than being clipped at 255."""
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


class FrameFolder(VideoSource):
    """The images in one folder, read on demand a chunk at a time."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        folder = Path(uri)
        images = (p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
        self.paths = sorted((p for p in images if p.is_file()), key=lambda p: natural_key(p.name))
        if not self.paths:
            raise VpkitError(f"{uri} has no frame images ({', '.join(SUFFIXES)}); give a folder of frames, "
                             "a video file or a .npy array")
        sizes = [self._size(p) for p in self.paths]
        for path, size in zip(self.paths, sizes):
            if size != sizes[0]:
                raise VpkitError(f"{path} is {size[0]}x{size[1]} (HxW) but {self.paths[0].name} is "
                                 f"{sizes[0][0]}x{sizes[0][1]}: every frame in a folder must have the same size")
        self.size = sizes[0]
        self.num_frames = len(self.paths)
        self.fps = None

    @staticmethod
    def _size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as error:
            raise VpkitError(f"{path} is not an image that can be read") from error
        return height, width

    def chunks(self, start: int = 0, stride: int = 1, chunk: int = 64) -> Iterator[np.ndarray]:
        for indices in index_blocks(start, stride, chunk, self.num_frames):
            block = np.empty((len(indices), *self.size, 3), np.uint8)
            for slot, index in enumerate(indices):
                try:
                    with Image.open(self.paths[index]) as image:
                        block[slot] = _rgb(image)
                except (OSError, ValueError) as error:
                    raise VpkitError(f"{self.paths[index]} is truncated or corrupt (could not decode frame {index})"
                                     ) from error
            yield block


@vpkit.hookimpl
def open_source(uri: str) -> VideoSource | None:
    """Claim folders."""
    return FrameFolder(uri) if Path(uri).is_dir() else None
