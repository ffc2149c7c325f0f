"""Registers SRVP (`srvp`, the plugin's default model) with vpkit, and the official-checkpoint importer
(`vpkit import srvp DIR`).

Presets are the official training commands of the README of github.com/edouardelasalles/srvp (argparse defaults of
`args.py` elsewhere): `n_context` is `--nt_cond`, `n_future` is `--seq_len` minus it, and the trainer runs
`lr_scheduling_burnin + lr_scheduling_n_iter` steps at the official batch size.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import vpkit
from vpkit.core.specs import ImporterSpec, ModelSpec, Preset
from vpkit_srvp.config import SRVPConfig

MNIST = {"ny": 20, "nz": 20, "beta_z": 2.0, "n_context": 5, "nt_inf": 5, "n_future": 10}
VGG_SKIP = {"archi": "vgg", "skipco": True, "ny": 50, "nz": 50, "n_euler_steps": 2}

SMMNIST = Preset(
    model={**MNIST, "lr_scheduling_burnin": 1_000_000, "lr_scheduling_n_iter": 100_000},
    dataset="smmnist", data={}, train={"batch_size": 128, "steps": 1_100_000}, frame_shape=(1, 64, 64),
    description="Stochastic Moving MNIST, 2 digits, 5 -> 10 (official README command)",
)
MMNIST = Preset(
    model={**MNIST, "lr_scheduling_burnin": 800_000, "lr_scheduling_n_iter": 100_000},
    dataset="mmnist", data={}, train={"batch_size": 128, "steps": 900_000}, frame_shape=(1, 64, 64),
    description="Deterministic Moving MNIST, 2 digits, 5 -> 10 (official README command)",
)
KTH = Preset(
    model={**VGG_SKIP, "res_gain": 1.2, "n_context": 10, "nt_inf": 3, "n_future": 10, "obs_scale": 0.2,
           "lr_scheduling_burnin": 150_000, "lr_scheduling_n_iter": 50_000},
    dataset="kth", data={}, train={"batch_size": 100, "steps": 200_000, "val_every": 5000},
    frame_shape=(1, 64, 64),
    description="KTH actions, 64x64, 10 -> 10 in training (official README command; tested 10 -> 30)",
)
HUMAN36M = Preset(
    model={**VGG_SKIP, "res_gain": 1.2, "n_context": 8, "nt_inf": 3, "n_future": 8, "obs_scale": 0.2,
           "lr_scheduling_burnin": 325_000, "lr_scheduling_n_iter": 25_000},
    dataset="human36m", data={}, train={"batch_size": 100, "steps": 350_000}, frame_shape=(3, 64, 64),
    description="Human3.6M, 64x64 RGB, frames subsampled by 8, 8 -> 8 in training (official README command; "
    "tested 8 -> 45)",
)
BAIR = Preset(
    model={**VGG_SKIP, "n_context": 2, "nt_inf": 2, "n_future": 10, "obs_scale": 0.71,
           "lr_scheduling_burnin": 1_000_000, "lr_scheduling_n_iter": 500_000},
    dataset="bair", data={}, train={"batch_size": 192, "steps": 1_500_000}, frame_shape=(3, 64, 64),
    description="BAIR robot pushing, 64x64 RGB, 2 -> 10 (official README command; tested 2 -> 28)",
)
TINY = Preset(
    model={"nf": 4, "nhx": 8, "ny": 3, "nz": 2, "nt_inf": 2, "nh_inf": 8, "nh_res": 8, "skipco": True,
           "n_euler_steps": 2, "n_context": 2, "n_future": 2, "obs_scale": 0.5},
    dataset="smmnist", data={}, train={"batch_size": 4}, frame_shape=(1, 64, 64),
    description="small widths for tests (dcgan, skips, two Euler sub-steps)",
)


def build_srvp(config: SRVPConfig, frame_shape: tuple[int, int, int]):
    from vpkit_srvp.model import SRVP

    return SRVP(config, frame_shape)


def load_official(path: Path, options: Mapping[str, Any]):
    from vpkit_srvp.importer import load_official as load

    return load(path, options)


@vpkit.hookimpl
def register_models(register) -> None:
    register(ModelSpec(
        name="srvp", config_cls=SRVPConfig, build=build_srvp,
        presets={"smmnist": SMMNIST, "mmnist": MMNIST, "kth": KTH, "human36m": HUMAN36M, "bair": BAIR, "tiny": TINY},
        default_preset="smmnist", default=True,
        description="SRVP: stochastic latent residual video prediction (Franceschi et al., ICML 2020)",
    ))


@vpkit.hookimpl
def register_importers(register) -> None:
    register(ImporterSpec(
        name="srvp", load=load_official,
        description="official edouardelasalles/srvp experiment: config.json + model.pt (a plain state_dict)",
    ))
