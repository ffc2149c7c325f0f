"""SRVP's typed config: every constructor argument of the model, its loss weights and its optimiser schedule.

Names follow vpkit where it has one (`n_context` is the official `nt_cond`; `n_future` is the official `seq_len` minus
`nt_cond`); the others keep the official `args.py` names. Defaults are the official argparse defaults (the SM-MNIST
recipe, apart from `beta_z`, which the README sets to 2 there: see the plugin's presets).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vpkit.core.config import BaseConfig


class SRVPConfig(BaseConfig):
    """Architecture, latent sizes, training horizon, loss weights and Adam schedule of SRVP."""

    archi: Literal["dcgan", "vgg"] = Field("dcgan", description="encoder/decoder pair, 64x64 frames (official --archi)")
    skipco: bool = Field(False, description="decoder skip connections from one encoded frame (official --skipco)")
    nf: int = Field(64, gt=0, description="filters of the first encoder conv")
    nhx: int = Field(128, gt=0, description="frame encoding size (encoder output)")
    ny: int = Field(20, gt=0, description="state y size")
    nz: int = Field(20, gt=0, description="auxiliary variable z size")
    nt_inf: int = Field(5, gt=0, description="frames used to infer y_0 and the content variable w")
    nh_inf: int = Field(256, gt=0, description="size of w and of the inference hidden layers (and the z LSTM)")
    nlayers_inf: int = Field(3, gt=1, description="layers of the y_0 inference MLP")
    nh_res: int = Field(512, gt=0, description="hidden size of the residual MLP and of the prior MLP")
    nlayers_res: int = Field(4, gt=1, description="layers of the residual MLP and of the prior MLP")
    res_gain: float = Field(1.41, gt=0, description="orthogonal-init gain of the residual MLP")
    n_euler_steps: int = Field(1, gt=0, description="Euler sub-steps per frame interval (dt = 1 / n_euler_steps)")
    n_context: int = Field(5, gt=0, description="conditioning frames (official nt_cond)")
    n_future: int = Field(10, gt=0, description="frames after the context in a training clip (seq_len - nt_cond)")
    obs_scale: float = Field(1.0, gt=0, description="fixed std of the Gaussian observation model")
    beta_y: float = Field(1.0, ge=0, description="weight of KL(q(y_0) || N(0, I))")
    beta_z: float = Field(1.0, ge=0, description="weight of the summed KL(q(z_t) || p(z_t | y_{t-1}))")
    l2_res: float = Field(1.0, ge=0, description="weight of the summed (non-squared) L2 norms of all residuals")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate (default betas, as official)")
    lr_scheduling_burnin: int = Field(1_000_000, ge=0, description="steps at constant lr before the linear decay")
    lr_scheduling_n_iter: int = Field(100_000, gt=0, description="steps of linear lr decay to 0 after the burn-in")
    sampling_batchnorm: Literal["running", "batch"] = Field(
        "running",
        description="BatchNorm statistics when sampling in eval mode: 'running' (SRVP's test.py: the model in eval "
        "mode) or 'batch' (each call's own batch statistics, as SVG-LP's and SLAMP's generation scripts get)",
    )

    @model_validator(mode="after")
    def _check(self) -> SRVPConfig:
        if self.nt_inf > self.n_context:
            raise ValueError(f"nt_inf ({self.nt_inf}) must not exceed n_context ({self.n_context}): y_0 and w are "
                             "inferred from the conditioning frames at test time")
        return self

    @property
    def dt(self) -> float:
        """Euler step size."""
        return 1.0 / self.n_euler_steps
