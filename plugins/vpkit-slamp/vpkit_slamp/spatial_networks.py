"""SLAMP's networks for KITTI (92x310) and Cityscapes (128x256): a shared image encoder, spatial pixel / motion
encoders, bilinear-upsampling decoders and convolutional LSTMs, laid out so that parameter and buffer names are the
official state-dict keys (`c1.0.layers.0.weight`, `upc7.1.bias`, `lstm.0.conv.weight`, `mu_net.weight`, ...).

As in the official code (kaanakan/slamp `models/{kitti,cityscapes}_models.py`, `models/conv_lstms.py`):
- every conv block is a bias-free 3x3 conv (the official `kernel` argument is ignored), BatchNorm and LeakyReLU 0.2;
- the image encoder halves the resolution at the first conv of c1..c4 (and c5 for Cityscapes); KITTI instead
  adaptive-max-pools after each of c1..c5 to fixed sizes, giving a 4x4 code map (Cityscapes: 4x8);
- the decoders upsample bilinearly (align_corners=True) to the encoder's skip sizes and end in a 3x3 ConvT with
  bias (and a sigmoid unless `act` is False: the flow decoder);
- the ConvLSTMs are 3x3 convolutions over cat(input, h) with gates in the order i, f, o, g.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit.core.errors import VpkitError
from vpkit.engine.batchnorm import TimeBatchNorm2d
from vpkit_slamp.networks import SELayer

KITTI_FRAME = (92, 310)
KITTI_POOLS = ((46, 156), (24, 80), (12, 40), (6, 20), (4, 4))
"""Output sizes of the official KITTI encoder's adaptive max-pools after c1..c5."""

IMAGE_WIDTHS = (64, 96, 128, 192, 256)
"""Channels of the image encoder's blocks c1..c5 (c6 has 2g), hence of its five skips."""


@dataclass(frozen=True)
class Geometry:
    """Spatial sizes of one variant: the frame, the image encoder's skips (c1..c5 outputs) and its code map."""

    architecture: str
    frame: tuple[int, int]
    skips: tuple[tuple[int, int], ...]
    c5_stride: int
    pooled: bool

    @property
    def latent(self) -> tuple[int, int]:
        """Size of the code maps, the latents and the ConvLSTM states (official `im_size`)."""
        return self.skips[-1]


def geometry(architecture: str, frame_shape: tuple[int, int, int]) -> Geometry:
    """The official sizes for `architecture` ('kitti': frames must be 92x310; 'cityscapes': 128x256 as official, or
    any height and width divisible by 32, every size scaling with the frame)."""
    _, height, width = frame_shape
    if architecture == "kitti":
        if (height, width) != KITTI_FRAME:
            raise VpkitError(f"SLAMP architecture 'kitti' takes 92x310 frames (its pooling and upsampling sizes are "
                             f"fixed, as official) but the data has {height}x{width}; resize the data to 92x310.")
        return Geometry("kitti", KITTI_FRAME, KITTI_POOLS, c5_stride=1, pooled=True)
    if architecture == "cityscapes":
        if height % 32 or width % 32 or height < 32 or width < 32:
            raise VpkitError(f"SLAMP architecture 'cityscapes' halves the frame five times, so it needs a height and "
                             f"width divisible by 32 (official: 128x256); the data has {height}x{width}.")
        skips = tuple((height >> k, width >> k) for k in range(1, 6))
        return Geometry("cityscapes", (height, width), skips, c5_stride=2, pooled=False)
    raise VpkitError(f"no spatial SLAMP architecture '{architecture}' (expected 'kitti' or 'cityscapes').")


class ConvBlock(nn.Module):
    """The official `conv` block: `layers` is a bias-free 3x3 conv (given stride), BatchNorm, LeakyReLU 0.2."""

    def __init__(self, nin: int, nout: int, stride: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(nin, nout, 3, stride, 1, bias=False), TimeBatchNorm2d(nout),
                                    nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _adaptive_max_1d(x: Tensor, dim: int, size: int) -> Tensor:
    """Adaptive max-pooling of `x` along `dim` to `size`, with PyTorch's windows [floor(i n / s), ceil((i+1) n / s)),
    written as a gather and a max so that it exports to ONNX (adaptive max-pooling does not)."""
    dim = dim % x.dim()
    n = x.shape[dim]
    if n == size:
        return x
    starts = [(i * n) // size for i in range(size)]
    ends = [math.ceil((i + 1) * n / size) for i in range(size)]
    width = max(e - s for s, e in zip(starts, ends, strict=True))
    index = [min(s + j, e - 1) for s, e in zip(starts, ends, strict=True) for j in range(width)]
    gathered = x.index_select(dim, torch.tensor(index, device=x.device))
    shape = list(x.shape)
    shape[dim:dim + 1] = [size, width]
    return gathered.reshape(shape).max(dim=dim + 1).values


def adaptive_max_pool(x: Tensor, size: tuple[int, int]) -> Tensor:
    """`F.adaptive_max_pool2d(x, size)`, as a separable (rows then columns) exportable max over the same windows."""
    return _adaptive_max_1d(_adaptive_max_1d(x, -1, size[1]), -2, size[0])


class ImageEncoder(nn.Module):
    """Official `encoder(2g, nc)` (`img_encoder`): frames -> (code map `[B, 2g, *latent]` after LeakyReLU, five skips
    of 64 / 96 / 128 / 192 / 256 channels at `geometry.skips`)."""

    def __init__(self, dim: int, nc: int, geom: Geometry) -> None:
        super().__init__()
        self.geometry = geom
        w1, w2, w3, w4, w5 = IMAGE_WIDTHS
        self.c1 = nn.Sequential(ConvBlock(nc, w1, 2), ConvBlock(w1, w1))
        self.c2 = nn.Sequential(ConvBlock(w1, w2, 2), ConvBlock(w2, w2))
        self.c3 = nn.Sequential(ConvBlock(w2, w3, 2), ConvBlock(w3, w3), ConvBlock(w3, w3))
        self.c4 = nn.Sequential(ConvBlock(w3, w4, 2), ConvBlock(w4, w4), ConvBlock(w4, w4))
        self.c5 = nn.Sequential(ConvBlock(w4, w5, geom.c5_stride), ConvBlock(w5, w5), ConvBlock(w5, w5))
        self.c6 = nn.Sequential(ConvBlock(w5, dim), ConvBlock(dim, dim))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        out = x
        for block, size in zip((self.c1, self.c2, self.c3, self.c4, self.c5), self.geometry.skips, strict=True):
            out = block(out)
            if self.geometry.pooled:
                out = adaptive_max_pool(out, size)
            skips.append(out)
        return self.c6(out), skips


class SpatialEncoder(nn.Module):
    """Official `spatial_encoder(g, nin)`: six stride-1 conv blocks (256, 256, SE, 256, 128, SE, 64, g) on the image
    encoder's code map (pixel encoder: 2g channels; motion encoder: cat of two code maps, 4g)."""

    def __init__(self, dim: int, nin: int) -> None:
        super().__init__()
        self.c1 = nn.Sequential(ConvBlock(nin, 256), ConvBlock(256, 256), SELayer(256))
        self.c2 = nn.Sequential(ConvBlock(256, 256), ConvBlock(256, 128), SELayer(128))
        self.c3 = nn.Sequential(ConvBlock(128, 64), ConvBlock(64, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.c3(self.c2(self.c1(x)))


class SpatialDecoder(nn.Module):
    """Official `decoder(g, nc)`: (code map `[B, g, *latent]`, the five image-encoder skips) -> `[B, nc, H, W]`,
    upsampling bilinearly to each skip's size and then to the frame, through a sigmoid unless `act` is False."""

    def __init__(self, dim: int, nc: int, geom: Geometry, act: bool = True) -> None:
        super().__init__()
        self.sizes = (*reversed(geom.skips[:-1]), geom.frame)
        self.upc1 = nn.Sequential(ConvBlock(dim, 256), ConvBlock(256, 256))
        self.upc2 = nn.Sequential(ConvBlock(512, 256), ConvBlock(256, 256), ConvBlock(256, 192))
        self.upc3 = nn.Sequential(ConvBlock(384, 192), ConvBlock(192, 192), ConvBlock(192, 128))
        self.upc4 = nn.Sequential(ConvBlock(256, 128), ConvBlock(128, 96))
        self.upc5 = nn.Sequential(ConvBlock(192, 96), ConvBlock(96, 64))
        self.upc6 = nn.Sequential(ConvBlock(128, 64), ConvBlock(64, 64))
        tail: list[nn.Module] = [nn.Sigmoid()] if act else []
        self.upc7 = nn.Sequential(ConvBlock(64, 64), nn.ConvTranspose2d(64, nc, 3, 1, 1), *tail)

    def forward(self, code: Tensor, skips: list[Tensor]) -> Tensor:
        def up(t: Tensor, k: int) -> Tensor:
            return F.interpolate(t, size=self.sizes[k], mode="bilinear", align_corners=True)

        d = self.upc2(torch.cat([self.upc1(code), skips[4]], 1))
        d = self.upc3(torch.cat([up(d, 0), skips[3]], 1))
        d = self.upc4(torch.cat([up(d, 1), skips[2]], 1))
        d = self.upc5(torch.cat([up(d, 2), skips[1]], 1))
        d = self.upc6(torch.cat([up(d, 3), skips[0]], 1))
        return self.upc7(up(d, 4))


# -- convolutional LSTMs ----------------------------------------------------------------------------------------------


class ConvLSTMCell(nn.Module):
    """Official `ConvLSTMCell`: one 3x3 conv (with bias) of cat(x, h) into the i, f, o, g gates."""

    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.conv = nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, 3, 1, 1, bias=True)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.hidden_dim, dim=1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_next), c_next


class _ConvRecurrent(nn.Module):
    """Shared state handling: state (h, c), each `[n_layers, B, hidden, *size]`."""

    hidden_size: int
    n_layers: int
    size: tuple[int, int]
    lstm: nn.ModuleList

    def init_state(self, batch: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(self.n_layers, batch, self.hidden_size, *self.size, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def _cells(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hs, cs = [], []
        for k, cell in enumerate(self.lstm):
            h, c = cell(x, (state[0][k], state[1][k]))
            hs.append(h)
            cs.append(c)
            x = h
        return x, (torch.stack(hs), torch.stack(cs))


class ConvLSTM(_ConvRecurrent):
    """Official `conv_lstm` (the frame predictors): 3x3 conv embed, `n_layers` ConvLSTM cells, 3x3 conv + tanh."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, n_layers: int,
                 size: tuple[int, int]) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.n_layers, self.size = input_size, hidden_size, n_layers, size
        self.embed = nn.Conv2d(input_size, hidden_size, 3, 1, 1)
        self.lstm = nn.ModuleList([ConvLSTMCell(hidden_size, hidden_size) for _ in range(n_layers)])
        self.output = nn.Sequential(nn.Conv2d(hidden_size, output_size, 3, 1, 1), nn.Tanh())

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self._cells(self.embed(x), state)
        return self.output(out), state


class GaussianConvLSTM(_ConvRecurrent):
    """Official `gaussian_conv_lstm` (priors and posteriors): ConvLSTM cells straight on the input, 3x3 conv `mu_net`
    and `logvar_net`, so z is a map `[B, z, *size]`; z = mu + e^(logvar/2) eps."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, n_layers: int,
                 size: tuple[int, int]) -> None:
        super().__init__()
        if n_layers > 1 and input_size != hidden_size:
            raise VpkitError(f"the official gaussian_conv_lstm gives every layer {input_size} input channels, so "
                             f"{n_layers} layers only run when the code size equals rnn_size ({hidden_size}); use "
                             "1 prior / posterior layer (official default).")
        self.input_size, self.hidden_size, self.n_layers, self.size = input_size, hidden_size, n_layers, size
        # Official quirk: an `embed` conv that forward never uses (in the state dict and the parameter count);
        # frozen here, since no gradient ever reaches it.
        self.embed = nn.Conv2d(input_size, hidden_size, 3, 1, 1).requires_grad_(False)
        self.lstm = nn.ModuleList([ConvLSTMCell(input_size, hidden_size) for _ in range(n_layers)])
        self.mu_net = nn.Conv2d(hidden_size, output_size, 3, 1, 1)
        self.logvar_net = nn.Conv2d(hidden_size, output_size, 3, 1, 1)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor], noise: Tensor
             ) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]:
        out, state = self._cells(x, state)
        mu, logvar = self.mu_net(out), self.logvar_net(out)
        return mu + torch.exp(0.5 * logvar) * noise, mu, logvar, state
