"""Importing the official SRVP checkpoints (github.com/edouardelasalles/srvp) into vpkit models.

An official experiment directory holds `config.json` (the training options under their `args.py` names, written by
hand: `train.py` does not write it) and `model.pt` / `model_best.pt` (`torch.save(model.state_dict())` of
`StochasticLatentResidualVideoPredictor`, no `module.` prefix). Our modules use the official attribute names, so the
state-dict keys line up one to one; the file is read with `torch.load(weights_only=True)`, which runs no code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit_srvp.config import SRVPConfig
from vpkit_srvp.model import SRVP

DATASETS = {"smmnist": "smmnist", "kth": "kth", "human": "human36m", "bair": "bair"}
"""Official `--dataset` values -> vpkit dataset names (`smmnist` with `deterministic` is vpkit's `mmnist`)."""

OPTIONS = ("n_context", "n_future", "dataset", "sampling_batchnorm", "model_name")
"""What `vpkit import srvp PATH --set KEY=VALUE` may override."""

ARCH_FIELDS = ("archi", "nf", "nhx", "ny", "nz", "nt_inf", "nh_inf", "nlayers_inf", "nh_res", "nlayers_res",
               "n_euler_steps")
TRAIN_FIELDS = ("res_gain", "obs_scale", "beta_y", "beta_z", "l2_res", "lr", "lr_scheduling_burnin",
                "lr_scheduling_n_iter")


def load_official(path: Path, options: Mapping[str, Any]) -> tuple[str, SRVP, dict[str, Any]]:
    """Read an official SRVP experiment: `path` is its directory (weights `model.pt`, or `--set model_name=...`) or
    the weights file itself, next to `config.json`. Returns `("srvp", model in eval mode, data section)`."""
    options = dict(options)
    unknown = [key for key in options if key not in OPTIONS]
    if unknown:
        raise VpkitError(f"Unknown option '{unknown[0]}' for the SRVP importer.{did_you_mean(unknown[0], OPTIONS)} "
                         f"Known: {', '.join(OPTIONS)}.")
    path = Path(path)
    weights = path / str(options.get("model_name", "model.pt")) if path.is_dir() else path
    config_path = weights.parent / "config.json"
    if not config_path.is_file():
        raise VpkitError(f"{config_path} not found: an official SRVP experiment needs config.json next to "
                         f"{weights.name} (the training options; see the official README).")
    if not weights.is_file():
        raise VpkitError(f"{weights} not found.")
    try:
        opt = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise VpkitError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(opt, dict):
        raise VpkitError(f"{config_path} must hold a JSON object of training options.")
    config, frame_shape = config_from_options(config_path, opt, options)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:
        raise VpkitError(f"{weights} is not a readable PyTorch state_dict: {err}") from err
    if not isinstance(state, Mapping):
        raise VpkitError(f"{weights} holds a {type(state).__name__}, not the state_dict train.py saves.")
    model = SRVP(config, frame_shape)
    load_weights(weights, model, state)
    model.eval()
    n_future = options.get("n_future")
    if n_future is None:  # the evaluation horizon where the options give one, else the training one
        n_future = opt["seq_len_test"] - config.n_context if opt.get("seq_len_test") else config.n_future
    data = {"name": _dataset_name(config_path, opt, options), "config": {}, "frame_shape": list(frame_shape),
            "n_context": config.n_context, "n_future": int(n_future)}
    return "srvp", model, data


def config_from_options(where: Path, opt: Mapping[str, Any], options: Mapping[str, Any]
                        ) -> tuple[SRVPConfig, tuple[int, int, int]]:
    """`SRVPConfig` and `(C, H, W)` from the official options (`config.json`)."""
    missing = [name for name in ("nc", "ny", "nz", "nt_inf") if name not in opt]
    if missing:
        raise VpkitError(f"{where} lacks {', '.join(missing)}: not an SRVP config.json.")
    nx = int(opt.get("nx", 64))
    if nx != 64:
        raise VpkitError(f"{where}: nx={nx}; SRVP's networks take 64x64 frames.")
    skipco = opt.get("skipco", False)
    if isinstance(skipco, str):
        skipco = skipco.lower() not in ("", "none", "false", "0")
    fields: dict[str, Any] = {name: opt[name] for name in ARCH_FIELDS + TRAIN_FIELDS if opt.get(name) is not None}
    fields["skipco"] = bool(skipco)
    if "n_context" in options:
        fields["n_context"] = options["n_context"]
    elif opt.get("nt_cond") is not None:
        fields["n_context"] = opt["nt_cond"]
    else:
        raise VpkitError(f"{where} lacks 'nt_cond'; give it with --set n_context=N.")
    if opt.get("seq_len") and opt["seq_len"] > fields["n_context"]:
        fields["n_future"] = opt["seq_len"] - fields["n_context"]
    if "sampling_batchnorm" in options:
        fields["sampling_batchnorm"] = options["sampling_batchnorm"]
    config = build_config(SRVPConfig, fields, what=f"SRVP config derived from {where}")
    return config, (int(opt["nc"]), nx, nx)


def load_weights(where: Path, model: SRVP, state: Mapping[str, torch.Tensor]) -> None:
    """Copy the official state_dict into `model`; names and shapes must match exactly."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
             for key, value in expected.items() if key in state and state[key].shape != value.shape]
    if missing or unexpected or wrong:
        problems = [f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]] + wrong[:3]
        raise VpkitError(f"{where}: the weights do not fit SRVP as config.json describes it ({'; '.join(problems)}).")
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in state.items()})


def _dataset_name(where: Path, opt: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    if "dataset" in options:
        return str(options["dataset"])
    dataset = opt.get("dataset")
    if dataset not in DATASETS:
        raise VpkitError(f"{where}: dataset {dataset!r} is not one vpkit knows; name the vpkit dataset to evaluate "
                         "on with --set dataset=NAME.")
    if dataset == "smmnist" and opt.get("deterministic"):
        return "mmnist"
    return DATASETS[dataset]
