"""RIVER sampling speed at the BAIR-64 settings: seconds per generated frame, and FLOPs per function evaluation.

The model is the official BAIR-64 one with random weights (nothing is downloaded): the 98.08 M-parameter vector
field on 4x8x8 latents (65 tokens) and the `f8_small` VQGAN (63.78 M; `--autoencoder vqvae` for the authors' small
VQVAE instead), 64x64 RGB frames, one context frame. Each setting generates `--frames` frames for a batch of
`--batch` videos through the model's own rollout (encode the context, integrate the ODE frame by frame with the
conditioning frame redrawn at every evaluation, decode), timed with the clock after a warm-up.

Settings: Euler with 10, 25 and 100 grid points and RK4 with 100 (as released: 396 function evaluations per
frame), each from noise (s = 0) and with the paper's warm start (`--warm-start`, default 0.1: the ODE starts at
t = s from the previous latent mixed with noise, int((1 - s) steps) grid points). On a CPU the long settings take
minutes per frame, so settings with more than `--max-evals` evaluations per frame (default 100) are not run whole:
their time is a line `fixed + per_eval x evaluations` fitted to the settings that did run whole (or, with only one
of those, the separately timed single evaluation and encode/decode), and the row says "estimated" (`--max-evals 0`
runs everything). The whole runs are timed as the fastest of `--repeat` rounds, the settings taken in turn within a round so that load
from other work on a shared machine hits them alike.

Beside each rate: FLOPs of one vector-field evaluation (torch.utils.flop_counter, per video; the counter counts
matmuls and convolutions, 2 FLOPs per multiply-add), of decoding one frame, and the FLOP rate achieved.

    python benchmarks/river.py --quick                          # batch 1, 1 frame, a minute or two on a CPU
    python benchmarks/river.py --batch 1 8 --frames 2           # the issue's table on the CPU
    python benchmarks/river.py --device cuda --dtype bf16 --batch 1 8 --frames 15 --max-evals 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode
from vpkit_river.config import RiverConfig
from vpkit_river.model import River

from vpkit.core.model import TorchBackend

FRAME = (3, 64, 64)
SETTINGS = [("euler", 10), ("euler", 25), ("euler", 100), ("rk4", 100)]


@dataclass
class Row:
    solver: str
    steps: int
    warm_start: float
    batch: int
    evaluations: int
    seconds_per_frame: float  # wall time to add one frame to every video of the batch
    seconds_per_video_frame: float
    measured: str  # "full" (rollout timed) or "estimated" (evaluations x measured evaluation time + codec share)
    gflop_per_evaluation: float  # per video
    gflop_decode: float  # per video frame
    achieved_gflops: float


def build(autoencoder: str, tiny: bool = False) -> River:
    """The official BAIR-64 RIVER with random weights (eval mode)."""
    fields: dict = {"n_context": 1, "n_future": 15}
    if tiny:
        from vpkit_river.plugin import RIVER_PRESETS

        fields = {**RIVER_PRESETS["tiny"].model, **fields}
    elif autoencoder == "f8_small":
        from vpkit_river.vqgan_config import VQGANConfig
        from vpkit_river.vqgan_presets import F8_SMALL

        fields["vqgan"] = VQGANConfig(**F8_SMALL)
    torch.manual_seed(0)
    return River(RiverConfig(**fields), FRAME).eval()


class Clock:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--frames", type=int, default=1, help="frames generated per timed rollout")
    parser.add_argument("--warm-start", type=float, default=0.1, help="the warm-start time s of the warm rows")
    parser.add_argument("--max-evals", type=int, default=100, help="run settings up to this many evaluations per "
                        "frame whole; estimate the others from a line fitted to those (0: run all)")
    parser.add_argument("--evals", type=int, default=5, help="timed single evaluations for the per-evaluation time "
                        "(their median)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of timed rollouts over the whole settings (the "
                        "fastest of each setting counts: on a shared machine the others are slowed by other work)")
    parser.add_argument("--autoencoder", choices=["f8_small", "vqvae"], default="f8_small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: autocast (weights stay fp32), as vpkit's bf16 precision")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="batch 1, 1 frame, Euler 10 and 25 whole, the rest "
                        "estimated")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--tiny", action="store_true", help="the plugin's tiny preset instead (a smoke test of this "
                        "script, not a measurement)")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.frames, args.max_evals = [1], 1, 25
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bf16" else nullcontext
    clock = Clock(device)
    model = build(args.autoencoder, args.tiny).to(device)
    base_config = model.config
    vf_params = sum(p.numel() for p in model.vector_field_regressor.parameters())
    ae_params = sum(p.numel() for p in model.ae.parameters())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at start"
    what = "tiny preset" if args.tiny else args.autoencoder
    print(f"RIVER BAIR-64: vector field {vf_params:,} + {what} {ae_params:,} parameters, latents "
          f"{tuple(model.latent_shape)}; {where}; {args.dtype}; torch {torch.__version__}")

    rows: list[Row] = []
    with torch.no_grad(), autocast():
        backend = TorchBackend(model.export_plan())
        latent = torch.randn(1, *model.latent_shape, device=device)
        evaluation = {"state": latent, "reference": latent, "conditioning": latent,
                      "distance": torch.ones(1, device=device), "time": torch.full((1,), 0.5, device=device)}
        flops_eval = count_flops(lambda: backend.run("vector_field", evaluation))
        flops_decode = count_flops(lambda: backend.run("decode", {"latents": latent}))
        for batch in args.batch:
            gen = torch.Generator().manual_seed(batch)
            context = torch.rand(batch, 1, *FRAME, generator=gen).to(device)
            inputs = {k: v.expand(batch, *v.shape[1:]).contiguous() for k, v in evaluation.items()}
            backend.run("vector_field", inputs)  # warm-up
            times = []
            for _ in range(args.evals):
                start = clock()
                backend.run("vector_field", inputs)
                times.append(clock() - start)
            t_eval = statistics.median(times)
            codec_start = clock()  # encode the context + decode the frames: the per-frame codec share
            latents = backend.run("encode", {"frames": context[:, 0]})["latents"]
            backend.run("decode", {"latents": latents.expand(batch, *latents.shape[1:]).repeat(args.frames, 1, 1, 1)})
            t_codec = (clock() - codec_start) / args.frames
            settings = [(solver, steps, warm) for warm in (0.0, args.warm_start) for solver, steps in SETTINGS]
            whole = []  # settings run whole, timed round-robin so that load from other work hits them alike
            for solver, steps, warm in settings:
                config = base_config.model_copy(update={"solver": solver, "steps": steps, "warm_start": warm})
                if not args.max_evals or config.evaluations_per_frame <= args.max_evals:
                    whole.append(((solver, steps, warm), config))
            runs: dict[tuple, list[float]] = {key: [] for key, _ in whole}
            for _ in range(args.repeat):
                for key, config in whole:
                    model.config = config
                    noise = model.sample_noise(batch, 1, args.frames, generator=torch.Generator().manual_seed(0),
                                               device=device)
                    start = clock()
                    model.rollout(backend, context, args.frames, noise)
                    runs[key].append((clock() - start) / args.frames)
            measured = {key: (config.evaluations_per_frame, min(runs[key])) for key, config in whole}
            # seconds per frame = fixed + per_eval x evaluations, fitted to the whole runs when they differ in
            # evaluations (consistent with them), else from the separately timed evaluation and codec
            points = sorted(set(measured.values()))
            if len({n for n, _ in points}) >= 2:
                n_mean = statistics.fmean(n for n, _ in points)
                t_mean = statistics.fmean(t for _, t in points)
                per_eval = (sum((n - n_mean) * (t - t_mean) for n, t in points)
                            / sum((n - n_mean) ** 2 for n, _ in points))
                fixed, basis = t_mean - per_eval * n_mean, "fit to the whole runs"
            if len({n for n, _ in points}) < 2 or per_eval <= 0 or fixed < 0:  # too few or too noisy whole runs
                per_eval, fixed, basis = t_eval, t_codec, "single evaluation + codec timed apart"
            for solver, steps, warm in settings:
                model.config = base_config.model_copy(update={"solver": solver, "steps": steps, "warm_start": warm})
                evaluations = model.config.evaluations_per_frame
                if (solver, steps, warm) in measured:
                    seconds, how = measured[(solver, steps, warm)][1], "full"
                else:
                    seconds, how = fixed + per_eval * evaluations, "estimated"
                flop = batch * (evaluations * flops_eval + flops_decode)
                rows.append(Row(solver, steps, warm, batch, evaluations, seconds, seconds / batch, how,
                                flops_eval / 1e9, flops_decode / 1e9, flop / seconds / 1e9))
                r = rows[-1]
                print(f"{solver:5s} {steps:3d} pts  s={warm:.2f}  batch {batch}  {evaluations:3d} evals/frame  "
                      f"{r.seconds_per_frame:9.3f} s/frame  {r.seconds_per_video_frame:9.3f} s/video-frame  "
                      f"{r.measured:9s}  {r.gflop_per_evaluation:.2f} GFLOP/eval  {r.achieved_gflops:8.1f} GFLOP/s",
                      flush=True)
            print(f"batch {batch}: estimates = {fixed:.3f} s + {per_eval * 1e3:.1f} ms x evaluations ({basis})",
                  flush=True)
            print(f"batch {batch}: one evaluation {t_eval * 1e3:.1f} ms (median of {args.evals}); encode+decode "
                  f"{t_codec * 1e3:.1f} ms per frame (decode {flops_decode / 1e9:.2f} GFLOP per video frame)",
                  flush=True)
    if device.type == "cpu":
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": where, "dtype": args.dtype, "autoencoder": args.autoencoder,
                       "rows": [asdict(r) for r in rows]}, fh, indent=1)


if __name__ == "__main__":
    main()
