"""The `vpkit` command: one Typer app, one module per command, plugins may add their own commands."""

from __future__ import annotations

import sys

import typer

from vpkit.core.errors import VpkitError

app = typer.Typer(
    name="vpkit",
    help="Stochastic and object-centric video prediction: train, evaluate, export, predict, import and inspect models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _assemble() -> None:
    from vpkit.cli import (
        benchmark,
        data,
        doctor,
        eval,
        export,
        import_,
        models,
        plugins,
        predict,
        train,
    )
    from vpkit.cli.plugin_options import with_importer_options, with_sampling_options

    app.command("train")(train.train_command)
    app.command("eval")(with_sampling_options(eval.eval_command))
    app.command("models")(models.models_command)
    app.command("plugins")(plugins.plugins_command)
    app.command("import")(with_importer_options(import_.import_command))
    app.command("export")(with_sampling_options(export.export_command))
    app.command("predict")(with_sampling_options(predict.predict_command))
    app.command("benchmark")(benchmark.benchmark_command)
    app.command("doctor")(doctor.doctor_command)
    app.add_typer(data.app, name="data")
    from vpkit.core.plugins import get_host

    get_host().pm.hook.register_commands(app=app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the vpkit version and exit.", is_eager=True),
) -> None:
    if version:
        from vpkit import __version__

        typer.echo(__version__)
        raise typer.Exit()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: user errors become one red line and exit code 1."""
    from rich.markup import escape

    from vpkit.cli.console import err_console

    try:
        _assemble()
        app(args=argv, standalone_mode=True)
    except VpkitError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
