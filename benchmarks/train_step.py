"""Training throughput: vpkit's `training_step` math against the official loop, per model plugin.

Each case trains the plugin's SM-MNIST preset (smmnist, 64x64 grey) from the same initial weights on the same clips
and noise, with the official optimisers; a step is forward, backward and the optimiser steps.

- `svg` (SVG-LP: dcgan64, g 128, z 10, rnn 256, 5 + 10 frames): vpkit's `SVG.loss_terms` (encoder and decoder
  called once over all frames) against `vpkit_svg.reference.reference_loss_terms`, the official `train()` written
  the official way (one frame per call, each SVG-LP frame encoded twice).
- `slamp` (dcgan64, g 128/128, z 20/20, rnn 256, 5 + 10 frames): `SLAMP.batched_loss_terms` (every conv network
  once over all frames, per-step BatchNorm) against `SLAMP.loop_loss_terms`, official `train_step`'s frame loop.
- `srvp` (dcgan + skips, ny 20, nz 20, 5 + 10 frames): official SRVP already runs its encoder and decoder once
  over all frames (only the latent dynamics step in time), and so does vpkit; there is no one-frame-at-a-time
  official loop to compare with, so only vpkit's figure is printed.

Timing alternates the variants step by step in one process and reports medians, so load from other processes hits
all alike. Peak host memory (max RSS) is measured in a fresh process per variant; on CUDA the peak allocated memory
is measured per variant in this process.

    python benchmarks/train_step.py                       # SVG, CPU, batch 16, torch's default threads
    python benchmarks/train_step.py --plugin slamp
    python benchmarks/train_step.py --plugin srvp --threads 1
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

Loss = Callable[[], torch.Tensor]


def build_svg(device: torch.device, batch_size: int, gen: torch.Generator) -> tuple[torch.nn.Module, dict[str, Loss]]:
    from vpkit_svg.config import SVGConfig
    from vpkit_svg.model import SVG
    from vpkit_svg.plugin import SMMNIST
    from vpkit_svg.reference import reference_loss_terms

    config = SVGConfig(**SMMNIST.model)
    model = SVG(config, (1, 64, 64)).to(device).train()
    length = config.n_context + config.n_future
    video = torch.rand(batch_size, length, 1, 64, 64, generator=gen).to(device)
    noise = torch.randn(batch_size, length - 1, config.z_dim, generator=gen).to(device)
    return model, {"vpkit": lambda: model.loss_terms(video, noise).loss,
                   "reference": lambda: reference_loss_terms(model, video, noise).loss}


def build_slamp(device: torch.device, batch_size: int, gen: torch.Generator
                ) -> tuple[torch.nn.Module, dict[str, Loss]]:
    from vpkit_slamp.config import SLAMPConfig
    from vpkit_slamp.model import SLAMP
    from vpkit_slamp.plugin import SMMNIST

    config = SLAMPConfig(**SMMNIST.model)
    model = SLAMP(config, (1, 64, 64)).to(device).train()
    length = config.n_context + config.n_future
    video = torch.rand(batch_size, length, 1, 64, 64, generator=gen).to(device)
    noise = {"posterior_app": torch.randn(batch_size, length - 1, config.z_dim_app, generator=gen).to(device),
             "posterior_motion": torch.randn(batch_size, length - 1, config.z_dim_motion, generator=gen).to(device)}
    return model, {"vpkit": lambda: model.batched_loss_terms(video, noise).loss,
                   "reference": lambda: model.loop_loss_terms(video, noise).loss}


def build_srvp(device: torch.device, batch_size: int, gen: torch.Generator
               ) -> tuple[torch.nn.Module, dict[str, Loss]]:
    from vpkit_srvp.config import SRVPConfig
    from vpkit_srvp.model import SRVP
    from vpkit_srvp.plugin import SMMNIST

    config = SRVPConfig(**SMMNIST.model)
    model = SRVP(config, (1, 64, 64)).to(device).train()
    length = config.n_context + config.n_future
    video = torch.rand(batch_size, length, 1, 64, 64, generator=gen).to(device)
    y0_noise = torch.randn(batch_size, config.ny, generator=gen).to(device)
    z_noise = torch.randn(batch_size, length - 1, config.nz, generator=gen).to(device)
    w_frames = torch.stack([torch.randperm(length, generator=gen)[: config.nt_inf] for _ in range(batch_size)])
    skip_frame = torch.randint(length, (batch_size,), generator=gen)
    return model, {"vpkit": lambda: model.loss_terms(video, y0_noise, z_noise, w_frames.to(device),
                                                     skip_frame.to(device)).loss}


CASES = {"svg": (build_svg, "SVG-LP smmnist preset (dcgan64, z 10, 5+10 frames)"),
         "slamp": (build_slamp, "SLAMP smmnist preset (dcgan64, z 20/20, 5+10 frames)"),
         "srvp": (build_srvp, "SRVP smmnist preset (dcgan + skips, 5+10 frames)")}


def build(plugin: str, variant: str, device: torch.device, batch_size: int, seed: int) -> tuple[Loss, Loss]:
    """`(step, loss)` closures for one variant on a fresh model; every variant gets the same weights, clip, noise."""
    torch.manual_seed(seed)
    model, losses = CASES[plugin][0](device, batch_size, torch.Generator().manual_seed(seed + 1))
    loss = losses[variant]
    optimizers = model.configure_optimizers().optimizers

    def step() -> torch.Tensor:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        for opt in optimizers:
            opt.step()
        return value.detach()

    return step, loss


def variants(plugin: str) -> tuple[str, ...]:
    return ("vpkit",) if plugin == "srvp" else ("vpkit", "reference")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib(variant: str, args: argparse.Namespace) -> float:
    """Max RSS of a fresh process that builds `variant` and runs one training step."""
    cmd = [sys.executable, __file__, "--plugin", args.plugin, "--memory-of", variant, "--batch-size", str(args.batch_size),
           "--device", args.device, "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["max_rss_mib"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugin", choices=sorted(CASES), default="svg", help="which model plugin's preset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before timing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--memory-of", choices=("vpkit", "reference"), help=argparse.SUPPRESS)  # internal: one step, print RSS
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.memory_of:
        step, _ = build(args.plugin, args.memory_of, device, args.batch_size, args.seed)
        step()
        print(json.dumps({"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return

    from torch.utils.flop_counter import FlopCounterMode

    # First, while this process is small: a child's max RSS starts from its parent's size at fork.
    names = variants(args.plugin)
    rss = {variant: peak_rss_mib(variant, args) for variant in names}
    runs = {variant: build(args.plugin, variant, device, args.batch_size, args.seed) for variant in names}
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
    times: dict[str, list[float]] = {v: [] for v in names}
    last_loss = {}
    for _ in range(args.steps):
        for variant, (step, _) in runs.items():
            sync(device)
            start = time.perf_counter()
            last_loss[variant] = step()
            sync(device)
            times[variant].append(time.perf_counter() - start)

    print(f"{CASES[args.plugin][1]}, batch {args.batch_size}, device {args.device}, "
          f"{torch.get_num_threads()} CPU threads, median of {args.steps} alternating steps after {args.warmup} "
          f"warm-up")
    header = ["videos/s", "ms/step", "GFLOP/step", "GFLOP/s", "max RSS MiB"]
    if cuda_peak:
        header.append("CUDA peak MiB")
    print(f"{'':<10}" + "".join(f"{h:>15}" for h in header))
    for variant in names:
        seconds = statistics.median(times[variant])
        row = [args.batch_size / seconds, 1000 * seconds, flops[variant] / 1e9, flops[variant] / seconds / 1e9,
               rss[variant]]
        if cuda_peak:
            row.append(cuda_peak[variant])
        print(f"{variant:<10}" + "".join(f"{value:>15.2f}" for value in row))
    if "reference" not in names:
        print(f"loss at the last step: {float(last_loss['vpkit']):.6f} (no one-frame-at-a-time official loop to "
              "compare with: the official code batches frames as vpkit does)")
        return
    speedup = statistics.median(times["reference"]) / statistics.median(times["vpkit"])
    print(f"speed-up vpkit / reference: {speedup:.2f}x; the reference does "
          f"{flops['reference'] / flops['vpkit']:.2f}x the FLOPs per step")
    print(f"loss at the last step: vpkit {float(last_loss['vpkit']):.6f}, "
          f"reference {float(last_loss['reference']):.6f}")


if __name__ == "__main__":
    main()
