"""Sampling options: config fields a trained model may change when it samples (`ModelSpec.sampling`), given as
`--NAME VALUE` to `vpkit predict`, `vpkit eval` and `vpkit export` (RIVER's `--steps`, `--warm-start`, `--refine`).

`offered()` gathers the options of every installed model for the command line; `reconfigure()` applies the ones a
user gave to a loaded model, checking that its model takes them, validating the new config and rebuilding the
model (`ModelSpec.reconfigure`, or a rebuild that loads the old weights strictly).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from vpkit.core.errors import VpkitError
from vpkit.core.specs import ModelSpec, SamplingOption


def offered() -> dict[str, tuple[SamplingOption, list[str]]]:
    """{option name: (its first declaration, the models that take it)} over every installed model."""
    from vpkit.core.plugins import get_host

    found: dict[str, tuple[SamplingOption, list[str]]] = {}
    for spec in get_host().models:
        for option in spec.sampling:
            first, models = found.setdefault(option.name, (option, []))
            if first.kind is not option.kind:
                raise VpkitError(f"Model '{spec.name}' declares the sampling option --{option.name} as "
                                 f"{option.kind.__name__}, model '{models[0]}' as {first.kind.__name__}; the "
                                 "plugins must agree on its type.")
            models.append(spec.name)
    return found


def flags(given: Mapping[str, Any]) -> str:
    return ", ".join(f"--{name}" for name in given)


def record(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options given, as JSON for eval cards and export metadata (paths as strings, unset ones dropped)."""
    return {name: str(value) if isinstance(value, Path) else value
            for name, value in (given or {}).items() if value is not None}


def updates(spec: ModelSpec, given: Mapping[str, Any], *, export: bool = False) -> dict[str, Any]:
    """The config-field updates that the options `given` ({name: value}, None = not given) make to a model of
    `spec`. `export`: the model samples through an export, which cannot take options that change its graphs."""
    given = {name: value for name, value in given.items() if value is not None}
    declared = {option.name: option for option in spec.sampling}
    unknown = [name for name in given if name not in declared]
    if unknown:
        takes = f"it takes {flags(declared)}" if declared else "it takes no sampling options"
        raise VpkitError(f"{flags(dict.fromkeys(unknown))} does not apply to model '{spec.name}' ({takes}).")
    if export:
        graphs = [name for name in given if declared[name].changes_graphs]
        if graphs:
            raise VpkitError(f"{flags(dict.fromkeys(graphs))} changes the exported graphs; export the checkpoint "
                             f"with it instead: vpkit export CHECKPOINT {flags(dict.fromkeys(graphs))} ...")
    return {declared[name].field: str(value) if isinstance(value, Path) else value for name, value in given.items()}


def rebuild(build: Callable[[Any, tuple[int, int, int]], torch.nn.Module], model: torch.nn.Module,
            config: Any) -> torch.nn.Module:
    """`build(config, frame_shape)` with `model`'s weights loaded strictly, on the same device, dtype and mode; a
    model on the meta device (an export's sampling code) is rebuilt there, without weights."""
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    if device.type == "meta":
        with torch.device("meta"):
            return build(config, model.frame_shape).train(model.training)
    new = build(config, model.frame_shape)
    try:
        new.load_state_dict(model.state_dict())
    except RuntimeError as exc:
        raise VpkitError(f"These sampling options change the weights of the model: {exc}") from None
    return new.to(device=device, dtype=parameter.dtype if parameter is not None else None).train(model.training)


def reconfigure(model: torch.nn.Module, model_key: str, given: Mapping[str, Any] | None, *,
                export: bool = False) -> torch.nn.Module:
    """`model` (of the registered model `model_key`) with the sampling options `given` applied; `model` itself
    when none is given."""
    from vpkit.core.config import build_config
    from vpkit.core.plugins import get_host

    given = {name: value for name, value in (given or {}).items() if value is not None}
    if not given:
        return model
    spec = get_host().models.get(model_key)
    config = build_config(spec.config_cls, model.config.model_dump(), updates(spec, given, export=export),
                          what=f"model config of '{model_key}' with {flags(given)}")
    if spec.reconfigure is not None:
        return spec.reconfigure(model, config)
    return rebuild(spec.build, model, config)
