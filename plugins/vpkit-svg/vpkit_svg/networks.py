"""SVG's frame encoders and decoders: DCGAN and VGG, for 64x64 and 128x128 frames.

Denton & Fergus, "Stochastic Video Generation with a Learned Prior", ICML 2018 (github.com/edenton/svg,
`models/{dcgan,vgg}_{64,128}.py`). Module and attribute names follow the official classes so that state-dict keys
are identical (`c1.main.0.weight`, `upc5.0.weight`, ...): official checkpoints load with a plain `load_state_dict`.

Every encoder maps frames `[N, C, H, W]` to `(h [N, g_dim], skips)`, `skips` being the feature maps the decoder
concatenates back at each resolution (finest first, shapes in `encoder.skip_shapes`); every decoder maps
`(g [N, g_dim], skips)` to frames in [0, 1].
All BatchNorms are `TimeBatchNorm2d` so one call can stand in for one call per time step (see `vpkit.engine.batchnorm`).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit.engine.batchnorm import TimeBatchNorm2d

NF = 64  # base width, fixed in the official code


# -- blocks ------------------------------------------------------------------------------------------------------


class DCGANConv(nn.Module):
    """Conv 4x4 stride 2 -> BN -> LeakyReLU(0.2): halves the resolution (official `dcgan_conv`)."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nin, nout, 4, 2, 1), TimeBatchNorm2d(nout), nn.LeakyReLU(0.2, inplace=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class DCGANUpconv(nn.Module):
    """ConvTranspose 4x4 stride 2 -> BN -> LeakyReLU(0.2): doubles the resolution (official `dcgan_upconv`)."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nin, nout, 4, 2, 1), TimeBatchNorm2d(nout), nn.LeakyReLU(0.2, inplace=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class VGGLayer(nn.Module):
    """Conv 3x3 -> BN -> LeakyReLU(0.2) at constant resolution (official `vgg_layer`)."""

    def __init__(self, nin: int, nout: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nin, nout, 3, 1, 1), TimeBatchNorm2d(nout), nn.LeakyReLU(0.2, inplace=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def _to_code(nin: int, g_dim: int) -> nn.Sequential:
    """4x4 valid conv from the coarsest 4x4 map to the 1x1 frame code, BN, tanh."""
    return nn.Sequential(nn.Conv2d(nin, g_dim, 4, 1, 0), TimeBatchNorm2d(g_dim), nn.Tanh())


def _from_code(g_dim: int, nout: int) -> nn.Sequential:
    """4x4 transposed conv from the 1x1 frame code to a 4x4 map, BN, LeakyReLU."""
    return nn.Sequential(nn.ConvTranspose2d(g_dim, nout, 4, 1, 0), TimeBatchNorm2d(nout), nn.LeakyReLU(0.2, True))


def _vgg_stack(*widths: int) -> nn.Sequential:
    """VGG layers widths[0] -> widths[1] -> ... ."""
    return nn.Sequential(*(VGGLayer(a, b) for a, b in itertools.pairwise(widths)))


# -- decoders: shared forward ---------------------------------------------------------------------------------------


class SkipDecoder(nn.Module):
    """Code -> `upc1` -> levels `ups`, each fed `cat([widen(x), skip])` with the encoder's skips coarsest first."""

    g_dim: int
    ups: list[str]

    def widen(self, x: Tensor) -> Tensor:
        """What happens to the running map before it meets the next skip (identity or x2 upsampling)."""
        return x

    def forward(self, code: Tensor, skips: list[Tensor]) -> Tensor:
        x = self.upc1(code.view(-1, self.g_dim, 1, 1))
        for name, skip in zip(self.ups, reversed(skips)):
            x = getattr(self, name)(torch.cat([self.widen(x), skip], 1))
        return x

    def forward_shared_skips(self, code: Tensor, skips: list[Tensor], sources: list[int]) -> Tensor:
        """`forward` for `B x S` codes (batch-major `(b s)`) whose skips repeat: `skips` hold only the `U` distinct
        source frames per video (`(b u)`) and `sources[s]` says which one step `s` uses.

        The first conv of each level is linear in its concatenated input, so it is split into the part acting on the
        running map (run for every step) and the part acting on the skip (run once per distinct source frame and
        broadcast to the steps that share it): the same function as `forward` with the skip half of the decoder's
        first convs computed U instead of S times."""
        distinct = skips[0].shape[0] // (code.shape[0] // len(sources))
        x = self.upc1(code.view(-1, self.g_dim, 1, 1))
        for name, skip in zip(self.ups, reversed(skips)):
            conv, rest = _split_first_conv(getattr(self, name))
            x = self.widen(x)
            channels = x.shape[1]
            from_map = _partial_conv(conv, x, 0, channels, with_bias=True)
            from_skip = _partial_conv(conv, skip, channels, channels + skip.shape[1], with_bias=False)
            from_skip = from_skip.view(-1, distinct, *from_skip.shape[1:])
            shared = gather_frames(from_skip, sources).flatten(0, 1)
            x = from_map + shared
            for module in rest:
                x = module(x)
        return x


def _split_first_conv(level: nn.Module) -> tuple[nn.Conv2d | nn.ConvTranspose2d, list[nn.Module]]:
    """A decoder level as (its first conv, the modules applied after it, in order)."""
    if isinstance(level, (nn.Conv2d, nn.ConvTranspose2d)):
        return level, []
    children = list(level.main) if isinstance(level, (DCGANUpconv, VGGLayer)) else list(level)
    conv, rest = _split_first_conv(children[0])
    return conv, rest + children[1:]


def _partial_conv(conv: nn.Conv2d | nn.ConvTranspose2d, x: Tensor, start: int, stop: int, *,
                  with_bias: bool) -> Tensor:
    """`conv` restricted to its input channels `start:stop` (the bias added once, by one of the parts)."""
    bias = conv.bias if with_bias else None
    if isinstance(conv, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, conv.weight[start:stop], bias, conv.stride, conv.padding, conv.output_padding,
                                  conv.groups, conv.dilation)
    return F.conv2d(x, conv.weight[:, start:stop], bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def gather_frames(frames: Tensor, sources: list[int]) -> Tensor:
    """`frames[:, sources]` for `frames` `[B, T, ...]`, built from slices and broadcasts of runs of consecutive or
    repeated indices (one copy, and much faster on CPU than an index gather of large feature maps)."""
    pieces = []
    start = 0
    while start < len(sources):
        end = start + 1
        step = sources[end] - sources[start] if end < len(sources) else 1
        step = step if step in (0, 1) else 1
        while end < len(sources) and sources[end] - sources[end - 1] == step:
            end += 1
        first = sources[start]
        if step == 1:
            pieces.append(frames[:, first:first + end - start])
        else:
            piece = frames[:, first:first + 1]
            pieces.append(piece.expand(-1, end - start, *piece.shape[2:]))
        start = end
    return pieces[0].contiguous() if len(pieces) == 1 else torch.cat(pieces, dim=1)


# -- DCGAN --------------------------------------------------------------------------------------------------------


class DCGANEncoder(nn.Module):
    """Strided-conv encoder: 64x64 (4 levels) or 128x128 (5 levels) to a g_dim code."""

    def __init__(self, *, g_dim: int, channels: int, frame_size: int = 64) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.c1 = DCGANConv(channels, NF)
        self.c2 = DCGANConv(NF, NF * 2)
        self.c3 = DCGANConv(NF * 2, NF * 4)
        self.c4 = DCGANConv(NF * 4, NF * 8)
        if frame_size == 64:
            self.c5 = _to_code(NF * 8, g_dim)
            self.levels = ["c1", "c2", "c3", "c4"]
            self.head = "c5"
        else:
            self.c5 = DCGANConv(NF * 8, NF * 8)
            self.c6 = _to_code(NF * 8, g_dim)
            self.levels = ["c1", "c2", "c3", "c4", "c5"]
            self.head = "c6"
        widths = [NF, NF * 2, NF * 4, NF * 8, NF * 8]
        self.skip_shapes = [(widths[k], frame_size >> (k + 1), frame_size >> (k + 1))
                            for k in range(len(self.levels))]

    def forward(self, frames: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        x = frames
        for name in self.levels:
            x = getattr(self, name)(x)
            skips.append(x)
        return getattr(self, self.head)(x).view(-1, self.g_dim), skips


class DCGANDecoder(SkipDecoder):
    """Transposed-conv decoder mirroring `DCGANEncoder`, with the encoder's skips concatenated at each level."""

    def __init__(self, *, g_dim: int, channels: int, frame_size: int = 64) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.upc1 = _from_code(g_dim, NF * 8)
        if frame_size == 64:
            widths = [NF * 8, NF * 4, NF * 2, NF]
        else:
            widths = [NF * 8, NF * 8, NF * 4, NF * 2, NF]
        for k, (nin, nout) in enumerate(itertools.pairwise(widths)):
            setattr(self, f"upc{k + 2}", DCGANUpconv(nin * 2, nout))
        last = len(widths) + 1
        setattr(self, f"upc{last}", nn.Sequential(nn.ConvTranspose2d(NF * 2, channels, 4, 2, 1), nn.Sigmoid()))
        self.ups = [f"upc{k}" for k in range(2, last + 1)]


# -- VGG ----------------------------------------------------------------------------------------------------------


class VGGEncoder(nn.Module):
    """VGG-16-style encoder with max-pooling: 64x64 (4 levels) or 128x128 (5 levels) to a g_dim code."""

    def __init__(self, *, g_dim: int, channels: int, frame_size: int = 64) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.c1 = _vgg_stack(channels, 64, 64)
        self.c2 = _vgg_stack(64, 128, 128)
        self.c3 = _vgg_stack(128, 256, 256, 256)
        self.c4 = _vgg_stack(256, 512, 512, 512)
        if frame_size == 64:
            self.c5 = _to_code(512, g_dim)
            self.levels = ["c1", "c2", "c3", "c4"]
            self.head = "c5"
        else:
            self.c5 = _vgg_stack(512, 512, 512, 512)
            self.c6 = _to_code(512, g_dim)
            self.levels = ["c1", "c2", "c3", "c4", "c5"]
            self.head = "c6"
        widths = [64, 128, 256, 512, 512]
        self.skip_shapes = [(widths[k], frame_size >> k, frame_size >> k) for k in range(len(self.levels))]
        self.mp = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)

    def forward(self, frames: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        x = frames
        for k, name in enumerate(self.levels):
            x = getattr(self, name)(x if k == 0 else self.mp(x))
            skips.append(x)
        return getattr(self, self.head)(self.mp(x)).view(-1, self.g_dim), skips


class VGGDecoder(SkipDecoder):
    """VGG decoder mirroring `VGGEncoder`: nearest-neighbour x2 upsampling, skips concatenated at each level."""

    def __init__(self, *, g_dim: int, channels: int, frame_size: int = 64) -> None:
        super().__init__()
        self.g_dim = g_dim
        self.upc1 = _from_code(g_dim, 512)
        if frame_size == 64:
            stacks = [(1024, 512, 512, 256), (512, 256, 256, 128), (256, 128, 64)]
        else:
            stacks = [(1024, 512, 512, 512), (1024, 512, 512, 256), (512, 256, 256, 128), (256, 128, 64)]
        for k, widths in enumerate(stacks):
            setattr(self, f"upc{k + 2}", _vgg_stack(*widths))
        last = len(stacks) + 2
        setattr(self, f"upc{last}", nn.Sequential(VGGLayer(128, 64), nn.ConvTranspose2d(64, channels, 3, 1, 1),
                                                  nn.Sigmoid()))
        self.ups = [f"upc{k}" for k in range(2, last + 1)]
        self.up = nn.UpsamplingNearest2d(scale_factor=2)

    def widen(self, x: Tensor) -> Tensor:
        return self.up(x)


# -- factory ------------------------------------------------------------------------------------------------------

ARCHITECTURES: dict[str, tuple[type[nn.Module], type[nn.Module], int]] = {
    "dcgan64": (DCGANEncoder, DCGANDecoder, 64),
    "dcgan128": (DCGANEncoder, DCGANDecoder, 128),
    "vgg64": (VGGEncoder, VGGDecoder, 64),
    "vgg128": (VGGEncoder, VGGDecoder, 128),
}


def init_weights(module: nn.Module) -> None:
    """Official `utils.init_weights`: conv/linear weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0;
    LSTM cells keep PyTorch's default init. Apply with `module.apply(init_weights)`."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_encoder_decoder(architecture: str, *, g_dim: int, channels: int) -> tuple[nn.Module, SkipDecoder]:
    """The encoder and decoder of one official architecture."""
    encoder_cls, decoder_cls, size = ARCHITECTURES[architecture]
    return (encoder_cls(g_dim=g_dim, channels=channels, frame_size=size),
            decoder_cls(g_dim=g_dim, channels=channels, frame_size=size))
