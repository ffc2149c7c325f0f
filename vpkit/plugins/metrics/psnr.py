"""PSNR, as SRVP's `test.py` computes it: per frame and channel `10·log10(1 / MSE)` over H×W (data range 1),
averaged over channels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

import vpkit
from vpkit.core.specs import MetricSpec

# MSE floor: an exact match would give +inf dB and make means and intervals meaningless; 1e-10 caps PSNR at 100 dB,
# far above any 8-bit error (one grey level everywhere is 48 dB), so real scores never touch it.
MSE_FLOOR = 1e-10


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """Per-frame PSNR of float videos `[N, T, C, H, W]` in [0, 1] -> `[N, T]`.

    SRVP averages the per-channel PSNRs, not the PSNR of the mean MSE; for grey frames the two are the same.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    mse = (pred.clamp(0, 1) - target.clamp(0, 1)).square().mean(dim=(-2, -1))  # [N, T, C]
    return (10 * torch.log10(1 / mse.clamp_min(MSE_FLOOR))).mean(dim=-1)


psnr.settings = {  # type: ignore[attr-defined]  # recorded on the eval card
    "reduction": "10·log10(1/MSE) per frame and channel over H×W, averaged over channels",
    "data_range": 1.0, "clamp": [0.0, 1.0], "mse_floor": MSE_FLOOR,
}


def build(options: Mapping[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """PSNR has no settings; `options` is accepted for the metric contract."""
    return psnr


@vpkit.hookimpl
def register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(MetricSpec(
        name="psnr",
        build=build,
        higher_is_better=True,
        description="PSNR in dB per frame (data range 1, per channel then averaged; SRVP protocol)",
    ))
