"""DLP's encoders: the patch prior (keypoint proposals), the particle-filter mixer (for `filtering_heuristic='none'`),
the glimpse attribute encoder (offset, scale, transparency, depth) and the glimpse feature encoder (appearance).

Attribute names are the official ones (`enc`, `cnn`, `projection`, `backbone`, `*_head`, ...) so state-dict keys match.
The 256-unit width of the glimpse MLPs is hard-coded in the official code and here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vpkit_ddlp.layers import (
    KeyPointCNN,
    crop_glimpses,
    glimpse_size,
    mlp,
    spatial_softmax,
)

HIDDEN = 256  # official hidden_dims=(256, 256) of the glimpse encoders


class PatchPrior(nn.Module):
    """Prior keypoint proposals (official `VariationalKeyPointPatchEncoder`, sigma constant, nothing learned
    besides the CNN): cut the image into non-overlapping patches, one spatial-softmax keypoint per patch, mapped to
    global (y, x) in [-1, 1] with align_corners=True semantics; also the SSM variances used to rank them."""

    def __init__(self, cdim: int, channels: tuple[int, ...], image_size: int, patch_size: int, *,
                 pad_mode: str = "replicate") -> None:
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.enc = KeyPointCNN(cdim, channels, patch_size, 1, pad_mode=pad_mode, first_conv_kernel_size=3)
        starts = torch.arange(0, image_size, patch_size)
        rows, cols = torch.meshgrid(starts, starts, indexing="ij")
        self.register_buffer("patch_corners", torch.stack([rows, cols], -1).view(-1, 2), persistent=False)

    def to_global(self, local: Tensor) -> Tensor:
        """Patch-local keypoints [B, num_patches, 2] in [-1, 1] -> image coordinates in [-1, 1]."""
        corners = self.patch_corners.to(local.dtype)
        return ((local + 1) / 2 * (self.patch_size - 1) + corners) / (self.image_size - 1) * 2 - 1

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, C, H, W] -> proposals [B, num_patches, 2] (global) and variances [B, num_patches, 3]."""
        batch, cdim = x.shape[:2]
        p = self.patch_size
        patches = x.unfold(2, p, p).unfold(3, p, p)  # [B, C, nh, nw, p, p]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, cdim, p, p)
        _, heatmaps = self.enc(patches)
        kp, var = spatial_softmax(heatmaps)
        return self.to_global(kp.view(batch, -1, 2)), var.view(batch, -1, 3)

    def distance_from_centres(self, kp: Tensor) -> Tensor:
        """Squared distance of global proposals [B, num_patches, 2] from their patch centres (the 'distance'
        filtering heuristic)."""
        centres = self.to_global(torch.zeros_like(kp))
        return ((kp - centres) ** 2).sum(-1)


class _PreNormResidual(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.norm(x)) + x


class ParticleFilterMixer(nn.Module):
    """Maps all `n_kp_prior` proposals to `n_kp_enc` anchors when no filtering heuristic is used (only DLPv2's
    shapes config): an MLP-Mixer over glimpse-CNN features and positions, a softmax over proposals, and convex
    combinations of their coordinates. As official, `conv` and `dense` are also registered inside `mixer`, so the
    state dict lists them twice."""

    def __init__(self, cdim: int, channels: tuple[int, ...], image_size: int, anchor_s: float, n_kp_prior: int,
                 n_kp_enc: int, hidden: int = 128) -> None:
        super().__init__()
        self.patch_size = glimpse_size(anchor_s, image_size)
        self.cnn = KeyPointCNN(cdim, channels, self.patch_size, 32, first_conv_kernel_size=3)
        fc_in = 32 * (self.patch_size // 2 ** (len(channels) - 1)) ** 2
        self.conv = nn.Sequential(nn.Conv1d(n_kp_prior, hidden, 1), nn.ReLU(True), nn.Conv1d(hidden, n_kp_prior, 1))
        self.dense = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(True), nn.Linear(hidden, hidden))
        self.pos_projection = nn.Linear(2, hidden // 2)
        self.conv_projection = nn.Linear(fc_in, hidden // 2)
        self.mixer = nn.Sequential(_PreNormResidual(hidden, self.conv), _PreNormResidual(hidden, self.dense),
                                   nn.LayerNorm(hidden), nn.Linear(hidden, n_kp_enc))

    def forward(self, x: Tensor, kp: Tensor) -> Tensor:
        batch, n = kp.shape[:2]
        scale = torch.full_like(kp, self.patch_size / x.shape[-1])
        crops = crop_glimpses(x, kp.detach(), scale, self.patch_size)
        _, maps = self.cnn(crops)
        tokens = torch.cat([self.conv_projection(maps.reshape(batch, n, -1)), self.pos_projection(kp.detach())], -1)
        weights = torch.softmax(self.mixer(tokens), dim=1)  # [B, n_kp_prior, n_kp_enc]
        return (kp.transpose(-2, -1) @ weights).transpose(-2, -1).contiguous()


class _GlimpseTrunk(nn.Module):
    """CNN on P x P glimpses -> keymap (32 maps) flattened -> `projection` -> `backbone` (two ReLU layers)."""

    def __init__(self, in_ch: int, channels: tuple[int, ...], patch_size: int) -> None:
        super().__init__()
        self.cnn = KeyPointCNN(in_ch, channels, patch_size, 32, first_conv_kernel_size=3)
        self.projection = nn.Linear(32 * (patch_size // 2 ** (len(channels) - 1)) ** 2, HIDDEN)
        self.backbone = mlp(HIDDEN, HIDDEN, HIDDEN, last_relu=True)

    def trunk(self, glimpses: Tensor, batch: int, k: int) -> Tensor:
        _, maps = self.cnn(glimpses)
        return self.backbone(self.projection(maps.reshape(batch, k, -1)))


class ParticleAttributeEncoder(_GlimpseTrunk):
    """Glimpse at the anchor -> offset (mu through max_offset * tanh, logvar) for (y, x), scale logit (mu, logvar)
    per axis, transparency Beta log-parameters, depth (mu, logvar). With correlation maps the glimpse gets a 4th
    (C+1-th) channel (zeros when there is no previous glimpse); the official DLPv2 configs with
    `use_correlation_heatmaps` keep that channel although it is always zero there."""

    def __init__(self, cdim: int, channels: tuple[int, ...], image_size: int, anchor_s: float, *,
                 use_correlation_heatmaps: bool, kp_activation: str = "tanh", max_offset: float = 1.0) -> None:
        self.patch_size = glimpse_size(anchor_s, image_size)
        super().__init__(cdim + 1 if use_correlation_heatmaps else cdim, channels, self.patch_size)
        self.use_correlation_heatmaps = use_correlation_heatmaps
        self.kp_activation, self.max_offset = kp_activation, max_offset
        self.x_head = nn.Linear(HIDDEN, 2)
        self.y_head = nn.Linear(HIDDEN, 2)
        self.scale_xy_head = nn.Linear(HIDDEN, 4)
        self.obj_on_head = nn.Linear(HIDDEN, 2)
        self.depth_head = nn.Linear(HIDDEN, 2)

    def forward(self, x: Tensor, anchors: Tensor, scale: Tensor, correlation: Callable[[Tensor], Tensor] | None
                ) -> dict[str, Tensor]:
        """x [B, C, H, W], anchors [B, K, 2], fractional crop scale [B, K, 2]; `correlation(crops)` gives the 4th
        channel (None: no correlation channel)."""
        batch, k = anchors.shape[:2]
        if self.use_correlation_heatmaps:
            crops = crop_glimpses(x.clamp(0.0, 1.0), anchors, scale, self.patch_size)
            glimpses = torch.cat([crops, correlation(crops) if correlation is not None
                                  else crops.new_zeros(crops.shape[0], 1, *crops.shape[2:])], dim=1)
        else:
            glimpses = crop_glimpses(x, anchors, scale, self.patch_size)
        h = self.trunk(glimpses, batch, k)
        mu_y, logvar_y = self.x_head(h).chunk(2, -1)  # official `x_head` predicts the first (row) coordinate
        mu_x, logvar_x = self.y_head(h).chunk(2, -1)
        mu = torch.cat([mu_y, mu_x], -1)
        mu = self.max_offset * (torch.tanh(mu) if self.kp_activation == "tanh" else torch.sigmoid(mu))
        mu_scale, logvar_scale = self.scale_xy_head(h).chunk(2, -1)
        log_a, log_b = self.obj_on_head(h).chunk(2, -1)
        mu_depth, logvar_depth = self.depth_head(h).chunk(2, -1)
        return {"mu_offset": mu, "logvar_offset": torch.cat([logvar_y, logvar_x], -1), "mu_scale": mu_scale,
                "logvar_scale": logvar_scale, "log_a": log_a.squeeze(-1), "log_b": log_b.squeeze(-1),
                "mu_depth": mu_depth, "logvar_depth": logvar_depth}


class ParticleFeaturesEncoder(_GlimpseTrunk):
    """Glimpse at the final position with scale sigmoid(z_s) -> appearance (mu, logvar) of size F; also returns the
    glimpses `[B, K, C, P, P]` (the warm-up target and the next frame's tracking template)."""

    def __init__(self, cdim: int, channels: tuple[int, ...], image_size: int, anchor_s: float,
                 features_dim: int) -> None:
        self.patch_size = glimpse_size(anchor_s, image_size)
        super().__init__(cdim, channels, self.patch_size)
        self.features_head = nn.Linear(HIDDEN, 2 * features_dim)

    def forward(self, x: Tensor, pos: Tensor, scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, k = pos.shape[:2]
        crops = crop_glimpses(x, pos, scale, self.patch_size)
        mu, logvar = self.features_head(self.trunk(crops, batch, k)).chunk(2, -1)
        return mu, logvar, crops.view(batch, k, *crops.shape[1:])
