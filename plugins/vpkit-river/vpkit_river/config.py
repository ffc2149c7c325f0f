"""RIVER's typed configs: the authors' VQVAE (`river-vqvae`) and the flow model (`river`).

Defaults are the official ones (github.com/Araachie/river, `configs/*.yaml` and the constructors' defaults); a
field the official code hard-codes says so in its description. Names follow vpkit where it has one (`n_context`,
`n_future`: the training clip is `n_context + n_future` frames, the official `num_observations`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vpkit.core.config import BaseConfig
from vpkit_river.vqgan_config import VQGANConfig


class VQVAEConfig(BaseConfig):
    """The authors' small VQVAE (official `model/vqgan/{encoder,decoder,vector_quantizer}.py`; CLEVRER's
    autoencoder). Image channels come from the data; the latent map is `latent_channels x H/8 x W/8`.

    The official release has no training code for this autoencoder; the objective here is the one its quantiser
    was written for (MishaLaskin/vqvae): reconstruction error + the quantiser's own loss."""

    latent_channels: int = Field(4, gt=0, description="encoder output = codebook vector size (official "
                                 "encoder.out_channels = vector_quantizer.embedding_dimension)")
    num_embeddings: int = Field(8192, gt=0, description="codebook entries")
    encoder_channels: int = Field(32, gt=0, description="width of the first encoder stage, x1, x2, x4, x8 after "
                                  "(official Encoder mid_channels, hard-coded)")
    decoder_channels: int = Field(256, gt=0, description="width of the first decoder stage, /1, /2, /4, /8 after "
                                  "(official Decoder mid_channels, hard-coded)")
    norm_groups: int = Field(32, gt=0, description="groups of every GroupNorm (official: 32, hard-coded)")
    beta: float = Field(0.25, ge=0, description="weight of the codebook term of the quantiser loss (official 0.25)")
    recon_loss: Literal["mse", "l1"] = Field("mse", description="reconstruction error on frames in [-1, 1] "
                                             "(not released: MishaLaskin/vqvae uses MSE)")
    vq_weight: float = Field(1.0, ge=0, description="weight of the quantiser loss (not released)")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate (not released: MishaLaskin/vqvae's)")
    n_context: int = Field(1, gt=0, description="frames a prediction starts from (the autoencoder 'predicts' "
                           "the reconstruction of the last one)")
    n_future: int = Field(1, gt=0, description="frames after the context in a training clip; every frame of the "
                          "clip is autoencoded in a step")

    @model_validator(mode="after")
    def _check(self) -> VQVAEConfig:
        for name, channels in (("encoder_channels", self.encoder_channels),
                               ("decoder_channels", self.decoder_channels // 8)):
            if channels % self.norm_groups:
                raise ValueError(f"{name} gives a stage of {channels} channels, not divisible by norm_groups="
                                 f"{self.norm_groups} (GroupNorm)")
        if self.decoder_channels % 8:
            raise ValueError(f"decoder_channels ({self.decoder_channels}) must be divisible by 8")
        return self


class RCANConfig(BaseConfig):
    """The refinement network's architecture (official `refinement/train.py` `--rcan_*`; see `refiner.py`)."""

    stages: int = Field(3, ge=1, description="residual groups (official --rcan_stages 3)")
    blocks: int = Field(3, ge=1, description="channel-attention blocks per group (official --rcan_blocks_per_stage 3)")
    channels: int = Field(64, gt=0, description="feature channels (official --rcan_channels 64)")
    reduction: int = Field(8, ge=0, description="channel-attention squeeze factor; 0 drops the attention "
                           "(official --rcan_reduction 8)")
    tanh: bool = Field(False, description="tanh on the output (official --rcan_tanh, off)")

    @model_validator(mode="after")
    def _check(self) -> RCANConfig:
        if self.reduction and self.channels // self.reduction < 1:
            raise ValueError(f"channels ({self.channels}) // reduction ({self.reduction}) must be at least 1")
        return self


class RiverConfig(BaseConfig):
    """The vector-field transformer, the flow-matching objective, the sampler and the optimiser of RIVER.

    The frozen autoencoder is read from `autoencoder` (a `river-vqvae` checkpoint directory) when the model is
    built; its architecture then replaces `vqvae` and its path moves to `autoencoder_source`, so a RIVER checkpoint
    rebuilds without the autoencoder's directory (the weights are inside it, under `ae.backbone.`, as in the
    official `model.pth`). A model whose autoencoder was never loaded (`autoencoder_source` unset) builds, for
    counting and tests, but refuses to train."""

    autoencoder: str | None = Field(None, description="river-vqvae checkpoint to read the frozen autoencoder from")
    autoencoder_source: str | None = Field(None, description="where the frozen autoencoder's weights came from "
                                           "(set when `autoencoder` is read)")
    vqvae: VQVAEConfig = Field(default_factory=VQVAEConfig, description="architecture of the frozen autoencoder "
                               "(replaced by the checkpoint's when `autoencoder` is read)")
    vqgan: VQGANConfig | None = Field(None, description="architecture of a frozen taming/LDM VQGAN autoencoder "
                                      "(set when `autoencoder` is a river-vqgan checkpoint; then used instead of "
                                      "`vqvae`, weights under `ae.` as the official BAIR/KTH models)")
    sigma: float = Field(1e-7, ge=0, lt=1, description="sigma_min of the flow-matching path (official 1e-7)")
    inner_dim: int = Field(768, gt=0, description="transformer width (official inner_dim)")
    depth: int = Field(4, ge=0, description="layers before and after the middle, joined by long skips")
    mid_depth: int = Field(5, ge=0, description="middle layers")
    heads: int = Field(8, gt=0, description="attention heads (official: 8, hard-coded)")
    ffn_mult: int = Field(4, gt=0, description="feed-forward width / inner_dim (official: 4, hard-coded)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout of every transformer layer (official 0.05)")
    out_norm: Literal["ln", "bn"] = Field("ln", description="output head: LayerNorm (BAIR-64, KTH, CLEVRER) or "
                                          "BatchNorm2d (BAIR-256)")
    position_table: int = Field(512, gt=0, description="rows of the learned row/column position tables")
    distance_hidden: int = Field(256, gt=0, description="hidden width of the log-distance MLP (official 256)")
    time_scale: float = Field(200.0, gt=0, description="the flow time is multiplied by this before the "
                              "sinusoidal embedding (official 200)")
    n_context: int = Field(1, gt=0, description="context frames at sampling (BAIR 1, KTH 10, CLEVRER 2)")
    n_future: int = Field(15, gt=0, description="frames after the context in a training clip")
    solver: Literal["rk4", "euler"] = Field("rk4", description="fixed-grid integrator (official: torchdiffeq "
                                            "rk4, the 3/8 rule, 4 evaluations per interval)")
    steps: int = Field(100, ge=2, description="grid points on [0, 1] (official 100); int((1 - warm_start) * "
                       "steps) of them are used from warm_start to 1")
    warm_start: float = Field(0.0, ge=0, lt=1, description="start the ODE at this time from the previous "
                              "latent mixed with noise (paper; the official evaluator never sets it: 0)")
    refiner: str | None = Field(None, description="river-refiner checkpoint: refine every generated frame after "
                                "decoding (read at build; weights kept under `refiner.`)")
    refiner_source: str | None = Field(None, description="where the refiner's weights came from (set when "
                                       "`refiner` is read)")
    refiner_net: RCANConfig | None = Field(None, description="architecture of the refiner (set when `refiner` is "
                                           "read; None: no refinement)")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(5e-6, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(5000, ge=0, description="linear warm-up steps (from lr 0)")
    decay_steps: int = Field(300_000, gt=0, description="step at which the polynomial decay reaches lr_end "
                             "(official num_training_steps)")
    decay_power: float = Field(0.5, gt=0, description="power of the polynomial decay")
    lr_end: float = Field(1e-7, ge=0, description="final learning rate")

    @model_validator(mode="after")
    def _check(self) -> RiverConfig:
        if self.n_context + self.n_future < 3:
            raise ValueError(f"a training clip needs at least 3 frames (target, reference and an earlier one); "
                             f"n_context + n_future = {self.n_context + self.n_future}")
        if self.inner_dim % 2 or self.inner_dim % self.heads:
            raise ValueError(f"inner_dim ({self.inner_dim}) must be even and divisible by heads ({self.heads})")
        if self.grid_points < 2:
            raise ValueError(f"int((1 - warm_start) * steps) = {self.grid_points} grid points; the sampler needs "
                             "at least 2: raise steps or lower warm_start")
        if self.decay_steps < self.warmup_steps:
            raise ValueError(f"decay_steps ({self.decay_steps}) must not be below warmup_steps ({self.warmup_steps})")
        if self.lr < self.lr_end:
            raise ValueError(f"lr ({self.lr}) must not be below lr_end ({self.lr_end})")
        return self

    @property
    def grid_points(self) -> int:
        """Points of the integration grid from `warm_start` to 1 (official `int((1 - warm_start) * steps)`)."""
        return int((1 - self.warm_start) * self.steps)

    @property
    def evaluations_per_frame(self) -> int:
        """Vector-field evaluations per generated frame: 4 per interval for rk4, 1 for euler."""
        return (self.grid_points - 1) * (4 if self.solver == "rk4" else 1)
