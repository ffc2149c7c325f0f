"""SVG's typed config: every constructor argument of SVG-LP / SVG-FP and its optimiser hyper-parameters.

Defaults are the official `train_svg_lp.py` argparse defaults (the SM-MNIST recipe); `n_context` is the official
`n_past`. Values checked here so a bad `--set` fails before any tensor is built.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vpkit.core.config import BaseConfig

Architecture = Literal["dcgan64", "vgg64", "dcgan128", "vgg128"]

FRAME_SIZE: dict[str, int] = {"dcgan64": 64, "vgg64": 64, "dcgan128": 128, "vgg128": 128}
"""The frame height and width each encoder/decoder pair is built for."""


class SVGConfig(BaseConfig):
    """Architecture, latent sizes, training horizon, KL weight and Adam settings of SVG-LP / SVG-FP."""

    architecture: Architecture = Field("dcgan64", description="encoder/decoder pair (official --model + width)")
    g_dim: int = Field(128, gt=0, description="frame-code size: encoder output and decoder input")
    z_dim: int = Field(10, gt=0, description="latent z_t size")
    rnn_size: int = Field(256, gt=0, description="hidden size of every LSTM")
    predictor_rnn_layers: int = Field(2, gt=0)
    posterior_rnn_layers: int = Field(1, gt=0)
    prior_rnn_layers: int = Field(1, gt=0, description="unused by SVG-FP, whose prior is N(0, I)")
    n_context: int = Field(5, gt=0, description="conditioning frames (official n_past)")
    n_future: int = Field(10, gt=0, description="frames predicted after the context during training")
    last_frame_skip: bool = Field(
        False,
        description="decoder skips from the previous (possibly generated) frame instead of context frame "
        "n_context-2 (official --last_frame_skip; off by default)",
    )
    beta: float = Field(1e-4, ge=0, description="weight of the KL term")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate (every module)")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1 (beta2 is 0.999, as official)")
    sampling_batchnorm: Literal["running", "batch"] = Field(
        "running",
        description="BatchNorm statistics when sampling in eval mode: 'running' (standard), or 'batch' = each "
        "call's own batch statistics (over videos x samples), as official generate_svg_lp.py gets by leaving "
        "encoder/decoder in train mode",
    )

    @model_validator(mode="after")
    def _skip_needs_two_context_frames(self) -> SVGConfig:
        # Official quirk (train_svg_lp.py): without --last_frame_skip the decoder skips are refreshed only while
        # t < n_past, so n_past = 1 never defines them.
        if not self.last_frame_skip and self.n_context < 2:
            raise ValueError("n_context must be at least 2 unless last_frame_skip is true")
        return self

    @property
    def frame_size(self) -> int:
        """Height and width of the frames the architecture takes."""
        return FRAME_SIZE[self.architecture]
