"""The parts of the DLPv2 / DDLP objectives both models use: the schedule phase (warm-up / noisy / normal), the
constant priors of each phase, the static KL terms (against those priors) and the reconstruction functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vpkit_ddlp.config import ParticleConfig
from vpkit_ddlp.losses import VGGDistance, chamfer_kl, kl_beta, kl_normal, mse_sum
from vpkit_ddlp.particles import ParticleModel, warmup_logvar


@dataclass(frozen=True)
class Phase:
    """Where a step is in the official epoch schedule: `warmup` (glimpse-only reconstruction, tight priors, pinned
    scales, noisy alpha) for `warmup_epoch` epochs, then one `noisy` epoch (full reconstruction, same priors/noise),
    then normal training; `epoch` counts `epoch_steps` steps."""

    warmup: bool
    noisy: bool
    epoch: int

    @classmethod
    def at(cls, step: int, config: ParticleConfig) -> Phase:
        epoch = step // config.epoch_steps
        return cls(warmup=epoch < config.warmup_epoch, noisy=epoch < config.warmup_epoch + 1, epoch=epoch)


def rec_loss_fn(model: ParticleModel, config: ParticleConfig):
    """Per-image reconstruction loss `(x, rec) -> [N]`: the MSE sum, or the VGG distance (built once, lazily)."""
    if config.recon_loss_type == "mse":
        return mse_sum
    vgg = getattr(model, "_vgg", None)
    if vgg is None:
        vgg = VGGDistance(config.vgg_weights)
        object.__setattr__(model, "_vgg", vgg)  # not a submodule: no weights in the checkpoint
    x_param = next(model.parameters())
    vgg.to(device=x_param.device, dtype=x_param.dtype)
    return vgg


def glimpse_rec(rec_fn, crops: Tensor, glimpses: Tensor, vgg: bool) -> Tensor:
    """Warm-up reconstruction, per glimpse `[N * K]`: decoded glimpse colours against the feature crops; the VGG
    variant upsamples both to 32 px when smaller (official)."""
    rgb = glimpses[:, :, 1:]  # [N, K, C, P, P]: alpha is channel 0
    rgb = rgb.reshape(-1, *rgb.shape[2:])
    target = crops.reshape(-1, *crops.shape[-3:])
    if vgg and target.shape[-1] < 32:
        target = F.interpolate(target, size=32, mode="bilinear", align_corners=False)
        rgb = F.interpolate(rgb, size=32, mode="bilinear", align_corners=False)
    return rec_fn(target, rgb)


@dataclass(frozen=True)
class Priors:
    """The constant priors of a phase (official: tight offset/scale std 0.1 and Beta(0.2, 0.1) in warm-up/noisy)."""

    logvar_kp: Tensor
    logvar_offset: Tensor | float
    logvar_scale: Tensor | float
    mu_scale: Tensor
    obj_on_a: Tensor | float
    obj_on_b: Tensor | float

    @classmethod
    def of(cls, model: ParticleModel, phase: Phase) -> Priors:
        tight = phase.warmup or phase.noisy
        return cls(model.logvar_kp, warmup_logvar() if tight else model.logvar_offset_p,
                   warmup_logvar() if tight else model.logvar_scale_p, model.mu_scale_prior,
                   0.2 if tight else model.obj_on_a_p, 0.1 if tight else model.obj_on_b_p)


def static_kl(p: dict[str, Tensor], proposals: Tensor, priors: Priors, kl_balance: float, *,
              bg_kl_over_time: bool) -> dict[str, Tensor]:
    """KL terms against the constant priors for frames `[B, t, ...]` (particles `[B, t, K, *]`, obj_on_a/b
    `[B, t, K]`, bg `[B, t, F_bg]`, proposals `[B, t, n, 2]`): each summed over frames and particles, averaged over B.

    `bg_kl_over_time` reproduces DDLP's bg-feature KL on a 3-D tensor (sums over time, then averages over batch and
    feature dims); otherwise the bg KL is summed over features and frames (DLPv2's reduction when t = 1)."""
    b, t, k = p["mu"].shape[:3]

    def per_video(x: Tensor) -> Tensor:
        return x.reshape(b, -1).sum(-1).mean()

    chamfer = chamfer_kl(p["mu"].reshape(b * t, k, 2), torch.zeros_like(p["mu"]).reshape(b * t, k, 2),
                         proposals.reshape(b * t, -1, 2), priors.logvar_kp.expand_as(proposals).reshape(b * t, -1, 2))
    chamfer = chamfer.view(b, t).sum(-1).mean()
    offset = per_video(kl_normal(p["mu_offset"], p["logvar_offset"], 0.0, priors.logvar_offset))
    kl_kp = 0.5 * kl_balance * chamfer + offset
    kl_depth = per_video(kl_normal(p["mu_depth"], p["logvar_depth"]))
    kl_scale = per_video(kl_normal(p["mu_scale"], p["logvar_scale"], priors.mu_scale, priors.logvar_scale))
    kl_obj_on = per_video(kl_beta(p["obj_on_a"], p["obj_on_b"], priors.obj_on_a, priors.obj_on_b))
    kl_feat_obj = per_video(kl_normal(p["mu_features"], p["logvar_features"]))
    if bg_kl_over_time:  # official quirk: calc_kl's `.sum(1)` lands on the time axis of a [B, t, F] tensor
        logvar_bg, mu_bg = p["logvar_bg"], p["mu_bg"]
        kl_bg = (-0.5 * (1 + logvar_bg - logvar_bg.exp() - mu_bg.pow(2))).sum(1).mean()
    else:
        kl_bg = per_video(kl_normal(p["mu_bg"], p["logvar_bg"]))
    kl_feat = kl_feat_obj + kl_bg
    total = kl_kp + kl_scale + kl_obj_on + kl_balance * (kl_feat + kl_depth)
    return {"kl": total, "kl_kp": kl_kp, "kl_scale": kl_scale, "kl_obj_on": kl_obj_on, "kl_feat": kl_feat,
            "kl_depth": kl_depth}
