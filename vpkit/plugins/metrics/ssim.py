"""SSIM per frame, per channel then averaged over channels, the map averaged over its valid interior; two windows:

- "gaussian" (default), as SRVP's `metrics/ssim.py` (and piqa's `SSIM`, DDLP): an 11×11 Gaussian window (σ 1.5),
  'valid' filtering (a 64×64 frame gives a 54×54 map), population covariances, K1 0.01, K2 0.03. This equals
  `skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.
- "uniform": scikit-image's defaults, as SVG's `eval_seq` (`compare_ssim`) and OpenSTL's `metrics.py` call it: a
  7×7 uniform window and sample covariances (×N/(N−1), N = 49), the map cropped by 3 pixels on each side.

`ssim_data_range` is 1 by default. The official SVG and OpenSTL calls gave skimage float frames without a data
range, and skimage then assumed 2 (the float dtype range [-1, 1]): their profiles set 2 to reproduce it.
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


WINDOWS = {"gaussian": (WINDOW, "gaussian 11x11, sigma 1.5, population covariance"),
           "uniform": (7, "uniform 7x7, sample covariance (scikit-image defaults)")}


def uniform_window(size: int = 7, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.full((size,), 1.0 / size, dtype=dtype)


def _ssim_planes(x: Tensor, y: Tensor, window: Tensor, data_range: float = DATA_RANGE,
                 covariance_scale: float = 1.0) -> Tensor:
    """Mean SSIM of each plane: `x`, `y` `[P, H, W]` -> `[P]`; `covariance_scale` N/(N−1) gives sample
    (co)variances."""
    planes = x.shape[0]
    # One separable 'valid' filtering pass over the five local moments at once.
    stacked = torch.cat([x, y, x * x, y * y, x * y]).unsqueeze(1)
    size = window.numel()
    filtered = F.conv2d(stacked, window.view(1, 1, 1, size))
    filtered = F.conv2d(filtered, window.view(1, 1, size, 1)).squeeze(1)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.split(planes)
    var_x = covariance_scale * (e_xx - mu_x.square())
    var_y = covariance_scale * (e_yy - mu_y.square())
    cov_xy = covariance_scale * (e_xy - mu_x * mu_y)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-2, -1))


def ssim(pred: Tensor, target: Tensor, window: str = "gaussian", data_range: float = DATA_RANGE) -> Tensor:
    """Per-frame SSIM of float videos `[N, T, C, H, W]` in [0, 1] -> `[N, T]`."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    size = WINDOWS[window][0]
    n, t, c, h, w = pred.shape
    if h < size or w < size:
        raise VpkitError(
            f"SSIM needs frames of at least {size}×{size} pixels, got {h}×{w}; drop ssim from --metrics.")
    dtype = pred.dtype if pred.is_floating_point() else torch.float32
    x = pred.to(dtype).clamp(0, 1).reshape(n * t * c, h, w)
    y = target.to(dtype).clamp(0, 1).reshape(n * t * c, h, w)
    if window == "gaussian":
        weights, scale = gaussian_window(dtype=dtype), 1.0
    else:
        weights, scale = uniform_window(size, dtype), size * size / (size * size - 1)
    weights = weights.to(x.device)
    step = max(1, PIXELS_PER_CHUNK // (h * w))
    scores = torch.cat([_ssim_planes(x[i: i + step], y[i: i + step], weights, data_range, scale)
                        for i in range(0, x.shape[0], step)])
    return scores.view(n, t, c).mean(dim=-1)


class SSIM:
    """Callable `(pred, target) -> [N, T]` with the window and data range chosen; `settings` go on the eval card."""

    def __init__(self, window: str = "gaussian", data_range: float = DATA_RANGE) -> None:
        if window not in WINDOWS:
            raise VpkitError(f"Unknown ssim_window {window!r}; choose one of {', '.join(WINDOWS)}.")
        if data_range not in (1.0, 2.0):
            raise VpkitError(f"ssim_data_range must be 1 (frames in [0, 1]) or 2 (skimage's float default); got "
                             f"{data_range}.")
        self.window, self.data_range = window, float(data_range)
        self.settings = {"window": WINDOWS[window][1], "window_size": WINDOWS[window][0],
                         "sigma": SIGMA if window == "gaussian" else None, "padding": "valid", "k1": K1, "k2": K2,
                         "data_range": self.data_range, "channels": "per channel, then averaged",
                         "clamp": [0.0, 1.0]}

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        return ssim(pred, target, self.window, self.data_range)


def build(options: Mapping[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """Options: `ssim_window` ("gaussian" or "uniform") and `ssim_data_range` (1 or 2)."""
    return SSIM(options.get("ssim_window") or "gaussian", float(options.get("ssim_data_range") or DATA_RANGE))


@vpkit.hookimpl
def register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(MetricSpec(
        name="ssim",
        build=build,
        higher_is_better=True,
        description="SSIM per frame (Gaussian 11×11 σ 1.5 as SRVP, or skimage's uniform 7×7; per channel)",
    ))
