"""The typed config of `river-vqgan`: the taming/LDM `VQModel` RIVER's BAIR and KTH models flow in, and its GAN
training (taming-transformers' `VQLPIPSWithDiscriminator`).

Architecture defaults are RIVER's `f8_small` (official `model/vqgan/taming/autoencoder.py`, `vq_f8_small_ddconfig`);
`f16` is the preset of BAIR-256. The loss defaults are taming's (`VQLPIPSWithDiscriminator` arguments and
`configs/custom_vqgan.yaml`, the recipe RIVER's README points to; the authors' own loss settings are not released).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vpkit.core.config import BaseConfig


class VQGANConfig(BaseConfig):
    """Encoder/decoder (`ddconfig`), quantiser and loss of the taming VQGAN. Image channels come from the data
    (official `in_channels` = `out_ch`); the latent map is `embed_dim x H/f x W/f` with f = 2^(len(ch_mult) - 1)."""

    # -- architecture (official ddconfig) --------------------------------------------------------------------------
    ch: int = Field(128, gt=0, description="width of the first level (official ch)")
    ch_mult: tuple[int, ...] = Field((1, 2, 2, 4), min_length=1, description="width multiplier of each level; "
                                     "every level but the last halves the resolution")
    num_res_blocks: int = Field(2, gt=0, description="ResnetBlocks per encoder level (the decoder has one more)")
    attn_resolutions: tuple[int, ...] = Field((16,), description="nominal resolutions with an attention block "
                                              "after every ResnetBlock (the middle always has one)")
    resolution: int = Field(64, gt=0, description="nominal input resolution the attention levels are counted "
                            "from (official `resolution`: 64 for f8_small, 256 for f16)")
    z_channels: int = Field(4, gt=0, description="encoder output / decoder input channels")
    embed_dim: int = Field(4, gt=0, description="codebook vector size (quant_conv z_channels -> embed_dim)")
    n_embed: int = Field(16384, gt=0, description="codebook entries")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside every ResnetBlock")
    resamp_with_conv: bool = Field(True, description="strided conv / conv after up-sampling (else avg-pool and "
                                   "plain nearest up-sampling)")
    norm_groups: int = Field(32, gt=0, description="groups of every GroupNorm (official: 32, hard-coded)")
    beta: float = Field(0.25, ge=0, description="commitment weight of the quantiser (official 0.25)")
    legacy_beta: bool = Field(True, description="VectorQuantizer2's legacy placement: beta on the codebook term "
                              "instead of the commitment term (official default True)")

    # -- loss (taming VQLPIPSWithDiscriminator) ---------------------------------------------------------------------
    codebook_weight: float = Field(1.0, ge=0, description="weight of the quantiser loss")
    perceptual_weight: float = Field(1.0, ge=0, description="weight of LPIPS (VGG16, v0.1) added per pixel to "
                                     "the L1 error; > 0 needs torchvision's vgg16-397923af.pth (lpips_backbone)")
    lpips_backbone: str | None = Field(None, description="torchvision's ImageNet VGG16 weights "
                                       "(vgg16-397923af.pth) for the LPIPS trunk; default: torchvision's cache")
    lpips_dropout: bool = Field(False, description="run LPIPS' linear layers with their dropout (p 0.5) active, "
                                "as taming does under Lightning (its .eval() is undone by model.train())")
    disc_start: int = Field(10_000, ge=0, description="step from which the adversarial terms count "
                            "(custom_vqgan.yaml 10000)")
    disc_weight: float = Field(0.8, ge=0, description="factor on the adaptive generator weight "
                               "(custom_vqgan.yaml 0.8)")
    disc_factor: float = Field(1.0, ge=0, description="factor on both adversarial losses after disc_start")
    disc_num_layers: int = Field(3, gt=0, description="strided layers of the PatchGAN NLayerDiscriminator "
                                 "(taming default 3, which the released vqvae.ckpt sizes fit)")
    disc_ndf: int = Field(64, gt=0, description="width of the discriminator's first layer")
    disc_loss: Literal["hinge", "vanilla"] = Field("hinge", description="discriminator loss")
    base_lr: float = Field(4.5e-6, gt=0, description="Adam learning rate per sample (taming base_learning_rate)")
    scale_lr: bool = Field(True, description="learning rate = base_lr x batch size (taming main.py)")
    betas: tuple[float, float] = Field((0.5, 0.9), description="Adam betas of both optimisers")

    # -- clips ------------------------------------------------------------------------------------------------------
    n_context: int = Field(1, gt=0, description="frames a prediction starts from (the autoencoder 'predicts' "
                           "the reconstruction of the last one)")
    n_future: int = Field(1, gt=0, description="frames after the context in a training clip; every frame of the "
                          "clip is autoencoded in a step")

    @model_validator(mode="after")
    def _check(self) -> VQGANConfig:
        for mult in (1, *self.ch_mult):
            if (self.ch * mult) % self.norm_groups:
                raise ValueError(f"ch x {mult} = {self.ch * mult} channels is not divisible by norm_groups="
                                 f"{self.norm_groups} (GroupNorm)")
        return self

    @property
    def down_factor(self) -> int:
        """Spatial down-sampling of the encoder: 2 per level but the last."""
        return 2 ** (len(self.ch_mult) - 1)
