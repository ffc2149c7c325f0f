"""Clip-consistent colour jitter: one brightness/contrast/saturation/hue change drawn per clip, applied to all its frames.

RIVER (Davtyan et al., ICCV 2023) trains on CLEVRER with this augmentation (`configs/clevrer.yaml`, `aug: True`):
four uniform draws u1..u4 in [0, 1), in the order brightness, contrast, saturation, hue, give

    brightness factor 1 + (u1 - 0.5) / 5,  contrast 1 + (u2 - 0.5) / 5,  saturation 1 + (u3 - 0.5) / 5,
    hue shift (u4 - 0.5) / 2,

applied to the uint8 clip with torchvision's `adjust_brightness`, `adjust_contrast`, `adjust_saturation` and
`adjust_hue`, in that order. Here the half-widths are parameters (RIVER's: 0.1, 0.1, 0.1, 0.25):

- `ColourJitter`: the four values of one draw;
- `draw_jitter`: a draw from a `torch.Generator`;
- `jitter_clip`: applies a draw to a uint8 clip `[T, C, H, W]`;
- `ColourJitterClips`: a dataset wrapper that jitters every clip it reads.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torchvision.transforms.functional as TF

from vpkit.core.errors import VpkitError
from vpkit.engine.seeding import read_generator

# RIVER's half-widths: factors 1 +- 0.1 for brightness, contrast and saturation; hue shifted by up to a quarter turn.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.1, 0.1, 0.1, 0.25


class ColourJitter(NamedTuple):
    """One clip's colour change, in torchvision's terms: `brightness`, `contrast` and `saturation` are factors (1
    leaves the clip unchanged), `hue` a shift in turns of the hue circle (0 leaves it unchanged)."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0


def _check_ranges(brightness: float, contrast: float, saturation: float, hue: float) -> None:
    for name, value, top in (("brightness", brightness, 1), ("contrast", contrast, 1), ("saturation", saturation, 1),
                             ("hue", hue, 0.5)):
        if not 0 <= value <= top:
            raise VpkitError(f"colour jitter: the {name} range must lie in [0, {top}], got {value}.")


def draw_jitter(generator: torch.Generator, brightness: float = BRIGHTNESS, contrast: float = CONTRAST,
                saturation: float = SATURATION, hue: float = HUE) -> ColourJitter:
    """Draw u1..u4 ~ U[0, 1) from `generator` (one `torch.rand(1)` each, in the order brightness, contrast,
    saturation, hue) and return factors `1 + (u - 0.5) * 2 * range` and the shift `(u4 - 0.5) * 2 * hue`: each lies
    within +- its range. With RIVER's ranges this is its `(u - 0.5) / 5` and `(u4 - 0.5) / 2`."""
    _check_ranges(brightness, contrast, saturation, hue)
    u = [float(torch.rand(1, generator=generator)) - 0.5 for _ in range(4)]
    return ColourJitter(1 + u[0] * 2 * brightness, 1 + u[1] * 2 * contrast, 1 + u[2] * 2 * saturation,
                        u[3] * 2 * hue)


def jitter_clip(clip: torch.Tensor, jitter: ColourJitter) -> torch.Tensor:
    """`clip` (uint8 `[T, C, H, W]`, C = 1 or 3) with `jitter` applied to every frame: torchvision's
    `adjust_brightness`, `adjust_contrast`, `adjust_saturation`, `adjust_hue`, in that order, each rounding back to
    uint8 as RIVER's transform does. Contrast blends each frame with its own mean grey level (torchvision's rule).

    Grey clips (C = 1) get brightness and contrast only: saturation and hue are undefined without colour, so those
    two values are ignored and the clip stays grey (torchvision would leave it unchanged too)."""
    if clip.dtype != torch.uint8 or clip.dim() != 4 or clip.shape[1] not in (1, 3):
        raise VpkitError(f"colour jitter needs a uint8 clip [T, C, H, W] with C = 1 or 3; got {clip.dtype} "
                         f"{list(clip.shape)}.")
    out = TF.adjust_brightness(clip, jitter.brightness)
    out = TF.adjust_contrast(out, jitter.contrast)
    if clip.shape[1] == 3:
        out = TF.adjust_saturation(out, jitter.saturation)
        out = TF.adjust_hue(out, jitter.hue)
    return out


class ColourJitterClips(torch.utils.data.Dataset):
    """The clips of `dataset` (uint8 `[T, C, H, W]`), each read with a fresh `ColourJitter` shared by its frames.

    Each read draws its jitter from `vpkit.engine.seeding.read_generator` (stream "colour jitter"): the same for a
    batch on any DataLoader worker and after a resume, apart from other streams seeded with the same `seed`.

    `frame_shape` is the wrapped dataset's; every other attribute (`fps`, `skipped`, `path`, `locate`, `set_epoch`,
    ...) is looked up on the wrapped dataset.
    """

    def __init__(self, dataset: Any, seed: int, *, brightness: float = BRIGHTNESS, contrast: float = CONTRAST,
                 saturation: float = SATURATION, hue: float = HUE) -> None:
        _check_ranges(brightness, contrast, saturation, hue)
        channels = dataset.frame_shape[0]
        if channels not in (1, 3):
            raise VpkitError(f"colour jitter needs grey or RGB frames, not {channels} channels.")
        self.dataset, self.seed = dataset, seed
        self.ranges = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
        self.frame_shape = dataset.frame_shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the wrapper lacks; dunders (e.g. `__getitems__`, which would skip the jitter)
        # and `dataset` itself (absent while unpickling in a worker) are not forwarded.
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def jitter(self, index: int) -> ColourJitter:
        """Draw the jitter of one read of item `index` (advances torch's global generator by one draw)."""
        return draw_jitter(read_generator(self.seed, "colour jitter", index), **self.ranges)

    def __getitem__(self, index: int) -> torch.Tensor:
        clip = self.dataset[index]
        return jitter_clip(clip, self.jitter(index))
