"""`vpkit data`: list the registered datasets, describe one, and prepare those that need files on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vpkit.cli.console import console, err_console, print_json
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit.core.plugins import get_host

app = typer.Typer(
    help="Datasets: list them, show one's settings, download and convert the ones that need files.",
    no_args_is_help=True,
)


def _prepare_mnist(root: Path, force: bool) -> str:
    from vpkit.plugins.datasets.mnist import load_mnist, prepare_mnist

    path = prepare_mnist(root, force=force)
    arrays = load_mnist(root)
    return (f"MNIST ready: {path} ({len(arrays['train_images'])} train, {len(arrays['test_images'])} test digits). "
            f"Use it with --set data.digits=mnist --set data.data_root={root}")


# What `prepare` knows besides the datasets' own `prepare`: name -> (what it is, preparer(root, force) -> summary).
EXTRA_PREPARERS: dict[str, tuple[str, Callable[[Path, bool], str]]] = {
    "mnist": ("the full MNIST digits (60k train, 10k test) for smmnist/mmnist with data.digits=mnist",
              _prepare_mnist),
}


def preparable() -> list[str]:
    return [*EXTRA_PREPARERS, *(spec.name for spec in get_host().datasets if spec.prepare is not None)]


@app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON: name, plugin, splits, description, "
                                              "source, size, licence.")
                 ) -> None:
    """List every registered dataset (built-in and from plugins)."""
    rows = [{"name": spec.name, "plugin": spec.plugin, "splits": list(spec.splits), "description": spec.description,
             "source": spec.source, "access": spec.access, "size": spec.size, "licence": spec.licence,
             "prepare": spec.prepare is not None}
            for spec in get_host().datasets]
    if as_json:
        print_json(rows)
        return
    table = Table(title="vpkit datasets")
    for column in ("name", "splits", "description", "source", "access", "size", "licence"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], ", ".join(row["splits"]), row["description"], row["source"] or "—",
                      row["access"] or "—", row["size"] or "—", row["licence"] or "—")
    console.print(table)
    console.print(f"[dim]Prepare one with `vpkit data prepare NAME --root DIR`: {', '.join(preparable())}.[/]")


@app.command("info")
def info_command(
    name: str = typer.Argument(..., help="Dataset name, as `vpkit data list` shows it, an .h5 file written by "
                               "`vpkit data convert`, or a prepared dataset's folder (its train/val/test.h5)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show a dataset's settings (set them with --set data.KEY=VALUE) and their defaults, or what an .h5 file or a
    prepared folder holds (videos per split, lengths, resolution, channels, value range) with warnings for the usual
    mistakes (values in [0, 1] cast to uint8, grey stored as RGB)."""
    if name.endswith(".h5") or Path(name).is_file():
        _file_info(Path(name), as_json)
        return
    if Path(name).is_dir():
        _root_info(Path(name), as_json)
        return
    spec = get_host().datasets.get(name)
    fields: list[dict[str, Any]] = [
        {"key": key, "default": field.default, "description": field.description or ""}
        for key, field in spec.config_cls.model_fields.items()
    ]
    if as_json:
        print_json({"name": spec.name, "plugin": spec.plugin, "splits": list(spec.splits),
                    "description": spec.description, "config": fields})
        return
    console.print(f"[bold]{spec.name}[/] (plugin {spec.plugin}; splits {', '.join(spec.splits)})")
    console.print(spec.description, highlight=False)
    table = Table()
    for column in ("key", "default", "description"):
        table.add_column(column, overflow="fold")
    for row in fields:
        table.add_row(row["key"], repr(row["default"]), row["description"])
    console.print(table)


@app.command("prepare")
def prepare_command(
    name: str = typer.Argument(..., help="What to prepare (see `vpkit data list`), e.g. kth, bair, clevrer, mnist."),
    root: Path = typer.Option(..., "--root", help="The dataset's folder (created if missing): originals go to "
                              "ROOT/raw, the converted splits to ROOT/{train,val,test}.h5."),
    force: bool = typer.Option(False, "--force", help="Rebuild the converted files even if they exist."),
    download: bool = typer.Option(True, "--download/--no-download", help="Download what a public URL serves; "
                                  "--no-download uses only the files already in ROOT/raw."),
    size: int = typer.Option(None, "--size", help="Frame size, for datasets the papers use at several sizes "
                             "(kth: 64, the default, or 128)."),
    compress: bool = typer.Option(False, "--compress", help="Compress the split files with lzf: about 2-4x "
                                  "smaller on most video, somewhat slower random reads (see benchmarks/data.py)."),
) -> None:
    """Download (resumable, checksummed, retried) and convert a dataset into ROOT.

    Datasets behind a licence or registration (Human3.6M, KITTI, Cityscapes, ...) are not downloaded: the command
    says exactly which files to fetch and where to put them, then converts them when run again. Offline? Copy the
    original files into ROOT/raw and run the same command: files already there are checked and used.
    """
    from rich.markup import escape

    from vpkit.engine.prepared import PrepareOptions

    if name in EXTRA_PREPARERS:
        what, prepare = EXTRA_PREPARERS[name]
        err_console.print(f"Preparing {name}: {what} -> {root}", highlight=False, soft_wrap=True)
        console.print(prepare(root.expanduser(), force), highlight=False, soft_wrap=True)
        return
    datasets = get_host().datasets
    if name not in datasets:
        raise VpkitError(f"Nothing to prepare called '{name}'.{did_you_mean(name, preparable())} "
                         f"Preparable: {', '.join(preparable())}.")
    spec = datasets.get(name)
    if size is not None and size < 8:
        raise VpkitError("--size must be at least 8.")
    if spec.prepare is None:
        raise VpkitError(f"'{name}' needs no preparation (its videos are generated, or read as they are). "
                         f"Preparable: {', '.join(preparable())}.")
    err_console.print(f"Preparing {name} ({spec.source or spec.description}) -> {root}", highlight=False,
                      soft_wrap=True)
    with console.status(f"Preparing {name}...") as status:
        options = PrepareOptions(
            force=force, download=download, size=size, compression="lzf" if compress else None,
            warn=lambda text: err_console.print(f"[yellow]warning: {escape(text)}[/]", highlight=False,
                                                soft_wrap=True),
            status=lambda text: status.update(escape(text)))
        line = spec.prepare(root.expanduser(), options)
    console.print(line, highlight=False, soft_wrap=True)


def _root_info(root: Path, as_json: bool) -> None:
    from vpkit.engine.h5videos import read_info

    files = [root / f"{split}.h5" for split in ("train", "val", "test") if (root / f"{split}.h5").is_file()]
    files += sorted(p for p in root.glob("*.h5") if p not in files)
    if not files:
        raise VpkitError(f"{root} holds no .h5 split file: prepare it with `vpkit data prepare NAME --root {root}` "
                         "or convert videos into it with `vpkit data convert`.")
    infos = {path.stem: read_info(path) for path in files}
    if as_json:
        print_json(infos)
        return
    console.print(f"[bold]{root}[/]: " + ", ".join(f"{split} {info['videos']} videos"
                                                   for split, info in infos.items()), highlight=False,
                  soft_wrap=True)
    for path in files:
        _print_info(path, infos[path.stem])


def _file_info(path: Path, as_json: bool) -> None:
    from vpkit.engine.h5videos import read_info

    info = read_info(path.expanduser())
    if as_json:
        print_json(info)
        return
    _print_info(path, info)


def _print_info(path: Path, info: dict[str, Any]) -> None:
    length = info["length"]
    console.print(f"[bold]{path}[/] ({info['format']}): {info['videos']} videos, {info['frames']} frames "
                  f"(length {length['min']}–{length['max']}, mean {length['mean']:.1f}), "
                  f"{info['width']}x{info['height']}, {info['channels']} channel(s), values "
                  f"{info['value_range'][0]}..{info['value_range'][1]}"
                  + (f", {info['fps']:g} fps" if info["fps"] else ""), highlight=False, soft_wrap=True)
    for warning in info["warnings"]:
        err_console.print(f"[yellow]warning: {warning}[/]", highlight=False, soft_wrap=True)


@app.command("convert")
def convert_command(
    source: Path = typer.Argument(..., help="A video file, a .npy array, a folder of frames, a folder of any of "
                                  "those (one video each), RIVER's HDF5 shards, or a folder holding train/, val/ "
                                  "(or valid/) and test/ folders of those."),
    out: Path = typer.Option(..., "--out", "-o", help="The .h5 file to write, e.g. DIR/train.h5; for a source "
                             "laid out by split, the folder to write train.h5, val.h5 and test.h5 into."),
    size: int = typer.Option(None, "--size", help="Resize frames to SIZE x SIZE (shorter side, antialiased, then a "
                             "centre crop); needed when the videos differ in size."),
    grey: bool = typer.Option(False, "--grey", help="Store one luma channel (ITU-R 601) instead of RGB."),
) -> None:
    """Convert videos into vpkit's HDF5 format (one file per split; read it with --dataset h5). A video that
    cannot be read is skipped with a warning naming it; nothing is written when none can be read."""
    from rich.markup import escape

    from vpkit.engine.convert import convert, convert_splits, split_folders

    if size is not None and size < 1:
        raise VpkitError("--size must be at least 1.")
    by_split = out.suffix != ".h5" and bool(split_folders(source.expanduser()))
    if out.suffix != ".h5" and not by_split:
        raise VpkitError(f"--out {out} must name an .h5 file (e.g. DIR/train.h5), or SOURCE must hold train/, val/ "
                         "or test/ folders to convert into the folder --out.")
    with console.status("Converting...") as status:
        kwargs = {"size": size, "grey": grey,
                  "warn": lambda text: err_console.print(f"[yellow]warning: {escape(text)}[/]", highlight=False,
                                                         soft_wrap=True),
                  "progress": lambda name: status.update(f"Converting... {escape(name)}")}
        results = convert_splits(source, out, **kwargs) if by_split else {"": convert(source, out, **kwargs)}
    for path, written, skipped in results.values():
        console.print(f"Wrote {path}: {written} videos" + (f" ({skipped} skipped)" if skipped else "")
                      + f". Check it with `vpkit data info {path}`.", highlight=False, soft_wrap=True)
    if by_split:
        console.print(f"Train on it with `vpkit train --dataset h5 --data-root {out}`.", highlight=False,
                      soft_wrap=True)
