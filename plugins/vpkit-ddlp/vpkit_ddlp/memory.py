"""Lower peak training memory without changing the math: run a stage a few images at a time under activation
checkpointing, so its activations are recomputed chunk by chunk in the backward pass instead of all being kept.

The forward values are those of the whole-batch call (the same ops on the same images; a chunk boundary only splits
the batch axis, and random draws are made outside or replayed: `preserve_rng_state`), and so are the gradients, up to
the float summation order of the weight gradients over chunks. Used by DLPv2 / DDLP training when
`memory_chunk > 0` (see `benchmarks/ddlp.py` for the saving); without gradients (evaluation, export) stages run
whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def active(chunk: int) -> bool:
    """Whether chunked recomputation applies now: a chunk size is set and autograd records."""
    return chunk > 0 and torch.is_grad_enabled()


def recomputed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` with its activations recomputed in the backward pass (RNG state replayed)."""
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)


def chunked(fn: Callable[..., Any], chunk: int, *tensors: Tensor | None, **kwargs: Any) -> Any:
    """`fn(*tensors, **kwargs)` computed `chunk` items of axis 0 at a time, each recomputed in the backward pass,
    outputs (a tensor, a tuple of tensors or a dict of tensors) concatenated along axis 0. `fn` must treat the items
    of axis 0 independently and draw no random numbers. Runs whole when `active(chunk)` is false."""
    n = next(t for t in tensors if t is not None).shape[0]
    if not active(chunk) or n <= chunk:
        return fn(*tensors, **kwargs) if not active(chunk) else recomputed(fn, *tensors, **kwargs)
    outs = [recomputed(fn, *(None if t is None else t[i: i + chunk] for t in tensors), **kwargs)
            for i in range(0, n, chunk)]
    first = outs[0]
    if isinstance(first, Tensor):
        return torch.cat(outs)
    if isinstance(first, dict):
        return {key: torch.cat([o[key] for o in outs]) for key in first}
    return type(first)(torch.cat(parts) for parts in zip(*outs, strict=True))
