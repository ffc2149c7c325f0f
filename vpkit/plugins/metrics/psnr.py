"""PSNR per frame on videos in [0, 1] (data range 1, predictions clamped to [0, 1]), in two reductions:

- "channel-mean" (default): `10·log10(1 / MSE)` per frame and channel over H×W, averaged over channels, as SRVP's
  `test.py` and SVG's `eval_seq` (skimage's PSNR per channel) compute it;
- "frame": the PSNR of the MSE over C×H×W of each frame, as OpenSTL's `metrics.py` and piqa's `PSNR` (DDLP) do.

For grey frames the two are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import MetricSpec

# MSE floor: an exact match would give +inf dB and make means and intervals meaningless; 1e-10 caps PSNR at 100 dB,
# far above any 8-bit error (one grey level everywhere is 48 dB), so real scores never touch it.
MSE_FLOOR = 1e-10
REDUCTIONS = {
    "channel-mean": "10·log10(1/MSE) per frame and channel over H×W, averaged over channels",
    "frame": "10·log10(1/MSE) per frame, MSE over C×H×W",
}


def psnr(pred: Tensor, target: Tensor, reduction: str = "channel-mean") -> Tensor:
    """Per-frame PSNR of float videos `[N, T, C, H, W]` in [0, 1] -> `[N, T]`."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    squared = (pred.clamp(0, 1) - target.clamp(0, 1)).square()
    if reduction == "frame":
        return 10 * torch.log10(1 / squared.mean(dim=(-3, -2, -1)).clamp_min(MSE_FLOOR))
    mse = squared.mean(dim=(-2, -1))  # [N, T, C]
    return (10 * torch.log10(1 / mse.clamp_min(MSE_FLOOR))).mean(dim=-1)


class PSNR:
    """Callable `(pred, target) -> [N, T]` with the reduction chosen; `settings` go on the eval card."""

    def __init__(self, reduction: str = "channel-mean") -> None:
        if reduction not in REDUCTIONS:
            raise VpkitError(f"Unknown psnr_reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}.")
        self.reduction = reduction
        self.settings = {"reduction": reduction, "formula": REDUCTIONS[reduction], "data_range": 1.0,
                         "clamp": [0.0, 1.0], "mse_floor": MSE_FLOOR}

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        return psnr(pred, target, self.reduction)


def build(options: Mapping[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """Options: `psnr_reduction` ("channel-mean" or "frame")."""
    return PSNR(options.get("psnr_reduction") or "channel-mean")


@vpkit.hookimpl
def register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(MetricSpec(
        name="psnr",
        build=build,
        higher_is_better=True,
        description="PSNR in dB per frame (data range 1; per channel then averaged, or over the whole frame)",
    ))
