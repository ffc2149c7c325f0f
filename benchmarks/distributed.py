"""Data-parallel scaling: SVG-LP smmnist training steps/s with 1 process and with N gloo (CPU) or nccl (GPU) processes.

Each variant is a real `vpkit train --plugin svg` run on the embedded Moving MNIST with the same global batch (so the
same videos per step); the rate is read from the run's metrics.jsonl (training time only: validation, sample grids
and checkpoints are moved past the timed steps), skipping the first `--warmup` steps. On a CPU the processes share
the machine's cores: 1 process uses all of them as torch threads, N processes get cores/N threads each, so the
figure is the cost of data parallelism at equal hardware, not a speed-up from more hardware.

    python benchmarks/distributed.py                      # 1 vs 2 processes, CPU, batch 16, 12 steps
    python benchmarks/distributed.py --processes 4 --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def rate(out: Path, warmup: int) -> float:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["split"] == "train" and line["step"] > warmup]
    first, last = train[0], train[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def run(processes: int, args: argparse.Namespace, work: Path) -> float:
    out = work / f"p{processes}"
    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}
    cores = os.cpu_count() or 1
    env["OMP_NUM_THREADS"] = str(max(cores // processes, 1))
    never = str(args.steps * 10)
    command = [sys.executable, "-m", "vpkit", "train", "--plugin", "svg", "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--out", str(out), "--device", args.device,
               "--set", "train.log_every=1", "--set", f"train.val_every={never}",
               "--set", f"train.sample_every={never}", "--set", f"train.checkpoint_every={never}",
               "--set", "train.val_videos=2", "--metrics", "psnr", "--set", "train.val_metric=psnr"]
    if processes > 1:
        command += ["--devices", str(processes)]
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    return rate(out, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (split over the processes)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args, Path(tmp))
        many = run(args.processes, args, Path(tmp))
    print(f"SVG-LP smmnist, global batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), "
          f"device {args.device}, {os.cpu_count()} CPU cores")
    print(f"{'processes':>10}{'steps/s':>12}{'videos/s':>12}")
    for count, value in ((1, one), (args.processes, many)):
        print(f"{count:>10}{value:>12.3f}{value * args.batch_size:>12.1f}")
    print(f"{args.processes} processes / 1 process: {many / one:.2f}x at equal hardware")


if __name__ == "__main__":
    main()
