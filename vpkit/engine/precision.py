"""Training precision: `32`, `bf16-mixed` or `16-mixed`, as one small object the trainer and models share.

Mixed precision runs the forward pass under `torch.autocast`; parameters, gradients and optimiser state stay fp32.
fp16 needs a gradient scaler (its narrow exponent underflows small gradients), which torch provides for CUDA only;
bf16 has fp32's exponent and needs none.
"""

from __future__ import annotations

import contextlib
import math
from contextlib import AbstractContextManager
from typing import Any, get_args

import torch
from torch import Tensor

from vpkit.core.config import Precision as PrecisionName
from vpkit.core.errors import VpkitError, did_you_mean

PRECISIONS: tuple[str, ...] = get_args(PrecisionName)


class Precision:
    """Autocast, backward, gradient unscaling and optimiser steps for one precision on one device.

    Use `resolve_precision(name, device)` to build one; it checks the device supports the precision.
    """

    def __init__(self, name: str, device: torch.device, dtype: torch.dtype | None,
                 scaler: torch.amp.GradScaler | None) -> None:
        self.name = name
        self.device = device
        self.dtype = dtype
        self.scaler = scaler

    def __repr__(self) -> str:
        return f"Precision({self.name!r}, device={str(self.device)!r})"

    def autocast(self) -> AbstractContextManager[Any]:
        """The context the forward pass runs in (a no-op at full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _no_autocast(self) -> AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, enabled=False)

    def backward(self, loss: Tensor) -> None:
        """Back-propagate `loss` (scaled under fp16). Autocast is left off: backward ops already run in the
        dtypes autocast chose for their forward ops, and torch advises against backward inside autocast."""
        with self._no_autocast():
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide `optimizer`'s gradients by the loss scale, so clipping sees their true norm (fp16 only)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step `optimizer`; under fp16 the scaler skips the step when a gradient overflowed."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Adjust the loss scale once per training step, after every optimiser stepped (fp16 only)."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def resolve_precision(name: str, device: torch.device | str) -> Precision:
    """Check that `device` supports precision `name` and build its `Precision`; errors name what to use instead."""
    device = torch.device(device)
    if name not in PRECISIONS:
        raise VpkitError(f"Unknown precision '{name}'.{did_you_mean(name, PRECISIONS)} "
                         f"Choose one of {', '.join(PRECISIONS)}.")
    if name == "32":
        return Precision(name, device, None, None)
    if name == "bf16-mixed":
        if device.type == "cuda":
            # Emulated bf16 on pre-Ampere GPUs is slower than fp32, so only native support counts.
            if not torch.cuda.is_bf16_supported(including_emulation=False):
                raise VpkitError(f"{torch.cuda.get_device_name(device)} has no native bfloat16; use "
                                 "train.precision=16-mixed (or 32).")
        elif not torch.amp.is_autocast_available(device.type):
            raise VpkitError(f"bf16-mixed is not supported on device '{device.type}'; use train.precision=32.")
        return Precision(name, device, torch.bfloat16, None)
    # 16-mixed
    if device.type != "cuda":
        raise VpkitError(f"Precision 16-mixed is unsupported on {device.type}: it needs a CUDA GPU (fp16 gradient "
                         "scaling). Use train.precision=bf16-mixed or 32.")
    return Precision(name, device, torch.float16, torch.amp.GradScaler("cuda"))


AMP_TOLERANCE = 0.05
"""Largest relative difference between the fp32 and the mixed-precision loss of one step that `check_amp` accepts
(bf16 keeps about 3 significant digits; a broken kernel or an overflow is off by far more, or not finite)."""


def amp_disagreement(fp32: float, mixed: float, tolerance: float = AMP_TOLERANCE) -> str | None:
    """Why a mixed-precision loss cannot be trusted next to the fp32 one, or None when it can."""
    if not math.isfinite(mixed):
        return f"the mixed-precision loss is {mixed} where fp32 gives {fp32:.6g}"
    if not math.isfinite(fp32):
        return None  # fp32 itself diverges: not autocast's fault, the trainer's NaN check reports it
    if abs(mixed - fp32) > tolerance * max(abs(fp32), 1e-8):
        return f"the mixed-precision loss {mixed:.6g} is {abs(mixed - fp32) / max(abs(fp32), 1e-8):.1%} off fp32's " \
               f"{fp32:.6g} (tolerance {tolerance:.0%})"
    return None
