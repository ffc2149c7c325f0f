"""SLAMP's convolutional networks for 64x64 frames and its LSTMs, laid out so that parameter and buffer names are
the official state-dict keys (`c1.main.0.weight`, `upc5.1.bias`, `lstm.0.weight_ih`, ...).

As in the official code (kaanakan/slamp `models/{dcgan_64,vgg_64,mask_predictor,lstm}.py`) every convolution is
bias-free except the final output (transposed) convolution of a decoder and the mask's last conv; `act=False`
drops a decoder's final sigmoid (the flow decoder outputs flow in pixels). Initialisation is the official
`init_weights` with its bias-zeroing line commented out: conv and linear weights N(0, 0.02), biases keep PyTorch's
default, BatchNorm weight N(1, 0.02) and bias 0. Every BatchNorm is a `TimeBatchNorm2d`, so one call over all frames
of a clip can stand in for the official one call per time step (`vpkit.engine.batchnorm`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit.engine.batchnorm import TimeBatchNorm2d


class Block(nn.Module):
    """An official `vgg_layer` / `dcgan_conv` / `dcgan_upconv`: `main` is conv, BN, LeakyReLU 0.2."""

    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(conv, TimeBatchNorm2d(channels), nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def vgg_layer(nin: int, nout: int) -> Block:
    return Block(nn.Conv2d(nin, nout, 3, 1, 1, bias=False), nout)


def dcgan_conv(nin: int, nout: int) -> Block:
    return Block(nn.Conv2d(nin, nout, 4, 2, 1, bias=False), nout)


def dcgan_upconv(nin: int, nout: int) -> Block:
    return Block(nn.ConvTranspose2d(nin, nout, 4, 2, 1, bias=False), nout)


def _code_head(nin: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(nin, dim, 4, 1, 0, bias=False), TimeBatchNorm2d(dim), nn.Tanh())


def _code_tail(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(dim, 512, 4, 1, 0, bias=False), TimeBatchNorm2d(512), nn.LeakyReLU(0.2))


class Encoder(nn.Module):
    """64x64 frames (`nc` channels) -> (tanh code `[B, dim]`, skips at 32/16/8/4 (dcgan) or 64/32/16/8 (vgg))."""

    def __init__(self, architecture: str, dim: int, nc: int) -> None:
        super().__init__()
        self.dim = dim
        self.vgg = architecture == "vgg64"
        if self.vgg:
            self.c1 = nn.Sequential(vgg_layer(nc, 64), vgg_layer(64, 64))
            self.c2 = nn.Sequential(vgg_layer(64, 128), vgg_layer(128, 128))
            self.c3 = nn.Sequential(vgg_layer(128, 256), vgg_layer(256, 256), vgg_layer(256, 256))
            self.c4 = nn.Sequential(vgg_layer(256, 512), vgg_layer(512, 512), vgg_layer(512, 512))
            self.skip_shapes = [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8)]
        else:
            self.c1, self.c2 = dcgan_conv(nc, 64), dcgan_conv(64, 128)
            self.c3, self.c4 = dcgan_conv(128, 256), dcgan_conv(256, 512)
            self.skip_shapes = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
        self.c5 = _code_head(512, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        pool = (lambda t: F.max_pool2d(t, 2)) if self.vgg else (lambda t: t)
        h1 = self.c1(x)
        h2 = self.c2(pool(h1))
        h3 = self.c3(pool(h2))
        h4 = self.c4(pool(h3))
        h5 = self.c5(pool(h4))
        return h5.view(-1, self.dim), [h1, h2, h3, h4]


class Decoder(nn.Module):
    """(code `[B, dim]`, 4 skips) -> `[B, nc, 64, 64]`, through a sigmoid unless `act` is False."""

    def __init__(self, architecture: str, dim: int, nc: int, act: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.vgg = architecture == "vgg64"
        self.upc1 = _code_tail(dim)
        tail: list[nn.Module] = [nn.Sigmoid()] if act else []
        if self.vgg:
            self.upc2 = nn.Sequential(vgg_layer(1024, 512), vgg_layer(512, 512), vgg_layer(512, 256))
            self.upc3 = nn.Sequential(vgg_layer(512, 256), vgg_layer(256, 256), vgg_layer(256, 128))
            self.upc4 = nn.Sequential(vgg_layer(256, 128), vgg_layer(128, 64))
            self.upc5 = nn.Sequential(vgg_layer(128, 64), nn.ConvTranspose2d(64, nc, 3, 1, 1), *tail)
        else:
            self.upc2, self.upc3, self.upc4 = dcgan_upconv(1024, 256), dcgan_upconv(512, 128), dcgan_upconv(256, 64)
            self.upc5 = nn.Sequential(nn.ConvTranspose2d(128, nc, 4, 2, 1), *tail)

    def forward(self, code: Tensor, skips: list[Tensor]) -> Tensor:
        up = (lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")) if self.vgg else (lambda t: t)
        d1 = self.upc1(code.view(-1, self.dim, 1, 1))
        d2 = self.upc2(torch.cat([up(d1), skips[3]], 1))
        d3 = self.upc3(torch.cat([up(d2), skips[2]], 1))
        d4 = self.upc4(torch.cat([up(d3), skips[1]], 1))
        return self.upc5(torch.cat([up(d4), skips[0]], 1))


class SELayer(nn.Module):
    """Squeeze-and-excitation: channel scaling by sigmoid(W2 relu(W1 avgpool(x))), reduction 16, no biases."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class MaskPredictor(nn.Module):
    """cat(pixel prediction, warped frame) `[B, nc, 64, 64]` -> fusion mask `[B, 1, 64, 64]` in (0, 1)."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        self.c1 = nn.Sequential(vgg_layer(nc, 64), vgg_layer(64, 64), SELayer(64))
        self.c2 = nn.Sequential(vgg_layer(64, 64), vgg_layer(64, 64), SELayer(64))
        self.c3 = nn.Sequential(nn.Conv2d(64, 1, 3, 1, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.c3(self.c2(self.c1(x)))


def warp(frames: Tensor, flow: Tensor) -> Tensor:
    """Backward warping: output pixel (y, x) samples `frames` at (y + flow_y, x + flow_x) (flow in pixels, channel 0
    horizontal), bilinear, zeros outside, `align_corners=True`; pixels whose sample touches the outside (the warped
    ones-image is below 0.9999) are zeroed, as official `flow_utils.warp`. Not clamped (the caller clamps)."""
    height, width = frames.shape[-2:]
    xs = torch.arange(width, device=flow.device, dtype=flow.dtype).view(1, 1, width)
    ys = torch.arange(height, device=flow.device, dtype=flow.dtype).view(1, height, 1)
    gx = 2.0 * (xs + flow[:, 0]) / max(width - 1, 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1]) / max(height - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    ones = torch.ones_like(frames[:, :1])
    coverage = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    valid = (coverage >= 0.9999).to(frames.dtype).detach()
    return out * valid


class LSTM(nn.Module):
    """Official `lstm`: Linear embed, `n_layers` LSTMCells, Linear + tanh output. State: (h, c) `[n_layers, B, H]`."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, n_layers: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.n_layers = input_size, hidden_size, n_layers
        self.embed = nn.Linear(input_size, hidden_size)
        self.lstm = nn.ModuleList([nn.LSTMCell(hidden_size, hidden_size) for _ in range(n_layers)])
        self.output = nn.Sequential(nn.Linear(hidden_size, output_size), nn.Tanh())

    def init_state(self, batch: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(self.n_layers, batch, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def _cells(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h_in = self.embed(x)
        hs, cs = [], []
        for k, cell in enumerate(self.lstm):
            h, c = cell(h_in, (state[0][k], state[1][k]))
            hs.append(h)
            cs.append(c)
            h_in = h
        return h_in, (torch.stack(hs), torch.stack(cs))

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self._cells(x, state)
        return self.output(out), state


class GaussianLSTM(LSTM):
    """Official `gaussian_lstm`: embed, LSTMCells, then Linear `mu_net` and `logvar_net`; z = mu + e^(logvar/2) eps."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, n_layers: int) -> None:
        nn.Module.__init__(self)
        self.input_size, self.hidden_size, self.n_layers = input_size, hidden_size, n_layers
        self.embed = nn.Linear(input_size, hidden_size)
        self.lstm = nn.ModuleList([nn.LSTMCell(hidden_size, hidden_size) for _ in range(n_layers)])
        self.mu_net = nn.Linear(hidden_size, output_size)
        self.logvar_net = nn.Linear(hidden_size, output_size)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor], noise: Tensor  # type: ignore[override]
             ) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor]]:
        out, state = self._cells(x, state)
        mu, logvar = self.mu_net(out), self.logvar_net(out)
        return mu + torch.exp(0.5 * logvar) * noise, mu, logvar, state


def init_weights(module: nn.Module) -> None:
    """Official `init_weights` (bias line commented out there): conv / linear weights N(0, 0.02), BN N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        module.weight.data.normal_(0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        module.weight.data.normal_(1.0, 0.02)
        module.bias.data.fill_(0)
