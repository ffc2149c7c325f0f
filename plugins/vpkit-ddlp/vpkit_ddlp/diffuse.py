"""DiffuseDDLP (`diffuse-ddlp`): a DDPM over the particles of a frozen, trained DDLP generates the first frames of a
video unconditionally; the DDLP's PINT then rolls them out and its decoder renders the frames.

Daniel & Tamar, "DDLP: Unsupervised Object-centric Video Prediction with Deep Dynamic Latent Particles", TMLR 2024;
official code github.com/taldatech/ddlp (`train_diffuse_ddlp.py`, `modules/diffusion_modules.py`,
`generate_diffuse_ddlp_video_generation.py`).

- Latents: the DDLP encodes the first `diffuse_frames` (tau = 4) frames deterministically with tracking; each frame
  gives K rows `[z_p, z_s, z_d, z_t, z_f]` (depth before transparency) and a background row `[0, 0, z_bg, 0...]`
  (its padding is masked out of the loss). The background is encoded around the decoder's alpha masks (official).
- Normalisation (`ParticleNormalization`, official `latent_stats.pth`): per-dimension statistics of every particle
  and background vector of the first tau frames of every training clip, computed once with the frozen DDLP
  (`ensure_latent_stats`); `minmax` maps to [-1, 1] (official default), `std` standardises.
- Training: official DDPM (cosine schedule, 1000 steps, x0 objective, masked L1), Adam 8e-5 (0.9, 0.99), gradient
  norm clipped to 1 (preset `train.grad_clip`), EMA 0.995 every 10 steps after step 100 with the ema-pytorch warm-up.
- Generation (`generate`): 1000-step ancestral sampling with the EMA weights, unnormalise, deterministic PINT
  rollout to `horizon` frames, decode.

The model holds the frozen DDLP (its weights are part of this model's checkpoint, and its config is copied into
`ddlp`, so a checkpoint rebuilds without the DDLP folder). `predict` (conditional prediction from context frames) is
the frozen DDLP's.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

import vpkit
from vpkit.core.config import BaseConfig, build_config
from vpkit.core.errors import VpkitError
from vpkit.core.model import (
    Backend,
    ExportPlan,
    Optimization,
    StepOutput,
    TrainContext,
    VideoPredictor,
)
from vpkit.core.specs import ModelSpec, Preset
from vpkit_ddlp.config import DDLPConfig
from vpkit_ddlp.diffuse_denoiser import EMA, EMAStep, GaussianDiffusion, PINTDenoiser

if TYPE_CHECKING:
    from vpkit.core.config import TrainConfig
    from vpkit_ddlp.ddlp import DDLP

STATS_FILE = "latent_stats.safetensors"
STATS_KEYS = ("mu", "mu_bg", "std", "std_bg", "min_val", "max_val", "min_val_bg", "max_val_bg")


class DiffuseDDLPConfig(BaseConfig):
    """DiffuseDDLP: the frozen DDLP it diffuses over, the DDPM, its optimiser and EMA (official
    `configs/diffuse_ddlp.json` and `TrainerDiffuseDDLP` defaults)."""

    ddlp_checkpoint: str | None = Field(None, description="a trained DDLP checkpoint directory (vpkit train --model "
                                        "ddlp); its config and weights are read when the model is first built")
    ddlp: dict[str, Any] | None = Field(None, description="the frozen DDLP's config, filled in from ddlp_checkpoint "
                                        "and saved with this model, whose checkpoint then carries the DDLP weights; "
                                        "set by hand only to build an untrained DDLP (tests)")
    diffuse_frames: int = Field(4, ge=1, description="tau: frames of particles the DDPM generates (and trains on)")
    timesteps: int = Field(1000, ge=2, description="diffusion steps, for training and (ancestral) sampling")
    loss_type: Literal["l1", "l2"] = "l1"
    particle_norm: Literal["minmax", "std"] = Field("minmax", description="latent normalisation: min-max to "
                                                    "[-1, 1] or standardisation")
    denoiser_dim: int | None = Field(None, gt=0, description="denoiser width (None: the DDLP's pint_dim)")
    denoiser_heads: int | None = Field(None, gt=0, description="None: the DDLP's pint_heads")
    denoiser_layers: int | None = Field(None, gt=0, description="None: the DDLP's pint_layers")
    dropout: float = Field(0.1, ge=0, lt=1, description="denoiser attention and residual dropout")
    lr: float = Field(8e-5, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.99)
    ema_decay: float = Field(0.995, gt=0, lt=1)
    ema_update_every: int = Field(10, gt=0)
    ema_update_after_step: int = Field(100, ge=0)
    stats_batch_size: int = Field(32, gt=0, description="clips per batch when computing the latent statistics")
    stats_max_videos: int | None = Field(None, gt=0, description="use only the first N training clips for the "
                                         "statistics (None: all of them, as official)")
    sample_with_dropout: bool = Field(False, description="official quirk: the generation script samples with the EMA "
                                      "model left in training mode (dropout on, drawn from torch's global RNG)")
    fps: float = Field(1 / 0.06, gt=0, description="frame rate of written videos (official animation_fps 0.06 s)")

    @property
    def n_context(self) -> int:
        """Frames of a training clip the model reads: the first `diffuse_frames`."""
        return self.diffuse_frames

    @property
    def n_future(self) -> int:
        """0: an unconditional generator has no validation horizon (the trainer writes `last` checkpoints only)."""
        return 0



class ParticleNormalization(nn.Module):
    """Official `ParticleNormalization`: per-dimension statistics of the particle rows (6+F) and background
    features (F_bg) as buffers `mu, mu_bg, std, std_bg, min_val, max_val, min_val_bg, max_val_bg` (the keys of
    `latent_stats.pth`). Before statistics are set, min = max = 0 and `ready` is False."""

    def __init__(self, fg_dim: int, bg_dim: int, mode: str = "minmax", eps: float = 1e-5) -> None:
        super().__init__()
        self.mode, self.eps = mode, eps
        for name, dim, fill in (("mu", fg_dim, 0.0), ("mu_bg", bg_dim, 0.0), ("std", fg_dim, 1.0),
                                ("std_bg", bg_dim, 1.0), ("min_val", fg_dim, 0.0), ("max_val", fg_dim, 0.0),
                                ("min_val_bg", bg_dim, 0.0), ("max_val_bg", bg_dim, 0.0)):
            self.register_buffer(name, torch.full((dim,), fill))

    @property
    def ready(self) -> bool:
        return bool((self.max_val != self.min_val).any())

    def stats(self) -> dict[str, Tensor]:
        return {k: getattr(self, k).detach().cpu().contiguous() for k in STATS_KEYS}

    def set_stats(self, stats: Mapping[str, Tensor]) -> None:
        missing = [k for k in STATS_KEYS if k not in stats]
        if missing:
            raise VpkitError(f"latent statistics lack {', '.join(missing)}")
        for k in STATS_KEYS:
            buf = getattr(self, k)
            if tuple(stats[k].shape) != tuple(buf.shape):
                raise VpkitError(f"latent statistic '{k}' has shape {tuple(stats[k].shape)}; this model needs "
                                 f"{tuple(buf.shape)} (statistics of another DDLP?)")
            buf.copy_(stats[k])

    def normalize(self, fg: Tensor, bg: Tensor) -> tuple[Tensor, Tensor]:
        if self.mode == "minmax":
            fg = 2 * (fg - self.min_val) / (self.max_val - self.min_val + self.eps) - 1
            bg = 2 * (bg - self.min_val_bg) / (self.max_val_bg - self.min_val_bg + self.eps) - 1
            return fg, bg
        return (fg - self.mu) / (self.std + self.eps), (bg - self.mu_bg) / (self.std_bg + self.eps)

    def unnormalize(self, fg: Tensor, bg: Tensor) -> tuple[Tensor, Tensor]:
        if self.mode == "minmax":
            fg = (fg + 1) / 2 * (self.max_val - self.min_val + self.eps) + self.min_val
            bg = (bg + 1) / 2 * (self.max_val_bg - self.min_val_bg + self.eps) + self.min_val_bg
            return fg, bg
        return fg * (self.std + self.eps) + self.mu, bg * (self.std_bg + self.eps) + self.mu_bg


def load_frozen_ddlp(config: DiffuseDDLPConfig, frame_shape: tuple[int, int, int]) -> DDLP:
    """The DDLP of `config.ddlp` (untrained: the weights come from this model's checkpoint), else the one saved at
    `config.ddlp_checkpoint` with its weights."""
    from vpkit.core.checkpoint import load_state_dict, read_checkpoint
    from vpkit_ddlp.ddlp import DDLP

    if config.ddlp is None and config.ddlp_checkpoint is None:
        raise VpkitError("diffuse-ddlp diffuses over a trained DDLP: name it with "
                         "--set model.ddlp_checkpoint=DDLP_RUN/checkpoints/last")
    if config.ddlp is not None:
        return DDLP(build_config(DDLPConfig, config.ddlp, what="diffuse-ddlp's DDLP config"), frame_shape)
    ckpt = read_checkpoint(Path(config.ddlp_checkpoint).expanduser())  # type: ignore[arg-type]
    if ckpt.model_key != "ddlp":
        raise VpkitError(f"{ckpt.path} holds model '{ckpt.model_key}'; diffuse-ddlp needs a DDLP checkpoint "
                         "(vpkit train --model ddlp).")
    if tuple(ckpt.frame_shape) != tuple(frame_shape):
        raise VpkitError(f"The DDLP at {ckpt.path} was trained on frames {tuple(ckpt.frame_shape)}, the data here "
                         f"has {tuple(frame_shape)}; train diffuse-ddlp on the DDLP's dataset.")
    ddlp = DDLP(build_config(DDLPConfig, ckpt.meta["model"]["config"], what=f"DDLP config in {ckpt.path}"),
                frame_shape)
    ddlp.load_state_dict(load_state_dict(ckpt.path))
    return ddlp


class DiffuseDDLP(VideoPredictor):
    """DiffuseDDLP on frames of `frame_shape`: `ddlp` (frozen), `diffusion` (official `GaussianDiffusionPINT`
    keys), `ema` (`initted`, `step`, `ema_model.*`) and `particle_norm` (the latent statistics)."""

    def __init__(self, config: DiffuseDDLPConfig, frame_shape: tuple[int, int, int]) -> None:
        super().__init__()
        ddlp = load_frozen_ddlp(config, frame_shape)
        d = ddlp.config
        self.config = config.model_copy(update={"ddlp": d.model_dump(mode="json")})
        self.frame_shape = tuple(frame_shape)
        self.n_particles, self.feature_dim, self.bg_dim = d.n_kp_enc, d.learned_feature_dim, d.bg_features_dim
        self.particle_dim = 6 + d.learned_feature_dim
        if 2 + self.bg_dim > self.particle_dim:
            raise VpkitError(f"The background row [0, 0, z_bg] ({2 + self.bg_dim}) must fit a particle row "
                             f"({self.particle_dim}): bg_learned_feature_dim may exceed learned_feature_dim by 4 "
                             "at most.")
        c = config
        self.ddlp = ddlp.requires_grad_(False).eval()
        denoiser = PINTDenoiser(self.particle_dim, c.denoiser_dim or d.pint_dim, c.denoiser_heads or d.pint_heads,
                                c.denoiser_layers or d.pint_layers, c.diffuse_frames, d.n_kp_enc + 1, c.dropout)
        self.diffusion = GaussianDiffusion(denoiser, frames=c.diffuse_frames, timesteps=c.timesteps,
                                           loss_type=c.loss_type)
        self.ema = EMA(self.diffusion, beta=c.ema_decay, update_every=c.ema_update_every,
                       update_after_step=c.ema_update_after_step)
        self.particle_norm = ParticleNormalization(self.particle_dim, self.bg_dim, c.particle_norm)

    def train(self, mode: bool = True) -> DiffuseDDLP:
        """The DDLP and the EMA copy stay in eval mode; only the online denoiser trains."""
        super().train(mode)
        self.ddlp.eval()
        self.ema.ema_model.eval()
        return self

    # -- latents --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_particles(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """Official `preprocess_ddlp_input` without the normalisation: the deterministic, tracked particle rows
        `[B, T, K, 6+F]` of `video` `[B, T, C, H, W]` and the background features `[B, T, F_bg]`, encoded around the
        decoder's alpha masks."""
        from vpkit_ddlp.objective import Phase

        batch, length = video.shape[:2]
        p, _ = self.ddlp.track(video, deterministic=True, phase=Phase(False, False, 0))

        def flat(name: str) -> Tensor:
            return p[name].reshape(batch * length, *p[name].shape[2:])

        dec = self.ddlp.fg_module.decode(flat("z"), flat("z_scale"), flat("z_features"), flat("obj_on"),
                                         flat("z_depth"))
        mu_bg, _ = self.ddlp.bg_module.encode(video.reshape(-1, *video.shape[2:]), dec["bg_mask"])
        rows = torch.cat([p["z"], p["z_scale"], p["z_depth"], p["obj_on"][..., None], p["z_features"]], dim=-1)
        return rows, mu_bg.view(batch, length, -1)

    def to_latent(self, rows: Tensor, bg: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised latent `[B, T, K+1, 6+F]` (the bg row `[0, 0, z_bg, 0...]` last) and the loss mask, zero on
        the bg row's padding."""
        rows, bg = self.particle_norm.normalize(rows, bg)
        pad = self.particle_dim - 2 - self.bg_dim
        bg_row = torch.cat([bg.new_zeros(*bg.shape[:-1], 2), bg, bg.new_zeros(*bg.shape[:-1], pad)], dim=-1)
        latent = torch.cat([rows, bg_row.unsqueeze(-2)], dim=-2)
        mask = torch.ones_like(latent)
        mask[:, :, self.n_particles, 2 + self.bg_dim:] = 0.0
        return latent, mask

    def from_latent(self, latent: Tensor) -> dict[str, Tensor]:
        """Official `latent_to_ddlp_output` unpacking: unnormalised particles `[B, T, K, *]` (obj_on `[B, T, K]`) and
        z_bg `[B, T, F_bg]` under the DDLP's names."""
        k = self.n_particles
        rows, bg = self.particle_norm.unnormalize(latent[:, :, :k], latent[:, :, k, 2:2 + self.bg_dim])
        return {"z": rows[..., :2], "z_scale": rows[..., 2:4], "z_depth": rows[..., 4:5], "obj_on": rows[..., 5],
                "z_features": rows[..., 6:], "z_bg": bg}

    # -- training -------------------------------------------------------------------------------------------------
    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """DDPM loss on the latents of the first `diffuse_frames` frames: t ~ U{0..T-1}, then the noise (official
        draw order)."""
        if not self.particle_norm.ready:
            raise VpkitError("diffuse-ddlp has no latent statistics yet: compute them once over the training data "
                             "with vpkit_ddlp.diffuse.ensure_latent_stats(model, train_set) (the plugin's "
                             "on_train_start hook does this when wired).")
        tau = self.config.diffuse_frames
        if video.shape[1] < tau:
            raise VpkitError(f"diffuse-ddlp trains on the first {tau} frames of each clip; got {video.shape[1]}.")
        latent, mask = self.to_latent(*self.encode_particles(video[:, :tau]))
        t = torch.randint(0, self.diffusion.num_timesteps, (latent.shape[0],), device=latent.device)
        noise = torch.randn_like(latent)
        with ctx.autocast():
            loss = self.diffusion.loss(latent, t, noise, mask)
        return StepOutput(loss, {"latent_abs": latent.abs().mean().detach()})

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        """Adam on the online denoiser only; the EMA is updated after every optimiser step (as a 'schedule')."""
        opt = torch.optim.Adam(self.diffusion.parameters(), lr=self.config.lr, betas=tuple(self.config.adam_betas))
        return Optimization([opt], [EMAStep(self.ema)])

    # -- conditional prediction: the frozen DDLP's ----------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        return self.ddlp.stochastic

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        return self.ddlp.noise_shapes(batch, n_context, horizon)

    def export_plan(self) -> ExportPlan:
        return self.ddlp.export_plan()

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        return self.ddlp.rollout(backend, context, horizon, noise)

    # -- generation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def unroll(self, particles: Mapping[str, Tensor], steps: int) -> dict[str, Tensor]:
        """Official `dyn_module.sample(deterministic=True)`: `steps` PINT steps over the last block_size frames,
        each frame the prior means (transparency: the Beta mean, a and b clamped at 1e-5), appended."""
        names = ("z", "z_scale", "obj_on", "z_depth", "z_features", "z_bg")
        seq = {n: particles[n] for n in names}
        block = self.ddlp.dyn_module.block_size
        for _ in range(steps):
            d = self.ddlp.dyn_module(*(seq[n][:, -block:] for n in names))
            a, b = d["obj_on_a"][:, -1:].clamp_min(1e-5), d["obj_on_b"][:, -1:].clamp_min(1e-5)
            new = {"z": d["mu"][:, -1:], "z_scale": d["mu_scale"][:, -1:], "obj_on": a / (a + b),
                   "z_depth": d["mu_depth"][:, -1:], "z_features": d["mu_features"][:, -1:], "z_bg": d["mu_bg"][:, -1:]}
            seq = {n: torch.cat([seq[n], new[n]], dim=1) for n in names}
        return seq

    @torch.no_grad()
    def decode(self, particles: Mapping[str, Tensor]) -> Tensor:
        """Frames `[B, T, C, H, W]` in [0, 1] from particles `[B, T, ...]`, one video at a time."""
        videos = []
        for i in range(particles["z"].shape[0]):
            p = {n: v[i] for n, v in particles.items()}
            rec = self.ddlp.decode_frames(p["z"], p["z_scale"], p["z_features"], p["obj_on"], p["z_depth"],
                                          p["z_bg"])["rec"]
            videos.append(rec.clamp(0.0, 1.0))
        return torch.stack(videos)


@torch.no_grad()
def generate(model: DiffuseDDLP, n: int, horizon: int, generator: torch.Generator | None = None, *,
             batch_size: int = 32) -> Tensor:
    """`n` unconditional videos of `horizon` frames `[n, horizon, C, H, W]` in [0, 1]: the EMA denoiser samples the
    particles of the first `diffuse_frames` frames (1000 ancestral steps, normals from `generator`), the DDLP's PINT
    rolls them out deterministically, its decoder renders every frame (official `TrainerDiffuseDDLP.sample`,
    horizon 100)."""
    tau = model.config.diffuse_frames
    if n < 1:
        raise VpkitError(f"generate needs n >= 1 videos; got {n}.")
    if horizon < tau:
        raise VpkitError(f"horizon ({horizon}) must be at least the {tau} frames the diffusion generates.")
    if not model.particle_norm.ready:
        raise VpkitError("This diffuse-ddlp model has no latent statistics (it was never trained); train it first.")
    was_training = model.training
    model.eval()
    ema = model.ema.ema_model
    ema.train(model.config.sample_with_dropout)
    try:
        latents = [ema.sample(min(batch_size, n - i), generator=generator) for i in range(0, n, batch_size)]
        particles = model.from_latent(torch.cat(latents))
        frames = model.decode(model.unroll(particles, horizon - tau))
    finally:
        model.train(was_training)
    return frames


# -- latent statistics ---------------------------------------------------------------------------------------------
@torch.no_grad()
def compute_latent_stats(model: DiffuseDDLP, dataset: Any, *, device: torch.device | str | None = None
                         ) -> dict[str, Tensor]:
    """Official `ParticleNormalization.calc_latent_stats`: mean, std (unbiased), min and max per dimension of every
    particle row and background vector of the first `diffuse_frames` frames of each training clip (uint8
    `[T, C, H, W]` items), in order, `stats_batch_size` clips at a time. Accumulated in float64."""
    c = model.config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    count = len(dataset) if c.stats_max_videos is None else min(len(dataset), c.stats_max_videos)
    if count == 0:
        raise VpkitError("The training set is empty: no latent statistics to compute.")
    acc: dict[str, dict[str, Any]] = {"": {}, "_bg": {}}
    for start in range(0, count, c.stats_batch_size):
        clips = torch.stack([torch.as_tensor(dataset[i]) for i in range(start, min(start + c.stats_batch_size,
                                                                                   count))])
        video = clips[:, : c.diffuse_frames].to(device).float().div_(255)
        rows, bg = model.encode_particles(video)
        for suffix, values in (("", rows.reshape(-1, rows.shape[-1])), ("_bg", bg.reshape(-1, bg.shape[-1]))):
            v, a = values.double(), acc[suffix]
            a["n"] = a.get("n", 0) + v.shape[0]
            a["sum"] = a.get("sum", 0) + v.sum(0)
            a["sq"] = a.get("sq", 0) + (v * v).sum(0)
            a["min"] = v.min(0)[0] if "min" not in a else torch.minimum(a["min"], v.min(0)[0])
            a["max"] = v.max(0)[0] if "max" not in a else torch.maximum(a["max"], v.max(0)[0])
    stats = {}
    for suffix, a in acc.items():
        mean = a["sum"] / a["n"]
        var = (a["sq"] - a["n"] * mean * mean) / max(a["n"] - 1, 1)
        stats.update({f"mu{suffix}": mean, f"std{suffix}": var.clamp_min(0).sqrt(), f"min_val{suffix}": a["min"],
                      f"max_val{suffix}": a["max"]})
    return {k: stats[k].float().cpu() for k in STATS_KEYS}


def save_latent_stats(path: Path | str, stats: Mapping[str, Tensor]) -> Path:
    """Write the statistics (the keys of the official `latent_stats.pth`) as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: stats[k].contiguous() for k in STATS_KEYS}, str(tmp))
    tmp.replace(path)
    return path


def load_latent_stats(path: Path | str) -> dict[str, Tensor]:
    """Read statistics written by `save_latent_stats`, or an official `latent_stats.pth`."""
    path = Path(path)
    if path.suffix == ".pth":
        return torch.load(path, map_location="cpu", weights_only=True)
    from safetensors.torch import load_file

    return load_file(str(path))


def ensure_latent_stats(model: DiffuseDDLP, dataset: Any, *, save_to: Path | str | None = None,
                        device: torch.device | str | None = None) -> Path | None:
    """Give `model` its latent statistics once: nothing if it has them; else read `latent_stats.safetensors` beside
    the DDLP (in its checkpoint folder, where the official code keeps `latent_stats.pth`), else compute them over
    `dataset` and write that file. A copy goes to `save_to` (a folder: the run directory) when given. Returns the
    file read or written (None when the model already had statistics)."""
    if model.particle_norm.ready:
        return None
    ddlp_dir = Path(model.config.ddlp_checkpoint).expanduser() if model.config.ddlp_checkpoint else None
    beside = ddlp_dir / STATS_FILE if ddlp_dir is not None and ddlp_dir.is_dir() else None
    if beside is not None and beside.is_file():
        stats, source = load_latent_stats(beside), beside
    else:
        with torch.random.fork_rng(devices=[]):  # leaves the training RNG stream as it was
            stats = compute_latent_stats(model, dataset, device=device)
        source = None
        if beside is not None:
            try:
                source = save_latent_stats(beside, stats)
            except OSError as exc:
                warnings.warn(f"could not write {beside} ({exc}); the statistics are kept in the model", stacklevel=2)
    model.particle_norm.set_stats(stats)
    if save_to is not None:
        copy = save_latent_stats(Path(save_to) / STATS_FILE, stats)
        source = source or copy
    return source


@vpkit.hookimpl
def on_train_start(trainer: Any) -> None:
    """Before a diffuse-ddlp run's first step: its latent statistics (computed once, see `ensure_latent_stats`)."""
    if isinstance(trainer.model, DiffuseDDLP):
        where = ensure_latent_stats(trainer.model, trainer.train_set, save_to=trainer.out_dir, device=trainer.device)
        if where is not None:
            trainer.console.print(f"diffuse-ddlp latent statistics: {where}")


# -- official checkpoint layout -------------------------------------------------------------------------------------
def official_state(model: DiffuseDDLP, step: int = 0) -> dict[str, Any]:
    """The official `saves/model.pth` dict ({step, model, opt, ema, scaler}; `opt` None: vpkit keeps the optimiser
    in train_state.pt) and `latent_stats.pth` dict, as `(model_pth, latent_stats)`."""
    model_pth = {"step": step, "model": dict(model.diffusion.state_dict()), "opt": None,
                 "ema": model.ema.official_state_dict(), "scaler": None}
    return model_pth, model.particle_norm.stats()


def load_official_state(model: DiffuseDDLP, model_pth: Mapping[str, Any], latent_stats: Mapping[str, Tensor]
                        ) -> None:
    """Load an official `saves/model.pth` (online weights from `model`, the EMA from `ema.ema_model.*`, its
    `initted` and `step`) and `latent_stats.pth` into `model` (strict: every key must match)."""
    model.diffusion.load_state_dict(model_pth["model"])
    ema = model_pth["ema"]
    model.ema.ema_model.load_state_dict({k[len("ema_model."):]: v for k, v in ema.items()
                                         if k.startswith("ema_model.")})
    model.ema.initted.copy_(ema["initted"])
    model.ema.step.copy_(ema["step"])
    model.particle_norm.set_stats(latent_stats)


# -- registration ---------------------------------------------------------------------------------------------------
def build_diffuse_ddlp(config: DiffuseDDLPConfig, frame_shape: tuple[int, int, int]) -> DiffuseDDLP:
    return DiffuseDDLP(config, frame_shape)


TRAIN = {"batch_size": 32, "steps": 700_000, "grad_clip": 1.0, "checkpoint_every": 1000}

DIFFUSE_DDLP_PRESETS = {
    "obj3d128": Preset(
        model={}, dataset="obj3d", data={"image_size": 128, "seq_len": 100}, train=TRAIN, frame_shape=(3, 128, 128),
        description="OBJ3D 128x128 over the DDLP obj3d128 preset (configs/diffuse_ddlp.json; first 4 frames of each "
                    "100-frame episode); needs --set model.ddlp_checkpoint=DDLP_RUN/checkpoints/last"),
    "traffic": Preset(
        model={}, dataset="traffic", data={"seq_len": 50}, train=TRAIN, frame_shape=(3, 128, 128),
        description="Traffic 128x128 (50-frame clips, as official); needs model.ddlp_checkpoint"),
    "tiny": Preset(
        model={"timesteps": 20, "ema_update_every": 1, "ema_update_after_step": 1, "stats_max_videos": 16},
        dataset="smmnist", data={}, train={"batch_size": 4, "steps": 20, "grad_clip": 1.0}, frame_shape=(1, 64, 64),
        description="for tests on the embedded Stochastic Moving MNIST, over a DDLP trained with --preset tiny "
                    "(--set model.ddlp_checkpoint=...); 20 diffusion steps"),
}

DIFFUSE_DDLP_SPEC = ModelSpec(
    name="diffuse-ddlp", config_cls=DiffuseDDLPConfig, build=build_diffuse_ddlp, presets=DIFFUSE_DDLP_PRESETS,
    default_preset="obj3d128",
    description="DiffuseDDLP: unconditional video generation with a DDPM over a trained DDLP's particles",
)
