"""DiffuseDDLP's DDPM over DDLP particles: the PINT denoiser, the Gaussian diffusion (cosine schedule, x0
prediction, masked L1/L2 loss, ancestral sampling) and the EMA shadow of the diffusion module.

Official code: github.com/taldatech/ddlp `modules/diffusion_modules.py` (`PINTDenoiser`, `GaussianDiffusionPINT`,
`EMA`, after lucidrains' denoising-diffusion-pytorch and ema-pytorch). Module and buffer names follow the official
classes so state dicts load into each other: `GaussianDiffusion.state_dict()` has the keys of the official
`GaussianDiffusionPINT` (the `model` entry of `saves/model.pth`), `EMA.official_state_dict()` those of its `ema` entry.

A latent is `[B, tau, K+1, 6+F]`: tau frames of K particles `[z_p(2), z_s(2), z_d(1), z_t(1), z_f(F)]` and the
background row `[0, 0, z_bg(F_bg), 0...]` last, normalised to about [-1, 1].
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit_ddlp.pint import ParticleTransformer


def sinusoidal_embedding(t: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """Official `SinusoidalPosEmb`: [sin(t w_i), cos(t w_i)] with w_i = 10000^(-i / (dim/2 - 1)), `[B, dim]`."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=dtype) * -scale)
    angles = t.to(dtype)[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimeEmbedding(nn.Sequential):
    """sinusoidal(D) -> Linear(D, 4D) -> GELU -> Linear(4D, D); keys `1.*`, `3.*` as the official `time_mlp`."""

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Identity(), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:  # type: ignore[override]
        x = sinusoidal_embedding(t, self.dim, self[1].weight.dtype)
        return self[3](self[2](self[1](x)))


class PINTDenoiser(nn.Module):
    """Official `PINTDenoiser` (no self-conditioning, sinusoidal time): x_t `[B, tau, K+1, 6+F]` and integer
    steps t `[B]` -> the predicted x0, same shape. Particles are projected (Linear, GELU, Linear) to D, the time
    embedding is added to every token, PINT (causal over the tau frames, relative biases, dropout) mixes them, and
    Linear, GELU, Linear decodes each token back to 6+F."""

    def __init__(self, features_dim: int, dim: int, heads: int, layers: int, frames: int, max_particles: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.features_dim, self.max_particles, self.frames = features_dim, max_particles, frames
        self.time_mlp = TimeEmbedding(dim)
        self.particle_projection = nn.Sequential(nn.Linear(features_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.particle_transformer = ParticleTransformer(dim, heads, layers, frames, max_particles, dropout)
        self.particle_decoder = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, features_dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        tokens = self.particle_projection(x) + self.time_mlp(t)[:, None, None, :]
        tokens = self.particle_transformer(tokens.transpose(1, 2)).transpose(1, 2)
        return self.particle_decoder(tokens)


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal's cosine schedule in float64, betas clipped to [0, 0.999] (official)."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return torch.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)


def _at(buffer: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """buffer[t] `[B]` broadcast against `like` `[B, ...]`."""
    return buffer.gather(-1, t).reshape(t.shape[0], *((1,) * (like.ndim - 1)))


class GaussianDiffusion(nn.Module):
    """Official `GaussianDiffusionPINT` with the settings DiffuseDDLP uses: cosine schedule of `timesteps` steps
    (schedule buffers computed in float64, stored in float32), objective x0 (`pred_x0`), p2 weight gamma 0, no
    auto-normalisation, full ancestral sampling with x0 clipped to [-1, 1]."""

    SCHEDULE = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                "posterior_mean_coef1", "posterior_mean_coef2", "p2_loss_weight")

    def __init__(self, model: PINTDenoiser, *, frames: int, timesteps: int = 1000, loss_type: str = "l1",
                 p2_loss_weight_gamma: float = 0.0, p2_loss_weight_k: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.frames, self.num_timesteps, self.loss_type = frames, timesteps, loss_type
        betas = cosine_beta_schedule(timesteps)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = F.pad(ac[:-1], (1, 0), value=1.0)
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        values = (betas, ac, ac_prev, torch.sqrt(ac), torch.sqrt(1.0 - ac), torch.log(1.0 - ac), torch.sqrt(1.0 / ac),
                  torch.sqrt(1.0 / ac - 1), post_var, torch.log(post_var.clamp(min=1e-20)),
                  betas * torch.sqrt(ac_prev) / (1.0 - ac), (1.0 - ac_prev) * torch.sqrt(alphas) / (1.0 - ac),
                  (p2_loss_weight_k + ac / (1 - ac)) ** -p2_loss_weight_gamma)
        for name, value in zip(self.SCHEDULE, values, strict=True):
            self.register_buffer(name, value.to(torch.float32))

    @property
    def n_particles(self) -> int:
        return self.model.max_particles

    @property
    def particle_dim(self) -> int:
        return self.model.features_dim

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        return _at(self.sqrt_alphas_cumprod, t, x0) * x0 + _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def loss(self, x0: Tensor, t: Tensor, noise: Tensor, mask: Tensor | None = None) -> Tensor:
        """Official `p_losses`: |model(x_t, t) - x0| (or squared), times `mask`, averaged per sample over every entry
        (masked ones included in the count), weighted by p2, averaged over the batch."""
        pred = self.model(self.q_sample(x0, t, noise), t)
        fn = F.l1_loss if self.loss_type == "l1" else F.mse_loss
        loss = fn(pred, x0, reduction="none")
        if mask is not None:
            loss = loss * mask
        loss = loss.reshape(loss.shape[0], -1).mean(-1)
        return (loss * _at(self.p2_loss_weight, t, loss)).mean()

    def p_sample(self, x: Tensor, step: int, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """One ancestral step from x_t at integer `step`: the posterior mean around the clipped predicted x0, plus
        exp(logvar / 2) * noise (none at step 0). Returns (x_{t-1}, x0)."""
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        x0 = self.model(x, t).clamp(-1.0, 1.0)
        mean = _at(self.posterior_mean_coef1, t, x) * x0 + _at(self.posterior_mean_coef2, t, x) * x
        if step == 0 or noise is None:
            return mean, x0
        return mean + (0.5 * _at(self.posterior_log_variance_clipped, t, x)).exp() * noise, x0

    @torch.no_grad()
    def sample(self, batch: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Official `p_sample_loop`: x_T ~ N(0, I) `[batch, tau, K+1, 6+F]`, then `timesteps` ancestral steps.
        Every normal is drawn from `generator` (on the CPU when it is a CPU generator), in the official order."""
        ref = self.betas
        shape = (batch, self.frames, self.n_particles, self.particle_dim)
        dtype = next(self.model.parameters()).dtype

        def randn() -> Tensor:
            where = generator.device if generator is not None else ref.device
            return torch.randn(shape, generator=generator, device=where).to(ref.device, dtype)

        x = randn()
        for step in reversed(range(self.num_timesteps)):
            x, _ = self.p_sample(x, step, randn() if step > 0 else None)
        return x


class EMA(nn.Module):
    """Official `EMA` (ema-pytorch) of a module: `ema_model` (a frozen copy) follows the online module every
    `update_every` calls after `update_after_step`, with the warm-up decay min(beta, 1 - (1 + n)^-power), n the
    update step past the warm-up; before that it copies. Buffers `initted` (float [1]) and `step` (long [1]).

    The online module is not registered here (it is the model's own `diffusion`, saved once); the official
    checkpoint layout, which repeats it under `online_model.*`, comes from `official_state_dict`."""

    def __init__(self, model: nn.Module, *, beta: float = 0.995, update_after_step: int = 100,
                 update_every: int = 10, inv_gamma: float = 1.0, power: float = 2 / 3, min_value: float = 0.0) -> None:
        super().__init__()
        self._online = [model]
        self.ema_model = copy.deepcopy(model)
        self.ema_model.requires_grad_(False)
        self.beta, self.update_after_step, self.update_every = beta, update_after_step, update_every
        self.inv_gamma, self.power, self.min_value = inv_gamma, power, min_value
        self.register_buffer("initted", torch.tensor([False], dtype=torch.float32))
        self.register_buffer("step", torch.tensor([0]))

    @property
    def online_model(self) -> nn.Module:
        return self._online[0]

    def _tensors(self, module: nn.Module) -> list[Tensor]:
        # Official quirk: only float32/float16 parameters and buffers are averaged (a float64 model never updates).
        kept = (torch.float32, torch.float16)
        return [t for _, t in (*module.named_parameters(), *module.named_buffers()) if t.dtype in kept]

    def current_decay(self) -> float:
        n = max(int(self.step.item()) - self.update_after_step - 1, 0)
        if n <= 0:
            return 0.0
        return min(max(1 - (1 + n / self.inv_gamma) ** -self.power, self.min_value), self.beta)

    @torch.no_grad()
    def copy_from_online(self) -> None:
        for ema, cur in zip(self._tensors(self.ema_model), self._tensors(self.online_model), strict=True):
            ema.copy_(cur)

    @torch.no_grad()
    def update(self) -> None:
        """Official `EMA.update`, called once after every optimiser step."""
        step = int(self.step.item())
        self.step += 1
        if step % self.update_every:
            return
        if step <= self.update_after_step:
            self.copy_from_online()
            return
        if not self.initted.item():
            self.copy_from_online()
            self.initted.fill_(1.0)
        decay = self.current_decay()
        for ema, cur in zip(self._tensors(self.ema_model), self._tensors(self.online_model), strict=True):
            ema.lerp_(cur, 1.0 - decay)

    def official_state_dict(self) -> dict[str, Tensor]:
        """The `ema` entry of the official `saves/model.pth`: `initted`, `step`, `online_model.*`, `ema_model.*`."""
        state = {"initted": self.initted, "step": self.step}
        state.update({f"online_model.{k}": v for k, v in self.online_model.state_dict().items()})
        state.update({f"ema_model.{k}": v for k, v in self.ema_model.state_dict().items()})
        return state


class EMAStep:
    """Updates an `EMA` once per optimisation step. Handed to the trainer as a schedule, since vpkit steps every
    schedule exactly once after each optimiser step (where the official trainer calls `ema.update()`). Its state
    lives in the EMA's buffers, so `state_dict` is empty."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema

    def step(self) -> None:
        self.ema.update()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
