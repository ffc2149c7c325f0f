"""What plugins register: small frozen dataclasses. The host stamps `plugin` with the registering plugin's name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from vpkit.core.config import BaseConfig
    from vpkit.core.model import Backend, ExportPlan, VideoPredictor
    from vpkit.engine.prepared import PrepareOptions


@dataclass(frozen=True)
class Preset:
    """A named recipe: model-config overrides, the dataset (name + config overrides) and trainer overrides.

    `frame_shape` `(C, H, W)` is the shape of the recipe's frames, so `vpkit models` can size the network without
    opening the dataset."""

    model: Mapping[str, Any] = field(default_factory=dict)
    dataset: str = "smmnist"
    data: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    frame_shape: tuple[int, int, int] | None = None
    description: str = ""


@dataclass(frozen=True)
class SamplingOption:
    """A model-config field a user may change when a trained model samples: `vpkit predict`, `vpkit eval` and
    `vpkit export` take it as `--NAME VALUE` (an integrator's steps, a warm start, a refinement network to apply).

    `kind` is the value's type on the command line (int, float, str or Path; a Path is stored as a string).
    `changes_graphs` marks options that add or change an exported graph (a refinement network): an export
    directory refuses them, the checkpoint is exported with the option instead."""

    name: str
    field: str
    kind: type = str
    help: str = ""
    changes_graphs: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A trainable video predictor.

    `build(config, frame_shape)` must rebuild the exact network from a checkpoint's saved config alone;
    `frame_shape` is `(C, H, W)`. `presets` maps preset names to recipes; `default_preset` is used when the
    user names none. `default=True` marks the model `--plugin NAME` picks when `--model` is not given.

    `sampling` lists the config fields a trained model may change at sampling time (`SamplingOption`).
    `reconfigure(model, config)` returns the model with the new config; without it vpkit rebuilds the model from
    `config` and loads the old weights into it strictly, so an option may not change any weight's shape.
    """

    name: str
    config_cls: type[BaseConfig]
    build: Callable[[BaseConfig, tuple[int, int, int]], VideoPredictor]
    presets: Mapping[str, Preset]
    default_preset: str
    description: str = ""
    default: bool = False
    plugin: str = ""
    sampling: tuple[SamplingOption, ...] = ()
    reconfigure: Callable[[VideoPredictor, BaseConfig], VideoPredictor] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A video dataset. `build(config, split)` returns a map-style dataset whose items are uint8 `[T, C, H, W]`
    tensors and which has a `frame_shape` attribute `(C, H, W)`. It may implement `__getitems__(indices)` to
    produce a whole batch at once (vectorised generators do).

    `prepare(root, options)`, when given, makes the dataset's split files in `root` (downloading what a public URL
    serves, else naming exactly what to fetch and where to put it) and returns a one-line summary; `access` says in
    a word how the original files are obtained: "download", "registration", "by hand" or "generated"."""

    name: str
    config_cls: type[BaseConfig]
    build: Callable[[BaseConfig, str], Dataset]
    splits: tuple[str, ...] = ("train", "test")
    description: str = ""
    plugin: str = ""
    source: str = ""  # where the data comes from: a URL, "generated", "your files"
    size: str = ""  # what it takes on disk once prepared, in words ("none", "~1 GB")
    licence: str = ""  # its terms of use, in a few words, or where to read them
    prepare: Callable[[Path, PrepareOptions], str] | None = None
    access: str = ""


@dataclass(frozen=True)
class MetricSpec:
    """A video-quality metric. `options` passed to `build(options)` hold run-time settings (`device`, backbone
    paths, the variant a metric profile picks); unknown keys are ignored.

    - `level="frame"`: `build` returns a callable `(pred, target) -> scores [N, T]` on float videos
      `[N, T, C, H, W]` in [0, 1], one score per frame (PSNR, SSIM, LPIPS).
    - `level="set"`: `build` returns a feature extractor `videos [N, T, C, H, W] in [0, 1] -> features [N, D]`
      (float64) with attributes `min_frames` (shortest clip it accepts) and `identity` (a string naming the
      network file and preprocessing, part of every real-statistics cache key); the evaluator accumulates the
      features of the real and of the predicted videos over the whole test set and scores the two sets with the
      Fréchet distance (FVD).
    """

    name: str
    build: Callable[[Mapping[str, Any]], Callable[..., Any]]
    higher_is_better: bool
    description: str = ""
    plugin: str = ""
    level: str = "frame"

    def __post_init__(self) -> None:
        if self.level not in ("frame", "set"):
            raise ValueError(f"metric {self.name!r}: level must be 'frame' or 'set', not {self.level!r}")


@dataclass(frozen=True)
class ExportOptions:
    """The export options every format may take; each `ExporterSpec.options` names those its format accepts.

    `batch` is the batch size the graphs are built for; with `dynamic` the batch axis is free (ONNX: any size;
    TensorRT: an optimisation profile from 1 to `batch`). `half` builds fp16 graphs. `workspace` is TensorRT's
    builder memory pool in GiB (`None`: TensorRT's default). `device` is where the model runs while exporting."""

    opset: int = 18
    half: bool = False
    batch: int = 1
    dynamic: bool = True
    workspace: float | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class ExporterSpec:
    """An export format (ONNX, TensorRT, ...): one row of the export table.

    `export(plan, out_dir, options)` writes one file per graph of the `ExportPlan` into `out_dir` and returns
    `{graph name: file name}`. `open(export_dir, export_section, device)` returns a `Backend` that runs those
    graphs (`export_section` is the `export` part of the directory's `vpkit.json`). `embed(export_dir, meta)`, for
    formats whose files carry metadata, stores the final `vpkit.json` (parity figures included) inside them.
    `available()` returns `None` when the format works here, else one line saying what to install or which hardware
    it needs. `options` lists the `ExportOptions` field names the format takes; `gpu` marks formats that need a
    CUDA device (and run there by default)."""

    name: str
    export: Callable[[ExportPlan, Path, ExportOptions], dict[str, str]]
    open: Callable[[Path, Mapping[str, Any], torch.device], Backend]
    embed: Callable[[Path, Mapping[str, Any]], None] | None = None
    available: Callable[[], str | None] = lambda: None
    aliases: tuple[str, ...] = ()
    suffix: str = ""
    gpu: bool = False
    options: tuple[str, ...] = ()
    description: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class ImporterOption:
    """A flag of `vpkit import` for one importer (`--NAME VALUE`, e.g. a second official file); its value reaches
    the importer's `load` under `options[NAME]` (dashes as underscores). Other options go through `--set`."""

    name: str
    kind: type = str
    help: str = ""


@dataclass(frozen=True)
class ImporterSpec:
    """Converts a method's official checkpoint into a vpkit checkpoint.

    `load(path, options)` returns `(model_key, model, data)`: the registered model name, the built
    `VideoPredictor` with the official weights, and the `data` section for `vpkit.json` (dataset name, config,
    frame_shape, n_context, n_future). It must never run code from the file (use `vpkit.engine.legacy_pickle`
    for pickled modules). `options` are its flags (`ImporterOption`)."""

    name: str
    load: Callable[[Path, Mapping[str, Any]], tuple[str, VideoPredictor, dict[str, Any]]]
    description: str = ""
    plugin: str = ""
    options: tuple[ImporterOption, ...] = ()
