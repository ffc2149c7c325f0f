"""Registers SLAMP (`slamp`) with vpkit, and the official-checkpoint importer (`vpkit import slamp FILE.pth`).

Presets are the official README training commands of github.com/kaanakan/slamp with the `args.py` defaults for
what they leave out (lr 3e-4, beta 1e-4, Adam beta1 0.9, 300 epochs x 1000 iterations). The paper (appendix C.3)
reports other values for KTH (lr 1e-4, beta 1e-6) and BAIR (lr 1e-4); set them with `--set` to follow the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import vpkit
from vpkit.core.specs import ImporterSpec, ModelSpec, Preset
from vpkit_slamp.config import SPATIAL, SLAMPConfig

EPOCHS, EPOCH_SIZE = 300, 1000

SMMNIST = Preset(
    model={"architecture": "dcgan64", "g_dim_app": 128, "g_dim_motion": 128, "z_dim_app": 20, "z_dim_motion": 20,
           "n_context": 5, "n_future": 10},
    dataset="smmnist", data={}, train={"batch_size": 32, "steps": EPOCHS * EPOCH_SIZE}, frame_shape=(1, 64, 64),
    description="Stochastic Moving MNIST, 2 digits, 64x64 (official README command)",
)
KTH = Preset(
    model={"architecture": "vgg64", "g_dim_app": 128, "g_dim_motion": 128, "z_dim_app": 50, "z_dim_motion": 50,
           "n_context": 10, "n_future": 10, "sch_sampling": 25},
    dataset="kth", data={}, train={"batch_size": 20, "steps": EPOCHS * EPOCH_SIZE}, frame_shape=(1, 64, 64),
    description="KTH actions, 64x64, scheduled sampling k=25 (official README command)",
)
BAIR = Preset(
    model={"architecture": "vgg64", "g_dim_app": 128, "g_dim_motion": 128, "z_dim_app": 64, "z_dim_motion": 64,
           "n_context": 2, "n_future": 10, "sch_sampling": 25},
    dataset="bair", data={}, train={"batch_size": 20, "steps": EPOCHS * EPOCH_SIZE}, frame_shape=(3, 64, 64),
    description="BAIR robot pushing, 64x64 RGB, scheduled sampling k=25 (official README command)",
)
TINY = Preset(
    model={"architecture": "dcgan64", "g_dim_app": 8, "g_dim_motion": 8, "z_dim_app": 3, "z_dim_motion": 2,
           "rnn_size": 8, "n_context": 2, "n_future": 2},
    dataset="smmnist", data={}, train={"batch_size": 4}, frame_shape=(1, 64, 64),
    description="small latent and LSTM sizes for tests (the conv widths are fixed by the official design)",
)


KITTI = Preset(
    model={"architecture": "kitti", "g_dim_app": 64, "g_dim_motion": 64, "z_dim_app": 32, "z_dim_motion": 32,
           "n_context": 10, "n_future": 10},
    dataset="kitti", data={}, train={"batch_size": 8, "steps": 151 * EPOCH_SIZE}, frame_shape=(3, 92, 310),
    description="KITTI raw, 92x310 RGB, ConvLSTM predictors (official README command, 151 epochs)",
)
CITYSCAPES = Preset(
    model={"architecture": "cityscapes", "g_dim_app": 64, "g_dim_motion": 64, "z_dim_app": 32, "z_dim_motion": 32,
           "n_context": 10, "n_future": 10, "epoch_size": 1300},
    dataset="cityscapes", data={}, train={"batch_size": 7, "steps": 151 * 1300}, frame_shape=(3, 128, 256),
    description="Cityscapes sequences, 128x256 RGB, ConvLSTM predictors (official README command, 151 x 1300 steps)",
)


def build_slamp(config: SLAMPConfig, frame_shape: tuple[int, int, int]):
    if config.architecture in SPATIAL:
        from vpkit_slamp.spatial import SpatialSLAMP

        return SpatialSLAMP(config, frame_shape)
    from vpkit_slamp.model import SLAMP

    return SLAMP(config, frame_shape)


def load_official(path: Path, options: Mapping[str, Any]):
    from vpkit_slamp.importer import load_official as load

    return load(path, options)


@vpkit.hookimpl
def register_models(register) -> None:
    register(ModelSpec(
        name="slamp", config_cls=SLAMPConfig, build=build_slamp,
        presets={"smmnist": SMMNIST, "kth": KTH, "bair": BAIR, "kitti": KITTI, "cityscapes": CITYSCAPES,
                 "tiny": TINY},
        default_preset="smmnist", default=True,
        description="SLAMP: stochastic latent appearance and motion prediction (Akan et al., ICCV 2021)",
    ))


@vpkit.hookimpl
def register_importers(register) -> None:
    register(ImporterSpec(
        name="slamp", load=load_official,
        description="official kaanakan/slamp checkpoint: a pickled dict of the networks (slamp_*.pth, "
        "best_*_model.pth), read without running code from it",
    ))
