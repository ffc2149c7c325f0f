"""Adds the installed models' sampling options (`ModelSpec.sampling`) to `vpkit predict`, `eval` and `export`.

The commands take a `sampling` mapping {option name: value}; `with_sampling_options` turns it into one `--NAME`
option per declared option (help panel "Sampling options"), so `--help` lists them with the models that take them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Optional

import typer

from vpkit.core.errors import VpkitError

PANEL = "Sampling options (by model)"


def with_sampling_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with its `sampling` parameter replaced by the `--NAME` options of every installed model."""
    from vpkit.core.sampling import offered

    signature = inspect.signature(command, eval_str=True)
    base = [p for p in signature.parameters.values() if p.name != "sampling"]
    taken = {decl for p in base if isinstance(p.default, typer.models.ParameterInfo)
             for decl in (p.default.param_decls or ())}
    extra: dict[str, inspect.Parameter] = {}
    names: dict[str, str] = {}
    for name, (option, models) in offered().items():
        if f"--{name}" in taken:
            raise VpkitError(f"Model(s) {', '.join(models)} declare the sampling option --{name}, which `vpkit "
                             f"{command.__name__.removesuffix('_command')}` already has; rename it in the plugin.")
        parameter = "sampling_" + name.replace("-", "_")
        names[parameter] = name
        help_text = f"{option.help} ({', '.join(models)})".lstrip()
        extra[parameter] = inspect.Parameter(
            parameter, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[option.kind],  # noqa: UP045 (typer)
            default=typer.Option(None, f"--{name}", help=help_text, rich_help_panel=PANEL))

    def wrapper(**kwargs: Any) -> Any:
        given = {names[p]: kwargs.pop(p) for p in list(kwargs) if p in names}
        return command(**kwargs, sampling={k: v for k, v in given.items() if v is not None})

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in base] + list(extra.values())
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    wrapper.__doc__, wrapper.__name__ = command.__doc__, command.__name__
    return wrapper
