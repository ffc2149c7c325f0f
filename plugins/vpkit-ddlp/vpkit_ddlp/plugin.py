"""Registers DLPv2 (`dlp`, the plugin's default: `vpkit train --plugin ddlp` trains it on the generated Shapes), DDLP
(`ddlp`) and DiffuseDDLP (`diffuse-ddlp`) with vpkit, the official-checkpoint importer (`vpkit import ddlp PATH`),
the `vpkit ddlp particles` / `vpkit ddlp edit` commands and `vpkit generate`.

Presets are the official `configs/*.json` of github.com/taldatech/ddlp. `epoch_steps` is the official number of
iterations per epoch (training items // batch size) where the dataset size is known, and `train.steps` is the
official 150 epochs of it (the reference notes the authors stopped far earlier; lower `--steps`). DDLP's `n_context`
is the config's `cond_steps` (10) and `n_future` the rest of the T+1-frame training clip.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import vpkit
from vpkit.core.specs import ImporterSpec, ModelSpec, Preset
from vpkit_ddlp.config import DDLPConfig, DLPConfig
from vpkit_ddlp.diffuse import DIFFUSE_DDLP_SPEC, on_train_start  # noqa: F401 (a hook implementation)

EPOCHS = 150  # num_epochs of every official json

VIDEO_128 = {"patch_size": 16, "enc_channels": (32, 64, 128, 256), "prior_channels": (16, 32, 64)}


def _ddlp(dataset: str, frame: int, batch: int, epoch_steps: int, data: dict[str, Any] | None = None,
          description: str = "", **model: Any) -> Preset:
    horizon = model.get("timestep_horizon", 10)
    model = {"n_context": 10, "n_future": horizon + 1 - 10, "epoch_steps": epoch_steps, **model}
    return Preset(model=model, dataset=dataset, data=data or {}, frame_shape=(3, frame, frame),
                  train={"batch_size": batch, "steps": EPOCHS * epoch_steps}, description=description)


def _dlp(dataset: str, frame: int, batch: int, epoch_steps: int, data: dict[str, Any] | None = None,
         description: str = "", **model: Any) -> Preset:
    return Preset(model={"epoch_steps": epoch_steps, **model}, dataset=dataset, data=data or {},
                  frame_shape=(3, frame, frame), train={"batch_size": batch, "steps": EPOCHS * epoch_steps},
                  description=description)


DDLP_PRESETS = {
    "obj3d128": _ddlp("obj3d", 128, 4, 2920 * 90 // 4, {"image_size": 128}, "OBJ3D 128x128 (configs/obj3d128.json)",
                      **VIDEO_128, recon_loss_type="vgg", beta_kl=100.0, beta_dyn=100.0, n_kp_prior=16, n_kp_enc=12,
                      learned_feature_dim=8),
    "obj3d": _ddlp("obj3d", 64, 10, 2920 * 90 // 10, {"image_size": 64}, "OBJ3D 64x64 (configs/obj3d.json)",
                   patch_size=8, enc_channels=(32, 64, 128), prior_channels=(16, 32, 64), recon_loss_type="vgg",
                   beta_kl=30.0, beta_dyn=30.0, n_kp_prior=16, n_kp_enc=8, learned_feature_dim=10),
    "traffic": _ddlp("traffic", 128, 8, 10_000, {}, "Traffic 128x128 (configs/traffic.json; epoch_steps: the "
                     "official epoch is int(0.8 N) - 10 clips // 8, set it for your frame count)",
                     **VIDEO_128, recon_loss_type="vgg", beta_kl=40.0, beta_dyn=40.0, n_kp_prior=30, n_kp_enc=25,
                     learned_feature_dim=8, warmup_epoch=3),
    "phyre": _ddlp("phyre", 128, 3, 10_000, {}, "PHYRE 128x128 (configs/phyre.json; epoch_steps not derived: the "
                   "episode count depends on the generated split)",
                   **VIDEO_128, recon_loss_type="mse", beta_kl=0.15, beta_dyn=0.15, n_kp_prior=30, n_kp_enc=25,
                   learned_feature_dim=4, anchor_s=0.125, timestep_horizon=15, pint_dim=512),
    "clevrer": _ddlp("clevrer", 128, 8, 5000 * 80 // 8, {}, "CLEVRER 128x128, 21-frame clips "
                     "(configs/clevrer.json)",
                     **VIDEO_128, recon_loss_type="vgg", beta_kl=100.0, beta_dyn=100.0, n_kp_prior=16, n_kp_enc=12,
                     learned_feature_dim=8, timestep_horizon=20),
    "balls": _ddlp("balls", 64, 32, 5000 * 90 // 32, {}, "Balls-Interaction 64x64 (configs/balls.json)",
                   patch_size=8, enc_channels=(32, 64, 128), prior_channels=(16, 32, 64), recon_loss_type="mse",
                   beta_kl=0.1, beta_dyn=0.1, n_kp_prior=12, n_kp_enc=6, learned_feature_dim=3),
    "tiny": Preset(
        model={"patch_size": 16, "enc_channels": (8, 8, 8, 8), "prior_channels": (4, 4, 8), "n_kp_prior": 8,
               "n_kp_enc": 4, "learned_feature_dim": 4, "timestep_horizon": 3, "n_context": 2, "n_future": 2,
               "num_static_frames": 2, "pint_dim": 16, "pint_heads": 2, "pint_layers": 1, "epoch_steps": 1},
        dataset="smmnist", data={}, train={"batch_size": 4, "steps": 100}, frame_shape=(1, 64, 64),
        description="small widths for tests on the embedded Stochastic Moving MNIST (grey frames; epoch_steps 1: "
                    "step 0 warm-up, step 1 noisy, then normal)"),
}

DLP_PRESETS = {
    "shapes": _dlp("shapes", 64, 32, 40_000 // 32, {}, "Shapes 64x64, generated (configs/shapes.json)",
                   patch_size=8, enc_channels=(32, 32, 64, 64), prior_channels=(32, 32, 64), recon_loss_type="mse",
                   beta_kl=0.05, n_kp_prior=64, n_kp_enc=10, learned_feature_dim=6, use_correlation_heatmaps=False,
                   filtering_heuristic="none"),
    "obj3d128": _dlp("obj3d", 128, 32, 2920 * 100 // 32, {"image_size": 128, "seq_len": 1},
                     "OBJ3D frames 128x128 (configs/obj3d128_img.json)",
                     patch_size=16, enc_channels=(16, 32, 64, 64, 128), prior_channels=(16, 32, 64),
                     recon_loss_type="vgg", beta_kl=40.0, n_kp_prior=64, n_kp_enc=12, learned_feature_dim=8,
                     scale_std=1.0, offset_std=1.0, use_correlation_heatmaps=False),
    "obj3d": _dlp("obj3d", 64, 32, 2920 * 100 // 32, {"image_size": 64, "seq_len": 1},
                  "OBJ3D frames 64x64 (configs/obj3d_img.json)",
                  patch_size=16, enc_channels=(32, 64, 128), prior_channels=(16, 32, 64), recon_loss_type="vgg",
                  beta_kl=40.0, n_kp_prior=16, n_kp_enc=12, learned_feature_dim=8),
    "traffic": _dlp("traffic", 128, 32, 10_000, {"seq_len": 1}, "Traffic frames 128x128 (configs/traffic_img.json)",
                    patch_size=16, enc_channels=(32, 64, 64, 128, 128), prior_channels=(32, 32, 64),
                    recon_loss_type="vgg", beta_kl=40.0, n_kp_prior=64, n_kp_enc=25, learned_feature_dim=8,
                    scale_std=1.0, offset_std=1.0),
    "tiny": Preset(
        model={"patch_size": 16, "enc_channels": (8, 8, 8, 8), "prior_channels": (4, 4, 8), "n_kp_prior": 8,
               "n_kp_enc": 4, "learned_feature_dim": 4, "epoch_steps": 1},
        dataset="shapes", data={"num_train": 64, "num_val": 8}, train={"batch_size": 4, "steps": 100},
        frame_shape=(3, 64, 64), description="small widths for tests on generated Shapes"),
}


def build_dlp(config: DLPConfig, frame_shape: tuple[int, int, int]):
    from vpkit_ddlp.dlp import DLP

    return DLP(config, frame_shape)


def build_ddlp(config: DDLPConfig, frame_shape: tuple[int, int, int]):
    from vpkit_ddlp.ddlp import DDLP

    return DDLP(config, frame_shape)


@vpkit.hookimpl
def register_models(register) -> None:
    register(ModelSpec(
        name="ddlp", config_cls=DDLPConfig, build=build_ddlp, presets=DDLP_PRESETS, default_preset="obj3d128",
        description="DDLP: deep dynamic latent particles with PINT dynamics (Daniel & Tamar, TMLR 2024)",
    ))
    register(ModelSpec(
        name="dlp", config_cls=DLPConfig, build=build_dlp, presets=DLP_PRESETS, default_preset="shapes",
        default=True,  # the one model that trains on data generated on the spot, with no download
        description="DLPv2: single-image deep latent particles (Daniel & Tamar, TMLR 2024)",
    ))
    register(DIFFUSE_DDLP_SPEC)


def load_official(path: Path, options: Mapping[str, Any]):
    from vpkit_ddlp.importer import load_official as load

    return load(path, options)


@vpkit.hookimpl
def register_importers(register) -> None:
    register(ImporterSpec(
        name="ddlp", load=load_official,
        description="official taldatech/ddlp run (DLPv2 or DDLP): hparams.json + the state_dict .pth "
                    "(a run directory or the .pth)",
    ))
    from vpkit_ddlp.diffuse_import import load_official_diffuse

    register(ImporterSpec(
        name="diffuse-ddlp", load=load_official_diffuse,
        description="official DiffuseDDLP result folder (diffusion_hparams.json, saves/model.pth with the EMA, "
                    "latent_stats.pth) over its official DDLP run (--set ddlp=DIR_OR_PTH, else the recorded path)",
    ))


@vpkit.hookimpl
def register_commands(app) -> None:
    from vpkit_ddlp.cli import app as ddlp_app
    from vpkit_ddlp.diffuse_cli import generate_command

    app.add_typer(ddlp_app, name="ddlp")
    app.command("generate")(generate_command)
