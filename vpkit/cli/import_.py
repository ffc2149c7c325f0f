"""`vpkit import NAME PATH --out CKPT`: convert a method's official checkpoint into a vpkit checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vpkit.cli.console import console
from vpkit.core.checkpoint import plugin_section, save_checkpoint
from vpkit.core.config import parse_overrides
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.core.specs import ImporterSpec


def import_command(
    name: str = typer.Argument(..., help="Which method's format, e.g. 'svg' (see `vpkit plugins`)."),
    path: Path = typer.Argument(..., help="The official checkpoint: a file, or a run folder for methods that keep "
                                "their options beside the weights (e.g. SRVP, DDLP)."),
    out: Path = typer.Option(None, "--out", "-o", help="Checkpoint directory to write (default: imported/<file stem> "
                             "or imported/<folder name>)."),
    overrides: list[str] = typer.Option([], "--set", help="Importer options, e.g. --set n_future=20 (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it already exists."),
    options: dict[str, Any] | None = None,
) -> None:
    """Convert an official checkpoint (read without running any code from it) into a vpkit checkpoint."""
    host = get_host()
    spec = host.importers.get(name)
    if not path.exists():
        raise VpkitError(f"Official checkpoint not found: {path}")
    settings = importer_settings(spec, overrides, options or {})
    out = out or Path("imported") / (path.name if path.is_dir() else path.stem)
    if out.exists() and not force:
        raise VpkitError(f"{out} already exists; pass --force to replace it or choose another --out.")
    model_key, model, data = spec.load(path, settings)
    model_spec = host.models.get(model_key)
    save_checkpoint(out, model, model_key=model_key, plugin=plugin_section(model_spec.plugin), data=data,
                    train={"step": 0, "imported_from": str(path), "importer": name})
    params = sum(p.numel() for p in model.parameters())
    console.print(f"Imported [bold]{model_key}[/] ({params:,} parameters) from {path} -> [bold]{out}[/]")
    console.print(f"Next: vpkit eval {out}")


def importer_settings(spec: ImporterSpec, overrides: list[str], flags: dict[str, Any]) -> dict[str, Any]:
    """The options `spec.load` receives: `--set KEY=VALUE` overrides and the importer's own flags (Path values as
    strings), refusing flags the importer does not declare and `--set` for what is a flag."""
    declared = {option.name for option in spec.options}
    foreign = [name for name in flags if name not in declared]
    if foreign:
        takes = ", ".join(f"--{n}" for n in sorted(declared)) or "none"
        raise VpkitError(f"--{foreign[0]} is not an option of the '{spec.name}' importer (its flags: {takes}).")
    settings = parse_overrides(overrides)
    for name in declared:
        if name.replace("-", "_") in settings:
            raise VpkitError(f"Give {name} as --{name} VALUE, not --set {name.replace('-', '_')}=VALUE.")
    settings.update({name.replace("-", "_"): str(value) if isinstance(value, Path) else value
                     for name, value in flags.items()})
    return settings
