"""Importing the official SLAMP checkpoints (github.com/kaanakan/slamp) into vpkit models.

`train.py` saves `torch.save(dict)` whose values are the 11 networks as **pickled whole modules** (12 for KITTI and
Cityscapes, which add the shared `img_encoder`), plus `opt` (an argparse Namespace, or a plain dict in the KITTI and
Cityscapes runs; its `optimizer` field is the Adam class) and `epoch`. The release assets are
`slamp_{mnist,kth,bair,kitti,cityscapes}.pth`. The file is read with `vpkit.engine.legacy_pickle`, which never imports
or runs the authors' code: every `models.*` class becomes an inert stand-in whose weights are walked out into a state
dict. Our modules carry the official names, so the keys line up one to one.

Official `evaluate.py` keeps the convolutional networks in train mode when sampling (BatchNorm uses each call's batch
statistics), so imported models default to `sampling_batchnorm=batch`; `--set sampling_batchnorm=running` changes it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit.core.model import VideoPredictor
from vpkit.engine.legacy_pickle import ModuleStandIn, load_legacy, load_standin_weights
from vpkit_slamp.config import SPATIAL, SLAMPConfig

NETWORKS = ("static_frame_predictor", "dynamic_frame_predictor", "posterior_app", "prior_app", "posterior_motion",
            "prior_motion", "pixel_encoder", "motion_encoder", "pixel_decoder", "flow_decoder", "mask_decoder")
"""Dict keys of every official checkpoint; KITTI and Cityscapes add `img_encoder`."""

FOREIGN_CLASSES = ("models.*",)
"""The official repository's own classes all live in its `models` package; they load as inert stand-ins."""

DATASETS = {"smmnist": "smmnist", "kth": "kth", "bair": "bair", "kitti": "kitti", "cityscapes": "cityscapes"}
"""Official `--dataset` values -> vpkit dataset names."""

FRAME_SHAPES = {"kitti": (92, 310), "cityscapes": (128, 256)}
"""Frame size of the real-world variants (official `data/kitti.py`, `data/cityscapes.py`); all others are 64x64."""

OPTIONS = ("n_context", "n_future", "dataset", "sampling_batchnorm")
"""What `vpkit import slamp PATH --set KEY=VALUE` may override."""

SIZES = ("g_dim_app", "g_dim_motion", "z_dim_app", "z_dim_motion", "rnn_size", "predictor_rnn_layers",
         "posterior_rnn_layers", "prior_rnn_layers")
TRAINING = ("beta", "lr", "beta1", "sch_sampling", "epoch_size")


def load_official(path: Path, options: Mapping[str, Any]) -> tuple[str, VideoPredictor, dict[str, Any]]:
    """Read an official SLAMP checkpoint: `("slamp", model in eval mode, data section)`.

    `options` may override `n_context` and `n_future` (the evaluation split of the clip), `dataset` (the vpkit dataset
    to evaluate on) and `sampling_batchnorm`."""
    options = dict(options)
    unknown = [key for key in options if key not in OPTIONS]
    if unknown:
        raise VpkitError(f"Unknown option '{unknown[0]}' for the SLAMP importer.{did_you_mean(unknown[0], OPTIONS)} "
                         f"Known: {', '.join(OPTIONS)}.")
    path = Path(path)
    saved = load_legacy(path, foreign=FOREIGN_CLASSES, what="SLAMP checkpoint")
    networks, opt = _check_layout(path, saved)
    config, frame_shape = config_from_options(path, opt, options)
    from vpkit_slamp.plugin import build_slamp

    model = build_slamp(config, frame_shape)
    load_weights(path, model, networks)
    model.eval()
    n_future = options.get("n_future")
    if n_future is None:  # the run's validation horizon (official --n_eval counts the context frames too)
        n_future = int(opt["n_eval"]) - config.n_context if opt.get("n_eval") else config.n_future
    data = {"name": _dataset_name(path, opt, options), "config": _data_config(opt), "frame_shape": list(frame_shape),
            "n_context": config.n_context, "n_future": int(n_future)}
    return "slamp", model, data


def _check_layout(path: Path, saved: Any) -> tuple[dict[str, ModuleStandIn], dict[str, Any]]:
    """The pickled networks by official name, and the training options as a dict."""
    if not isinstance(saved, Mapping):
        raise VpkitError(f"{path} is not an official SLAMP checkpoint: it holds a {type(saved).__name__}, not the "
                         f"dict of networks train.py saves.")
    missing = [key for key in (*NETWORKS, "opt") if key not in saved]
    if missing:
        raise VpkitError(f"{path} is not an official SLAMP checkpoint: it lacks {', '.join(map(repr, missing[:4]))} "
                         f"(has {', '.join(map(repr, list(saved)[:8])) or 'nothing'}).")
    names = NETWORKS + (("img_encoder",) if "img_encoder" in saved else ())
    networks: dict[str, ModuleStandIn] = {}
    for name in names:
        if not isinstance(saved[name], ModuleStandIn):
            raise VpkitError(f"{path} is not an official SLAMP checkpoint: '{name}' holds a "
                             f"{type(saved[name]).__name__}, not a pickled module.")
        networks[name] = saved[name]
    opt = saved["opt"]
    opt = vars(opt) if isinstance(opt, argparse.Namespace) else opt
    if not isinstance(opt, Mapping):
        raise VpkitError(f"{path} is not an official SLAMP checkpoint: 'opt' holds a {type(opt).__name__}, not the "
                         f"training options.")
    return networks, dict(opt)


def config_from_options(path: Path, opt: Mapping[str, Any], options: Mapping[str, Any]
                        ) -> tuple[SLAMPConfig, tuple[int, int, int]]:
    """`SLAMPConfig` and `(C, H, W)` from the official options (the `args.py` names)."""
    dataset = opt.get("dataset")
    if dataset in SPATIAL:
        architecture = dataset
        height, width = FRAME_SHAPES[dataset]
    else:
        model = opt.get("model", "dcgan")
        if model not in ("dcgan", "vgg"):
            raise VpkitError(f"{path}: options say model={model!r}; SLAMP has 'dcgan' and 'vgg' (64x64).")
        architecture = f"{model}64"
        height = width = int(opt.get("image_width", 64))
    if opt.get("motion_skip"):
        raise VpkitError(f"{path} was trained with --motion_skip (flow decoder on the motion-encoder skips), which "
                         "vpkit's SLAMP does not implement: the released models and README commands do not use it.")
    if opt.get("running_avg") is False or opt.get("last_frame_skip") is False:
        raise VpkitError(f"{path}: options turn off running_avg / last_frame_skip, which the official code cannot "
                         "do from its command line and vpkit's SLAMP does not implement.")
    fields: dict[str, Any] = {"architecture": architecture,
                              "sampling_batchnorm": options.get("sampling_batchnorm", "batch")}
    for name in (*SIZES, *TRAINING):
        if name in opt and opt[name] is not None:
            fields[name] = opt[name]
    for ours, theirs in (("n_context", "n_past"), ("n_future", "n_future")):
        if ours in options:
            fields[ours] = options[ours]
        elif theirs in opt:
            fields[ours] = opt[theirs]
        else:
            raise VpkitError(f"{path}: the options lack '{theirs}'; give it with --set {ours}=N.")
    channels = opt.get("channels", 1)
    if not isinstance(channels, int) or channels < 1:
        raise VpkitError(f"{path}: cannot tell the number of frame channels (options say {channels!r}).")
    config = build_config(SLAMPConfig, fields, what=f"SLAMP config derived from {path}")
    return config, (channels, height, width)


def _dataset_name(path: Path, opt: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    if "dataset" in options:
        return str(options["dataset"])
    dataset = opt.get("dataset")
    if dataset not in DATASETS:
        raise VpkitError(f"{path} was trained on dataset {dataset!r}, which vpkit does not know; name the vpkit "
                         "dataset to evaluate it on with --set dataset=NAME.")
    return DATASETS[dataset]


def _data_config(opt: Mapping[str, Any]) -> dict[str, Any]:
    """What the options pin down for vpkit's own dataset: how many digits SM-MNIST shows."""
    if opt.get("dataset") == "smmnist" and isinstance(opt.get("num_digits"), int):
        return {"num_digits": opt["num_digits"]}
    return {}


def load_weights(path: Path, model: VideoPredictor, networks: Mapping[str, ModuleStandIn]) -> None:
    """Copy every pickled parameter and buffer into `model`; names and shapes must match exactly."""
    load_standin_weights(model, networks, path=path, what=f"SLAMP '{model.config.architecture}'")
