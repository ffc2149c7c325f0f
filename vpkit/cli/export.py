"""`vpkit export`: a checkpoint to ONNX or TensorRT graphs, checked against eager PyTorch before anything is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vpkit.cli.console import console, err_console, print_json


def export_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint directory (e.g. runs/svg-smmnist/checkpoints/best)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx, or trt (aliases: tensorrt, engine)."),
    out: Path = typer.Option(None, "--out", "-o", help="Export directory (default: CHECKPOINT-FORMAT beside it)."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset, 18-23 (default 18)."),
    half: bool = typer.Option(None, "--half", help="fp16 graphs (needs --device cuda; parity tolerance 5e-2)."),
    batch: int = typer.Option(None, "--batch", help="Batch size the graphs are built for (default 1; larger "
                              "batches are split, see --dynamic)."),
    dynamic: bool = typer.Option(None, "--dynamic/--static", help="Free batch axis (ONNX: any size; TensorRT: "
                                 "a profile from 1 to --batch) or fixed --batch. Default: dynamic."),
    workspace: float = typer.Option(None, "--workspace", help="TensorRT builder workspace in GiB."),
    device: str = typer.Option(None, "--device", help="Device to export and check on: cpu (default) or cuda."),
    atol: float = typer.Option(None, "--atol", help="Parity tolerance: largest |export - eager| pixel error "
                               "accepted (default 1e-3 for fp32, 5e-2 for fp16)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export section of vpkit.json as JSON."),
    sampling: dict[str, Any] | None = None,
) -> None:
    """Export a checkpoint's inference graphs (all randomness as explicit noise inputs), check them against eager
    PyTorch on the same clips and noise, and write an export directory that `vpkit predict` and `vpkit eval`
    accept. Nothing is written when the parity check fails. A model's sampling options (e.g. RIVER's --steps,
    --refine) are built into the export."""
    from vpkit.engine.exporter import export_model

    options = {"opset": opset, "half": half, "batch": batch, "dynamic": dynamic, "workspace": workspace,
               "device": device}
    if as_json:
        result = export_model(checkpoint, fmt, out=out, options=options, atol=atol, sampling=sampling)
        print_json({"path": str(result.path), **result.export})
        return
    with err_console.status("exporting") as status:
        result = export_model(checkpoint, fmt, out=out, options=options, atol=atol, sampling=sampling,
                              on_stage=lambda s: status.update(s))
    section, parity = result.export, result.parity

    table = Table(title=f"{section['format']} export · {section['precision']} · batch {section['batch']}"
                  f"{' (dynamic)' if section['dynamic'] else ''}", title_justify="left")
    table.add_column("graph")
    table.add_column("file")
    table.add_column("size", justify="right")
    for name, graph in section["graphs"].items():
        size = (result.path / graph["file"]).stat().st_size
        table.add_row(name, graph["file"], f"{size / 2**20:.1f} MiB")
    console.print(table)
    verdict = "[green]passed[/]" if parity["passed"] else "[red]failed[/]"
    line = (f"Parity vs eager PyTorch ({parity['clips']}, {parity['horizon']} predicted frames): max abs error "
            f"{parity['max_abs_error']:.2e} (tolerance {parity['tolerance']:.0e}) {verdict}; min PSNR vs eager "
            f"{parity['psnr_vs_eager_min_db']:.1f} dB")
    if "psnr_delta_max_db" in parity:
        line += f"; per-frame PSNR change vs ground truth up to {parity['psnr_delta_max_db']:.2e} dB"
    console.print(line, highlight=False)
    backend = section["format"]
    gpu = " --device cuda" if section["device"].startswith("cuda") else ""
    console.print(f"Export: [bold]{result.path}[/]", highlight=False)
    console.print(f"Predict:  vpkit predict VIDEO.mp4 --model {result.path} --backend {backend}{gpu}",
                  highlight=False, soft_wrap=True)
    console.print(f"Evaluate: vpkit eval {result.path} --backend {backend}{gpu}", highlight=False, soft_wrap=True)
