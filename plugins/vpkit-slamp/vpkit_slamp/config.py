"""SLAMP's typed config: every constructor argument and its optimiser and training hyper-parameters.

Defaults are the official `args.py` argparse defaults (the SM-MNIST recipe); `n_context` is the official `n_past`.
The official `--last_frame_skip` and `--running_avg` are `store_true` flags with `default=True`, so they cannot be
turned off: decoder skips are always the running mean of the pixel-encoder skips of every frame fed so far.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vpkit.core.config import BaseConfig

Architecture = Literal["dcgan64", "vgg64", "kitti", "cityscapes"]
SPATIAL = ("kitti", "cityscapes")
"""Architectures with spatial latents and ConvLSTM predictors (official `kitti_models.py`, `cityscapes_models.py`)."""


class SLAMPConfig(BaseConfig):
    """Architecture, latent sizes, horizon, loss weight, scheduled sampling and Adam settings of SLAMP."""

    architecture: Architecture = Field("dcgan64", description="encoder/decoder family: dcgan64 / vgg64 (official --model, 64x64 frames), or the "
                                           "kitti (92x310) / cityscapes (128x256) ConvLSTM variants")
    g_dim_app: int = Field(128, gt=0, description="pixel (appearance) code size")
    g_dim_motion: int = Field(128, gt=0, description="motion code size")
    z_dim_app: int = Field(20, gt=0, description="appearance latent size")
    z_dim_motion: int = Field(20, gt=0, description="motion latent size")
    rnn_size: int = Field(256, gt=0, description="hidden size of every LSTM")
    predictor_rnn_layers: int = Field(2, gt=0)
    posterior_rnn_layers: int = Field(1, gt=0)
    prior_rnn_layers: int = Field(1, gt=0)
    n_context: int = Field(5, ge=2, description="conditioning frames (official n_past; at least 2)")
    n_future: int = Field(10, gt=0, description="frames predicted after the context during training")
    beta: float = Field(1e-4, ge=0, description="weight of the two KL terms")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate (every module)")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1 (beta2 is 0.999, as official)")
    sch_sampling: int = Field(
        0, ge=0,
        description="scheduled-sampling constant k (official --sch_sampling; 0 = off): after the context frames the "
        "next input is the ground truth with probability k / (k + exp(epoch / k)), else the detached prediction",
    )
    epoch_size: int = Field(1000, gt=0, description="optimisation steps per epoch (official --epoch_size), for the "
                            "scheduled-sampling epoch count")
    sampling_batchnorm: Literal["batch", "running"] = Field(
        "batch",
        description="BatchNorm statistics of the conv networks when sampling in eval mode: 'batch' = each call's own "
        "batch statistics (over videos x samples), as official evaluate.py / helpers.eval_step gets by keeping the "
        "encoders and decoders in train mode (default); 'running' = the running statistics (standard eval mode)",
    )
