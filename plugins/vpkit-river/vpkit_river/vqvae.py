"""The authors' VQVAE (RIVER's CLEVRER autoencoder) and `river-vqvae`, the vpkit model that trains it.

Davtyan, Sameni, Favaro, "Efficient Video Prediction via Sparsely Conditioned Flow Matching", ICCV 2023.
    @inproceedings{davtyan2023river, title={Efficient Video Prediction via Sparsely Conditioned Flow Matching},
                   author={Davtyan, Aram and Sameni, Sepehr and Favaro, Paolo}, booktitle={ICCV}, year={2023}}
Official code: github.com/Araachie/river (`model/vqgan/`, `model/layers/`).

Encoder: conv3x3 -> three residual blocks that halve the resolution (x1, x2, x4, x8 the first width) -> residual
block, single-head self-attention, residual block at 1/8 -> GroupNorm, swish, conv3x3 to the latent channels.
Quantiser: nearest of `num_embeddings` codebook vectors, straight-through. Decoder: conv3x3 -> residual block,
attention, residual block -> three [residual block halving the width, nearest x2 + conv + BatchNorm + LeakyReLU]
-> GroupNorm, swish, conv3x3, tanh. Every "bn" of the official code is a GroupNorm(32, eps 1e-6) except the
up-sampling blocks' BatchNorm. Frames are in [-1, 1] inside; RIVER flows on the pre-quantisation encoder output.

State-dict keys are the official `VQVAE` ones (`encoder.*`, `decoder.*`, `vector_quantizer.embedding.weight`).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit.core.errors import VpkitError
from vpkit.core.model import (
    Backend,
    ExportPlan,
    Graph,
    Optimization,
    StepOutput,
    TrainContext,
    VideoPredictor,
)
from vpkit_river.config import VQVAEConfig
from vpkit_river.layers import MultiheadSelfAttention

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vpkit.core.config import TrainConfig

DOWN_FACTOR = 8  # three halvings in the encoder, three doublings in the decoder
STAGES = (1, 2, 4, 8)  # width multipliers of the encoder (divisors of the decoder)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


# -- blocks ---------------------------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """conv3x3 -> avg-pool (when down-sampling) -> norm -> LeakyReLU(0.2) -> conv3x3 -> norm, plus a shortcut
    (conv1x1 -> avg-pool -> norm where the shape changes), then LeakyReLU(0.2). Convolutions have no bias."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, down: int = 1) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = group_norm(out_channels, groups)
        self.downsample = None
        if down != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(down),
                                            group_norm(out_channels, groups))

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        if self.down != 1:
            out = F.avg_pool2d(out, self.down)
        out = self.bn2(self.conv2(F.leaky_relu(self.bn1(out), 0.2)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.leaky_relu(out + shortcut, 0.2)


class UpBlock(nn.Module):
    """Nearest x2 up-sampling -> conv3x3 (no bias) -> BatchNorm2d -> LeakyReLU(0.2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.norm(self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))), 0.2)


def _attention_middle(owner: nn.Module, channels: int, groups: int) -> None:
    """Register residual block, GroupNorm + single-head self-attention, residual block on `owner` (the official
    keys `pre_attn_residual`, `attn_norm`, `attn`, `post_attn_residual` sit directly on the encoder/decoder)."""
    owner.pre_attn_residual = ResidualBlock(channels, channels, groups)
    owner.attn_norm = group_norm(channels, groups)
    owner.attn = MultiheadSelfAttention(channels, 1)
    owner.post_attn_residual = ResidualBlock(channels, channels, groups)


def _run_attention_middle(owner: nn.Module, x: Tensor) -> Tensor:
    """Residual block, x + attention over the pixels of GroupNorm(x), residual block."""
    x = owner.pre_attn_residual(x)
    batch, channels, height, width = x.shape
    tokens = owner.attn_norm(x).flatten(2).transpose(1, 2)  # b c h w -> b (h w) c
    x = x + owner.attn(tokens).transpose(1, 2).reshape(batch, channels, height, width)
    return owner.post_attn_residual(x)


class Encoder(nn.Module):
    """Frames `[N, C, H, W]` in [-1, 1] -> pre-quantisation latents `[N, latent_channels, H/8, W/8]`."""

    def __init__(self, in_channels: int, latent_channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.residuals = nn.Sequential(*[
            ResidualBlock(a * width, b * width, groups, down=2) for a, b in itertools.pairwise(STAGES)])
        top = STAGES[-1] * width
        _attention_middle(self, top, groups)
        self.out_norm = group_norm(top, groups)
        self.out_conv = nn.Conv2d(top, latent_channels, 3, padding=1)

    def forward(self, frames: Tensor) -> Tensor:
        x = _run_attention_middle(self, self.residuals(self.conv_in(frames)))
        return self.out_conv(swish(self.out_norm(x)))


class Decoder(nn.Module):
    """Quantised latents `[N, latent_channels, h, w]` -> frames `[N, C, 8h, 8w]` in [-1, 1] (tanh)."""

    def __init__(self, latent_channels: int, out_channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(latent_channels, width, 3, padding=1)
        _attention_middle(self, width, groups)
        self.residuals = nn.Sequential(*[
            nn.Sequential(ResidualBlock(width // a, width // b, groups), UpBlock(width // b))
            for a, b in itertools.pairwise(STAGES)])
        bottom = width // STAGES[-1]
        self.out_norm = group_norm(bottom, groups)
        self.out_conv = nn.Conv2d(bottom, out_channels, 3, padding=1)

    def forward(self, latents: Tensor) -> Tensor:
        x = self.residuals(_run_attention_middle(self, self.conv_in(latents)))
        return torch.tanh(self.out_conv(swish(self.out_norm(x))))


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantiser (MishaLaskin/vqvae, as RIVER uses it). Returns the loss
    `mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2)` (beta on the codebook term, as official), the
    straight-through quantised latents and the code indices."""

    def __init__(self, num_embeddings: int, dim: int, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.embedding = nn.Embedding(num_embeddings, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)

    def codes(self, latents: Tensor) -> Tensor:
        """Index of the nearest codebook vector for every latent pixel: `[N, h, w]`."""
        z = latents.permute(0, 2, 3, 1)
        codebook = self.embedding.weight
        distances = ((z ** 2).sum(-1, keepdim=True) + (codebook ** 2).sum(1)
                     - 2 * z @ codebook.t())  # the official expansion (same ties as official)
        return distances.argmin(-1)

    def forward(self, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        codes = self.codes(latents)
        quantized = self.embedding(codes).permute(0, 3, 1, 2)
        loss = F.mse_loss(latents, quantized.detach()) + self.beta * F.mse_loss(quantized, latents.detach())
        return loss, latents + (quantized - latents).detach(), codes


# -- the vpkit model -------------------------------------------------------------------------------------------------


class RiverVQVAE(VideoPredictor):
    """The authors' VQVAE as a vpkit model. Trained on every frame of the clip; as a "predictor" it repeats the
    reconstruction of the last context frame (deterministic), so the trainer's samples and validation show the
    reconstruction quality of the autoencoder."""

    def __init__(self, config: VQVAEConfig, frame_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = frame_shape
        if height % DOWN_FACTOR or width % DOWN_FACTOR:
            raise VpkitError(f"river-vqvae down-samples by {DOWN_FACTOR}; frames of {height}x{width} are not "
                             f"divisible by it. Resize the data (e.g. 64x64 or 128x128).")
        self.config = config
        self.frame_shape = (channels, height, width)
        c = config
        self.encoder = Encoder(channels, c.latent_channels, c.encoder_channels, c.norm_groups)
        self.decoder = Decoder(c.latent_channels, channels, c.decoder_channels, c.norm_groups)
        self.vector_quantizer = VectorQuantizer(c.num_embeddings, c.latent_channels, c.beta)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """`(latent_channels, H/8, W/8)`: the shape RIVER flows in."""
        _, height, width = self.frame_shape
        return (self.config.latent_channels, height // DOWN_FACTOR, width // DOWN_FACTOR)

    # -- the autoencoder ---------------------------------------------------------------------------------------------
    def encode(self, frames: Tensor) -> Tensor:
        """Frames `[N, C, H, W]` in [0, 1] -> continuous (pre-quantisation) latents."""
        return self.encoder(frames * 2 - 1)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents -> nearest codebook vectors -> frames in [0, 1] (the decoder's tanh output, rescaled)."""
        _, quantized, _ = self.vector_quantizer(latents)
        return (self.decoder(quantized) + 1) / 2

    # -- training ---------------------------------------------------------------------------------------------------
    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """Reconstruction error of every frame of `video` (in [-1, 1]) + `vq_weight` x the quantiser loss; logs
        both parts and the share of the codebook the batch uses."""
        frames = video.flatten(0, 1) * 2 - 1
        latents = self.encoder(frames)
        vq_loss, quantized, codes = self.vector_quantizer(latents)
        recon = self.decoder(quantized)
        error = F.mse_loss if self.config.recon_loss == "mse" else F.l1_loss
        full = torch.promote_types(recon.dtype, torch.float32)  # float32 under autocast, float64 stays
        recon_loss = error(recon.to(full), frames.to(full))
        loss = recon_loss + self.config.vq_weight * vq_loss.to(full)
        usage = codes.unique().numel() / self.config.num_embeddings
        return StepOutput(loss, {"recon": recon_loss.detach(), "vq": vq_loss.detach(), "codebook_usage": usage})

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        """One Adam (lr from the config, PyTorch's default betas)."""
        return Optimization([torch.optim.Adam(self.parameters(), lr=self.config.lr)])

    # -- sampling ---------------------------------------------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        return False

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        return {}

    def export_plan(self) -> ExportPlan:
        """Graphs `encode` (frames -> latents) and `decode` (latents -> quantised -> frames)."""
        param = next(self.parameters())
        gen = torch.Generator().manual_seed(0)
        frames = torch.rand((2, *self.frame_shape), generator=gen).to(param.device, param.dtype)
        latents = torch.randn((2, *self.latent_shape), generator=gen).to(param.device, param.dtype)
        return ExportPlan(autoencoder_graphs(self, frames, latents))

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """The reconstruction of the last context frame, repeated `horizon` times."""
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        latents = backend.run("encode", {"frames": context[:, -1]})["latents"]
        frames = backend.run("decode", {"latents": latents})["frames"]
        return frames.unsqueeze(1).expand(-1, horizon, *frames.shape[1:]).contiguous()


# -- exportable graphs (shared with `river`) --------------------------------------------------------------------------


class EncodeGraph(nn.Module):
    def __init__(self, vqvae: RiverVQVAE) -> None:
        super().__init__()
        self.vqvae = vqvae

    def forward(self, frames: Tensor) -> tuple[Tensor]:
        return (self.vqvae.encode(frames),)


class DecodeGraph(nn.Module):
    def __init__(self, vqvae: RiverVQVAE) -> None:
        super().__init__()
        self.vqvae = vqvae

    def forward(self, latents: Tensor) -> tuple[Tensor]:
        return (self.vqvae.decode(latents).clamp(0, 1),)


def autoencoder_graphs(vqvae: RiverVQVAE, frames: Tensor, latents: Tensor) -> dict[str, Graph]:
    """`encode` (`frames` in [0, 1] -> `latents`) and `decode` (`latents` -> `frames` in [0, 1])."""
    axis = {0: "batch"}
    return {
        "encode": Graph(EncodeGraph(vqvae), ("frames",), ("latents",), (frames,),
                        {"frames": axis, "latents": axis}),
        "decode": Graph(DecodeGraph(vqvae), ("latents",), ("frames",), (latents,),
                        {"latents": axis, "frames": axis}),
    }
