"""The taming/LDM VQGAN networks RIVER's BAIR and KTH models flow in: encoder, decoder, quantiser, PatchGAN
discriminator, and `FrozenVQGAN`, the autoencoder a `river` model holds under `ae.`.

Esser, Rombach, Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021; Rombach et al.,
"High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022. RIVER copies the architecture into
`model/vqgan/taming/` (github.com/Araachie/river); the training loss is taming-transformers'.

Encoder: conv3x3 -> per level `num_res_blocks` ResnetBlocks (GroupNorm, swish, conv3x3, twice; a 1x1 shortcut where
the width changes), each followed by a single-head attention block where the level's nominal resolution is in
`attn_resolutions`, then a down-sampling conv (stride 2, padded right/bottom) on all levels but the last -> middle
(ResnetBlock, attention, ResnetBlock) -> GroupNorm, swish, conv3x3 to `z_channels`. `quant_conv` (1x1) maps to the
codebook space. Decoder: the mirror with `num_res_blocks + 1` blocks per level, nearest x2 + conv3x3 up-sampling, and
no output non-linearity. Frames are in [-1, 1] inside.

State-dict keys are the official ones (`encoder.down.0.block.0.norm1.weight`, `decoder.up.3.attn.1.q.weight`,
`quantize.embedding.weight`, `quant_conv.weight`, `loss.discriminator.main.0.weight`, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit_river.vqgan_config import VQGANConfig


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


# -- blocks ---------------------------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """GroupNorm -> swish -> conv3x3 -> GroupNorm -> swish -> dropout -> conv3x3, plus the input (through a 1x1
    `nin_shortcut` where the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels of GroupNorm(x), 1x1 convolutions for q, k, v and the output,
    added to x."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        queries = self.q(h).flatten(2).transpose(1, 2)  # [b, hw, c]
        keys = self.k(h).flatten(2)  # [b, c, hw]
        values = self.v(h).flatten(2)  # [b, c, hw]
        weights = torch.softmax(queries @ keys * channels ** -0.5, dim=-1)  # [b, query, key]
        attended = (values @ weights.transpose(1, 2)).view(batch, channels, height, width)
        return x + self.proj_out(attended)


class Downsample(nn.Module):
    """Halves the resolution: zero-pad right and bottom by one, conv3x3 stride 2 (or a 2x2 average pool)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "conv"):
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """Doubles the resolution: nearest neighbour, then conv3x3 (when `with_conv`)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Level(nn.Module):
    """One resolution of the encoder or decoder: `block` (ResnetBlocks), `attn` (one per block, or none) and the
    optional `downsample` / `upsample` after them."""

    def __init__(self, widths: list[tuple[int, int]], attention: bool, groups: int, dropout: float) -> None:
        super().__init__()
        self.block = nn.ModuleList([ResnetBlock(a, b, groups, dropout) for a, b in widths])
        self.attn = nn.ModuleList([AttnBlock(b, groups) for _, b in widths] if attention else [])

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x


class Middle(nn.Module):
    """ResnetBlock, attention, ResnetBlock at the lowest resolution (official `mid.block_1/attn_1/block_2`)."""

    def __init__(self, channels: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups, dropout)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Frames `[N, C, H, W]` in [-1, 1] -> `[N, z_channels, H/f, W/f]`."""

    def __init__(self, c: VQGANConfig, in_channels: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        width, resolution = c.ch, c.resolution
        for index, mult in enumerate(c.ch_mult):
            out = c.ch * mult
            widths = [(width if i == 0 else out, out) for i in range(c.num_res_blocks)]
            level = Level(widths, resolution in c.attn_resolutions, c.norm_groups, c.dropout)
            width = out
            if index != len(c.ch_mult) - 1:
                level.downsample = Downsample(width, c.resamp_with_conv)
                resolution //= 2
            self.down.append(level)
        self.mid = Middle(width, c.norm_groups, c.dropout)
        self.norm_out = group_norm(width, c.norm_groups)
        self.conv_out = nn.Conv2d(width, c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
            if hasattr(level, "downsample"):
                x = level.downsample(x)
        return self.conv_out(swish(self.norm_out(self.mid(x))))


class Decoder(nn.Module):
    """`[N, z_channels, h, w]` -> frames `[N, C, f h, f w]` (no output non-linearity). `up[i]` is the level of
    resolution i (up[0] the finest), run from the coarsest."""

    def __init__(self, c: VQGANConfig, out_channels: int) -> None:
        super().__init__()
        levels = len(c.ch_mult)
        width = c.ch * c.ch_mult[-1]
        resolution = c.resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(c.z_channels, width, 3, padding=1)
        self.mid = Middle(width, c.norm_groups, c.dropout)
        up: list[Level] = []
        for index in reversed(range(levels)):
            out = c.ch * c.ch_mult[index]
            widths = [(width if i == 0 else out, out) for i in range(c.num_res_blocks + 1)]
            level = Level(widths, resolution in c.attn_resolutions, c.norm_groups, c.dropout)
            width = out
            if index != 0:
                level.upsample = Upsample(width, c.resamp_with_conv)
                resolution *= 2
            up.insert(0, level)
        self.up = nn.ModuleList(up)
        self.norm_out = group_norm(width, c.norm_groups)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            x = level(x)
            if hasattr(level, "upsample"):
                x = level.upsample(x)
        return self.conv_out(swish(self.norm_out(x)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantiser (taming's VectorQuantizer2, no index remapping), straight-through. Loss:
    `mean((sg[z_q] - z)^2) + beta mean((z_q - sg[z])^2)` with `legacy_beta` (official default), else beta on the
    first (commitment) term."""

    def __init__(self, n_embed: int, dim: int, beta: float, legacy: bool) -> None:
        super().__init__()
        self.beta, self.legacy = beta, legacy
        self.embedding = nn.Embedding(n_embed, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def codes(self, z: Tensor) -> Tensor:
        """Index of the nearest codebook vector for every latent pixel of `z` `[N, d, h, w]`: `[N, h, w]`."""
        flat = z.permute(0, 2, 3, 1)
        codebook = self.embedding.weight
        distances = (flat ** 2).sum(-1, keepdim=True) + (codebook ** 2).sum(1) - 2 * flat @ codebook.t()
        return distances.argmin(-1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(straight-through quantised `z`, the quantiser loss, the codes)."""
        codes = self.codes(z)
        quantized = self.embedding(codes).permute(0, 3, 1, 2)
        commitment = torch.mean((quantized.detach() - z) ** 2)
        codebook = torch.mean((quantized - z.detach()) ** 2)
        loss = commitment + self.beta * codebook if self.legacy else self.beta * commitment + codebook
        return z + (quantized - z).detach(), loss, codes


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix, as taming uses it): conv4x4 s2 + LeakyReLU(0.2), then `layers - 1` x
    [conv4x4 s2 (no bias), BatchNorm, LeakyReLU] doubling the width (at most 8x), one more at stride 1, and a
    conv4x4 to one logit per patch. Init (taming `weights_init`): conv weights N(0, 0.02), BatchNorm N(1, 0.02) / 0."""

    def __init__(self, in_channels: int, ndf: int, layers: int) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            previous, mult = mult, min(2 ** n, 8)
            modules += [nn.Conv2d(ndf * previous, ndf * mult, 4, stride=2 if n < layers else 1, padding=1,
                                  bias=False),
                        nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        modules.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*modules)
        for module in self.main:
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


# -- the autoencoder ------------------------------------------------------------------------------------------------


def add_autoencoder(owner: nn.Module, config: VQGANConfig, channels: int) -> None:
    """Register the official `encoder`, `decoder`, `quantize`, `quant_conv` and `post_quant_conv` on `owner`."""
    owner.encoder = Encoder(config, channels)
    owner.decoder = Decoder(config, channels)
    owner.quantize = VectorQuantizer(config.n_embed, config.embed_dim, config.beta, config.legacy_beta)
    owner.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
    owner.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)


AUTOENCODER_PARTS = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


class VQGANCodec:
    """encode / decode / reconstruct over the parts `add_autoencoder` registers (mixed into nn.Modules)."""

    config: VQGANConfig
    frame_shape: tuple[int, int, int]
    encoder: Encoder
    decoder: Decoder
    quantize: VectorQuantizer
    quant_conv: nn.Conv2d
    post_quant_conv: nn.Conv2d

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """`(embed_dim, H/f, W/f)`: the shape RIVER flows in."""
        _, height, width = self.frame_shape
        f = self.config.down_factor
        return (self.config.embed_dim, height // f, width // f)

    def encode(self, frames: Tensor) -> Tensor:
        """Frames `[N, C, H, W]` in [0, 1] -> continuous pre-quantisation latents (after `quant_conv`; RIVER's
        `VQModelInterface.encode`)."""
        return self.quant_conv(self.encoder(frames * 2 - 1))

    def decode(self, latents: Tensor) -> Tensor:
        """Latents -> nearest codebook vectors -> `post_quant_conv` -> decoder -> frames, mapped from [-1, 1] to
        [0, 1] (not clamped: the decoder has no output non-linearity)."""
        quantized, _, _ = self.quantize(latents)
        return (self.decoder(self.post_quant_conv(quantized)) + 1) / 2

    def reconstruct(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Frames in [-1, 1] -> (reconstruction in [-1, 1], quantiser loss, codes): taming's `VQModel.forward`."""
        quantized, loss, codes = self.quantize(self.quant_conv(self.encoder(frames)))
        return self.decoder(self.post_quant_conv(quantized)), loss, codes


class FrozenVQGAN(VQGANCodec, nn.Module):
    """The autoencoder of a `river` model that flows in a VQGAN's latent space, with the official RIVER keys
    (`ae.encoder.*`, `ae.quantize.embedding.weight`, ...: the parts sit directly under `ae`, as the official
    `VQModelInterface`); always in eval mode, without gradients."""

    def __init__(self, config: VQGANConfig, frame_shape: tuple[int, int, int],
                 weights: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        self.config = config
        self.frame_shape = tuple(frame_shape)  # type: ignore[assignment]
        add_autoencoder(self, config, frame_shape[0])
        if weights is not None:
            self.load_state_dict(autoencoder_state(weights), strict=True)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenVQGAN:
        return super().train(False)


def autoencoder_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The autoencoder's entries of a VQGAN state dict (drops taming's training-only `loss.*`)."""
    return {k: v for k, v in state.items() if k.startswith(AUTOENCODER_PARTS)}
