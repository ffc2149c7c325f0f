"""`vpkit models`: every registered model with its presets and the parameter count of each preset."""

from __future__ import annotations

from typing import Any

import torch
import typer
from rich.table import Table

from vpkit.cli.console import console, print_json
from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit.core.plugins import get_host
from vpkit.core.specs import ModelSpec, Preset


def preset_frame_shape(preset: Preset) -> tuple[int, int, int] | None:
    """The frame shape a preset trains on: declared by the preset, else read from its dataset if registered."""
    if preset.frame_shape is not None:
        return tuple(preset.frame_shape)  # type: ignore[return-value]
    host = get_host()
    if preset.dataset in host.datasets:
        dspec = host.datasets.get(preset.dataset)
        return tuple(dspec.build(build_config(dspec.config_cls, preset.data), "test").frame_shape)
    return None


def count_parameters(spec: ModelSpec, preset_name: str) -> int | None:
    """Trainable parameters of `spec` built with a preset (on the meta device: no memory, no init cost); None when
    the preset cannot be built alone (a model stacked on another's checkpoint, e.g. diffuse-ddlp over a DDLP)."""
    preset = spec.presets[preset_name]
    shape = preset_frame_shape(preset)
    if shape is None:
        return None
    config = build_config(spec.config_cls, preset.model, what=f"preset '{preset_name}' of {spec.name}")
    try:
        with torch.device("meta"):
            model = spec.build(config, shape)
    except VpkitError:
        return None
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def models_command(
    plugin: str | None = typer.Option(None, "--plugin", "-p", help="Only models of this plugin."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List every model with its presets and the parameter count of each preset."""
    host = get_host()
    specs = list(host.models)
    if plugin is not None:
        if plugin not in host.infos:
            raise VpkitError(f"Unknown plugin '{plugin}'.{did_you_mean(plugin, host.infos)} "
                             f"Installed: {', '.join(sorted(host.infos))}.")
        specs = [s for s in specs if s.plugin == plugin]
    rows: list[dict[str, Any]] = []
    for spec in specs:
        presets = []
        for name, preset in spec.presets.items():
            presets.append({"name": name, "dataset": preset.dataset, "parameters": count_parameters(spec, name),
                            "default": name == spec.default_preset, "description": preset.description})
        rows.append({"name": spec.name, "plugin": spec.plugin, "default": spec.default,
                     "description": spec.description, "presets": presets})
    if as_json:
        print_json(rows)
        return
    table = Table(title="vpkit models")
    for col in ("model", "plugin", "preset", "dataset", "parameters", "description"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        for i, p in enumerate(row["presets"]):
            params = f"{p['parameters']:,}" if p["parameters"] is not None else "?"
            table.add_row(name if i == 0 else "", row["plugin"] if i == 0 else "",
                          p["name"] + (" *" if p["default"] else ""), p["dataset"], params,
                          p["description"] or (row["description"] if i == 0 else ""))
    console.print(table)
    if not rows:
        console.print("No models registered. Install a model plugin, e.g. `pip install -e plugins/vpkit-svg`.")
