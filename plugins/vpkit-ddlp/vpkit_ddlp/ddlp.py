"""DDLP: deep dynamic latent particles. DLPv2 particles tracked through a video and the PINT transformer as a learned
prior over their dynamics.

Daniel & Tamar, "DDLP: Unsupervised Object-centric Video Prediction with Deep Dynamic Latent Particles", TMLR 2024;
official code github.com/taldatech/ddlp (`models.py: ObjectDynamicsDLP`, `modules/dynamics_modules.py`,
`train_ddlp.py`).
    @article{daniel2024ddlp, title={DDLP: Unsupervised Object-centric Video Prediction with Deep Dynamic Latent
             Particles}, author={Daniel, Tal and Tamar, Aviv}, journal={TMLR}, year={2024}}

Encoding (official `fg_sequential_opt`): proposals for the first `num_static_frames` frames; frame 0 is encoded from
the top-K proposals with a refinement pass; every later frame tracks from the previous frame's z (detached), with the
previous scale and a correlation-map channel against the previous glimpses. All frames are decoded in one batch, the
background of each frame is encoded around its particles. PINT reads the posterior particles of frames 0..T-1 and
gives priors for frames 1..T.

Loss (official `calc_elbo`), with a clip of T+1 frames, burn-in tau = num_static_frames and a per-step ramp d:
`1/(T+1) [beta_rec (rec_{<tau} + beta_dyn_rec sum_t d_t rec_t) + beta_kl KL_static(<tau) + beta_dyn sum_t d_t
KL(posterior_t || PINT prior_t)]`, x 1e-3 with the VGG loss; during warm-up `rec` is glimpse autoencoding.

Sampling (official `sample`): encode the context with tracking, roll PINT forward autoregressively over a window of
the last T frames, decode. Deterministic by default (means; the official evaluation).
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
    Optimization,
    StepOutput,
    TrainContext,
    VideoPredictor,
)
from vpkit_ddlp.config import DDLPConfig
from vpkit_ddlp.dlp import PARTICLE_NAMES, adam, graph
from vpkit_ddlp.losses import dynamics_ramp, kl_beta, kl_normal
from vpkit_ddlp.memory import active, chunked, recomputed
from vpkit_ddlp.objective import Phase, Priors, glimpse_rec, rec_loss_fn, static_kl
from vpkit_ddlp.particles import ParticleModel, Particles
from vpkit_ddlp.pint import DynamicsDLP

if TYPE_CHECKING:
    from vpkit.core.config import TrainConfig

STACKED = tuple(Particles.__dataclass_fields__)


class DDLP(ParticleModel, VideoPredictor):
    """DDLP on square frames of `frame_shape` `(C, H, W)`."""

    def __init__(self, config: DDLPConfig, frame_shape: tuple[int, int, int]) -> None:
        super().__init__(config, frame_shape)
        c = config
        self.config = config
        self.frame_shape = tuple(frame_shape)
        self.dyn_module = DynamicsDLP(
            c.learned_feature_dim, c.bg_features_dim, dim=c.pint_dim, heads=c.pint_heads, layers=c.pint_layers,
            block_size=c.timestep_horizon, max_particles=c.n_kp_enc + 1, dropout=c.pint_dropout,
            kp_activation=c.kp_activation, predict_delta=c.predict_delta,
            depth_logvar_from_mean=c.pint_depth_logvar_from_mean)

    @property
    def stochastic(self) -> bool:
        return self.config.sampling == "stochastic"

    @property
    def noise_width(self) -> int:
        """Per-particle Gaussian draws: position 2, scale 2, depth 1, features F."""
        return 5 + self.config.learned_feature_dim

    # -- forward ------------------------------------------------------------------------------------------------------
    def track(self, video: Tensor, *, deterministic: bool, phase: Phase) -> tuple[dict[str, Tensor], Tensor]:
        """Official `fg_sequential_opt` encoding of `video` [B, L, C, H, W]: particles stacked `[B, L, ...]` and the
        detached proposals of the first min(num_static_frames, L) frames, padded to L by repeating the last."""
        c, fg = self.config, self.fg_module
        batch, length = video.shape[:2]
        static = min(c.num_static_frames, length)
        chunk = self.memory_chunk if c.filtering_heuristic != "random" else 0  # random draws a permutation
        proposals = chunked(fg.proposals, chunk, video[:, :static].reshape(-1, *video.shape[2:]))
        proposals = proposals.view(batch, static, *proposals.shape[1:])
        init = proposals if c.train_enc_prior else 0.0 * proposals + proposals.detach()
        encode = partial(recomputed, fg.encode) if active(self.memory_chunk) else fg.encode  # one frame at a time
        steps = [encode(video[:, 0], fg.anchors(video[:, 0], init[:, 0]), deterministic=deterministic,
                        warmup=phase.warmup, noisy=phase.noisy, refine=True)]
        for t in range(1, length):
            prev = steps[-1]
            steps.append(encode(video[:, t], prev.z.detach(), deterministic=deterministic, warmup=phase.warmup,
                                noisy=phase.noisy, prev_crops=prev.crops.detach(), prev_scale=prev.z_scale.detach()))
        proposals = proposals.detach()
        if length > static:
            proposals = torch.cat([proposals, proposals[:, -1:].expand(-1, length - static, -1, -1)], dim=1)
        stacked = {name: torch.stack([getattr(s, name) for s in steps], dim=1) for name in STACKED}
        return stacked, proposals

    def forward_video(self, video: Tensor, *, deterministic: bool = False, phase: Phase | None = None
                      ) -> dict[str, Tensor]:
        """Official `ObjectDynamicsDLP.forward` on a clip [B, L, C, H, W]: tracked particles `[B, L, ...]`, their
        decoding `rec` [B * L, C, H, W] (and glimpses, masks), the backgrounds, and PINT's priors for frames 1..L-1
        (`dyn_*`, `[B, L-1, ...]`)."""
        phase = phase or Phase(False, False, 0)
        batch, length = video.shape[:2]
        p, proposals = self.track(video, deterministic=deterministic, phase=phase)

        def flat(name: str) -> Tensor:
            return p[name].reshape(batch * length, *p[name].shape[2:])

        dec = self.decode_foreground(flat("z"), flat("z_scale"), flat("z_features"), flat("obj_on"), flat("z_depth"),
                                     noisy=phase.noisy)
        x = video.reshape(-1, *video.shape[2:])
        mu_bg, logvar_bg, z_bg = self.encode_background(x, flat("z"), flat("obj_on"), deterministic=deterministic,
                                                        chunk=self.memory_chunk)
        bg = self.decode_background(z_bg)

        def seq(t: Tensor) -> Tensor:
            return t.view(batch, length, *t.shape[1:])

        mu_bg, logvar_bg, z_bg = seq(mu_bg), seq(logvar_bg), seq(z_bg)
        dyn = self.dyn_module(p["z"][:, :-1], p["z_scale"][:, :-1], p["obj_on"][:, :-1], p["z_depth"][:, :-1],
                              p["z_features"][:, :-1], z_bg[:, :-1])
        return {**p, **dec, "proposals": proposals, "mu_bg": mu_bg, "logvar_bg": logvar_bg, "z_bg": z_bg, "bg": bg,
                "rec": dec["bg_mask"] * bg + dec["fg"], **{f"dyn_{k}": v for k, v in dyn.items()}}

    # -- loss -----------------------------------------------------------------------------------------------------------
    def loss(self, video: Tensor, out: Mapping[str, Tensor], phase: Phase, discount: Tensor) -> dict[str, Tensor]:
        """Official `ObjectDynamicsDLP.calc_elbo` for a clip of T+1 frames; `discount` [T+1-tau] is the ramp d."""
        c = self.config
        batch, length = video.shape[:2]
        tau = c.num_static_frames
        rec_fn = rec_loss_fn(self, c)
        vgg = c.recon_loss_type == "vgg"
        x = video.reshape(-1, *video.shape[2:])
        if phase.warmup:
            per = glimpse_rec(rec_fn, out["crops"].reshape(-1, *out["crops"].shape[2:]), out["glimpses"], vgg)
            per = (per + (0 * out["rec"]).mean()).view(batch, length, -1)
        else:
            per = rec_fn(x, out["rec"]).view(batch, length, -1)
        rec_static, rec_future = per[:, :tau], c.beta_dyn_rec * discount[None, :, None] * per[:, tau:]
        rec = rec_static.sum((-2, -1)).mean() + rec_future.sum((-2, -1)).mean()

        burn_in = {k: out[k][:, :tau] for k in ("mu", "mu_offset", "logvar_offset", "mu_depth", "logvar_depth",
                                                "mu_scale", "logvar_scale", "obj_on_a", "obj_on_b", "mu_features",
                                                "logvar_features", "mu_bg", "logvar_bg")}
        kls = static_kl(burn_in, out["proposals"][:, :tau], Priors.of(self, phase), c.kl_balance,
                        bg_kl_over_time=c.static_bg_kl_over_time)

        def future(name: str) -> Tensor:
            return out[name][:, tau:]

        def prior(name: str) -> Tensor:
            return out[f"dyn_{name}"][:, tau - 1:]

        def weighted(kl: Tensor) -> Tensor:  # kl [B, T+1-tau] -> ramp-weighted sum, batch mean
            return (kl * discount[None, :]).sum(-1).mean()

        mu_tot = future("z_base").detach() + future("mu_offset")
        kl_pos = kl_normal(mu_tot, future("logvar_offset"), prior("mu"), prior("logvar")).sum(-1)
        kl_scale = kl_normal(future("mu_scale"), future("logvar_scale"), prior("mu_scale"),
                             prior("logvar_scale")).sum(-1)
        kl_depth = kl_normal(future("mu_depth"), future("logvar_depth"), prior("mu_depth"),
                             prior("logvar_depth")).sum(-1)
        kl_feat = kl_normal(future("mu_features"), future("logvar_features"), prior("mu_features"),
                            prior("logvar_features")).sum(-1)
        kl_obj_on = kl_beta(future("obj_on_a"), future("obj_on_b"), prior("obj_on_a"), prior("obj_on_b")).sum(-1)
        kl_bg = kl_normal(future("mu_bg"), future("logvar_bg"), prior("mu_bg"), prior("logvar_bg"))
        kl_dyn = sum(weighted(k) for k in (kl_pos, kl_obj_on, kl_depth, kl_scale, kl_feat, kl_bg))
        loss = (c.beta_rec * rec + c.beta_kl * kls["kl"] + c.beta_dyn * kl_dyn) / (c.timestep_horizon + 1)
        if vgg:
            loss = 1e-3 * loss
        return {"loss": loss, "rec": rec, "kl_dyn": kl_dyn, **kls}

    def discount(self, step: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The dynamics ramp d for the frames after the burn-in at optimisation step `step`."""
        c = self.config
        ramp = dynamics_ramp(step, c.epoch_steps, c.warmup_epoch, c.timestep_horizon)
        return torch.tensor(ramp[: c.timestep_horizon + 1 - c.num_static_frames], device=device, dtype=dtype)

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """The official loss on a clip of T+1 frames; warm-up / noisy phases and the ramp follow `ctx.step`."""
        c = self.config
        if video.shape[1] != c.timestep_horizon + 1:
            raise VpkitError(f"DDLP trains on clips of timestep_horizon + 1 = {c.timestep_horizon + 1} frames; got "
                             f"{video.shape[1]}.")
        phase = Phase.at(ctx.step, c)
        with ctx.autocast():
            out = self.forward_video(video, phase=phase)
            terms = self.loss(video, out, phase, self.discount(ctx.step, video.device, video.dtype))
        logs = {k: v.detach() for k, v in terms.items() if k != "loss"}
        with torch.no_grad():
            logs["psnr"] = -10 * torch.log10(torch.mean((out["rec"].detach() - video.flatten(0, 1)) ** 2))
        return StepOutput(terms["loss"], logs)

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        return adam(self, self.config)

    # -- sampling -------------------------------------------------------------------------------------------------------
    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        """Stochastic sampling only: per-particle draws (position, scale, depth, features) and bg draws for each
        context frame's posterior and each predicted frame's prior."""
        if not self.stochastic:
            return {}
        k, w, fb = self.config.n_kp_enc, self.noise_width, self.config.bg_features_dim
        return {"context_noise": (batch, n_context, k, w), "context_bg_noise": (batch, n_context, fb),
                "dynamics_noise": (batch, horizon, k, w), "dynamics_bg_noise": (batch, horizon, fb)}

    def export_plan(self) -> ExportPlan:
        """Graphs `encode_first` (frame 0, with the refinement pass), `encode_next` (tracking from the previous
        frame's particles and glimpses), `dynamics_step` (one PINT step on a window of T frames) and `decode`.
        Stochastic sampling adds the Gaussian noise of each as inputs."""
        param = next(self.parameters())
        gen = torch.Generator().manual_seed(0)
        batch, c = 2, self.config
        k, w, fb, t = c.n_kp_enc, self.noise_width, c.bg_features_dim, c.timestep_horizon

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=gen).to(param)

        noise_in = ("noise", "bg_noise") if self.stochastic else ()
        frame = rand(batch, *self.frame_shape)
        enc_noise = (rand(batch, k, w), rand(batch, fb)) if self.stochastic else ()
        first = _EncodeFirst(self)
        with torch.no_grad():
            particles = first(frame, *enc_noise)
        window = tuple(x.unsqueeze(1).expand(-1, t, *x.shape[1:]).contiguous() for x in particles[:-1])
        outputs = (*PARTICLE_NAMES, "crops")
        return ExportPlan({
            "encode_first": graph(first, ("frame", *noise_in), outputs, (frame, *enc_noise)),
            "encode_next": graph(_EncodeNext(self), ("frame", "prev_z", "prev_z_scale", "prev_crops", *noise_in),
                                 outputs, (frame, particles[0], particles[1], particles[-1], *enc_noise)),
            "dynamics_step": graph(_DynamicsStep(self), (*PARTICLE_NAMES, *noise_in),
                                   tuple(f"next_{x}" for x in PARTICLE_NAMES), (*window, *enc_noise)),
            "decode": graph(_Decode(self), PARTICLE_NAMES, ("rec",), tuple(particles[:-1])),
        })

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """Official `sample`: encode the context with tracking, `horizon` PINT steps over a window of the last T
        frames (zero-padded at the end when shorter: attention is causal and the biases relative, so this is exact),
        decode the predicted particles in one batch."""
        batch, n_context = context.shape[:2]
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        for name, shape in self.noise_shapes(batch, n_context, horizon).items():
            if name not in noise or tuple(noise[name].shape) != shape:
                got = tuple(noise[name].shape) if name in noise else "nothing"
                raise VpkitError(f"rollout needs noise '{name}' of shape {shape}; got {got}.")
        particles = self.encode_context(backend, context, noise)
        return self.decode_particles(backend, self.roll_particles(backend, particles, horizon, noise))

    def encode_context(self, backend: Backend, context: Tensor, noise: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Particles of the context frames [B, T0, C, H, W] with tracking: `{name: [B, T0, ...]}` for
        `PARTICLE_NAMES` (stochastic sampling reads `context_noise` / `context_bg_noise`)."""

        def enc_noise(t: int) -> dict[str, Tensor]:
            if not self.stochastic:
                return {}
            return {"noise": noise["context_noise"][:, t], "bg_noise": noise["context_bg_noise"][:, t]}

        out = backend.run("encode_first", {"frame": context[:, 0], **enc_noise(0)})
        history = [[out[n]] for n in PARTICLE_NAMES]
        for t in range(1, context.shape[1]):
            out = backend.run("encode_next", {"frame": context[:, t], "prev_z": out["z"], "prev_z_scale":
                                              out["z_scale"], "prev_crops": out["crops"], **enc_noise(t)})
            for seq, name in zip(history, PARTICLE_NAMES, strict=True):
                seq.append(out[name])
        return {name: torch.stack(seq, dim=1) for name, seq in zip(PARTICLE_NAMES, history, strict=True)}

    def roll_particles(self, backend: Backend, particles: Mapping[str, Tensor], horizon: int,
                       noise: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """`horizon` autoregressive PINT steps after `particles` `{name: [B, T0, ...]}`: the predicted particles
        `{name: [B, horizon, ...]}` (stochastic sampling reads `dynamics_noise` / `dynamics_bg_noise`)."""
        block = self.config.timestep_horizon
        batch = particles["z"].shape[0]
        history = [list(particles[name].unbind(1)) for name in PARTICLE_NAMES]
        predicted: list[list[Tensor]] = [[] for _ in PARTICLE_NAMES]
        for step in range(horizon):
            inputs = {}
            for seq, name in zip(history, PARTICLE_NAMES, strict=True):
                window = torch.stack(seq[-block:], dim=1)
                length = window.shape[1]
                if length < block:
                    pad = window.new_zeros(batch, block - length, *window.shape[2:])
                    window = torch.cat([window, pad], dim=1)
                inputs[name] = window
            if self.stochastic:
                inputs["noise"] = noise["dynamics_noise"][:, step]
                inputs["bg_noise"] = noise["dynamics_bg_noise"][:, step]
            nxt = backend.run("dynamics_step", inputs)
            for seq, pred, name in zip(history, predicted, PARTICLE_NAMES, strict=True):
                value = nxt[f"next_{name}"][:, length - 1]
                seq.append(value)
                pred.append(value)
        return {name: torch.stack(pred, 1) for name, pred in zip(PARTICLE_NAMES, predicted, strict=True)}

    def decode_particles(self, backend: Backend, particles: Mapping[str, Tensor]) -> Tensor:
        """Frames [B, L, C, H, W] in [0, 1] of particles `{name: [B, L, ...]}`, decoded in one batch."""
        batch, length = particles["z"].shape[:2]
        frames = backend.run("decode", {name: particles[name].flatten(0, 1) for name in PARTICLE_NAMES})["rec"]
        return frames.view(batch, length, *frames.shape[1:])


def _split_noise(model: DDLP, noise: Tensor) -> dict[str, Tensor]:
    f = model.config.learned_feature_dim
    pos, scale, depth, feats = noise.split([2, 2, 1, f], dim=-1)
    return {"pos": pos, "scale": scale, "depth": depth, "features": feats}


class _EncodeFirst(nn.Module):
    """frame 0 [B, C, H, W] (+ noise [B, K, 5+F], bg noise [B, F_bg]) -> particles, bg features and glimpses."""

    def __init__(self, model: DDLP) -> None:
        super().__init__()
        self.model = model

    def encode(self, frame: Tensor, p_fn, noise: Tensor | None, bg_noise: Tensor | None) -> tuple[Tensor, ...]:
        m = self.model
        stochastic = noise is not None
        p = p_fn(deterministic=not stochastic, noise=_split_noise(m, noise) if stochastic else None)
        _, _, z_bg = m.encode_background(frame, p.z, p.obj_on, deterministic=not stochastic, noise=bg_noise)
        return p.z, p.z_scale, p.obj_on, p.z_depth, p.z_features, z_bg, p.crops

    def forward(self, frame: Tensor, noise: Tensor | None = None, bg_noise: Tensor | None = None
                ) -> tuple[Tensor, ...]:
        fg = self.model.fg_module

        def particles(**kw):
            return fg.encode(frame, fg.anchors(frame, fg.proposals(frame)), refine=True, **kw)

        return self.encode(frame, particles, noise, bg_noise)


class _EncodeNext(_EncodeFirst):
    """frame t, the previous frame's z, z_scale and glimpses (+ noise) -> particles, bg features and glimpses."""

    def forward(self, frame: Tensor, prev_z: Tensor, prev_z_scale: Tensor, prev_crops: Tensor,  # type: ignore[override]
                noise: Tensor | None = None, bg_noise: Tensor | None = None) -> tuple[Tensor, ...]:
        fg = self.model.fg_module

        def particles(**kw):
            return fg.encode(frame, prev_z, prev_crops=prev_crops, prev_scale=prev_z_scale, **kw)

        return self.encode(frame, particles, noise, bg_noise)


class _DynamicsStep(nn.Module):
    """A window of T frames of particles `[B, T, ...]` (+ noise [B, K, 5+F], bg noise [B, F_bg]) -> the next
    frame's particles predicted at every window position `[B, T, ...]` (the rollout reads the last real one).
    Deterministic: the prior means and the Beta mean; stochastic: Gaussian samples (transparency: Beta mean)."""

    def __init__(self, model: DDLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, z_scale: Tensor, obj_on: Tensor, z_depth: Tensor, z_features: Tensor, z_bg: Tensor,
                noise: Tensor | None = None, bg_noise: Tensor | None = None) -> tuple[Tensor, ...]:
        d = self.model.dyn_module(z, z_scale, obj_on, z_depth, z_features, z_bg)
        a, b = d["obj_on_a"].clamp_min(1e-5), d["obj_on_b"].clamp_min(1e-5)
        means = (d["mu"], d["mu_scale"], a / (a + b), d["mu_depth"], d["mu_features"], d["mu_bg"])
        if noise is None:
            return means
        eps = _split_noise(self.model, noise)

        def draw(mu: Tensor, logvar: Tensor, e: Tensor) -> Tensor:
            return mu + torch.exp(0.5 * logvar) * e.unsqueeze(1)

        return (draw(d["mu"], d["logvar"], eps["pos"]), draw(d["mu_scale"], d["logvar_scale"], eps["scale"]),
                means[2], draw(d["mu_depth"], d["logvar_depth"], eps["depth"]),
                draw(d["mu_features"], d["logvar_features"], eps["features"]),
                draw(d["mu_bg"], d["logvar_bg"], bg_noise))


class _Decode(nn.Module):
    """particles [N, K, *] and z_bg [N, F_bg] -> frames [N, C, H, W] in [0, 1]."""

    def __init__(self, model: DDLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, z_scale: Tensor, obj_on: Tensor, z_depth: Tensor, z_features: Tensor,
                z_bg: Tensor) -> tuple[Tensor]:
        return (self.model.decode_frames(z, z_scale, z_features, obj_on, z_depth, z_bg)["rec"].clamp(0.0, 1.0),)
