"""Every hook vpkit calls, documented the same way. Hooks evolve by adding arguments only.

A plugin is a module (or object) with functions marked `@vpkit.hookimpl` whose names match the specs below. Built-in
plugins load by module name, third-party ones through the entry-point group ``vpkit``.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("vpkit")


@hookspec
def register_models(register: Any) -> None:
    """Register video predictors.

    Called once, when the host first builds its registries.
    :param register: call ``register(ModelSpec(...))`` once per model; a name already taken is an error.
    Since 0.1.
    """


@hookspec
def register_datasets(register: Any) -> None:
    """Register video datasets.

    Called once, when the host first builds its registries.
    :param register: call ``register(DatasetSpec(...))`` once per dataset.
    Since 0.1.
    """


@hookspec
def register_metrics(register: Any) -> None:
    """Register frame-quality metrics (PSNR, SSIM, LPIPS, ...).

    Called once, when the host first builds its registries.
    :param register: call ``register(MetricSpec(...))`` once per metric.
    Since 0.1.
    """


@hookspec
def register_exporters(register: Any) -> None:
    """Register export formats (one row of the export table each).

    Called once, when the host first builds its registries.
    :param register: call ``register(ExporterSpec(...))`` once per format.
    Since 0.1.
    """


@hookspec
def register_importers(register: Any) -> None:
    """Register converters from a method's official checkpoints (``vpkit import NAME PATH``).

    Called once, when the host first builds its registries.
    :param register: call ``register(ImporterSpec(...))``; the name is what users type after ``vpkit import``.
    Since 0.1.
    """


@hookspec
def register_commands(app: Any) -> None:
    """Add sub-commands to the CLI.

    Called once while the ``vpkit`` Typer app is assembled, before arguments are parsed.
    :param app: the root ``typer.Typer``; add commands or sub-apps to it.
    Since 0.1.
    """


@hookspec(firstresult=True)
def open_source(uri: str) -> Any:
    """Open a video source (file, folder, URL) for reading.

    Called by ``vpkit predict`` for each source; the first plugin that returns something wins.
    :param uri: what the user typed.
    :return: a :class:`vpkit.core.source.VideoSource` (uint8 RGB frames streamed in chunks), or ``None`` when the
        plugin cannot read this kind of source.
    Since 0.1.
    """


@hookspec
def on_train_start(trainer: Any) -> None:
    """Called once on the logging rank after the model, data and optimisers are set up, before the first step.
    :param trainer: the running ``vpkit.engine.trainer.Trainer`` (read ``trainer.step``, ``trainer.out_dir``...).
    Since 0.1.
    """


@hookspec
def on_step_end(trainer: Any, step: int, logs: dict[str, float]) -> None:
    """Called on the logging rank after every optimisation step.
    :param step: the number of steps done so far.
    :param logs: the floats the model logged for this step (``loss`` included).
    Since 0.1.
    """


@hookspec
def on_validation_end(trainer: Any, step: int, metrics: dict[str, float]) -> None:
    """Called on the logging rank after each periodic validation.
    :param metrics: ``{metric_name: value}`` averaged over the validation videos.
    Since 0.1.
    """


@hookspec
def on_checkpoint_saved(trainer: Any, path: Any) -> None:
    """Called on the logging rank after a checkpoint directory was written completely.
    :param path: the checkpoint directory (``.../checkpoints/last`` or ``best``).
    Since 0.1.
    """


@hookspec
def on_train_end(trainer: Any) -> None:
    """Called once on the logging rank when training stops (done, interrupted, or failed).
    Since 0.1.
    """
