"""DDLP training step: time and peak memory of vpkit's DDLP, whole-batch (as official) and with `memory_chunk`
(stages run a few images at a time and recomputed in the backward pass: same loss and gradients), against the
official `ObjectDynamicsDLP` on the same weights and clip when an official checkout is given.

The official code and vpkit both track particles with a per-frame loop (T+1 encoder calls per clip: the official
`fg_sequential_opt` structure) and decode every frame's particles as full-resolution canvases; `vpkit` is that
structure, `official` the official classes themselves, `chunked` vpkit with `memory_chunk`.

A step is forward, loss, backward and Adam, in the normal phase (after warm-up). Timing alternates the variants step by
step in one process and reports medians. Peak host memory (max RSS) is measured in a fresh process per variant
running one step; on CUDA the peak allocated memory is measured per variant in this process.

    python benchmarks/ddlp.py                                  # obj3d128 preset, batch 4, 10+1 frames, MSE
    python benchmarks/ddlp.py --official /path/to/taldatech/ddlp
    python benchmarks/ddlp.py --batch-size 2 --frames 6 --steps 1   # smaller, for a slow CPU
    python benchmarks/ddlp.py --rec vgg                        # the preset's VGG loss (random VGG16 weights)

`--frames F` trains on clips of F frames (timestep_horizon F - 1); the preset is 11. With `--rec vgg` the official
variant is left out (its VGG needs torchvision's download).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

VARIANTS = ("official", "vpkit", "chunked")


def config(args: argparse.Namespace, chunk: int, vgg_file: str | None):
    from vpkit_ddlp.config import DDLPConfig
    from vpkit_ddlp.plugin import DDLP_PRESETS

    horizon = args.frames - 1
    fields = {**DDLP_PRESETS["obj3d128"].model, "timestep_horizon": horizon, "n_context": horizon, "n_future": 1,
              "num_static_frames": min(4, args.frames), "recon_loss_type": args.rec, "vgg_weights": vgg_file,
              "memory_chunk": chunk}
    return DDLPConfig(**fields)


def official_models(path: str):
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # imported by the official utils, unused by the models
    sys.path.insert(0, path)
    try:
        import models
    finally:
        sys.path.remove(path)
    return models


def build(variant: str, args: argparse.Namespace, device: torch.device) -> tuple[Callable[[], torch.Tensor], str]:
    """`(step, description)` for one variant: same initial weights, clip and random draws for every variant."""
    from vpkit_ddlp.ddlp import DDLP
    from vpkit_ddlp.objective import Phase

    chunk = args.chunk if variant == "chunked" else 0
    torch.manual_seed(args.seed)
    c = config(args, chunk, args.vgg_file)
    model = DDLP(c, (3, 128, 128)).to(device).train()
    video = torch.rand(args.batch_size, args.frames, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    video = video.to(device)
    phase = Phase(False, False, 2)
    discount = model.discount(10 * c.epoch_steps, device, video.dtype)
    tau = c.num_static_frames
    if variant == "official":
        ref = official_models(args.official).ObjectDynamicsDLP(
            cdim=3, image_size=128, timestep_horizon=c.timestep_horizon, predict_delta=c.predict_delta,
            pint_layers=c.pint_layers, pint_heads=c.pint_heads, pint_dim=c.pint_dim,
            **{name: getattr(c, name) for name in (
                "enc_channels", "prior_channels", "patch_size", "n_kp_prior", "n_kp_enc", "learned_feature_dim",
                "anchor_s", "scale_std", "offset_std", "use_correlation_heatmaps", "filtering_heuristic")})
        ref.load_state_dict(model.state_dict())
        model = ref.to(device).train()

        def loss() -> torch.Tensor:
            out = ref(video, x_prior=video, warmup=False, noisy=False, num_static_frames=tau)
            return ref.calc_elbo(video, out, warmup=False, beta_kl=c.beta_kl, beta_dyn=c.beta_dyn,
                                 kl_balance=c.kl_balance, dynamic_discount=discount, beta_dyn_rec=c.beta_dyn_rec,
                                 num_static=tau, noisy=False)["loss"]
    else:
        def loss() -> torch.Tensor:
            out = model.forward_video(video, phase=phase)
            return model.loss(video, out, phase, discount)["loss"]

    opt = torch.optim.Adam(model.parameters(), lr=c.lr, betas=tuple(c.adam_betas), eps=c.adam_eps)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        torch.manual_seed(args.seed + 2)
        value = loss()
        value.backward()
        opt.step()
        return value.detach()

    return step, ("official ObjectDynamicsDLP" if variant == "official" else
                  f"vpkit DDLP, memory_chunk {chunk}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child_args(args: argparse.Namespace) -> list[str]:
    out = ["--batch-size", str(args.batch_size), "--frames", str(args.frames), "--rec", args.rec, "--chunk",
           str(args.chunk), "--device", args.device, "--seed", str(args.seed)]
    if args.official:
        out += ["--official", args.official]
    if args.vgg_file:
        out += ["--vgg-file", args.vgg_file]
    if args.threads:
        out += ["--threads", str(args.threads)]
    return out


def peak_rss_mib(variant: str, args: argparse.Namespace) -> tuple[float, float]:
    """(max RSS MiB, loss) of a fresh process that builds `variant` and runs one training step."""
    cmd = [sys.executable, __file__, "--memory-of", variant, *child_args(args)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return float(row["max_rss_mib"]), float(row["loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--frames", type=int, default=11, help="clip length T+1 (preset: 11)")
    parser.add_argument("--rec", choices=("mse", "vgg"), default="mse", help="reconstruction loss")
    parser.add_argument("--chunk", type=int, default=4, help="memory_chunk of the chunked variant (images)")
    parser.add_argument("--official", default=os.environ.get("VPKIT_DDLP_OFFICIAL"),
                        help="official taldatech/ddlp checkout (default: $VPKIT_DDLP_OFFICIAL)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant before timing")
    parser.add_argument("--no-timing", action="store_true", help="peak memory only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--vgg-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one step, print RSS
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.environ.setdefault("VPKIT_LOAD_PLUGINS", "ddlp")

    if args.memory_of:
        step, _ = build(args.memory_of, args, device)
        value = step()
        print(json.dumps({"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "loss": float(value)}))
        return

    tmp = None
    if args.rec == "vgg" and args.vgg_file is None:  # same compute as the ImageNet weights; never downloaded
        from torchvision.models import vgg16

        tmp = tempfile.TemporaryDirectory()
        args.vgg_file = str(Path(tmp.name) / "vgg16-random.pth")
        torch.save(vgg16(weights=None).state_dict(), args.vgg_file)
    names = [v for v in VARIANTS if v != "official" or (args.official and args.rec == "mse")]
    # First, while this process is small: a child's max RSS starts from its parent's size at fork.
    memory = {variant: peak_rss_mib(variant, args) for variant in names}
    print(f"DDLP obj3d128 preset (128x128, K 12, PINT 6x256), batch {args.batch_size}, {args.frames} frames, "
          f"{args.rec.upper()} loss, device {args.device}, {torch.get_num_threads()} CPU threads")
    times: dict[str, list[float]] = {v: [] for v in names}
    cuda_peak: dict[str, float] = {}
    if not args.no_timing:
        runs = {variant: build(variant, args, device)[0] for variant in names}
        for variant, step in runs.items():
            if device.type == "cuda":
                sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                step()
                sync(device)
                cuda_peak[variant] = torch.cuda.max_memory_allocated(device) / 2**20
            for _ in range(args.warmup):
                step()
        for _ in range(args.steps):
            for variant, step in runs.items():
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                times[variant].append(time.perf_counter() - start)
        print(f"median of {args.steps} alternating steps after {args.warmup} warm-up")
    header = ["s/step", "max RSS MiB", "loss (step 1)"] + (["CUDA peak MiB"] if cuda_peak else [])
    print(f"{'':<10}" + "".join(f"{h:>16}" for h in header))
    for variant in names:
        seconds = statistics.median(times[variant]) if times[variant] else float("nan")
        row = [seconds, memory[variant][0], memory[variant][1]] + ([cuda_peak[variant]] if cuda_peak else [])
        print(f"{variant:<10}" + "".join(f"{value:>16.4f}" if i == 2 else f"{value:>16.2f}"
                                         for i, value in enumerate(row)))
    base = memory["vpkit"][0]
    print(f"chunked / vpkit peak RSS: {memory['chunked'][0] / base:.3f} ({base / memory['chunked'][0]:.2f}x lower)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
