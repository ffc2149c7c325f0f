"""Convolutional building blocks and the spatial operations of DLP: conv blocks, the KeyNet-style heatmap CNN,
spatial softmax, the spatial transformer (glimpse crop and paste), tracking correlation maps and square masks.

Conventions (as the official code): keypoints are (y, x) = (row, col) in [-1, 1] with align_corners=True, so -1 is
the centre of the first pixel and +1 the centre of the last; scales are fractions of the image per axis (h, w).
Module and attribute names are the official ones, so state-dict keys match official checkpoints (including the
misspelled `grouupnorm_*` GroupNorm names).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# -- conv blocks --------------------------------------------------------------------------------------------------


class ConvBlock(nn.Module):
    """[ReplicationPad] -> Conv2d (bias-free unless `bias`) -> GroupNorm(4|5 groups, eps 1e-4) -> ReLU -> [bilinear x2].

    Any `pad_mode` other than 'zeros' pads by replication (the official code does so for 'reflect' too). The
    upsampling comes after the conv. Keys: `main.conv_{cin}_to_{cout}`, `main.grouupnorm_{cout}` (sic)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, *, stride: int = 1, pad: int = 0,
                 upsample: bool = False, bias: bool = False, activation: bool = True, batchnorm: bool = True,
                 pad_mode: str = "replicate") -> None:
        super().__init__()
        self.main = nn.Sequential()
        if pad_mode != "zeros":
            self.main.add_module("replicate_pad", nn.ReplicationPad2d(pad))
            pad = 0
        self.main.add_module(f"conv_{c_in}_to_{c_out}", nn.Conv2d(c_in, c_out, kernel_size, stride=stride,
                                                                  padding=pad, bias=bias))
        if batchnorm:
            groups = 4 if c_out % 4 == 0 else 5
            self.main.add_module(f"grouupnorm_{c_out}", nn.GroupNorm(groups, c_out, eps=1e-4))  # official spelling
        if activation:
            self.main.add_module("relu", nn.ReLU())
        if upsample:
            self.main.add_module("upsample_bilinear_2", nn.Upsample(scale_factor=2, mode="bilinear",
                                                                     align_corners=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class KeyPointCNN(nn.Module):
    """KeyNet-style CNN (official `KeyPointCNNOriginal`): two stride-1 blocks, then a (stride 2, stride 1) pair per
    entry of `channels[1:]`, then a 1x1 `keymap` conv to `n_kp` maps. Returns (features, keymap); every DLP encoder
    reads the keymap. Output side = image_size / 2^(len(channels) - 1).

    Blocks are named `conv_in_{size}_0` / `conv_in_{ch}_1` as official; when a channel count repeats, the later
    `conv_in_{ch}_1` replaces the earlier one in place (`add_module` semantics), so the official network has one
    block fewer than the channel list suggests. That is kept: official checkpoints have exactly those blocks."""

    def __init__(self, cdim: int, channels: tuple[int, ...], image_size: int, n_kp: int, *,
                 pad_mode: str = "replicate", first_conv_kernel_size: int = 7) -> None:
        super().__init__()
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        cc = channels[0]
        k = first_conv_kernel_size
        blocks["in_block_1"] = ConvBlock(cdim, cc, k, pad=k // 2, pad_mode=pad_mode)
        blocks["in_block_2"] = ConvBlock(cc, cc, 3, pad=1, pad_mode=pad_mode)
        size = image_size
        for ch in channels[1:]:
            blocks[f"conv_in_{size}_0"] = ConvBlock(cc, ch, 3, stride=2, pad=1, pad_mode=pad_mode)
            blocks[f"conv_in_{ch}_1"] = ConvBlock(ch, ch, 3, pad=1, pad_mode=pad_mode)  # may replace in place
            cc, size = ch, size // 2
        self.main = nn.Sequential(blocks)
        self.keymap = nn.Conv2d(channels[-1], n_kp, kernel_size=1)
        self.output_size = image_size // 2 ** (len(channels) - 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.main(x)
        return features, self.keymap(features)


def init_conv_gn(module: nn.Module) -> None:
    """Official DLP init: convs N(0, 0.01) with zero bias, GroupNorm 1/0; Linear layers keep PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def mlp(*widths: int, last_relu: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between them (and after the last one with `last_relu`); keys 0, 2, 4..."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2 or last_relu:
            layers.append(nn.ReLU(True))
    return nn.Sequential(*layers)


def upsample_count(size: int) -> int:
    """`int(log(size) // log(2)) - 3` as official `FCToCNN` computes the number of x2 blocks from 8x8."""
    return int(math.log(size) // math.log(2)) - 3


# -- spatial softmax ------------------------------------------------------------------------------------------------


def spatial_softmax(heatmap: Tensor) -> tuple[Tensor, Tensor]:
    """Expected (y, x) in [-1, 1] of softmax(heatmap) over all cells, and [var_y, var_x, cov_yx] (variances >= 1e-6).
    `heatmap` [N, K, h, w] -> kp [N, K, 2], var [N, K, 3]."""
    n, k, h, w = heatmap.shape
    scores = torch.softmax(heatmap.reshape(n, k, -1), dim=-1).view(n, k, h, w)
    ys = torch.linspace(-1, 1, h, device=heatmap.device, dtype=heatmap.dtype)
    xs = torch.linspace(-1, 1, w, device=heatmap.device, dtype=heatmap.dtype)
    kp_y = (scores.sum(-1) * ys).sum(-1)
    kp_x = (scores.sum(-2) * xs).sum(-1)
    var_y = ((scores * ys[:, None] ** 2).sum((-2, -1)) - kp_y ** 2).clamp_min(1e-6)
    var_x = ((scores * xs[None, :] ** 2).sum((-2, -1)) - kp_x ** 2).clamp_min(1e-6)
    cov = (scores * (ys[:, None] * xs[None, :])).sum((-2, -1)) - kp_y * kp_x
    return torch.stack([kp_y, kp_x], dim=-1), torch.stack([var_y, var_x, cov], dim=-1)


# -- spatial transformer ----------------------------------------------------------------------------------------------


def affine_sample(image: Tensor, theta: Tensor, out_hw: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """`grid_sample(image, affine_grid(theta))` with align_corners=True and zero padding."""
    grid = F.affine_grid(theta, [image.shape[0], image.shape[1], *out_hw], align_corners=True)
    return F.grid_sample(image, grid, mode=mode, align_corners=True)


def spatial_transform(image: Tensor, pos: Tensor, scale: Tensor, out_hw: tuple[int, int], *,
                      inverse: bool = False, eps: float = 1e-9) -> Tensor:
    """The STN of G-SWM/DLP. Forward: crop the window of fractional size `scale` (h, w) centred at `pos` (y, x) from
    `image` into `out_hw`. Inverse: paste `image` (a glimpse) into an `out_hw` canvas at that window.
    image [N, C, h, w]; pos, scale [N, 2]."""
    zeros = torch.zeros_like(pos[:, 0])
    if inverse:
        sw, sh = 1 / (scale[:, 1] + eps), 1 / (scale[:, 0] + eps)
        tx, ty = -pos[:, 1] / (scale[:, 1] + eps), -pos[:, 0] / (scale[:, 0] + eps)
    else:
        sw, sh, tx, ty = scale[:, 1], scale[:, 0], pos[:, 1], pos[:, 0]
    theta = torch.stack([sw, zeros, tx, zeros, sh, ty], dim=-1).view(-1, 2, 3)
    return affine_sample(image, theta, out_hw)


def crop_glimpses(x: Tensor, pos: Tensor, scale: Tensor, size: int) -> Tensor:
    """Glimpses `[B * K, C, size, size]` of images `x` [B, C, H, W] at particles pos [B, K, 2] with fractional
    scales [B, K, 2] (the image is tiled once per particle, as official)."""
    batch, k = pos.shape[:2]
    tiled = x.unsqueeze(1).expand(-1, k, -1, -1, -1).reshape(batch * k, *x.shape[1:])
    return spatial_transform(tiled, pos.reshape(-1, 2), scale.reshape(-1, 2), (size, size))


@torch.no_grad()
def correlation_maps(crops: Tensor, previous: Tensor, patch_size: int) -> Tensor:
    """Tracking channel: normalised cross-correlation of each particle's current glimpse region (replicate-padded by
    `patch_size`) with its glimpse of the previous frame, cropped back to `patch_size` and min-max normalised per map.

    crops, previous [N, C, P, P] -> [N, 1, P, P]. As official, the normaliser uses the kernel energy summed over all
    N particles of the batch, not per particle (the per-map min-max normalisation mostly cancels it).

    Eagerly this is the official grouped convolution (one group per particle). While exporting, where the group
    count cannot follow a dynamic batch, every kernel is correlated with every input and the diagonal kept: the same
    numbers at N times the cost."""
    n = crops.shape[0]
    pad = patch_size
    inp = F.pad(crops, [pad] * 4, mode="replicate")
    kernel = previous.clamp(0.0, 1.0)
    if torch.compiler.is_exporting():
        idx = torch.arange(n, device=crops.device)
        out = F.conv2d(inp, kernel)[idx, idx].unsqueeze(1)
    else:
        out = F.conv2d(inp.reshape(1, -1, *inp.shape[2:]), kernel, groups=n).view(n, 1, 2 * pad + 1, 2 * pad + 1)
    energy = F.conv2d(inp ** 2, torch.ones_like(kernel[:1]))  # the all-ones kernel is the same for every particle
    out = out / (torch.sqrt(torch.sum(kernel ** 2) * energy + 1e-10) + 1e-5)
    out = out[:, :, pad // 2 + 1:-pad // 2, pad // 2 + 1:-pad // 2]
    flat = out.reshape(n, out.shape[1], -1)
    low, high = flat.min(-1)[0], flat.max(-1)[0]
    return (out - low[:, :, None, None]) / (high[:, :, None, None] - low[:, :, None, None] + 1e-5)


def square_masks(centers: Tensor, size: int, image_size: int) -> Tensor:
    """Official `create_masks_fast`: a `size`-pixel white square centred on each particle (nearest-neighbour affine
    placement). centers [B, K, 2] -> [B, K, 1, S, S] with S = size + 2 * ((image_size - size) // 2)."""
    batch, k = centers.shape[:2]
    pad = (image_size - size) // 2
    ones = torch.ones(batch * k, 1, size, size, device=centers.device, dtype=centers.dtype)
    padded = F.pad(ones, [pad] * 4)
    shift = (0.0 - centers).reshape(-1, 2)
    one, zero = torch.ones_like(shift[:, 0]), torch.zeros_like(shift[:, 0])
    theta = torch.stack([one, zero, shift[:, 1], zero, one, shift[:, 0]], dim=-1).view(-1, 2, 3)
    placed = affine_sample(padded, theta, tuple(padded.shape[-2:]), mode="nearest")
    return placed.view(batch, k, *padded.shape[1:])


def glimpse_size(anchor_s: float, image_size: int) -> int:
    """P = round(anchor_s * (H - 1)), the glimpse side in pixels (numpy's round-half-to-even, as official)."""
    return round(anchor_s * (image_size - 1))
