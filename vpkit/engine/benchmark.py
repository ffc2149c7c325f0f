"""`vpkit benchmark`: latency, throughput and peak memory of one checkpoint on every backend it can run on.

Each export format is exported (with its parity check) into a scratch folder, loaded as a `Runtime`, and timed on
the same rollout: `n_context` context frames, `horizon` predicted frames, one noise draw per video. Every row runs in
a fresh worker process. Latency is the median wall time of a rollout divided by `horizon` (ms per predicted frame,
for the whole batch); throughput is predicted frames per second over the batch. Peak memory is the worker's peak:
host RSS on the CPU (Python, torch and the runtime included), device memory the worker added on a GPU.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vpkit.core.checkpoint import read_checkpoint
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.exporter import export_model
from vpkit.engine.runtime import (
    TORCH,
    Runtime,
    load_runtime,
    resolve_device,
    resolve_format,
)


@dataclass
class Row:
    """One backend × precision × batch measurement (or why it was skipped)."""

    backend: str
    precision: str
    batch: int
    latency_ms_per_frame: float | None = None
    throughput_fps: float | None = None
    peak_memory_mib: float | None = None
    parity_max_abs: float | None = None
    speedup_vs_eager: float | None = None
    status: str = "ok"
    detail: dict[str, Any] = field(default_factory=dict)


def time_rollout(runtime: Runtime, batch: int, n_context: int, horizon: int, runs: int, warmup: int) -> float:
    """Median seconds of one rollout of `batch` videos (after `warmup` untimed ones)."""
    model = runtime.model
    context = torch.rand(batch, n_context, *runtime.frame_shape, generator=torch.Generator().manual_seed(0))
    context = context.to(runtime.device)
    noise = model.sample_noise(batch, n_context, horizon, generator=torch.Generator().manual_seed(1),
                               device=runtime.device)
    sync = (lambda: torch.cuda.synchronize(runtime.device)) if runtime.device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            sync()
            start = time.perf_counter()
            model.rollout(runtime.backend, context, horizon, noise)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def _device_used(device: torch.device) -> int:
    free, total = torch.cuda.mem_get_info(device)
    return total - free


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One row, in a fresh process: load the runtime, time it, report the process's peak memory (host RSS; on a
    GPU the device memory this process added, CUDA context included)."""
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    base = _device_used(device) if device.type == "cuda" else 0
    runtime = load_runtime(job["path"], backend=job["backend"], device=device, compile=job["compile"])
    peak = [0]
    stop = threading.Event()

    def sample() -> None:  # device memory outside torch's allocator (ORT, TensorRT) is only seen by polling
        while not stop.wait(0.005):
            peak[0] = max(peak[0], _device_used(device) - base)

    sampler = threading.Thread(target=sample, daemon=True) if device.type == "cuda" else None
    seconds = time_rollout(runtime, job["batch"], job["n_context"], job["horizon"], job["runs"], job["warmup"])
    if sampler is not None:  # memory in an extra rollout: the polling thread would skew the timings
        sampler.start()
        time_rollout(runtime, job["batch"], job["n_context"], job["horizon"], 1, 0)
        stop.set()
        sampler.join()
        memory = max(peak[0], torch.cuda.max_memory_allocated(device))
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"seconds": seconds, "peak_memory_mib": memory / 2**20}


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    """`worker(job)` in a fresh Python process (so rows do not share allocators, thread pools or caches)."""
    proc = subprocess.run([sys.executable, "-m", "vpkit.engine.benchmark", json.dumps(job)], capture_output=True,
                          text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VpkitError(f"benchmark worker for {job['backend']} at batch {job['batch']} failed: {detail}")
    return json.loads(lines[-1])


def benchmark(
    checkpoint: Path | str,
    *,
    formats: Sequence[str] | None = None,
    batches: Sequence[int] = (1, 16),
    horizon: int | None = None,
    n_context: int | None = None,
    device: str | None = "cpu",
    half: bool = False,
    compile: bool = False,
    runs: int = 10,
    warmup: int = 2,
    work_dir: Path | None = None,
    on_row: Callable[[Row], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> list[Row]:
    """Measure `checkpoint` on eager PyTorch (and `torch.compile` when asked) and on every available export format
    (all registered ones by default), fp32 and, with `half`, fp16. Formats that cannot run here give a skipped row
    with the reason."""
    stage = on_stage or (lambda _: None)
    emit = on_row or (lambda _: None)
    checkpoint = Path(checkpoint)
    meta = read_checkpoint(checkpoint).meta
    if "export" in meta:
        raise VpkitError(f"{checkpoint} is an export; benchmark the checkpoint it came from.")
    dev = resolve_device(device)
    if runs < 1 or warmup < 0 or not batches or min(batches) < 1:
        raise VpkitError("--runs must be at least 1, --warmup at least 0, and every batch size at least 1.")
    n_context = int(n_context or meta["data"]["n_context"])
    horizon = int(horizon or meta["data"]["n_future"])
    names = list(formats) if formats else get_host().exporters.names()
    rows: list[Row] = []
    eager: dict[int, float] = {}

    def measure(path: Path, backend: str, label: str, precision: str, parity: float | None,
                compiled: bool = False) -> None:
        for batch in batches:
            stage(f"timing {label} {precision} at batch {batch}")
            job = {"path": str(path), "backend": backend, "device": str(dev), "compile": compiled, "batch": batch,
                   "n_context": n_context, "horizon": horizon, "runs": runs, "warmup": warmup,
                   "threads": torch.get_num_threads()}
            result = run_worker(job)
            seconds = result["seconds"]
            row = Row(label, precision, batch, latency_ms_per_frame=1000 * seconds / horizon,
                      throughput_fps=batch * horizon / seconds, peak_memory_mib=result["peak_memory_mib"],
                      parity_max_abs=parity)
            if label == TORCH:
                eager.setdefault(batch, seconds)
            if batch in eager:
                row.speedup_vs_eager = eager[batch] / seconds
            rows.append(row)
            emit(row)

    measure(checkpoint, TORCH, TORCH, "fp32", None)
    if compile:
        measure(checkpoint, TORCH, "torch-compile", "fp32", None, compiled=True)

    with tempfile.TemporaryDirectory(dir=work_dir, prefix="vpkit-benchmark-") as scratch:
        for name in names:
            spec = resolve_format(name)
            for precision in ("fp32", "fp16") if half else ("fp32",):
                reason = spec.available()
                if reason is None and spec.gpu and dev.type != "cuda":
                    reason = f"{spec.name} needs --device cuda"
                if reason is None and precision == "fp16" and dev.type != "cuda":
                    reason = "fp16 export needs --device cuda"
                if reason is not None:
                    row = Row(spec.name, precision, 0, status="skipped", detail={"reason": reason})
                    rows.append(row)
                    emit(row)
                    continue
                stage(f"exporting to {spec.name} {precision} (with its parity check)")
                options: dict[str, Any] = {"batch": max(batches), "device": str(dev)}
                if precision == "fp16":
                    options["half"] = True
                try:
                    result = export_model(checkpoint, spec.name, out=Path(scratch) / f"{spec.name}-{precision}",
                                          options=options)
                except VpkitError as exc:
                    row = Row(spec.name, precision, 0, status="failed", detail={"reason": str(exc)})
                    rows.append(row)
                    emit(row)
                    continue
                measure(result.path, spec.name, spec.name, precision, result.parity["max_abs_error"])
    return rows


def rows_as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
