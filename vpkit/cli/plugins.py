"""`vpkit plugins`: what is installed and what each plugin registers."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table

from vpkit.cli.console import console, print_json
from vpkit.core.plugins import LOAD_ENV, get_host


def plugins_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON: name, distribution, version, hooks, registered."),
    builtins: bool = typer.Option(True, "--builtins/--no-builtins", help="Include vpkit's built-in plugins."),
) -> None:
    """List loaded plugins (built-ins and those installed through the `vpkit` entry-point group).

    Set VPKIT_LOAD_PLUGINS to a comma-separated list to load only those entry points ('' loads none).
    """
    infos = [i for i in get_host().infos.values() if builtins or not i.builtin]
    if as_json:
        print_json([asdict(i) for i in infos])
        return
    table = Table(title="vpkit plugins")
    for col in ("plugin", "distribution", "version", "registers", "hooks"):
        table.add_column(col)
    for info in infos:
        registers = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in info.registered.items())
        table.add_row(info.name + (" (built-in)" if info.builtin else ""), info.distribution, info.version,
                      registers or "-", ", ".join(info.hooks))
    console.print(table)
    console.print(f"[dim]{LOAD_ENV} limits which entry-point plugins load ('' = none).[/]")
