"""Inference latency of SVG-LP (SM-MNIST recipe) on eager PyTorch vs its ONNX Runtime export (and TensorRT / ORT-CUDA
where available), through `vpkit.engine.benchmark` — the same code as `vpkit benchmark`.

The goal from the export issue: on a 2-core CPU, batch 1, 5 context -> 10 predicted frames, ONNX Runtime at most 0.5x
the eager latency. Latency does not depend on the weights' values, so without `--checkpoint` a freshly initialised
SVG-LP smmnist model is saved to a scratch checkpoint first.

    python benchmarks/export_latency.py                      # CPU, batches 1 and 16
    python benchmarks/export_latency.py --device cuda --half --compile
    python benchmarks/export_latency.py --checkpoint runs/svg-smmnist/checkpoints/best
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

os.environ.setdefault("VPKIT_LOAD_PLUGINS", "svg")


def scratch_checkpoint(directory: Path) -> Path:
    from vpkit.core.checkpoint import plugin_section, save_checkpoint
    from vpkit.core.plugins import get_host

    spec = get_host().models.get("svg-lp")
    preset = spec.presets["smmnist"]
    torch.manual_seed(0)
    model = spec.build(spec.config_cls(**dict(preset.model)), preset.frame_shape)
    data = {"name": preset.dataset, "config": dict(preset.data), "frame_shape": list(preset.frame_shape),
            "n_context": 5, "n_future": 10}
    return save_checkpoint(directory / "svg-lp-smmnist", model, model_key="svg-lp", plugin=plugin_section("svg"),
                           data=data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: fresh SVG-LP smmnist)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--half", action="store_true", help="also fp16 exports (CUDA)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from vpkit.engine.benchmark import benchmark, rows_as_dicts

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or scratch_checkpoint(Path(tmp))
        rows = benchmark(checkpoint, batches=[int(b) for b in args.batches.split(",")], horizon=10, n_context=5,
                         device=args.device, half=args.half, compile=args.compile, runs=args.runs,
                         on_stage=lambda s: print(f"... {s}", flush=True))
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'backend':14} {'prec':5} {'batch':>5} {'ms/frame':>9} {'frames/s':>9} {'peak MiB':>9} {'vs eager':>9}"
          f" {'parity':>9}")
    for row in rows:
        if row.status != "ok":
            print(f"{row.backend:14} {row.precision:5} {'-':>5} {row.status}: {row.detail['reason']}")
            continue
        parity = f"{row.parity_max_abs:.1e}" if row.parity_max_abs is not None else "ref"
        print(f"{row.backend:14} {row.precision:5} {row.batch:5d} {row.latency_ms_per_frame:9.2f} "
              f"{row.throughput_fps:9.1f} {row.peak_memory_mib:9.0f} {row.speedup_vs_eager or 0:8.2f}x {parity:>9}")
    by = {(r.backend, r.precision, r.batch): r for r in rows if r.status == "ok"}
    eager, ort = by.get(("torch", "fp32", 1)), by.get(("onnx", "fp32", 1))
    if eager and ort:
        ratio = ort.latency_ms_per_frame / eager.latency_ms_per_frame
        print(f"\nONNX Runtime / eager latency at batch 1: {ratio:.2f} (goal <= 0.5)")
    print(json.dumps(rows_as_dicts(rows)))


if __name__ == "__main__":
    main()
