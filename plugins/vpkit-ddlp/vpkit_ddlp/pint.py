"""PINT, the Particle Interaction Transformer of DDLP (official `DynamicsDLP`).

Tokens are the K foreground particles plus the background, last, at every time step: `[B, K+1, T, D]`, flattened
particle-major for attention. Blocks are pre-LN; q/k/v/proj are bias-free; attention is causal in time and dense across
particles; learned relative biases over time differences (table `[2T-1, heads]`) and particle-index differences
(`[2(K+1)-1, heads]`) are added per layer; there is no absolute positional embedding. The MLP is 4x with GELU and
dropout. A final LayerNorm and a bias-free head, then a decoder to per-attribute prior parameters.

With `predict_delta` the prior means of position, scale, depth, features and background are residual (the input
attribute plus a delta; the position delta is bounded by max_delta * tanh); log-variances and the transparency Beta
parameters are absolute.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit_ddlp.layers import mlp


def relative_bias(table: Tensor, length: int) -> Tensor:
    """`[length, length, heads]` with entry (i, j) = table[(max - 1) + (j - i)] for a `[2 max - 1, heads]` table."""
    max_len = (table.shape[0] + 1) // 2
    idx = torch.arange(length, device=table.device)
    return table[(max_len - 1) + idx[None, :] - idx[:, None]]


class RelativePositionalBias(nn.Module):
    """Official `SimpleRelativePositionalBias`: learned time and particle-index bias tables, N(0, 0.02)."""

    def __init__(self, max_positions: int, num_heads: int, max_particles: int) -> None:
        super().__init__()
        self.rel_pos_bias = nn.Parameter(torch.empty(2 * max_positions - 1, num_heads))
        self.particle_rel_pos_bias = nn.Parameter(torch.empty(2 * max_particles - 1, num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.rel_pos_bias, std=0.02)
        nn.init.normal_(self.particle_rel_pos_bias, std=0.02)

    def forward(self, length: int, particles: int) -> tuple[Tensor, Tensor]:
        """Time bias [1, heads, 1, T, 1, T] and particle bias [1, heads, N, 1, N, 1]."""
        t = relative_bias(self.rel_pos_bias, length).permute(2, 0, 1)
        p = relative_bias(self.particle_rel_pos_bias, particles).permute(2, 0, 1)
        return t[None, :, None, :, None, :], p[None, :, :, None, :, None]


class CausalParticleSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, block_size: int, max_particles: int, dropout: float) -> None:
        super().__init__()
        self.key = nn.Linear(dim, dim, bias=False)
        self.query = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.attn_drop = nn.Dropout(dropout)
        self.resid_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size)).view(1, 1, 1, block_size, 1,
                                                                                          block_size))
        self.heads = heads
        self.rel_pos_bias = RelativePositionalBias(block_size, heads, max_particles)

    def forward(self, x: Tensor) -> Tensor:
        b, n, t, c = x.shape
        h = self.heads

        def split(y: Tensor) -> Tensor:
            return y.view(b, n * t, h, c // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        bias_t, bias_p = self.rel_pos_bias(t, n)
        att = att.view(b, h, n, t, n, t) + bias_t + bias_p
        att = att.masked_fill(self.mask[:, :, :, :t, :, :t] == 0, float("-inf")).view(b, h, n * t, n * t)
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, n * t, c)
        return self.resid_drop(self.proj(y)).view(b, n, t, c)


class _MLP(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.act(self.fc_1(x))))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, block_size: int, max_particles: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.ln2 = nn.LayerNorm(dim)
        self.attn = CausalParticleSelfAttention(dim, heads, block_size, max_particles, dropout)
        self.mlp = _MLP(dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ParticleTransformer(nn.Module):
    """The transformer trunk: blocks, `ln_f`, bias-free `head`. Linear N(0, 0.02) zero bias, LN 1/0 (official)."""

    def __init__(self, dim: int, heads: int, layers: int, block_size: int, max_particles: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"pint_dim ({dim}) must be divisible by pint_heads ({heads})")
        self.block_size = block_size
        self.pos_emb = nn.Identity()  # official: no absolute embedding with relative biases
        self.blocks = nn.Sequential(*[Block(dim, heads, block_size, max_particles, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            block.attn.rel_pos_bias.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.ln_f(self.blocks(x)))


class ParticleProjection(nn.Module):
    """Per-attribute 2-layer MLPs (in -> D -> in), concatenated [pos, scale, obj_on, depth, features] -> MLP -> D;
    the background features -> MLP -> D, appended as the last token."""

    def __init__(self, features_dim: int, bg_features_dim: int, dim: int) -> None:
        super().__init__()
        self.xy_projection = mlp(2, dim, 2)
        self.scale_projection = mlp(2, dim, 2)
        self.obj_on_projection = mlp(1, dim, 1)
        self.depth_projection = mlp(1, dim, 1)
        self.features_projection = mlp(features_dim, dim, features_dim)
        self.particle_projection = mlp(6 + features_dim, dim, dim)
        self.bg_features_projection = mlp(bg_features_dim, dim, dim)

    def forward(self, z: Tensor, z_scale: Tensor, z_obj_on: Tensor, z_depth: Tensor, z_features: Tensor,
                z_bg: Tensor) -> Tensor:
        """Particles `[..., K, *]` (obj_on `[..., K]`), bg `[..., F_bg]` -> tokens `[..., K+1, D]`."""
        parts = [self.xy_projection(z), self.scale_projection(z_scale), self.obj_on_projection(z_obj_on[..., None]),
                 self.depth_projection(z_depth), self.features_projection(z_features)]
        fg = self.particle_projection(torch.cat(parts, -1))
        return torch.cat([fg, self.bg_features_projection(z_bg).unsqueeze(-2)], dim=-2)


class ParticleDecoder(nn.Module):
    """Backbone (D, D, ReLU) and the heads of the glimpse encoder plus features and background heads."""

    def __init__(self, features_dim: int, bg_features_dim: int, dim: int) -> None:
        super().__init__()
        self.backbone = mlp(dim, dim, dim, last_relu=True)
        self.x_head = nn.Linear(dim, 2)
        self.y_head = nn.Linear(dim, 2)
        self.scale_xy_head = nn.Linear(dim, 4)
        self.obj_on_head = nn.Linear(dim, 2)
        self.depth_head = nn.Linear(dim, 2)
        self.features_head = nn.Linear(dim, 2 * features_dim)
        self.bg_features_head = nn.Linear(dim, 2 * bg_features_dim)


class DynamicsDLP(nn.Module):
    """PINT (official `DynamicsDLP`): `particle_projection` -> `particle_transformer` -> `particle_decoder`.

    `forward` maps the particles of frames t = 0..L-1 (`[B, L, K, *]`) to the prior parameters of frames t+1."""

    def __init__(self, features_dim: int, bg_features_dim: int, *, dim: int, heads: int, layers: int,
                 block_size: int, max_particles: int, dropout: float = 0.1, kp_activation: str = "tanh",
                 predict_delta: bool = True, max_delta: float = 1.0, depth_logvar_from_mean: bool = True) -> None:
        super().__init__()
        self.predict_delta, self.max_delta, self.kp_activation = predict_delta, max_delta, kp_activation
        self.depth_logvar_from_mean = depth_logvar_from_mean
        self.particle_projection = ParticleProjection(features_dim, bg_features_dim, dim)
        self.particle_transformer = ParticleTransformer(dim, heads, layers, block_size, max_particles, dropout)
        self.particle_decoder = ParticleDecoder(features_dim, bg_features_dim, dim)

    @property
    def block_size(self) -> int:
        return self.particle_transformer.block_size

    def forward(self, z: Tensor, z_scale: Tensor, z_obj_on: Tensor, z_depth: Tensor, z_features: Tensor,
                z_bg: Tensor) -> dict[str, Tensor]:
        """z, z_scale [B, L, K, 2]; z_obj_on [B, L, K]; z_depth [B, L, K, 1]; z_features [B, L, K, F];
        z_bg [B, L, F_bg] -> prior parameters for frames 1..L (same layouts; `obj_on_a/b` [B, L, K], unclamped)."""
        tokens = self.particle_projection(z, z_scale, z_obj_on, z_depth, z_features, z_bg)  # [B, L, K+1, D]
        out = self.particle_transformer(tokens.transpose(1, 2)).transpose(1, 2)
        dec = self.particle_decoder
        h = dec.backbone(out)
        fg, bg = h[..., :-1, :], h[..., -1, :]
        mu_y, logvar_y = dec.x_head(fg).chunk(2, -1)
        mu_x, logvar_x = dec.y_head(fg).chunk(2, -1)
        mu = torch.cat([mu_y, mu_x], -1)
        mu = self.max_delta * (torch.tanh(mu) if self.kp_activation == "tanh" else torch.sigmoid(mu))
        mu_scale, logvar_scale = dec.scale_xy_head(fg).chunk(2, -1)
        log_a, log_b = dec.obj_on_head(fg).chunk(2, -1)
        mu_depth, logvar_depth = dec.depth_head(fg).chunk(2, -1)
        if self.depth_logvar_from_mean:
            logvar_depth = mu_depth  # official bug kept for parity: the depth logvar is the (raw) mean-depth output
        mu_features, logvar_features = dec.features_head(fg).chunk(2, -1)
        mu_bg, logvar_bg = dec.bg_features_head(bg).chunk(2, -1)
        if self.predict_delta:
            mu, mu_scale, mu_depth = z + mu, z_scale + mu_scale, z_depth + mu_depth
            mu_features, mu_bg = z_features + mu_features, z_bg + mu_bg
        return {"mu": mu, "logvar": torch.cat([logvar_y, logvar_x], -1), "mu_scale": mu_scale,
                "logvar_scale": logvar_scale, "obj_on_a": log_a.squeeze(-1).exp(), "obj_on_b": log_b.squeeze(-1).exp(),
                "mu_depth": mu_depth, "logvar_depth": logvar_depth, "mu_features": mu_features,
                "logvar_features": logvar_features, "mu_bg": mu_bg, "logvar_bg": logvar_bg}
