"""Data-parallel training over several processes with torch.distributed (launched by torchrun).

`World.from_env()` reads what torchrun's elastic launcher sets (RANK, WORLD_SIZE, LOCAL_RANK); `setup(device)` opens
the process group: gloo on CPU, nccl on CUDA. The trainer then, in a run of N processes:

- gives every rank the same global batch position and its own contiguous 1/N of the batch's videos (the batch is
  built whole on each rank, so N processes see exactly the videos one process would: a resumable
  DistributedSampler with no padding or reshuffling between ranks);
- averages gradients across ranks after backward with one flattened all-reduce per dtype (DDP's arithmetic, without
  its overlap of communication and backward, so that models that optimise by hand, such as GANs with several
  backward passes per step, are handled exactly like the others), and broadcasts rank 0's buffers (BatchNorm
  statistics) after each step, as DDP does by default, so all ranks hold identical models;
- reduces the logged values across ranks (mean), and lets only rank 0 write checkpoints, logs, TensorBoard events,
  sample grids and validation results;
- seeds each rank's RNGs from (seed, step, rank) before every step, so that ranks draw different noise and a resumed
  run needs no per-rank RNG state.

`launch` re-runs the current `vpkit train` command under `torch.distributed.run` (`vpkit train --devices N`, and
`--nnodes/--node-rank/--rdzv-endpoint` for several machines); `torchrun ... -m vpkit train ...` works as well.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vpkit.core.errors import VpkitError


@dataclass(frozen=True)
class World:
    """This process's place in the run: its rank, the number of processes, and its rank on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls) -> World:
        try:
            return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                       int(os.environ.get("LOCAL_RANK", "0")))
        except ValueError as exc:
            raise VpkitError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (torchrun sets them): {exc}") from None


def setup(device: torch.device) -> World:
    """Open the process group when this process was started by torchrun with WORLD_SIZE > 1 (no-op otherwise)."""
    world = World.from_env()
    if not world.distributed or dist.is_initialized():
        return world
    if not dist.is_available():
        raise VpkitError("This torch build has no torch.distributed; multi-process training needs one.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device if device.index is not None else world.local_rank)
    dist.init_process_group(backend=backend)
    return world


def device_for(requested: torch.device, world: World) -> torch.device:
    """One GPU per process: `cuda` becomes `cuda:LOCAL_RANK` in a multi-process run."""
    if requested.type == "cuda" and requested.index is None and world.distributed:
        return torch.device("cuda", world.local_rank)
    return requested


def shard(batch: Tensor, world: World) -> Tensor:
    """This rank's contiguous 1/N of a global batch (the batch size must be a multiple of N)."""
    if not world.distributed:
        return batch
    per_rank = batch.shape[0] // world.size
    return batch[world.rank * per_rank: (world.rank + 1) * per_rank]


def check_batch(batch_size: int, accumulate: int, world: World) -> None:
    parts = world.size * accumulate
    if batch_size % parts:
        raise VpkitError(f"train.batch_size {batch_size} cannot be split over {world.size} process(es) x "
                         f"{accumulate} accumulation step(s); use a multiple of {parts}.")


def average_gradients(parameters: Iterable[nn.Parameter], world: World) -> None:
    """Average `.grad` across ranks in place: one flattened all-reduce per dtype (parameters without a gradient on
    this rank count as zeros, so every rank reduces the same tensors)."""
    if not world.distributed:
        return
    params = [p for p in parameters if p.requires_grad]
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for param in params:
        by_dtype.setdefault(param.dtype, []).append(param)
    for group in by_dtype.values():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(world.size)
        offset = 0
        for param in group:
            count = param.numel()
            param.grad = flat[offset: offset + count].view_as(param).clone()
            offset += count


def broadcast_buffers(module: nn.Module, world: World) -> None:
    """Rank 0's buffers (BatchNorm running statistics, counters) everywhere, as DDP's broadcast_buffers."""
    if not world.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def broadcast_parameters(module: nn.Module, world: World) -> None:
    """Rank 0's initial weights everywhere, so that ranks start identical whatever their RNGs did."""
    if not world.distributed:
        return
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            dist.broadcast(tensor, src=0)


def mean_logs(logs: Mapping[str, float], world: World) -> dict[str, float]:
    """Every logged value averaged over ranks (same keys on every rank)."""
    if not world.distributed or not logs:
        return dict(logs)
    keys = sorted(logs)
    values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(keys, (values / world.size).tolist(), strict=True))


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when it is true on any (e.g. a Ctrl-C seen by one process)."""
    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch_args(argv: Sequence[str], *, devices: int, nnodes: int, node_rank: int,
                rdzv_endpoint: str | None) -> list[str]:
    """The `torch.distributed.run` arguments that re-run `vpkit train ARGV` (without the launcher options) on
    `devices` processes per machine."""
    if devices < 1 or nnodes < 1:
        raise VpkitError(f"--devices and --nnodes must be at least 1 (got {devices} and {nnodes}).")
    if not 0 <= node_rank < nnodes:
        raise VpkitError(f"--node-rank must be in 0..{nnodes - 1} (got {node_rank}).")
    if nnodes > 1 and not rdzv_endpoint:
        raise VpkitError("Several machines (--nnodes > 1) need --rdzv-endpoint HOST:PORT, the same on every machine.")
    args = [f"--nproc-per-node={devices}", f"--nnodes={nnodes}"]
    if nnodes > 1:
        args += [f"--node-rank={node_rank}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    else:
        args += ["--standalone"]
    return [*args, "-m", "vpkit", "train", *argv]


def launch(argv: Sequence[str], **options: object) -> int:
    """Run `vpkit train ARGV` under torchrun's elastic launcher; returns its exit code."""
    from torch.distributed import run as torchrun

    try:
        torchrun.main(launch_args(argv, **options))  # type: ignore[arg-type]
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - torchrun raises ChildFailedError with each rank's error
        raise VpkitError(f"Distributed training failed: {exc}") from None
    return 0
