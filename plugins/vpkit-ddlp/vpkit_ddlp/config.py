"""Typed configs of DLPv2 (`DLPConfig`) and DDLP (`DDLPConfig`): every constructor argument, loss weight, schedule
and optimiser setting of the official `configs/*.json`, under the official names (`n_kp_enc`, `anchor_s`, ...).

The image side comes from the data (`frame_shape`), not from the config. Official "epochs" (the warm-up and noisy
phases, StepLR, the dynamics ramp) are counted in optimisation steps of `epoch_steps` each, because vpkit trains by
steps; presets set `epoch_steps` to the official iterations per epoch (dataset size // batch size).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vpkit.core.config import BaseConfig


class ParticleConfig(BaseConfig):
    """What DLPv2 and DDLP share: the particle encoder/decoder, the priors, the static losses and Adam + StepLR."""

    # -- architecture
    enc_channels: tuple[int, ...] = Field((32, 64, 128, 256), min_length=2,
                                          description="background encoder CNN channels (official enc_channels)")
    prior_channels: tuple[int, ...] = Field((16, 32, 64), min_length=2,
                                            description="channels of the patch-prior and glimpse CNNs")
    patch_size: int = Field(16, gt=0, description="prior patch size in pixels (proposals: one per patch)")
    n_kp_prior: int = Field(16, gt=0, description="proposals kept by the filtering heuristic (at most one a patch)")
    n_kp_enc: int = Field(12, gt=0, description="posterior particles K")
    learned_feature_dim: int = Field(8, gt=0, description="particle visual features F")
    bg_learned_feature_dim: int | None = Field(None, gt=0, description="background features (None: = F)")
    anchor_s: float = Field(0.25, gt=0, lt=1, description="glimpse size as a fraction of the image, "
                            "P = round(anchor_s * (H - 1)), a power of two >= 8")
    kp_activation: Literal["tanh", "sigmoid"] = "tanh"
    pad_mode: Literal["replicate", "reflect", "zeros"] = Field(
        "replicate", description="conv padding; anything but 'zeros' pads by replication, as official")
    use_correlation_heatmaps: bool = Field(True, description="4th glimpse channel of the attribute encoder "
                                           "(tracking correlation maps; always zero in DLPv2, where it only sizes "
                                           "the first conv, as official)")
    filtering_heuristic: Literal["variance", "distance", "random", "none"] = Field(
        "variance", description="how proposals are filtered; 'none' maps all of them to K anchors with a mixer")
    # -- priors
    sigma: float = Field(1.0, gt=0, description="std of the proposals in the Chamfer-KL")
    scale_std: float = Field(0.3, gt=0, description="prior std of the scale logits")
    offset_std: float = Field(0.2, gt=0, description="prior std of the position offsets")
    obj_on_alpha: float = Field(0.1, gt=0, description="transparency prior Beta(a, .)")
    obj_on_beta: float = Field(0.1, gt=0, description="transparency prior Beta(., b)")
    # -- losses and schedule
    recon_loss_type: Literal["mse", "vgg"] = Field("mse", description="per-image MSE sum, or VGG perceptual "
                                                   "distance (then the total is x 1e-3)")
    vgg_weights: str | None = Field(None, description="torchvision's vgg16-397923af.pth for recon_loss_type=vgg "
                                    "(default: torchvision's cache folder); never downloaded")
    beta_kl: float = Field(0.1, ge=0, description="weight of the (static) KL terms")
    beta_rec: float = Field(1.0, ge=0, description="weight of the reconstruction term")
    kl_balance: float = Field(0.001, ge=0, description="weight of the feature/depth KLs (and half the Chamfer)")
    train_enc_prior: bool = Field(True, description="gradients reach the prior CNN through the initial anchors")
    warmup_epoch: int = Field(1, ge=0, description="epochs of glimpse-only warm-up (then one 'noisy' epoch)")
    epoch_steps: int = Field(10_000, gt=0, description="optimisation steps that make one official epoch")
    memory_chunk: int = Field(0, ge=0, description="0: training keeps every activation (as official). N > 0: the "
                              "particle encoders, glimpse decoder + compositing and the background CNNs run N images "
                              "at a time with activations recomputed in the backward pass: the same values and "
                              "gradients (up to float summation order), a fraction of the peak memory, more time")
    # -- optimiser
    lr: float = Field(2e-4, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler_gamma: float = Field(0.95, gt=0, le=1, description="StepLR factor, once per epoch")

    @property
    def bg_features_dim(self) -> int:
        return self.bg_learned_feature_dim or self.learned_feature_dim


class DLPConfig(ParticleConfig):
    """DLPv2: single-image particles. Clips are cut into frames; `n_context` frames are one training 'clip'."""

    n_context: int = Field(1, ge=1, description="frames per training clip (each is an independent image)")
    n_future: Literal[0] = Field(0, description="DLPv2 has no dynamics")


class DDLPConfig(ParticleConfig):
    """DDLP: DLPv2 particles tracked over T+1 frames and the PINT transformer. Training clips are
    `n_context + n_future = timestep_horizon + 1` frames."""

    timestep_horizon: int = Field(10, ge=1, description="T: PINT's block size; training clips have T + 1 frames")
    n_context: int = Field(10, ge=1, description="conditioning frames at validation (official cond_steps)")
    n_future: int = Field(1, ge=1, description="frames after the context in a training clip (T + 1 - n_context)")
    num_static_frames: int = Field(4, ge=1, description="burn-in frames scored against the constant priors")
    beta_dyn: float = Field(0.1, ge=0, description="weight of the dynamics KL")
    beta_dyn_rec: float = Field(1.0, ge=0, description="weight of the reconstruction of frames >= burn-in")
    pint_layers: int = Field(6, gt=0)
    pint_heads: int = Field(8, gt=0)
    pint_dim: int = Field(256, gt=0)
    pint_dropout: float = Field(0.1, ge=0, lt=1, description="PINT attention and residual dropout")
    predict_delta: bool = Field(True, description="PINT predicts residual means")
    sampling: Literal["deterministic", "stochastic"] = Field(
        "deterministic", description="rollouts with posterior/prior means (the official evaluation) or Gaussian "
        "samples drawn from explicit noise (transparency always takes its Beta mean)")
    pint_depth_logvar_from_mean: bool = Field(
        True, description="official quirk: PINT's depth log-variance is its mean-depth output")
    static_bg_kl_over_time: bool = Field(
        True, description="official quirk: the burn-in bg-feature KL sums over time, then averages over batch and "
        "feature dims (False: sums features and frames, averages the batch)")

    @model_validator(mode="after")
    def _check(self) -> DDLPConfig:
        if self.n_context + self.n_future != self.timestep_horizon + 1:
            raise ValueError(f"n_context + n_future ({self.n_context} + {self.n_future}) must equal timestep_horizon + "
                             f"1 = {self.timestep_horizon + 1}: DDLP trains on clips of T + 1 frames")
        if self.num_static_frames > self.timestep_horizon + 1:
            raise ValueError(f"num_static_frames ({self.num_static_frames}) cannot exceed the clip length "
                             f"timestep_horizon + 1 = {self.timestep_horizon + 1}")
        return self
