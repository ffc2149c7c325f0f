"""Attention building blocks shared by the VQVAE and the vector field, written out in plain tensor ops.

Parameter names and initialisation are PyTorch's `nn.MultiheadAttention` / `nn.TransformerEncoderLayer` ones (the
official code uses those classes, so checkpoints import unchanged); the forward pass avoids their fused kernels so
the graphs export to every backend and compute the same in float32 and float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiheadSelfAttention(nn.Module):
    """Self-attention over tokens `[B, N, D]` with a packed q/k/v projection (`in_proj_weight` `[3D, D]`) and
    `out_proj`, as `nn.MultiheadAttention(D, heads, dropout, batch_first=True)`; `dropout` acts on the attention
    weights in training mode."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, tokens, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax((q * (1.0 / math.sqrt(head_dim))) @ k.transpose(-2, -1), dim=-1)
        weights = F.dropout(weights, self.dropout, self.training)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.out_proj(out)


class PreNormTransformerLayer(nn.Module):
    """`nn.TransformerEncoderLayer(dim, heads, ffn, dropout, activation="gelu", norm_first=True,
    batch_first=True)`: x + Drop(Attn(LN(x))), then x + Drop(W2 Drop(GELU(W1 LN(x))))."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiheadSelfAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        p, train = self.dropout, self.training
        x = x + F.dropout(self.self_attn(self.norm1(x)), p, train)
        hidden = F.dropout(F.gelu(self.linear1(self.norm2(x))), p, train)
        return x + F.dropout(self.linear2(hidden), p, train)
