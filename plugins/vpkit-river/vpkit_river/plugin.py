"""Registers RIVER with vpkit: `river-vqvae` (the authors' VQVAE, stage 1) and `river` (the flow model, stage 2,
the plugin's default; it takes `--set autoencoder=RUN/checkpoints/last`).

Presets are the official `configs/*.yaml` (github.com/Araachie/river): clip length = `num_observations`, context =
`condition_frames`, batch 16, 300k steps, validation every 20k and checkpoints every 5k as the official trainer.
The BAIR and KTH presets describe the official taming/LDM VQGAN latent space (`f8_small`, BAIR-256 `f16`): train a
`river-vqgan` of that preset first and pass it as the autoencoder (a checkpoint's architecture always replaces the
preset's). `smmnist` runs the official architecture on the embedded Moving MNIST; `tiny` is for tests.

Also registered: `river-refiner` (the official RCAN refinement network, `refiner.py`), the importer of the official
checkpoints (`vpkit import river model.pth`, `importer.py`), and RIVER's sampling options for `vpkit predict`,
`vpkit eval` and `vpkit export`: `--steps`, `--solver`, `--warm-start` and `--refine REFINER_CKPT`.
"""

from __future__ import annotations

from pathlib import Path

import vpkit
from vpkit.core.specs import (
    ImporterOption,
    ImporterSpec,
    ModelSpec,
    Preset,
    SamplingOption,
)
from vpkit_river.config import RiverConfig, VQVAEConfig
from vpkit_river.vqgan_presets import F8_SMALL, F16

TINY_VQVAE = {"num_embeddings": 64, "encoder_channels": 8, "decoder_channels": 32, "norm_groups": 4}
OFFICIAL_TRAIN = {"batch_size": 16, "steps": 300_000, "val_every": 20_000, "sample_every": 5_000,
                  "checkpoint_every": 5_000}

# -- river-vqvae ----------------------------------------------------------------------------------------------------

VQVAE_PRESETS = {
    "smmnist": Preset(
        model={"n_context": 5, "n_future": 10}, dataset="smmnist", train={"batch_size": 16, "steps": 100_000},
        frame_shape=(1, 64, 64),
        description="the official architecture on Stochastic Moving MNIST, 64x64 grey -> 4x8x8 latents "
        "(recipe not released: Adam 3e-4)"),
    "clevrer128": Preset(
        model={}, dataset="clevrer", data={"seq_len": 16, "step": 5, "colour_jitter": True},
        train={"batch_size": 16, "steps": 300_000}, frame_shape=(3, 128, 128),
        description="CLEVRER 128x128 -> 4x16x16 latents, 8192 codes: the official CLEVRER autoencoder (7.33 M); "
        "its training recipe is not released"),
    "tiny": Preset(
        model=TINY_VQVAE,
        dataset="smmnist", train={"batch_size": 4}, frame_shape=(1, 64, 64),
        description="small widths for tests"),
}

# -- river ----------------------------------------------------------------------------------------------------------

RIVER_PRESETS = {
    "smmnist": Preset(
        model={"n_context": 5, "n_future": 10}, dataset="smmnist", train=OFFICIAL_TRAIN, frame_shape=(1, 64, 64),
        description="the official BAIR-64 network on Stochastic Moving MNIST, 5 -> 10"),
    "bair64": Preset(
        model={"n_context": 1, "n_future": 15, "vqgan": F8_SMALL}, dataset="bair", data={"seq_len": 16},
        train=OFFICIAL_TRAIN, frame_shape=(3, 64, 64),
        description="BAIR 64x64, 1 -> 15 (configs/bair_64.yaml) in the latent space of a river-vqgan f8_small "
        "(4x8x8)"),
    "bair256": Preset(
        model={"n_context": 1, "n_future": 15, "out_norm": "bn", "vqgan": F16}, dataset="h5",
        data={"seq_len": 16, "test_seq_len": 16}, train=OFFICIAL_TRAIN, frame_shape=(3, 256, 256),
        description="BAIR 256x256, 1 -> 15, BatchNorm head (configs/bair_256.yaml) in the latent space of a "
        "river-vqgan f16 (8x16x16); the 256x256 frames are the authors' (PVG's) BAIR, converted with vpkit data "
        "convert (pass --data-root)"),
    "kth64": Preset(
        model={"n_context": 10, "n_future": 30, "vqgan": F8_SMALL}, dataset="kth", data={"seq_len": 40, "rgb": True},
        train=OFFICIAL_TRAIN, frame_shape=(3, 64, 64),
        description="KTH 64x64, 10 -> 30 (configs/kth.yaml) in the latent space of a river-vqgan f8_small "
        "(4x8x8); grey frames repeated to RGB as the official HDF5 files"),
    "clevrer128": Preset(
        model={"n_context": 2, "n_future": 14}, dataset="clevrer",
        data={"seq_len": 16, "step": 5, "colour_jitter": True}, train=OFFICIAL_TRAIN, frame_shape=(3, 128, 128),
        description="CLEVRER 128x128, every 5th frame, 2 -> 14 (configs/clevrer.yaml; autoencoder: river-vqvae "
        "clevrer128; the official clip-consistent colour jitter is applied to training clips)"),
    "tiny": Preset(
        model={"inner_dim": 32, "heads": 2, "depth": 1, "mid_depth": 1, "ffn_mult": 2, "distance_hidden": 8,
               "position_table": 16, "steps": 3, "n_context": 2, "n_future": 2, "warmup_steps": 1,
               "decay_steps": 1000, "vqvae": TINY_VQVAE},
        dataset="smmnist", train={"batch_size": 4}, frame_shape=(1, 64, 64),
        description="small widths and a 3-point RK4 grid for tests (trains on a river-vqvae of its tiny preset)"),
}


def build_vqvae(config: VQVAEConfig, frame_shape: tuple[int, int, int]):
    from vpkit_river.vqvae import RiverVQVAE

    return RiverVQVAE(config, frame_shape)


def build_river(config: RiverConfig, frame_shape: tuple[int, int, int]):
    from vpkit_river.model import build_river as build

    return build(config, frame_shape)


def reconfigure_river(model, config: RiverConfig):
    from vpkit_river.model import reconfigure

    return reconfigure(model, config)


RIVER_SAMPLING = (
    SamplingOption("steps", "steps", int, "Points of the integration grid on [0, 1] (trained: 100; RK4 makes "
                   "4 vector-field evaluations per interval, Euler 1)."),
    SamplingOption("solver", "solver", str, "rk4 (the official 3/8 rule) or euler."),
    SamplingOption("warm-start", "warm_start", float, "Start each frame's ODE at time s from the previous "
                   "latent mixed with noise, skipping the fraction s of the steps (the paper's warm start; 0 as the "
                   "official evaluator)."),
    SamplingOption("refine", "refiner", Path, "Refine every generated frame with this river-refiner "
                   "checkpoint (the official release cannot).", changes_graphs=True),
)


@vpkit.hookimpl
def register_models(register) -> None:
    register(ModelSpec(
        name="river", config_cls=RiverConfig, build=build_river, presets=RIVER_PRESETS, default_preset="smmnist",
        default=True,
        description="RIVER: latent flow matching with sparse conditioning (Davtyan et al., ICCV 2023); needs "
        "--set autoencoder=CKPT of a river-vqvae or river-vqgan",
        sampling=RIVER_SAMPLING, reconfigure=reconfigure_river,
    ))
    register(ModelSpec(
        name="river-vqvae", config_cls=VQVAEConfig, build=build_vqvae, presets=VQVAE_PRESETS,
        default_preset="smmnist",
        description="RIVER's VQVAE autoencoder (stage 1; the authors' CLEVRER autoencoder, 7.33 M at 128x128 RGB)",
    ))
    from vpkit_river.refiner import REFINER_SPEC

    register(REFINER_SPEC)  # the RCAN refinement network (official refinement/)
    from vpkit_river.vqgan_presets import VQGAN_SPEC

    register(VQGAN_SPEC)  # the taming/LDM VQGAN (stage 1 of the BAIR/KTH models)


def load_official(path, options):
    from vpkit_river.importer import load_official as load

    return load(path, options)


@vpkit.hookimpl
def register_importers(register) -> None:
    register(ImporterSpec(
        name="river", load=load_official,
        description="official Araachie/river release: model.pth (+ --autoencoder vqvae.ckpt|vqvae.pth when "
        "model.pth lacks it; --set preset=bair64|bair256|kth64|clevrer128), or an autoencoder file alone",
        options=(ImporterOption("autoencoder", Path, "The official autoencoder (vqvae.ckpt or vqvae.pth) for a "
                                "model.pth saved without it; a model.pth that embeds one needs none."),),
    ))
