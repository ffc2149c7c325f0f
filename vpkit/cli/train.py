"""`vpkit train`: resolve plugin, model, preset, dataset and configs, then run the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from vpkit.cli.console import console
from vpkit.core.config import (
    BaseConfig,
    TrainConfig,
    build_config,
    load_yaml,
    parse_overrides,
)
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit.core.plugins import Host, get_host
from vpkit.core.specs import DatasetSpec, ModelSpec

_SECTIONS = ("model", "data", "train")


@dataclass
class RunPlan:
    """Everything `vpkit train` decided before building anything."""

    spec: ModelSpec
    preset: str
    model_cfg: BaseConfig
    dataset: DatasetSpec
    data_cfg: BaseConfig
    train_cfg: TrainConfig


def resolve_model(host: Host, plugin: str | None, model: str | None) -> ModelSpec:
    """`--model` wins; otherwise the plugin's default model."""
    if plugin is not None and plugin not in host.infos:
        raise VpkitError(f"Unknown plugin '{plugin}'.{did_you_mean(plugin, host.infos)} Installed: "
                         f"{', '.join(sorted(host.infos))}. Model plugins live in plugins/ (pip install -e plugins/vpkit-NAME).")
    if model is not None:
        spec = host.models.get(model)
        if plugin is not None and spec.plugin != plugin:
            raise VpkitError(f"Model '{model}' belongs to plugin '{spec.plugin}', not '{plugin}'.")
        return spec
    if plugin is None:
        with_models = sorted({s.plugin for s in host.models})
        raise VpkitError("Say what to train: --plugin NAME (its default model) or --model NAME. "
                         f"Plugins with models: {', '.join(with_models) or 'none installed'}.")
    specs = host.models_of(plugin)
    if not specs:
        raise VpkitError(f"Plugin '{plugin}' registers no models.")
    defaults = [s for s in specs if s.default] or specs[:1]
    return defaults[0]


def plan_run(
    host: Host, spec: ModelSpec, *, preset: str | None, dataset: str | None, config_file: Path | None,
    overrides: list[str], train_args: dict[str, Any], data_args: dict[str, Any] | None = None,
) -> RunPlan:
    """Layer defaults < preset < YAML < --set < explicit CLI options for the model, data and train configs."""
    preset_name = preset or spec.default_preset
    if preset_name not in spec.presets:
        raise VpkitError(f"Unknown preset '{preset_name}' for {spec.name}.{did_you_mean(preset_name, spec.presets)} "
                         f"Presets: {', '.join(spec.presets)}.")
    recipe = spec.presets[preset_name]
    file_cfg = load_yaml(config_file) if config_file else {}
    set_cfg = parse_overrides(overrides)
    for key in [k for k in set_cfg if k not in _SECTIONS and k != "dataset" and k in spec.config_cls.model_fields]:
        set_cfg.setdefault("model", {})[key] = set_cfg.pop(key)  # a bare key names a model field
    for layer, origin in ((file_cfg, f"config file {config_file}"), (set_cfg, "--set")):
        unknown = set(layer) - set(_SECTIONS) - {"dataset"}
        if unknown:
            key = sorted(unknown)[0]
            raise VpkitError(f"Unknown section '{key}' in {origin}.{did_you_mean(key, _SECTIONS)} "
                             f"Use model.*, data.*, train.* (e.g. --set train.steps=100).")
    dataset_name = dataset or set_cfg.get("dataset") or file_cfg.get("dataset") or recipe.dataset
    dspec = host.datasets.get(dataset_name)
    same_data = dataset_name == recipe.dataset
    model_cfg = build_config(spec.config_cls, recipe.model, file_cfg.get("model"), set_cfg.get("model"),
                             what=f"{spec.name} config")
    if data_args and "data_root" in data_args and "data_root" not in dspec.config_cls.model_fields:
        raise VpkitError(f"--data-root: the dataset '{dataset_name}' reads no folder (its videos are generated).")
    data_cfg = build_config(dspec.config_cls, recipe.data if same_data else {}, file_cfg.get("data"),
                            set_cfg.get("data"), data_args, what=f"dataset '{dataset_name}' config")
    explicit = {k: v for k, v in train_args.items() if v is not None}
    train_cfg = build_config(TrainConfig, recipe.train, file_cfg.get("train"), set_cfg.get("train"), explicit,
                             what="train config")
    return RunPlan(spec, preset_name, model_cfg, dspec, data_cfg, train_cfg)


def _fresh_out_dir(base: Path) -> Path:
    """runs/NAME, then runs/NAME-2, -3... so a new run never overwrites an old one."""
    if not base.exists():
        return base
    i = 2
    while (base.parent / f"{base.name}-{i}").exists():
        i += 1
    return base.parent / f"{base.name}-{i}"


def train_command(
    plugin: str = typer.Option(None, "--plugin", "-p", help="Model plugin; trains its default model (e.g. svg)."),
    model: str = typer.Option(None, "--model", "-m", help="Model name (see `vpkit models`), e.g. svg-fp."),
    preset: str = typer.Option(None, "--preset", help="Recipe of the model (default: the model's default preset)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Dataset name (default: the preset's)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file with model:/data:/train: sections."),
    overrides: list[str] = typer.Option([], "--set", help="Override any config key: --set train.lr=... "
                                        "--set model.z_dim=16 --set data.num_digits=1 (repeatable); a bare key "
                                        "is a model field (--set z_dim=16)."),
    steps: int = typer.Option(None, "--steps", help="Optimisation steps (train.steps)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Videos per step (train.batch_size)."),
    precision: str = typer.Option(None, "--precision", help="32 | bf16-mixed | 16-mixed (train.precision)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (train.seed)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/<model>-<preset>[-N])."),
    resume: Path = typer.Option(None, "--resume", help="Continue from a checkpoint (e.g. RUN/checkpoints/last)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    metrics: str = typer.Option("psnr,ssim", "--metrics", help="Comma-separated validation metrics."),
    lpips_backbone: Path = typer.Option(None, "--lpips-backbone", help="AlexNet weights file for LPIPS offline."),
    data_root: Path = typer.Option(None, "--data-root", help="The dataset's folder, as written by `vpkit data "
                                   "prepare NAME --root DIR` (data.data_root)."),
    devices: int = typer.Option(1, "--devices", help="Processes on this machine (one per GPU; gloo processes on "
                                "CPU): relaunches this command under torchrun with DDP."),
    nnodes: int = typer.Option(1, "--nnodes", help="Machines taking part (run the same command on each)."),
    node_rank: int = typer.Option(0, "--node-rank", help="This machine's index, 0..nnodes-1."),
    rdzv_endpoint: str = typer.Option(None, "--rdzv-endpoint", help="HOST:PORT where the machines meet "
                                      "(needed with --nnodes > 1)."),
) -> None:
    """Train a model. `vpkit train --plugin svg` trains SVG-LP on the embedded Stochastic Moving MNIST.

    `--devices N` (and `--nnodes/--node-rank/--rdzv-endpoint`) trains on N processes per machine with
    torch.distributed; `torchrun --nproc-per-node N -m vpkit train ...` does the same. train.batch_size is the
    batch of all processes together."""
    from vpkit.core.checkpoint import plugin_section, read_checkpoint
    from vpkit.engine import distributed
    from vpkit.engine.runtime import resolve_device
    from vpkit.engine.trainer import Trainer, seed_everything

    world = distributed.World.from_env()
    if (devices > 1 or nnodes > 1) and not world.distributed:
        _relaunch(devices=devices, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint, out=out)
        return
    if world.distributed and out is None and resume is None:
        raise VpkitError("A multi-process run needs --out (every process must write to the same run folder).")
    host = get_host()
    train_args = {"steps": steps, "batch_size": batch_size, "precision": precision, "seed": seed}
    data_args = {"data_root": str(data_root.expanduser())} if data_root is not None else None
    if resume is not None:
        ckpt = read_checkpoint(resume)
        spec = host.models.get(ckpt.model_key)
        data_meta = ckpt.meta["data"]
        saved_train = ckpt.meta.get("train", {}).get("config", {})
        dspec = host.datasets.get(data_meta["name"])
        plan = RunPlan(
            spec, ckpt.meta.get("train", {}).get("preset", "?"),
            build_config(spec.config_cls, ckpt.meta["model"]["config"], what="saved model config"),
            dspec, build_config(dspec.config_cls, data_meta.get("config", {}), data_args, what="saved data config"),
            build_config(TrainConfig, saved_train, parse_overrides(overrides).get("train"),
                         {k: v for k, v in train_args.items() if v is not None}, what="train config"),
        )
        out_dir = out or Path(resume).resolve().parent.parent
    else:
        spec = resolve_model(host, plugin, model)
        plan = plan_run(host, spec, preset=preset, dataset=dataset, config_file=config, overrides=overrides,
                        train_args=train_args, data_args=data_args)
        out_dir = out or _fresh_out_dir(Path("runs") / f"{spec.name}-{plan.preset}")
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in metric_names:  # fail on a typo before any data or model is built
        host.metrics.get(name)
    dev = resolve_device(device)

    train_set = plan.dataset.build(plan.data_cfg, "train")
    # pick the best checkpoint on held-out validation data, never on the test set, when the dataset has one
    val_split = "val" if "val" in plan.dataset.splits else "test"
    val_set = plan.dataset.build(plan.data_cfg, val_split)
    frame_shape = tuple(train_set.frame_shape)
    seed_everything(plan.train_cfg.seed)  # the same --seed gives the same initial weights
    model_obj = plan.spec.build(plan.model_cfg, frame_shape)
    n_context, n_future = plan.model_cfg.n_context, plan.model_cfg.n_future  # type: ignore[attr-defined]
    data_meta = {"name": plan.dataset.name, "config": plan.data_cfg.model_dump(mode="json"),
                 "frame_shape": list(frame_shape), "n_context": n_context, "n_future": n_future}
    n_params = sum(p.numel() for p in model_obj.parameters())
    trainer = Trainer(
        model_obj, model_key=plan.spec.name, plugin_meta=plugin_section(plan.spec.plugin), train_cfg=plan.train_cfg,
        train_set=train_set, val_set=val_set, data_meta=data_meta, out_dir=out_dir, metrics=metric_names,
        metric_options={"device": str(dev), "lpips_backbone": str(lpips_backbone) if lpips_backbone else None},
        device=dev, resume_from=resume, preset=plan.preset,
    )
    if world.main:
        where = f"{world.size} processes" if world.distributed else str(dev)
        console.print(f"Training [bold]{plan.spec.name}[/] (preset {plan.preset}, {n_params:,} parameters) on "
                      f"[bold]{plan.dataset.name}[/] {frame_shape}, {n_context}+{n_future} frames, "
                      f"{plan.train_cfg.steps} steps of {plan.train_cfg.batch_size} videos on {where} -> {out_dir}")
    result = trainer.fit()
    distributed.teardown(world)
    if not world.main:
        return
    console.print(f"Done at step {result.step}. Last checkpoint: [bold]{result.last}[/]"
                  + (f"; best ({plan.train_cfg.val_metric} {result.best_metric:.4f}): [bold]{result.best}[/]"
                     if result.best is not None and result.best_metric is not None else ""))
    target = result.best or result.last
    if n_future > 0:  # a model that predicts no frames (an image model) has nothing for `vpkit eval` to score
        console.print(f"Next: vpkit eval {target} --samples 100")


LAUNCHER_OPTIONS = ("--devices", "--nnodes", "--node-rank", "--rdzv-endpoint")


def _relaunch(*, devices: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None, out: Path | None) -> None:
    """Re-run this `vpkit train` command under torchrun's elastic launcher, without the launcher options and with
    the run folder fixed up front (every process must write to the same one)."""
    import sys

    from vpkit.engine import distributed

    argv = sys.argv[sys.argv.index("train") + 1:] if "train" in sys.argv else []
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in LAUNCHER_OPTIONS:
            skip = "=" not in arg
            continue
        kept.append(arg)
    if out is None and "--resume" not in kept:
        run = _fresh_out_dir(Path("runs") / "ddp")
        kept += ["--out", str(run)]
    args = distributed.launch_args(kept, devices=devices, nnodes=nnodes, node_rank=node_rank,
                                   rdzv_endpoint=rdzv_endpoint)
    console.print(f"Launching {devices} process(es) per machine on {nnodes} machine(s): torchrun {' '.join(args)}")
    code = distributed.launch(kept, devices=devices, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    if code:
        raise typer.Exit(code)
