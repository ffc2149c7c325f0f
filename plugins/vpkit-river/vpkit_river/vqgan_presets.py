"""Presets and the model spec of `river-vqgan` (registered by `vpkit_river.plugin`).

`f8_small` and `f16` are the architectures of RIVER's `configs/bair_64.yaml` / `kth.yaml` and `bair_256.yaml`
(official `vq_f8_small_ddconfig`, `vq_f16_ddconfig`: 63,777,455 and 69,593,371 parameters without the
discriminator). The authors trained these VQGANs with taming-transformers and did not release the recipe; the loss
here is taming's (`configs/custom_vqgan.yaml`: disc_start 10k, disc_weight 0.8, 3-layer PatchGAN, LPIPS weight 1).
"""

from __future__ import annotations

from vpkit.core.specs import ModelSpec, Preset
from vpkit_river.vqgan_config import VQGANConfig

F8_SMALL = {"ch": 128, "ch_mult": (1, 2, 2, 4), "num_res_blocks": 2, "attn_resolutions": (16,), "resolution": 64,
            "z_channels": 4, "embed_dim": 4, "n_embed": 16384}
F16 = {"ch": 128, "ch_mult": (1, 1, 2, 2, 4), "num_res_blocks": 2, "attn_resolutions": (16,), "resolution": 256,
       "z_channels": 8, "embed_dim": 8, "n_embed": 16384}
TINY_VQGAN = {"ch": 16, "ch_mult": (1, 2, 2, 2), "num_res_blocks": 1, "attn_resolutions": (8,), "resolution": 64,
              "n_embed": 64, "norm_groups": 8, "disc_ndf": 8, "disc_num_layers": 2, "disc_start": 0,
              "perceptual_weight": 0.0}
VQGAN_TRAIN = {"batch_size": 16, "steps": 100_000, "val_every": 5_000, "sample_every": 5_000,
               "checkpoint_every": 5_000}

VQGAN_PRESETS = {
    "f8_small": Preset(
        model=F8_SMALL, dataset="bair", train=VQGAN_TRAIN, frame_shape=(3, 64, 64),
        description="BAIR 64x64 -> 4x8x8 latents, 16384 codes (RIVER's BAIR-64/KTH autoencoder, 63.78 M + a "
        "2.77 M discriminator); LPIPS needs vgg16-397923af.pth"),
    "kth64": Preset(
        model=F8_SMALL, dataset="kth", data={"rgb": True}, train=VQGAN_TRAIN, frame_shape=(3, 64, 64),
        description="KTH 64x64 (grey repeated to RGB) -> 4x8x8 latents (RIVER's KTH autoencoder); LPIPS needs "
        "vgg16-397923af.pth"),
    "f16": Preset(
        model=F16, dataset="h5", train=VQGAN_TRAIN, frame_shape=(3, 256, 256),
        description="BAIR 256x256 -> 8x16x16 latents, 16384 codes (RIVER's BAIR-256 autoencoder, 69.59 M); the "
        "authors' 256x256 BAIR converted with vpkit data convert (--data-root), and vgg16-397923af.pth"),
    "smmnist": Preset(
        model={**F8_SMALL, "perceptual_weight": 0.0}, dataset="smmnist", train=VQGAN_TRAIN,
        frame_shape=(1, 64, 64),
        description="f8_small on Stochastic Moving MNIST (grey 64x64 -> 4x8x8), without LPIPS (no VGG file needed)"),
    "tiny": Preset(
        model=TINY_VQGAN, dataset="smmnist", train={"batch_size": 4}, frame_shape=(1, 64, 64),
        description="small widths, GAN from step 0, no LPIPS: for tests"),
}


def build_vqgan(config: VQGANConfig, frame_shape: tuple[int, int, int]):
    from vpkit_river.vqgan_model import RiverVQGAN

    return RiverVQGAN(config, frame_shape)


VQGAN_SPEC = ModelSpec(
    name="river-vqgan", config_cls=VQGANConfig, build=build_vqgan, presets=VQGAN_PRESETS, default_preset="f8_small",
    description="the taming/LDM VQGAN RIVER's BAIR/KTH models use (f8_small 63.78 M, f16 69.59 M), trained with "
    "its PatchGAN discriminator and LPIPS (stage 1 for `river`)",
)
