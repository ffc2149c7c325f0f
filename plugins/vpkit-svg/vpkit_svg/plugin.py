"""Registers SVG-LP (`svg-lp`, the plugin's default) and SVG-FP (`svg-fp`) with vpkit, and the official-checkpoint
importer (`vpkit import svg model.pth`).

Presets are the official recipes (README of github.com/edenton/svg and the argparse defaults of `train_svg_*.py`):
batch 100 and 300 epochs x 600 iterations = 180,000 steps, five Adams at lr 2e-3 (8e-4 in the KTH command).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import vpkit
from vpkit.core.specs import ImporterSpec, ModelSpec, Preset
from vpkit_svg.config import SVGConfig

OFFICIAL_TRAIN = {"batch_size": 100, "steps": 300 * 600}

SMMNIST = Preset(
    model={"architecture": "dcgan64", "g_dim": 128, "z_dim": 10, "beta": 1e-4, "n_context": 5, "n_future": 10},
    dataset="smmnist", data={}, train=OFFICIAL_TRAIN, frame_shape=(1, 64, 64),
    description="Stochastic Moving MNIST, 2 digits, 64x64 (official README command)",
)
BAIR = Preset(
    model={"architecture": "vgg64", "g_dim": 128, "z_dim": 64, "beta": 1e-4, "n_context": 2, "n_future": 10},
    dataset="bair", data={}, train=OFFICIAL_TRAIN, frame_shape=(3, 64, 64),
    description="BAIR robot pushing, 64x64 RGB (official README command)",
)
KTH = {"g_dim": 128, "z_dim": 24, "beta": 1e-6, "n_context": 10, "n_future": 10, "lr": 8e-4}
KTH64 = Preset(
    model={"architecture": "vgg64", **KTH}, dataset="kth", data={}, train=OFFICIAL_TRAIN, frame_shape=(1, 64, 64),
    description="KTH actions, 64x64 (official README command, written there for SVG-FP)",
)
KTH128 = Preset(
    model={"architecture": "vgg128", **KTH}, dataset="kth", data={}, train=OFFICIAL_TRAIN, frame_shape=(1, 128, 128),
    description="KTH actions, 128x128 as in the paper (the README's KTH settings on the vgg128 networks); "
    "needs kth prepared at 128x128 (vpkit data prepare kth --root DIR --size 128)",
)
TINY = Preset(
    model={"architecture": "dcgan64", "g_dim": 16, "z_dim": 4, "rnn_size": 16, "n_context": 2, "n_future": 2},
    dataset="smmnist", data={}, train={"batch_size": 4}, frame_shape=(1, 64, 64),
    description="small latent and LSTM sizes for tests (the conv widths are fixed by the official design)",
)


def build_svg_lp(config: SVGConfig, frame_shape: tuple[int, int, int]):
    from vpkit_svg.model import SVG

    return SVG(config, frame_shape, learned_prior=True)


def build_svg_fp(config: SVGConfig, frame_shape: tuple[int, int, int]):
    from vpkit_svg.model import SVG

    return SVG(config, frame_shape, learned_prior=False)


def load_official(path: Path, options: Mapping[str, Any]):
    from vpkit_svg.importer import load_official as load

    return load(path, options)


@vpkit.hookimpl
def register_models(register) -> None:
    register(ModelSpec(
        name="svg-lp", config_cls=SVGConfig, build=build_svg_lp,
        presets={"smmnist": SMMNIST, "bair": BAIR, "kth64": KTH64, "kth128": KTH128, "tiny": TINY},
        default_preset="smmnist", default=True,
        description="SVG-LP: stochastic video generation with a learned prior (Denton & Fergus, ICML 2018)",
    ))
    register(ModelSpec(
        name="svg-fp", config_cls=SVGConfig, build=build_svg_fp,
        presets={"smmnist": SMMNIST, "kth64": KTH64, "tiny": TINY},
        default_preset="smmnist",
        description="SVG-FP: stochastic video generation with a fixed N(0, I) prior (Denton & Fergus, ICML 2018)",
    ))


@vpkit.hookimpl
def register_importers(register) -> None:
    register(ImporterSpec(
        name="svg", load=load_official,
        description="official edenton/svg model.pth (SVG-LP or SVG-FP; pickled modules read without running code)",
    ))
