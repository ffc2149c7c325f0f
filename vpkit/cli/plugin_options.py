"""Flags that plugins declare for a command: models' sampling options (`ModelSpec.sampling`) on `vpkit predict`,
`eval` and `export`; importers' options (`ImporterSpec.options`) on `vpkit import`.

A command takes one mapping parameter ({option name: value}: `sampling` or `options`); `with_plugin_options` turns it
into one `--NAME` option per declared option, in a help panel of its own that names the plugins taking each one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Optional

import typer

from vpkit.core.errors import VpkitError


def with_plugin_options(command: Callable[..., Any], parameter: str, declared: dict[str, tuple[type, str]],
                        panel: str) -> Callable[..., Any]:
    """`command` with its mapping parameter `parameter` replaced by one `--NAME` flag per entry of `declared`
    ({name: (type on the command line, help)}); the mapping it receives holds the flags given."""
    signature = inspect.signature(command, eval_str=True)
    base = [p for p in signature.parameters.values() if p.name != parameter]
    taken = {decl for p in base if isinstance(p.default, typer.models.ParameterInfo)
             for decl in (p.default.param_decls or ())}
    extra: dict[str, inspect.Parameter] = {}
    names: dict[str, str] = {}
    for name, (kind, help_text) in declared.items():
        if f"--{name}" in taken:
            raise VpkitError(f"A plugin declares --{name} for `vpkit {command.__name__.removesuffix('_command')}`, "
                             "which the command already has; rename it in the plugin.")
        key = f"{parameter}_" + name.replace("-", "_")
        names[key] = name
        extra[key] = inspect.Parameter(
            key, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],  # noqa: UP045 (typer)
            default=typer.Option(None, f"--{name}", help=help_text, rich_help_panel=panel))

    def wrapper(**kwargs: Any) -> Any:
        given = {names[key]: kwargs.pop(key) for key in list(kwargs) if key in names}
        return command(**kwargs, **{parameter: {k: v for k, v in given.items() if v is not None}})

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in base] + list(extra.values())
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    wrapper.__doc__, wrapper.__name__ = command.__doc__, command.__name__
    return wrapper


def with_sampling_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with its `sampling` parameter replaced by the sampling options of every installed model."""
    from vpkit.core.sampling import offered

    declared = {name: (option.kind, f"{option.help} ({', '.join(models)})".lstrip())
                for name, (option, models) in offered().items()}
    return with_plugin_options(command, "sampling", declared, "Sampling options (by model)")


def with_importer_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with its `options` parameter replaced by the options of every installed importer."""
    from vpkit.core.plugins import get_host

    found: dict[str, tuple[type, str, list[str]]] = {}
    for spec in get_host().importers:
        for option in spec.options:
            kind, _, importers = found.setdefault(option.name, (option.kind, option.help, []))
            if kind is not option.kind:
                raise VpkitError(f"Importers '{importers[0]}' and '{spec.name}' declare --{option.name} with "
                                 "different types; the plugins must agree on its type.")
            importers.append(spec.name)
    declared = {name: (kind, f"{help_text} ({', '.join(importers)})".lstrip())
                for name, (kind, help_text, importers) in found.items()}
    return with_plugin_options(command, "options", declared, "Importer options (by method)")
