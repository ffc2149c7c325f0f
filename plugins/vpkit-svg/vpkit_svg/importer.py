"""Importing the official SVG checkpoints (github.com/edenton/svg) into vpkit models.

`train_svg_lp.py` / `train_svg_fp.py` save `{'encoder', 'decoder', 'frame_predictor', 'posterior', ['prior'], 'opt'}`
with `torch.save`: whole pickled modules of the authors' classes (`models.dcgan_64.encoder`, `models.lstm.lstm`,
...) and the argparse options; the released `pretrained_models/svglp_{smmnist2,bair}.pth` are the same dict, written
by PyTorch 0.3 in the legacy format. The file is read with `vpkit.engine.legacy_pickle`, which never imports or runs
the authors' code: each pickled module becomes an inert stand-in whose weights are walked out into a state dict.
Our modules use the official attribute names, so the keys line up one to one.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit.engine.legacy_pickle import (
    ModuleStandIn,
    load_legacy,
    load_standin_weights,
    module_state_dict,
    pickled_name,
)
from vpkit_svg.config import FRAME_SIZE, SVGConfig
from vpkit_svg.model import SVG

NETWORKS = ("encoder", "decoder", "frame_predictor", "posterior")
"""Dict keys of every official checkpoint; SVG-LP adds 'prior'."""

FOREIGN_CLASSES = ("models.*",)
"""The official repository's own classes all live in its `models` package; they load as inert stand-ins."""

DATASETS = {"smmnist": "smmnist", "bair": "bair", "kth": "kth"}
"""Official `--dataset` values -> vpkit dataset names."""

OPTIONS = ("n_context", "n_future", "dataset", "sampling_batchnorm")
"""What `vpkit import svg PATH --set KEY=VALUE` may override."""


def load_official(path: Path, options: Mapping[str, Any]) -> tuple[str, SVG, dict[str, Any]]:
    """Read an official SVG checkpoint: `(model_key, model, data_section)`.

    `model_key` is `svg-lp` when the file has a learned prior, else `svg-fp`; the model is in eval mode.
    `options` may override `n_context` and `n_future` (stored in the config and the data section), `dataset` (the
    vpkit dataset to evaluate on) and `sampling_batchnorm`.
    """
    options = dict(options)
    unknown = [key for key in options if key not in OPTIONS]
    if unknown:
        raise VpkitError(f"Unknown option '{unknown[0]}' for the SVG importer.{did_you_mean(unknown[0], OPTIONS)} "
                         f"Known: {', '.join(OPTIONS)}.")
    path = Path(path)
    saved = load_legacy(path, foreign=FOREIGN_CLASSES, what="SVG checkpoint")
    networks, opt = _check_layout(path, saved)
    learned_prior = "prior" in networks
    config, frame_shape = _config_from_options(path, opt, networks, options, learned_prior)

    model = SVG(config, frame_shape, learned_prior=learned_prior)
    _load_weights(path, model, networks)
    model.eval()
    name = _dataset_name(path, opt, options)
    data = {
        "name": name,
        # The one data setting the options pin down for vpkit's own dataset: how many digits SM-MNIST shows.
        "config": {"num_digits": opt["num_digits"]} if name == "smmnist" and isinstance(opt.get("num_digits"), int)
        else {},
        "frame_shape": list(frame_shape),
        "n_context": config.n_context,
        "n_future": config.n_future,
    }
    return ("svg-lp" if learned_prior else "svg-fp"), model, data


# -- reading the file ---------------------------------------------------------------------------------------------


def _check_layout(path: Path, saved: Any) -> tuple[dict[str, ModuleStandIn], dict[str, Any]]:
    """The pickled networks by official name, and the training options as a dict."""
    expected = (*NETWORKS, "opt")
    if not isinstance(saved, Mapping):
        raise VpkitError(f"{path} is not an official SVG checkpoint: it holds a {type(saved).__name__}, not the dict "
                         f"with keys {', '.join(expected)} that train_svg_lp.py / train_svg_fp.py save.")
    missing = [key for key in expected if key not in saved]
    if missing:
        raise VpkitError(f"{path} is not an official SVG checkpoint: it lacks {', '.join(map(repr, missing))} "
                         f"(has {', '.join(map(repr, list(saved)[:8])) or 'nothing'}).")
    names = NETWORKS + (("prior",) if "prior" in saved else ())
    networks: dict[str, ModuleStandIn] = {}
    for name in names:
        if not isinstance(saved[name], ModuleStandIn):
            raise VpkitError(f"{path} is not an official SVG checkpoint: '{name}' holds a "
                             f"{type(saved[name]).__name__}, not a pickled module.")
        networks[name] = saved[name]
    opt = saved["opt"]
    opt = vars(opt) if isinstance(opt, argparse.Namespace) else opt
    if not isinstance(opt, Mapping):
        raise VpkitError(f"{path} is not an official SVG checkpoint: 'opt' holds a {type(opt).__name__}, not the "
                         f"training options.")
    return networks, dict(opt)


def _architecture(path: Path, opt: Mapping[str, Any], encoder: ModuleStandIn) -> str:
    """`dcgan64` etc. from the pickled encoder class (`models.dcgan_64.encoder`), checked against `opt`."""
    pickled = pickled_name(encoder) or ""
    module = pickled.rpartition(".")[0]  # models.dcgan_64
    from_class = module.removeprefix("models.").replace("_", "")
    from_opt = f"{opt.get('model')}{opt.get('image_width')}" if "model" in opt else None
    architecture = from_class if module.startswith("models.") else from_opt
    if architecture not in FRAME_SIZE:
        raise VpkitError(
            f"{path} uses the encoder '{pickled}' (opt.model={opt.get('model')!r}, "
            f"image_width={opt.get('image_width')!r}), an architecture vpkit's SVG does not have; supported: "
            f"{', '.join(FRAME_SIZE)}."
        )
    if from_opt is not None and from_opt != architecture:
        raise VpkitError(f"{path} is inconsistent: its encoder is '{pickled}' but its options say "
                         f"model={opt.get('model')!r}, image_width={opt.get('image_width')!r}.")
    return architecture


def _config_from_options(
    path: Path, opt: Mapping[str, Any], networks: Mapping[str, ModuleStandIn], options: Mapping[str, Any],
    learned_prior: bool,
) -> tuple[SVGConfig, tuple[int, int, int]]:
    """`SVGConfig` and `(C, H, W)` from the official options; sizes the options lack come from the modules."""
    architecture = _architecture(path, opt, networks["encoder"])
    posterior, predictor = networks["posterior"], networks["frame_predictor"]

    def pick(name: str, *fallbacks: Any) -> Any:
        if name in opt:
            return opt[name]
        for value in fallbacks:
            if value is not None:
                return value
        raise VpkitError(f"{path}: the options lack '{name}' and it cannot be read off the weights.")

    channels = opt["channels"] if "channels" in opt else _out_channels(networks["decoder"])
    if not isinstance(channels, int) or channels < 1:
        raise VpkitError(f"{path}: cannot tell the number of frame channels (options say {channels!r}).")
    fields: dict[str, Any] = {
        "architecture": architecture,
        "g_dim": pick("g_dim", getattr(networks["encoder"], "dim", None)),
        "z_dim": pick("z_dim", getattr(posterior, "output_size", None)),
        "rnn_size": pick("rnn_size", getattr(posterior, "hidden_size", None)),
        "predictor_rnn_layers": pick("predictor_rnn_layers", getattr(predictor, "n_layers", None)),
        "posterior_rnn_layers": pick("posterior_rnn_layers", getattr(posterior, "n_layers", None)),
        "last_frame_skip": bool(opt.get("last_frame_skip", False)),
        # Official generate_svg_lp.py samples with the encoder and decoder left in training mode (each call's own
        # batch statistics); generate_svg_fp.py puts them in eval mode.
        "sampling_batchnorm": options.get("sampling_batchnorm", "batch" if learned_prior else "running"),
    }
    for ours, theirs in (("n_context", "n_past"), ("n_future", "n_future")):
        if ours in options:
            fields[ours] = options[ours]
        elif theirs in opt:
            fields[ours] = opt[theirs]
        else:
            raise VpkitError(f"{path}: the options lack '{theirs}'; give it with --set {ours}=N.")
    for name in ("beta", "lr", "beta1"):  # training hyper-parameters only: SVG's defaults where absent
        if name in opt:
            fields[name] = opt[name]
    if learned_prior:
        fields["prior_rnn_layers"] = pick("prior_rnn_layers", getattr(networks["prior"], "n_layers", None))
    config = build_config(SVGConfig, fields, what=f"SVG config derived from {path}")
    return config, (channels, config.frame_size, config.frame_size)


def _out_channels(decoder: ModuleStandIn) -> int | None:
    """Frame channels: the out-channels of the decoder's last transposed conv (weight `[in, out, k, k]`)."""
    state = module_state_dict(decoder)
    last = [key for key in state if key.endswith(".weight") and state[key].dim() == 4]
    return int(state[last[-1]].shape[1]) if last else None


def _dataset_name(path: Path, opt: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    if "dataset" in options:
        return str(options["dataset"])
    dataset = opt.get("dataset")
    if dataset not in DATASETS:
        raise VpkitError(f"{path} was trained on dataset {dataset!r}, which vpkit does not know; name the vpkit "
                         f"dataset to evaluate it on with --set dataset=NAME.")
    return DATASETS[dataset]


# -- weights ------------------------------------------------------------------------------------------------------


def _load_weights(path: Path, model: SVG, networks: Mapping[str, ModuleStandIn]) -> None:
    """Copy every pickled parameter and buffer into `model`; shapes and names must match exactly."""
    load_standin_weights(model, networks, path=path, what=f"SVG '{model.config.architecture}'")
