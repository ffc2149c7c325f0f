"""SVG-LP training throughput: vpkit's batched `training_step` against the official frame-by-frame loop.

Both variants train the SM-MNIST recipe (dcgan64, g 128, z 10, rnn 256, 5 context + 10 future frames) from the
same initial weights on the same clips and noise, with five Adams as official; a step is forward, backward and the
optimiser steps. The reference is `vpkit_svg.reference.reference_loss_terms`, the official `train()` written the
official way (one frame per call, each SVG-LP frame encoded twice). vpkit's step is `SVG.loss_terms`, the body of
`training_step` with the same noise passed in.

Timing alternates the two variants step by step in one process and reports medians, so load from other processes
hits both alike. Peak host memory (max RSS) is measured in a fresh process per variant; on CUDA the peak allocated
memory is measured per variant in this process.

    python benchmarks/train_step.py                       # CPU, batch 16, torch's default threads
    python benchmarks/train_step.py --threads 1
    python benchmarks/train_step.py --device cuda --batch-size 100 --steps 50
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

VARIANTS = ("vpkit", "reference")


def build(variant: str, device: torch.device, batch_size: int, seed: int) -> tuple[Callable[[], torch.Tensor],
                                                                                  Callable[[], torch.Tensor]]:
    """`(step, loss)` closures for one variant on a fresh model; both variants get the same weights, clip, noise."""
    from vpkit_svg.config import SVGConfig
    from vpkit_svg.model import SVG
    from vpkit_svg.plugin import SMMNIST
    from vpkit_svg.reference import reference_loss_terms

    torch.manual_seed(seed)
    config = SVGConfig(**SMMNIST.model)
    model = SVG(config, (1, 64, 64)).to(device).train()
    gen = torch.Generator().manual_seed(seed + 1)
    length = config.n_context + config.n_future
    video = torch.rand(batch_size, length, 1, 64, 64, generator=gen).to(device)
    noise = torch.randn(batch_size, length - 1, config.z_dim, generator=gen).to(device)
    optimizers = model.configure_optimizers().optimizers

    def loss() -> torch.Tensor:
        if variant == "vpkit":
            return model.loss_terms(video, noise).loss
        return reference_loss_terms(model, video, noise).loss

    def step() -> torch.Tensor:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        for opt in optimizers:
            opt.step()
        return value.detach()

    return step, loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib(variant: str, args: argparse.Namespace) -> float:
    """Max RSS of a fresh process that builds `variant` and runs one training step."""
    cmd = [sys.executable, __file__, "--memory-of", variant, "--batch-size", str(args.batch_size),
           "--device", args.device, "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["max_rss_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before timing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one step, print RSS
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.memory_of:
        step, _ = build(args.memory_of, device, args.batch_size, args.seed)
        step()
        print(json.dumps({"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return

    from torch.utils.flop_counter import FlopCounterMode

    # First, while this process is small: a child's max RSS starts from its parent's size at fork.
    rss = {variant: peak_rss_mib(variant, args) for variant in VARIANTS}
    runs = {variant: build(variant, device, args.batch_size, args.seed) for variant in VARIANTS}
    flops, cuda_peak = {}, {}
    for variant, (step, loss) in runs.items():
        with FlopCounterMode(display=False) as counter:
            loss().backward()
        flops[variant] = counter.get_total_flops()
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            sync(device)
            cuda_peak[variant] = torch.cuda.max_memory_allocated(device) / 2**20
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    last_loss = {}
    for _ in range(args.steps):
        for variant, (step, _) in runs.items():
            sync(device)
            start = time.perf_counter()
            last_loss[variant] = step()
            sync(device)
            times[variant].append(time.perf_counter() - start)

    print(f"SVG-LP smmnist recipe (dcgan64, z 10, 5+10 frames), batch {args.batch_size}, device {args.device}, "
          f"{torch.get_num_threads()} CPU threads, median of {args.steps} alternating steps after {args.warmup} "
          f"warm-up")
    header = ["videos/s", "ms/step", "GFLOP/step", "GFLOP/s", "max RSS MiB"]
    if cuda_peak:
        header.append("CUDA peak MiB")
    print(f"{'':<10}" + "".join(f"{h:>15}" for h in header))
    for variant in VARIANTS:
        seconds = statistics.median(times[variant])
        row = [args.batch_size / seconds, 1000 * seconds, flops[variant] / 1e9, flops[variant] / seconds / 1e9,
               rss[variant]]
        if cuda_peak:
            row.append(cuda_peak[variant])
        print(f"{variant:<10}" + "".join(f"{value:>15.2f}" for value in row))
    speedup = statistics.median(times["reference"]) / statistics.median(times["vpkit"])
    print(f"speed-up vpkit / reference: {speedup:.2f}x; the reference does "
          f"{flops['reference'] / flops['vpkit']:.2f}x the FLOPs per step")
    print(f"loss at the last step: vpkit {float(last_loss['vpkit']):.6f}, "
          f"reference {float(last_loss['reference']):.6f}")


if __name__ == "__main__":
    main()
