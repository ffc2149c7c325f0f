"""`vpkit benchmark`: latency, throughput and peak memory per backend and precision, parity beside them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vpkit.cli.console import console, err_console, print_json
from vpkit.core.errors import VpkitError


def _batches(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise VpkitError(f"--batches takes comma-separated integers (e.g. 1,16); got '{text}'.") from None
    if not values or min(values) < 1:
        raise VpkitError(f"--batches needs positive batch sizes; got '{text}'.")
    return values


def benchmark_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint directory to export and time."),
    formats: list[str] = typer.Option(None, "--format", "-f", help="Export formats to time (repeatable; "
                                      "default: every registered one, skipped with the reason where unavailable)."),
    batches: str = typer.Option("1,16", "--batches", help="Batch sizes, comma-separated."),
    horizon: int = typer.Option(None, "--horizon", help="Predicted frames per rollout (default: the training "
                                "horizon)."),
    context: int = typer.Option(None, "--context", help="Context frames (default: the model's)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    half: bool = typer.Option(False, "--half", help="Also time fp16 exports (needs --device cuda)."),
    compile: bool = typer.Option(False, "--compile", help="Also time torch.compile'd eager graphs."),
    runs: int = typer.Option(10, "--runs", help="Timed rollouts per row (the median is reported)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed rollouts before timing."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Export CHECKPOINT to each available format (parity-checked) and time a rollout on every backend: ms per
    predicted frame, predicted frames/s, peak memory, speed-up over eager PyTorch. Figures are for this machine;
    nothing here is a pass/fail test."""
    from vpkit.engine.benchmark import benchmark, rows_as_dicts

    sizes = _batches(batches)
    if as_json:
        rows = benchmark(checkpoint, formats=formats, batches=sizes, horizon=horizon, n_context=context,
                         device=device, half=half, compile=compile, runs=runs, warmup=warmup)
        print_json(rows_as_dicts(rows))
        return
    with err_console.status("benchmarking") as status:
        rows = benchmark(checkpoint, formats=formats, batches=sizes, horizon=horizon, n_context=context,
                         device=device, half=half, compile=compile, runs=runs, warmup=warmup,
                         on_stage=lambda s: status.update(s))
    table = Table(title=f"{checkpoint} on {device}", title_justify="left")
    for name, justify in (("backend", "left"), ("precision", "left"), ("batch", "right"),
                          ("ms / frame", "right"), ("frames/s", "right"), ("peak MiB", "right"),
                          ("vs eager", "right"), ("parity max|Δ|", "right")):
        table.add_column(name, justify=justify)
    for row in rows:
        if row.status != "ok":
            table.add_row(row.backend, row.precision, "-", f"[yellow]{row.status}[/]: {row.detail['reason']}",
                          "", "", "", "")
            continue
        table.add_row(row.backend, row.precision, str(row.batch), f"{row.latency_ms_per_frame:.2f}",
                      f"{row.throughput_fps:.1f}", f"{row.peak_memory_mib:.0f}",
                      f"{row.speedup_vs_eager:.2f}×" if row.speedup_vs_eager else "",
                      f"{row.parity_max_abs:.1e}" if row.parity_max_abs is not None else "(reference)")
    console.print(table)
