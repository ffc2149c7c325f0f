"""RIVER's vector-field regressor: a transformer over latent pixels with U-ViT long skips.

One token per latent pixel carries Linear([x_t, reference, conditioning] concatenated on channels); learned row and
column position tables (U(-1, 1) init) and an MLP of log(distance between reference and conditioning frame) are
added to every token; a fixed sinusoidal embedding of 200 t ([cos, sin]) is prepended as token 0. `depth` pre-norm
layers, `mid_depth` more, then `depth` layers each fed Linear([skip of the mirrored input layer, x]). The time token
is dropped and a head maps tokens back to a latent map: Linear -> GELU -> LayerNorm -> conv3x3 (`ln`), or
Linear -> GELU -> BatchNorm2d -> conv3x3 (`bn`, BAIR-256).

State-dict keys are the official `vector_field_regressor.*` ones (github.com/Araachie/river,
`model/vector_field_regressor.py`); the log-distance MLP is called `time_projection` there, kept for import.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vpkit_river.config import RiverConfig
from vpkit_river.layers import PreNormTransformerLayer


def time_embedding(t: Tensor, dim: int, scale: float = 200.0, max_period: float = 10000.0) -> Tensor:
    """`[N] -> [N, dim]`: [cos, sin] of `scale * t * exp(-ln(max_period) k / (dim/2))`, computed in float32 as
    official (so float64 runs embed time at float32 precision too)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Tokens(nn.Module):
    """`[B, C, H, W] -> [B, H*W, C]`."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).transpose(1, 2)


class Grid(nn.Module):
    """`[B, H*W, C] -> [B, C, H, W]` for a fixed H."""

    def __init__(self, height: int) -> None:
        super().__init__()
        self.height = height

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, channels = x.shape
        return x.transpose(1, 2).reshape(batch, channels, self.height, tokens // self.height)


class LearnedPositions(nn.Module):
    """Row and column tables of `size` rows x dim/2; the token at (y, x) gets [col_embed[x], row_embed[y]]."""

    def __init__(self, dim: int, size: int = 512) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(size, dim // 2)
        self.col_embed = nn.Embedding(size, dim // 2)
        nn.init.uniform_(self.row_embed.weight, -1.0, 1.0)
        nn.init.uniform_(self.col_embed.weight, -1.0, 1.0)

    def forward(self, height: int, width: int) -> Tensor:
        """`[H*W, dim]`, tokens in row-major order."""
        cols = self.col_embed.weight[:width].unsqueeze(0).expand(height, -1, -1)
        rows = self.row_embed.weight[:height].unsqueeze(1).expand(-1, width, -1)
        return torch.cat([cols, rows], dim=-1).flatten(0, 1)


class VectorFieldRegressor(nn.Module):
    """Velocity of the flow for the next frame's latent `[B, C, h, w]` given the state, the reference (previous
    frame) and conditioning (earlier frame) latents, their distance in frames (`>= 1`) and the flow time `[B]`."""

    def __init__(self, config: RiverConfig, latent_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c = config
        channels, height, width = latent_shape
        if max(height, width) > c.position_table:
            raise ValueError(f"a {height}x{width} latent map exceeds the {c.position_table}-row position tables")
        self.latent_shape = latent_shape
        self.time_scale = c.time_scale
        dim = c.inner_dim

        def layer() -> PreNormTransformerLayer:
            return PreNormTransformerLayer(dim, c.heads, c.ffn_mult * dim, c.dropout)

        self.position_encoding = LearnedPositions(dim, c.position_table)
        self.project_in = nn.Sequential(Tokens(), nn.Linear(3 * channels, dim))
        self.time_projection = nn.Sequential(nn.Linear(1, c.distance_hidden), nn.ReLU(),
                                             nn.Linear(c.distance_hidden, dim))
        # Construction order as official (middle first, then each input layer with its mirrored output layer),
        # so a seed gives the official initial weights.
        self.in_blocks = nn.ModuleList()
        self.mid_blocks = nn.Sequential(*[layer() for _ in range(c.mid_depth)])
        self.out_blocks = nn.ModuleList()
        for _ in range(c.depth):
            self.in_blocks.append(layer())
            self.out_blocks.append(nn.ModuleList([nn.Linear(2 * dim, dim), layer()]))
        if c.out_norm == "ln":
            self.project_out = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim), Grid(height),
                                             nn.Conv2d(dim, channels, 3, padding=1))
        else:
            self.project_out = nn.Sequential(nn.Linear(dim, dim), Grid(height), nn.GELU(), nn.BatchNorm2d(dim),
                                             nn.Conv2d(dim, channels, 3, padding=1))

    def forward(self, state: Tensor, reference: Tensor, conditioning: Tensor, distance: Tensor,
                time: Tensor) -> Tensor:
        _, height, width = self.latent_shape
        dim = self.project_in[1].out_features
        t_token = time_embedding(time, dim, self.time_scale).to(state.dtype).unsqueeze(1)
        distance_embedding = self.time_projection(torch.log(distance.to(state.dtype)).unsqueeze(1)).unsqueeze(1)
        x = self.project_in(torch.cat([state, reference, conditioning], dim=1))
        x = x + self.position_encoding(height, width) + distance_embedding
        x = torch.cat([t_token, x], dim=1)
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_blocks(x)
        for i, (fuse, block) in enumerate(self.out_blocks):
            x = block(fuse(torch.cat([skips[-1 - i], x], dim=-1)))
        return self.project_out(x[:, 1:])
