"""`vpkit benchmark`: latency, throughput and peak memory of one checkpoint on every backend it can run on.

Each export format is exported (with its parity check) into a scratch folder, loaded as a `Runtime`, and timed on
the same rollout: `n_context` context frames, `horizon` predicted frames, one noise draw per video. Latency is the
median wall time of a rollout divided by `horizon` (ms per predicted frame, for the whole batch); throughput is
predicted frames per second over the batch. Peak memory is the high-water mark above the level before the row
(process RSS on the CPU; device memory in use on a GPU).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _page_size()
    except OSError:  # not Linux: the peak since process start is the best we have
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device, interval: float = 0.002) -> Iterator[Callable[[], float]]:
    """Track the high-water mark of memory in use above the level at entry; yields a function returning MiB."""
    cuda = device.type == "cuda"

    def used() -> int:
        if cuda:
            free, total = torch.cuda.mem_get_info(device)
            return total - free
        return _rss_bytes()

    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = used()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], used())
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()

    def result() -> float:
        extra = peak[0] - base
        if cuda:  # the caching allocator's own peak catches spikes between samples
            extra = max(extra, torch.cuda.max_memory_allocated(device) - torch.cuda.memory_allocated(device))
        return max(extra, 0) / 2**20

    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], used())


def time_rollout(runtime: Runtime, batch: int, n_context: int, horizon: int, runs: int, warmup: int
                 ) -> tuple[float, float]:
    """Median seconds of one rollout of `batch` videos, and the peak memory (MiB) of one more rollout."""
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
        # Memory in a separate rollout: the sampling thread competes for the GIL and would skew the timings.
        with peak_memory(runtime.device) as peak:
            model.rollout(runtime.backend, context, horizon, noise)
            sync()
    return statistics.median(times), peak()


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

    def measure(runtime: Runtime, backend: str, precision: str, parity: float | None) -> None:
        for batch in batches:
            stage(f"timing {backend} {precision} at batch {batch}")
            seconds, memory = time_rollout(runtime, batch, n_context, horizon, runs, warmup)
            row = Row(backend, precision, batch, latency_ms_per_frame=1000 * seconds / horizon,
                      throughput_fps=batch * horizon / seconds, peak_memory_mib=memory, parity_max_abs=parity)
            if backend == "torch":
                eager.setdefault(batch, seconds)
            if batch in eager:
                row.speedup_vs_eager = eager[batch] / seconds
            rows.append(row)
            emit(row)

    stage("loading the checkpoint")
    measure(load_runtime(checkpoint, device=dev), TORCH, "fp32", None)
    if compile:
        stage("compiling with torch.compile")
        measure(load_runtime(checkpoint, device=dev, compile=True), "torch-compile", "fp32", None)

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
                runtime = load_runtime(result.path, device=dev)
                measure(runtime, spec.name, precision, result.parity["max_abs_error"])
    return rows


def rows_as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
