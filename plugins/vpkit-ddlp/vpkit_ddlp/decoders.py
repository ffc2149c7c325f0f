"""DLP's decoders: the glimpse decoder (features -> RGBA glimpse) and the background decoder (features -> image).

Attribute names are the official ones (`fc`, `main`, `decode`, `mlp`, `cnn`, `depth_up`, `conv_to_*`, `final_conv`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vpkit_ddlp.layers import ConvBlock, mlp, upsample_count

IN_CH = 32  # channels of the 8x8 map the decoders start from (official, hard-coded)


class GlimpseDecoder(nn.Module):
    """Official `ObjectDecoderCNN`: z_f -> MLP (256, 256, 32*8*8) -> 8x8 map -> (log2(P) - 3) x2-upsampling blocks
    -> 1x1 conv -> sigmoid RGBA glimpse [N, 1 + C, P, P] (alpha first). P must be a power of two >= 8.

    The official module registers its conv stack under two names, `main` and `decode` (the same object), so its
    checkpoints list every conv weight twice; that is kept so official state dicts load strictly."""

    def __init__(self, patch_size: int, features_dim: int, num_chans: int = 4, pad_mode: str = "reflect") -> None:
        super().__init__()
        self.patch_size, self.num_chans = patch_size, num_chans
        self.fc = mlp(features_dim, 256, 256, IN_CH * 8 * 8, last_relu=True)
        n_up = int(math.log2(patch_size)) - 3
        channels = [IN_CH] + [64] * n_up
        cc, size = channels[-1], 8
        self.main = nn.Sequential()
        if n_up > 0:
            self.main.add_module("depth_up", ConvBlock(IN_CH, cc, 3, pad=1, upsample=True, pad_mode=pad_mode))
            for ch in reversed(channels[1:-1]):
                self.main.add_module(f"conv_to_{size * 2}", ConvBlock(cc, ch, 3, pad=1, upsample=True,
                                                                      pad_mode=pad_mode))
                cc, size = ch, size * 2
        self.main.add_module(f"conv_to_{size * 2}", ConvBlock(cc, IN_CH, 3, pad=1, pad_mode=pad_mode))
        self.main.add_module("final_conv", ConvBlock(IN_CH, num_chans, 1, bias=True, activation=False,
                                                     batchnorm=False, pad_mode=pad_mode))
        self.decode = self.main  # official duplicate registration (see the class docstring)

    def forward(self, features: Tensor) -> Tensor:
        h = self.fc(features.reshape(-1, features.shape[-1])).view(-1, IN_CH, 8, 8)
        return torch.sigmoid(self.main(h).view(-1, self.num_chans, self.patch_size, self.patch_size))


class FeaturesToMap(nn.Module):
    """Official `FCToCNN`: z_bg -> MLP (256, 256, 32*8*8) -> 8x8 map -> x2 blocks up to the encoder's map size."""

    def __init__(self, target_hw: int, features_dim: int, n_ch: int = IN_CH, pad_mode: str = "replicate") -> None:
        super().__init__()
        self.n_ch = n_ch
        self.mlp = mlp(features_dim, 256, 256, n_ch * 64, last_relu=True)
        self.cnn = nn.Sequential()
        for i in range(upsample_count(target_hw)):
            self.cnn.add_module(f"depth_up_{i}", ConvBlock(n_ch, n_ch, 3, pad=1, upsample=True, pad_mode=pad_mode))

    def forward(self, features: Tensor) -> Tensor:
        h = self.mlp(features.reshape(-1, features.shape[-1])).view(-1, self.n_ch, 8, 8)
        return self.cnn(h)


class BackgroundCNNDecoder(nn.Module):
    """Official `CNNDecoder`: `depth_up` (no GroupNorm, x2), x2 blocks through reversed(enc_channels[1:-1]), a block to
    enc_channels[0], then `final_conv` 1x1 with bias and a sigmoid. Block names count from 4 (`conv_to_8`, ...) as
    official, whatever the real sizes."""

    def __init__(self, cdim: int, channels: tuple[int, ...], in_ch: int = IN_CH, pad_mode: str = "replicate") -> None:
        super().__init__()
        cc, size = channels[-1], 4
        self.main = nn.Sequential()
        self.main.add_module("depth_up", ConvBlock(in_ch, cc, 3, pad=1, upsample=True, batchnorm=False,
                                                   pad_mode=pad_mode))
        for ch in reversed(channels[1:-1]):
            self.main.add_module(f"conv_to_{size * 2}", ConvBlock(cc, ch, 3, pad=1, upsample=True, pad_mode=pad_mode))
            cc, size = ch, size * 2
        self.main.add_module(f"conv_to_{size * 2}", ConvBlock(cc, channels[0], 3, pad=1, pad_mode=pad_mode))
        self.final_conv = ConvBlock(channels[0], cdim, 1, bias=True, activation=False, batchnorm=False,
                                    pad_mode=pad_mode)

    def forward(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.final_conv(self.main(h)))
