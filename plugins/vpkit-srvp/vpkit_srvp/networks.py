"""SRVP's frame encoders/decoders (DCGAN and VGG, 64x64) and MLPs, laid out so the state-dict keys are the official
ones (`encoder.conv.{i}...`, `decoder.first_upconv...`, `q_y.module.{0.0 | k.1}...`).

Differences from SVG's networks that matter for weights: every conv is bias-free, the DCGAN encoder's first block has
no BatchNorm, the decoder's last layer is a bias-free transposed conv whose sigmoid is applied outside the module,
and the encoder returns its skips deepest first. With skip connections off the decoder blocks take half the input
channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` that can use each call's batch statistics in eval mode (without touching the running
    statistics) when `batch_stats_in_eval` is set; the same parameters and buffers, so the same state-dict keys."""

    batch_stats_in_eval: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.batch_stats_in_eval:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


def use_batch_stats_in_eval(module: nn.Module, flag: bool) -> None:
    """Set every SRVP BatchNorm under `module` to normalise with batch statistics in eval mode (or not)."""
    for m in module.modules():
        if isinstance(m, BatchNorm2d):
            m.batch_stats_in_eval = flag


def _block(conv: nn.Conv2d | nn.ConvTranspose2d, *, bn: bool = True, activation: str = "lrelu") -> nn.Sequential:
    """conv -> [BN] -> activation (official `make_conv_block` order: BN before the activation)."""
    layers: list[nn.Module] = [conv]
    if bn:
        layers.append(BatchNorm2d(conv.out_channels))
    layers.append(nn.LeakyReLU(0.2) if activation == "lrelu" else nn.Tanh())
    return nn.Sequential(*layers)


def _c3(nin: int, nout: int) -> nn.Sequential:
    return _block(nn.Conv2d(nin, nout, 3, 1, 1, bias=False))


class Encoder(nn.Module):
    """`forward(frames [N, C, 64, 64]) -> (h [N, nhx], skips deepest first)`."""

    conv: nn.ModuleList
    last_conv: nn.Sequential

    def __init__(self, nhx: int) -> None:
        super().__init__()
        self.nhx = nhx

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for layer in self.conv:
            x = layer(x)
            skips.append(x)
        return self.last_conv(x).view(-1, self.nhx), skips[::-1]


class DCGANEncoder(Encoder):
    def __init__(self, nc: int, nhx: int, nf: int) -> None:
        super().__init__(nhx)
        widths = [nc, nf, nf * 2, nf * 4, nf * 8]
        self.conv = nn.ModuleList(
            _block(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1, bias=False), bn=i > 0) for i in range(4)
        )
        self.last_conv = _block(nn.Conv2d(nf * 8, nhx, 4, 1, 0, bias=False), activation="tanh")


class VGGEncoder(Encoder):
    def __init__(self, nc: int, nhx: int, nf: int) -> None:
        super().__init__(nhx)
        stages = [[nc, nf, nf], [nf, nf * 2, nf * 2], [nf * 2, nf * 4, nf * 4, nf * 4], [nf * 4, nf * 8, nf * 8, nf * 8]]
        blocks = []
        for i, widths in enumerate(stages):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if i > 0 else []
            layers += [_c3(widths[k], widths[k + 1]) for k in range(len(widths) - 1)]
            blocks.append(nn.Sequential(*layers))
        self.conv = nn.ModuleList(blocks)
        self.last_conv = nn.Sequential(
            nn.MaxPool2d(2, 2), _block(nn.Conv2d(nf * 8, nhx, 4, 1, 0, bias=False), activation="tanh"),
        )


class Decoder(nn.Module):
    """`forward(code [N, n_in], skips or None) -> logits [N, C, 64, 64]` (the sigmoid is applied by the caller)."""

    first_upconv: nn.Sequential
    conv: nn.ModuleList

    def __init__(self, skip: bool) -> None:
        super().__init__()
        self.skip = skip

    def forward(self, code: Tensor, skips: list[Tensor] | None = None) -> Tensor:
        if self.skip != (skips is not None):
            raise ValueError("skips must be given exactly when the decoder has skip connections")
        h = self.first_upconv(code.view(*code.shape, 1, 1))
        for i, layer in enumerate(self.conv):
            if skips is not None:
                h = torch.cat([h, skips[i]], 1)
            h = layer(h)
        return h


class DCGANDecoder(Decoder):
    def __init__(self, nc: int, n_in: int, nf: int, skip: bool) -> None:
        super().__init__(skip)
        k = 2 if skip else 1
        self.first_upconv = _block(nn.ConvTranspose2d(n_in, nf * 8, 4, 1, 0, bias=False))
        widths = [nf * 8, nf * 4, nf * 2, nf]
        layers: list[nn.Module] = [
            _block(nn.ConvTranspose2d(widths[i] * k, widths[i + 1], 4, 2, 1, bias=False)) for i in range(3)
        ]
        layers.append(nn.ConvTranspose2d(nf * k, nc, 4, 2, 1, bias=False))
        self.conv = nn.ModuleList(layers)


class VGGDecoder(Decoder):
    def __init__(self, nc: int, n_in: int, nf: int, skip: bool) -> None:
        super().__init__(skip)
        k = 2 if skip else 1
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.first_upconv = nn.Sequential(_block(nn.ConvTranspose2d(n_in, nf * 8, 4, 1, 0, bias=False)), up)
        self.conv = nn.ModuleList([
            nn.Sequential(_c3(nf * 8 * k, nf * 8), _c3(nf * 8, nf * 8), _c3(nf * 8, nf * 4), up),
            nn.Sequential(_c3(nf * 4 * k, nf * 4), _c3(nf * 4, nf * 4), _c3(nf * 4, nf * 2), up),
            nn.Sequential(_c3(nf * 2 * k, nf * 2), _c3(nf * 2, nf), up),
            nn.Sequential(_c3(nf * k, nf), nn.ConvTranspose2d(nf, nc, 3, 1, 1, bias=False)),
        ])


def build_encoder_decoder(archi: str, nc: int, nhx: int, n_code: int, nf: int, skip: bool) -> tuple[Encoder, Decoder]:
    """The official `encoder_factory` / `decoder_factory` pair for 64x64 frames."""
    if archi == "dcgan":
        return DCGANEncoder(nc, nhx, nf), DCGANDecoder(nc, n_code, nf, skip)
    if archi == "vgg":
        return VGGEncoder(nc, nhx, nf), VGGDecoder(nc, n_code, nf, skip)
    raise ValueError(f"unknown SRVP architecture {archi!r}")


def skip_shapes(archi: str, nf: int) -> list[tuple[int, int, int]]:
    """Shapes `(C, H, W)` of the encoder's skips on 64x64 frames, deepest first."""
    sizes = (4, 8, 16, 32) if archi == "dcgan" else (8, 16, 32, 64)
    return [(nf * 8 // 2**i, size, size) for i, size in enumerate(sizes)]


class MLP(nn.Module):
    """Linear, then (ReLU, Linear) x (n_layers - 1); no output activation. Keys `module.0.0.*`, `module.k.1.*`."""

    def __init__(self, n_in: int, n_hid: int, n_out: int, n_layers: int) -> None:
        super().__init__()
        layers = []
        for i in range(n_layers):
            lin = nn.Linear(n_in if i == 0 else n_hid, n_out if i == n_layers - 1 else n_hid)
            layers.append(nn.Sequential(lin) if i == 0 else nn.Sequential(nn.ReLU(), lin))
        self.module = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


def init_encoder_decoder(m: nn.Module) -> None:
    """Official init of the conv nets: weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def init_orthogonal(gain: float):
    """Official init of the residual MLP: orthogonal weights with `gain`, zero biases."""

    def init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)

    return init
