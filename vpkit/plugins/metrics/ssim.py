"""SSIM, as SRVP's `metrics/ssim.py` computes it: an 11×11 Gaussian window (σ 1.5), 'valid' filtering (no padding,
so a 64×64 frame gives a 54×54 map), K1 0.01, K2 0.03, data range 1, per channel; the map is averaged over space,
then over channels.

This equals `skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`, which filters with padding but averages only the same interior.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import MetricSpec

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
DATA_RANGE = 1.0
# Frame planes filtered per convolution call, as pixels: bounds memory when a whole batch of samples is scored.
PIXELS_PER_CHUNK = 2**23


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA, dtype: torch.dtype = torch.float32) -> Tensor:
    """The normalised 1-D Gaussian; SRVP's 2-D softmax(-d²/2σ²) window is its outer product with itself."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-coords.square() / (2 * sigma**2))
    return (weights / weights.sum()).to(dtype)


def _ssim_planes(x: Tensor, y: Tensor, window: Tensor) -> Tensor:
    """Mean SSIM of each plane: `x`, `y` `[P, H, W]` -> `[P]`."""
    planes = x.shape[0]
    # One separable 'valid' filtering pass over the five local moments at once.
    stacked = torch.cat([x, y, x * x, y * y, x * y]).unsqueeze(1)
    size = window.numel()
    filtered = F.conv2d(stacked, window.view(1, 1, 1, size))
    filtered = F.conv2d(filtered, window.view(1, 1, size, 1)).squeeze(1)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.split(planes)
    var_x = e_xx - mu_x.square()
    var_y = e_yy - mu_y.square()
    cov_xy = e_xy - mu_x * mu_y
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-2, -1))


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """Per-frame SSIM of float videos `[N, T, C, H, W]` in [0, 1] -> `[N, T]`."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    n, t, c, h, w = pred.shape
    if h < WINDOW or w < WINDOW:
        raise VpkitError(
            f"SSIM needs frames of at least {WINDOW}×{WINDOW} pixels, got {h}×{w}; drop ssim from --metrics.")
    dtype = pred.dtype if pred.is_floating_point() else torch.float32
    x = pred.to(dtype).clamp(0, 1).reshape(n * t * c, h, w)
    y = target.to(dtype).clamp(0, 1).reshape(n * t * c, h, w)
    window = gaussian_window(dtype=dtype).to(x.device)
    step = max(1, PIXELS_PER_CHUNK // (h * w))
    scores = torch.cat([_ssim_planes(x[i: i + step], y[i: i + step], window) for i in range(0, x.shape[0], step)])
    return scores.view(n, t, c).mean(dim=-1)


ssim.settings = {  # type: ignore[attr-defined]  # recorded on the eval card
    "window": f"gaussian {WINDOW}x{WINDOW}", "sigma": SIGMA, "padding": "valid", "k1": K1, "k2": K2,
    "data_range": DATA_RANGE, "channels": "per channel, then averaged", "clamp": [0.0, 1.0],
}


def build(options: Mapping[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """SSIM has no settings; `options` is accepted for the metric contract."""
    return ssim


@vpkit.hookimpl
def register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(MetricSpec(
        name="ssim",
        build=build,
        higher_is_better=True,
        description="SSIM per frame (Gaussian 11×11, σ 1.5, valid, per channel, data range 1; SRVP protocol)",
    ))
