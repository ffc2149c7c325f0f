"""`vpkit doctor`: versions, devices and optional features of this installation, with fixes for what is missing."""

from __future__ import annotations

import typer
from rich.table import Table

from vpkit.cli.console import console, print_json


def doctor_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON: name, status, found, fix, feature per check."),
) -> None:
    """Check torch, CUDA, cuDNN, torchvision, lpips, onnx, onnxruntime (which providers really run), tensorrt,
    decord, ffmpeg and the other optional libraries; print what each enables and how to fix what is missing.

    Exits 0 even when optional pieces are missing; exits 1 when torch itself is unusable."""
    from vpkit.engine.doctor import OK, report
    from vpkit.engine.doctor import as_json as to_json

    checks = report()
    if as_json:
        print_json(to_json(checks))
    else:
        table = Table(title="vpkit doctor")
        for column in ("check", "status", "found", "enables", "fix"):
            table.add_column(column, overflow="fold")
        colours = {"ok": "green", "missing": "yellow", "broken": "red"}
        for check in checks:
            table.add_row(check.name, f"[{colours.get(check.status, 'white')}]{check.status}[/]", check.found,
                          check.feature, check.fix)
        console.print(table)
    torch_ok = any(c.name == "torch" and c.status == OK for c in checks)
    if not torch_ok:
        raise typer.Exit(1)
