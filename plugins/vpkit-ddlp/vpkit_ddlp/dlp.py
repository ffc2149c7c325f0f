"""DLPv2: single-image object-centric decomposition into latent particles.

Daniel & Tamar, "DDLP: Unsupervised Object-centric Video Prediction with Deep Dynamic Latent Particles", TMLR 2024
(DLPv2 is its single-image model); official code github.com/taldatech/ddlp (`models.py: ObjectDLP`).
    @article{daniel2024ddlp, title={DDLP: Unsupervised Object-centric Video Prediction with Deep Dynamic Latent
             Particles}, author={Daniel, Tal and Tamar, Aviv}, journal={TMLR}, year={2024}}

Every frame of a clip is an independent image. Loss (official `ObjectDLP.calc_elbo`), with VGG x 1e-3:
`beta_rec * rec + beta_kl * [0.5 kl_balance Chamfer-KL + KL_offset + KL_scale + KL_obj_on + kl_balance (KL_feat +
KL_depth)]`; during warm-up `rec` is the glimpse autoencoding loss.

DLPv2 has no dynamics: as a vpkit predictor it "predicts" by repeating its reconstruction of the last context frame
(a copy-last-frame baseline through the particle bottleneck), so the generic tools can score and export it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vpkit.core.errors import VpkitError
from vpkit.core.model import (
    Backend,
    ExportPlan,
    Graph,
    Optimization,
    StepOutput,
    TrainContext,
    VideoPredictor,
)
from vpkit_ddlp.config import DLPConfig, ParticleConfig
from vpkit_ddlp.memory import active, chunked, recomputed
from vpkit_ddlp.objective import Phase, Priors, glimpse_rec, rec_loss_fn, static_kl
from vpkit_ddlp.particles import ParticleModel, Particles

if TYPE_CHECKING:
    from vpkit.core.config import TrainConfig

PARTICLE_NAMES = ("z", "z_scale", "obj_on", "z_depth", "z_features", "z_bg")


def epoch_step_lr(config: ParticleConfig):
    """StepLR(gamma) stepped once per official epoch, written as a per-step LambdaLR factor."""
    gamma, every = config.scheduler_gamma, config.epoch_steps
    return lambda step: gamma ** (step // every)


def adam(model: nn.Module, config: ParticleConfig) -> Optimization:
    """Official optimiser: Adam(lr 2e-4, betas, eps 1e-4, weight decay), StepLR x gamma per epoch, no clipping."""
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.adam_betas), eps=config.adam_eps,
                           weight_decay=config.weight_decay)
    return Optimization([opt], [torch.optim.lr_scheduler.LambdaLR(opt, epoch_step_lr(config))])


def graph(module: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...], examples: tuple[Tensor, ...]
          ) -> Graph:
    """A Graph whose every input and output has a dynamic batch axis 0."""
    return Graph(module, inputs, outputs, examples, {n: {0: "batch"} for n in (*inputs, *outputs)})


def particle_dict(p: Particles) -> dict[str, Tensor]:
    return {name: getattr(p, name) for name in Particles.__dataclass_fields__}


class DLP(ParticleModel, VideoPredictor):
    """DLPv2 on square frames of `frame_shape` `(C, H, W)`."""

    def __init__(self, config: DLPConfig, frame_shape: tuple[int, int, int]) -> None:
        super().__init__(config, frame_shape)
        self.config = config
        self.frame_shape = tuple(frame_shape)

    @property
    def stochastic(self) -> bool:
        return False

    # -- forward and loss ---------------------------------------------------------------------------------------------
    def forward_images(self, x: Tensor, *, deterministic: bool = False, phase: Phase | None = None
                       ) -> dict[str, Tensor]:
        """Official `ObjectDLP.forward` on images x [N, C, H, W]: proposals, two-pass encoding, decoding, the
        background encoded around the particles, compositing. Returns every tensor the loss needs."""
        phase = phase or Phase(False, False, 0)
        fg, chunk = self.fg_module, self.memory_chunk
        proposals = chunked(fg.proposals, chunk if self.config.filtering_heuristic != "random" else 0, x)
        init = proposals if self.config.train_enc_prior else 0.0 * proposals + proposals.detach()
        encode = partial(recomputed, fg.encode) if active(chunk) else fg.encode  # whole: it draws the samples
        p = encode(x, fg.anchors(x, init), deterministic=deterministic, warmup=phase.warmup, noisy=phase.noisy,
                   refine=True)
        dec = self.decode_foreground(p.z, p.z_scale, p.z_features, p.obj_on, p.z_depth, noisy=phase.noisy)
        mu_bg, logvar_bg, z_bg = self.encode_background(x, p.z, p.obj_on, deterministic=deterministic, chunk=chunk)
        bg = self.decode_background(z_bg)
        return {**particle_dict(p), **dec, "proposals": proposals.detach(), "mu_bg": mu_bg, "logvar_bg": logvar_bg,
                "z_bg": z_bg, "bg": bg, "rec": dec["bg_mask"] * bg + dec["fg"]}

    def loss(self, x: Tensor, out: Mapping[str, Tensor], phase: Phase) -> dict[str, Tensor]:
        """Official `ObjectDLP.calc_elbo` for images x [N, C, H, W] and `forward_images` outputs."""
        c = self.config
        rec_fn = rec_loss_fn(self, c)
        vgg = c.recon_loss_type == "vgg"
        if phase.warmup:
            rec = glimpse_rec(rec_fn, out["crops"], out["glimpses"], vgg).mean() + (0 * out["rec"]).mean()
        else:
            rec = rec_fn(x, out["rec"]).mean()
        terms = {k: out[k].unsqueeze(1) for k in ("mu", "mu_offset", "logvar_offset", "mu_depth", "logvar_depth",
                                                  "mu_scale", "logvar_scale", "obj_on_a", "obj_on_b", "mu_features",
                                                  "logvar_features", "mu_bg", "logvar_bg")}
        kls = static_kl(terms, out["proposals"].unsqueeze(1), Priors.of(self, phase), c.kl_balance,
                        bg_kl_over_time=False)
        loss = c.beta_rec * rec + c.beta_kl * kls["kl"]
        if vgg:
            loss = 1e-3 * loss
        return {"loss": loss, "rec": rec, **kls}

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """Every frame of `video` [B, T, C, H, W] is one image; the phase comes from `ctx.step`."""
        x = video.reshape(-1, *video.shape[2:])
        phase = Phase.at(ctx.step, self.config)
        with ctx.autocast():
            out = self.forward_images(x, phase=phase)
            terms = self.loss(x, out, phase)
        logs = {k: v.detach() for k, v in terms.items() if k != "loss"}
        with torch.no_grad():
            logs["psnr"] = -10 * torch.log10(torch.mean((out["rec"].detach() - x) ** 2))
        return StepOutput(terms["loss"], logs)

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        return adam(self, self.config)

    # -- inference ------------------------------------------------------------------------------------------------------
    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        return {}

    def export_plan(self) -> ExportPlan:
        """Graphs `encode` (one frame -> deterministic particles) and `decode` (particles -> frame)."""
        param = next(self.parameters())
        gen = torch.Generator().manual_seed(0)
        batch = 2
        frame = torch.rand(batch, *self.frame_shape, generator=gen).to(param)
        with torch.no_grad():
            particles = _Encode(self)(frame)
        return ExportPlan({
            "encode": graph(_Encode(self), ("frame",), PARTICLE_NAMES, (frame,)),
            "decode": graph(_Decode(self), PARTICLE_NAMES, ("rec",), tuple(particles)),
        })

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """Repeat the reconstruction of the last context frame `horizon` times (DLPv2 has no dynamics)."""
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        particles = backend.run("encode", {"frame": context[:, -1]})
        rec = backend.run("decode", particles)["rec"]
        return rec.unsqueeze(1).expand(-1, horizon, -1, -1, -1).contiguous()


class _Encode(nn.Module):
    """frame [B, C, H, W] -> deterministic particles (official `ObjectDLP.encode_all`, deterministic)."""

    def __init__(self, model: ParticleModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        fg = m.fg_module
        p = fg.encode(frame, fg.anchors(frame, fg.proposals(frame)), deterministic=True, refine=True)
        _, _, z_bg = m.encode_background(frame, p.z, p.obj_on, deterministic=True)
        return p.z, p.z_scale, p.obj_on, p.z_depth, p.z_features, z_bg


class _Decode(nn.Module):
    """particles -> frame in [0, 1]."""

    def __init__(self, model: ParticleModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, z_scale: Tensor, obj_on: Tensor, z_depth: Tensor, z_features: Tensor,
                z_bg: Tensor) -> tuple[Tensor]:
        rec = self.model.decode_frames(z, z_scale, z_features, obj_on, z_depth, z_bg)["rec"]
        return (rec.clamp(0.0, 1.0),)
