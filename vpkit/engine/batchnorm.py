"""BatchNorm that lets one batched call over many frames behave like an official one-call-per-frame loop.

The official SVG and SLAMP loops call their encoders and decoders once per time step, so in training mode every
BatchNorm normalises each frame's batch with that frame's own statistics and updates its running statistics once per
call. Their vpkit plugins encode and decode all frames of a clip in one call for speed. `TimeBatchNorm2d` keeps the
official math: inside `time_grouped(module, groups, update_order)` an input laid out batch-major, `(b t) c h w`, is
normalised per time slice `t` (each slice with its own batch statistics), and the running statistics receive exactly
the sequence of momentum updates the official loop would make, slice by slice in `update_order`.

Outside that block (and whenever the module is in eval mode) it is a plain `nn.BatchNorm2d` with the same
parameters, buffers and state-dict keys, unless `batch_stats_in_eval` asks for per-call batch statistics in eval
mode (what official SVG `generate_svg_lp.py` and SLAMP `evaluate.py` get by leaving the networks in train mode),
computed with plain tensor ops so the graph stays exportable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TimeBatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` that can normalise time slices of a batch-major `(b t)` batch separately."""

    time_groups: int | None = None
    update_weights: Tensor | None = None
    update_count: int = 0
    batch_stats_in_eval: bool = False

    def forward(self, input: Tensor) -> Tensor:
        if self.training and self.time_groups is not None:
            return self._grouped_forward(input)
        if not self.training and self.batch_stats_in_eval:
            mean = input.mean(dim=(0, 2, 3), keepdim=True)
            var = (input - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)
            scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
            return (input - mean) * scale + self.bias.view(1, -1, 1, 1)
        return super().forward(input)

    def _grouped_forward(self, input: Tensor) -> Tensor:
        groups = self.time_groups
        assert groups is not None
        if input.shape[0] % groups:
            raise ValueError(f"batch of {input.shape[0]} is not a whole number of {groups} time slices")
        channels = self.num_features
        # Batch-major (b t) c h w viewed as b (t c) h w: BatchNorm over t*c channels gives each time slice its own
        # statistics over (b, h, w), with no copy.
        sliced = input.reshape(input.shape[0] // groups, groups * channels, *input.shape[2:])
        track = self.track_running_stats and self.running_mean is not None
        batch_mean = batch_var = None
        if track:
            # momentum 1 turns the kernel's running-stat update into "write this slice's batch mean / unbiased var".
            batch_mean = torch.zeros(groups * channels, device=input.device, dtype=self.running_mean.dtype)
            batch_var = torch.ones(groups * channels, device=input.device, dtype=self.running_var.dtype)
        weight = self.weight.repeat(groups) if self.weight is not None else None
        bias = self.bias.repeat(groups) if self.bias is not None else None
        out = F.batch_norm(sliced, batch_mean, batch_var, weight, bias, True, 1.0, self.eps)
        if track:
            self._update_running_stats(batch_mean.view(groups, channels), batch_var.view(groups, channels))
        # Not a view: the in-place LeakyReLU that follows would otherwise make autograd copy the whole map back.
        return torch.ops.aten._unsafe_view(out, input.shape)

    @torch.no_grad()
    def _update_running_stats(self, batch_mean: Tensor, batch_var: Tensor) -> None:
        # K sequential updates r <- (1-m) r + m s_k collapse to r <- (1-m)^K r + sum_k m (1-m)^(K-1-k) s_k.
        weights = self.update_weights
        decay = (1.0 - self.momentum) ** self.update_count
        self.running_mean.mul_(decay).add_(weights @ batch_mean)
        self.running_var.mul_(decay).add_(weights @ batch_var)
        self.num_batches_tracked.add_(self.update_count)


def update_weights(momentum: float, groups: int, update_order: Sequence[int]) -> Tensor:
    """Weight of each time slice's statistics after the official sequence of momentum updates `update_order`."""
    count = len(update_order)
    weights = [0.0] * groups
    for k, group in enumerate(update_order):
        weights[group] += momentum * (1.0 - momentum) ** (count - 1 - k)
    return torch.tensor(weights, dtype=torch.float64)


@contextmanager
def time_grouped(module: nn.Module, groups: int, update_order: Sequence[int]) -> Iterator[None]:
    """Within the block, every `TimeBatchNorm2d` in `module` treats its (training-mode) input as `groups`
    batch-major time slices and updates its running statistics as if called once per entry of `update_order`
    (time-slice indices, in the official call order)."""
    if any(not 0 <= g < groups for g in update_order):
        raise ValueError(f"update_order {tuple(update_order)} names a slice outside 0..{groups - 1}")
    layers = [m for m in module.modules() if isinstance(m, TimeBatchNorm2d)]
    cache: dict[tuple[float, torch.device, torch.dtype], Tensor] = {}
    for layer in layers:
        if layer.momentum is None:
            raise ValueError("time_grouped needs BatchNorm layers with a fixed momentum")
        if layer.running_mean is not None:
            key = (layer.momentum, layer.running_mean.device, layer.running_mean.dtype)
            if key not in cache:
                cache[key] = update_weights(layer.momentum, groups, update_order).to(key[1], key[2])
            layer.update_weights = cache[key]
        layer.time_groups = groups
        layer.update_count = len(update_order)
    try:
        yield
    finally:
        for layer in layers:
            layer.time_groups = None
            layer.update_weights = None
            layer.update_count = 0


def use_batch_stats_in_eval(module: nn.Module, enabled: bool) -> None:
    """Make every `TimeBatchNorm2d` in `module` use per-call batch statistics (no update) in eval mode."""
    for layer in module.modules():
        if isinstance(layer, TimeBatchNorm2d):
            layer.batch_stats_in_eval = enabled
