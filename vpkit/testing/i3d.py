"""A stand-in for StyleGAN-V's `i3d_torchscript.pt` with the same TorchScript call, for tests (the real weights
cannot be downloaded everywhere): `forward(x, rescale, resize, return_features)` on `x` `[N, 3, T, H, W]`, rescaling
[0, 255] to [-1, 1] and resizing to 224×224 (bilinear) when asked, refusing clips shorter than 10 frames, then a
small fixed random 3-D convolutional network giving 400 features (the softmax of them when `return_features` is
false). Its features depend on content and motion, so different video sets get different FVDs."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StandInI3D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, kernel_size=(3, 7, 7), stride=(1, 4, 4), padding=(1, 3, 3))
        self.conv2 = nn.Conv3d(8, 16, kernel_size=(3, 3, 3), stride=(2, 2, 2), padding=1)
        self.logits = nn.Linear(16 * 8, 400)

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> Tensor:
        if x.shape[2] < 10:
            raise RuntimeError(f"I3D needs at least 10 frames, got {x.shape[2]}")
        if rescale:
            x = x * (2.0 / 255.0) - 1.0
        if resize:
            n, c, t, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
            frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
            x = frames.reshape(n, t, c, 224, 224).permute(0, 2, 1, 3, 4)
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        h = F.adaptive_avg_pool3d(h, (2, 2, 2)).flatten(1)
        out = self.logits(h)
        return out if return_features else F.softmax(out, dim=1)


def save_stand_in_i3d(path: Path | str, seed: int = 0) -> Path:
    """Script a stand-in with weights from `seed` and save it like StyleGAN-V's file."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; the real I3D file is TorchScript
        module = torch.jit.script(StandInI3D().eval())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.save(str(path))
    return path
