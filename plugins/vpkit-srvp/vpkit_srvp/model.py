"""SRVP: stochastic latent residual video prediction.

Franceschi, Delasalles, Chen, Lamprier, Gallinari, "Stochastic Latent Residual Video Prediction", ICML 2020.
    @inproceedings{franceschi2020stochastic, title={Stochastic Latent Residual Video Prediction},
                   author={Franceschi, Jean-Yves and Delasalles, Edouard and Chen, Micka{\"e}l and Lamprier, Sylvain
                   and Gallinari, Patrick}, booktitle={ICML}, year={2020}}
Official code: github.com/edouardelasalles/srvp (`module/srvp.py`, `train.py`, `test.py`).

A state-space model. Frames are encoded once (h_t); a static content variable w is a permutation-invariant sum over
nt_inf encodings; the initial state y_0 is inferred from the first nt_inf encodings; the state then follows a residual
(Euler) update y <- y + dt * f(y, z_t) with one z_t per frame interval, reused for every one of the 1/dt sub-steps.
z_t comes from an LSTM over the encodings (posterior, at frames that were observed) or from an MLP prior p(z_t | y_{t-1})
evaluated at the integer state. Frames are decoded from [w, y_t] (with skips from one encoded frame), never fed back.

Loss (official `train.py`), all divided by the batch size: Gaussian NLL with fixed std `obs_scale` summed over pixels
and all T frames (frame 0 included), + beta_y KL(q(y_0) || N(0, I)) + beta_z sum_t KL(q(z_t) || p(z_t | y_{t-1}))
+ l2_res sum over every Euler sub-step of the non-squared L2 norm of the residual. Gaussians: (loc, raw) halves of a
vector, std = softplus(raw) + 1e-8.

Sampling (official `test.py`), per sample: y_0 and the posterior z's are re-inferred over the conditioning frames
(so samples already differ there), then z's come from the prior. w uses the last nt_inf conditioning frames and the
skips the last one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
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
from vpkit_srvp.config import SRVPConfig
from vpkit_srvp.networks import (
    MLP,
    build_encoder_decoder,
    init_encoder_decoder,
    init_orthogonal,
    skip_shapes,
    use_batch_stats_in_eval,
)

if TYPE_CHECKING:
    from vpkit.core.config import TrainConfig

STD_EPS = 1e-8  # official `make_normal_from_raw_params`
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian(params: Tensor) -> tuple[Tensor, Tensor]:
    """(loc, std) from the official raw parameters: first half loc, second half softplus + 1e-8."""
    loc, raw = params.chunk(2, dim=-1)
    return loc, F.softplus(raw) + STD_EPS


def kl_normal(loc1: Tensor, std1: Tensor, loc2: Tensor | float, std2: Tensor | float) -> Tensor:
    """Elementwise KL(N(loc1, std1^2) || N(loc2, std2^2)) (the closed form torch.distributions uses)."""
    var_ratio = (std1 / std2) ** 2
    t1 = ((loc1 - loc2) / std2) ** 2
    return 0.5 * (var_ratio + t1 - 1 - torch.log(var_ratio))


def gaussian_nll(mean: Tensor, target: Tensor, std: float) -> Tensor:
    """Elementwise -log N(target | mean, std^2)."""
    return 0.5 * ((target - mean) / std) ** 2 + math.log(std) + HALF_LOG_2PI


def _full(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


@dataclass
class LossTerms:
    """The official objective (divided by the batch size) and its parts (sums, not divided)."""

    loss: Tensor
    nll: Tensor
    kl_y0: Tensor
    kl_z: Tensor
    l2_res: Tensor
    frames: Tensor  # reconstructions [B, T, C, H, W]
    residuals: Tensor  # every sub-step residual [B, (T-1) * n_euler_steps, ny]


class SRVP(VideoPredictor):
    """SRVP on 64x64 frames of `frame_shape` `(C, 64, 64)`."""

    def __init__(self, config: SRVPConfig, frame_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = frame_shape
        if (height, width) != (64, 64):
            raise VpkitError(f"SRVP's {config.archi} networks take 64x64 frames but the data has {height}x{width}; "
                             "resize the data to 64x64.")
        self.config = config
        self.frame_shape = (channels, height, width)
        c = config
        # Construction order and attribute names are the official ones (state-dict keys of model.pt).
        self.encoder, self.decoder = build_encoder_decoder(c.archi, channels, c.nhx, c.nh_inf + c.ny, c.nf, c.skipco)
        self.w_proj = nn.Sequential(nn.Linear(c.nhx, c.nh_inf), nn.ReLU())
        self.w_inf = nn.Sequential(nn.Linear(c.nh_inf, c.nh_inf), nn.Tanh())
        self.q_y = MLP(c.nhx * c.nt_inf, c.nh_inf, c.ny * 2, c.nlayers_inf)
        self.inf_z = nn.LSTM(c.nhx, c.nh_inf, 1)
        self.q_z = nn.Linear(c.nh_inf, c.nz * 2)
        self.p_z = MLP(c.ny, c.nh_res, c.nz * 2, c.nlayers_res)
        self.dynamics = MLP(c.ny + c.nz, c.nh_res, c.ny, c.nlayers_res)
        self.encoder.apply(init_encoder_decoder)
        self.decoder.apply(init_encoder_decoder)
        self.dynamics.apply(init_orthogonal(c.res_gain))
        use_batch_stats_in_eval(self, c.sampling_batchnorm == "batch")

    # -- building blocks ---------------------------------------------------------------------------------------------

    def encode(self, video: Tensor) -> tuple[Tensor, list[Tensor]]:
        """`video` `[B, T, C, H, W]` -> encodings `[B, T, nhx]` and skips `[B, T, ...]` (deepest first), all frames
        in one encoder call as official."""
        batch, length = video.shape[:2]
        h, skips = self.encoder(video.reshape(batch * length, *video.shape[2:]))
        return h.view(batch, length, -1), [s.view(batch, length, *s.shape[1:]) for s in skips]

    def infer_w(self, h: Tensor) -> Tensor:
        """Content variable from encodings `[B, nt_inf, nhx]` (a permutation-invariant sum)."""
        return self.w_inf(self.w_proj(h).sum(1))

    def q_y0(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(loc, std) of q(y_0) from the first nt_inf encodings `[B, nt_inf, nhx]`, concatenated in time order."""
        return gaussian(self.q_y(h.reshape(h.shape[0], -1)))

    def euler(self, y: Tensor, z: Tensor) -> tuple[Tensor, list[Tensor]]:
        """One frame interval: n_euler_steps sub-steps y <- y + dt f(y, z) with the same z; also the residuals."""
        dt = self.config.dt
        residuals = []
        for _ in range(self.config.n_euler_steps):
            res = dt * self.dynamics(torch.cat([y, z], dim=1))
            y = y + res
            residuals.append(res)
        return y, residuals

    def decode(self, w: Tensor, y: Tensor, skips: list[Tensor] | None) -> Tensor:
        """Frames in [0, 1] from `w` `[N, nh_inf]`, `y` `[N, ny]` and skips `[N, ...]` (or None)."""
        return torch.sigmoid(self.decoder(torch.cat([w, y], dim=1), skips))

    # -- training ---------------------------------------------------------------------------------------------------

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """The official loss on a clip `[B, T, C, H, W]` with the official random choices (nt_inf random distinct
        frames per video for w, one random frame per video for the skips); logs the parts divided by B as
        official `train.py` prints them."""
        batch, length = video.shape[:2]
        device = video.device
        if length < self.config.nt_inf:
            raise VpkitError(f"SRVP trains on clips of at least nt_inf={self.config.nt_inf} frames; got {length}.")
        w_frames = torch.stack([torch.randperm(length)[: self.config.nt_inf] for _ in range(batch)]).to(device)
        skip_frame = torch.randint(length, (batch,)).to(device)
        with ctx.autocast():
            y0_noise = torch.randn(batch, self.config.ny, device=device)
            z_noise = torch.randn(batch, length - 1, self.config.nz, device=device)
            terms = self.loss_terms(video, y0_noise, z_noise, w_frames, skip_frame)
        logs = {name: getattr(terms, name).detach() / batch for name in ("nll", "kl_y0", "kl_z", "l2_res")}
        return StepOutput(terms.loss, logs)

    def loss_terms(self, video: Tensor, y0_noise: Tensor, z_noise: Tensor, w_frames: Tensor,
                   skip_frame: Tensor) -> LossTerms:
        """Official objective on `video` `[B, T, C, H, W]` given every random draw: the standard-normal noise of
        y_0 `[B, ny]` and of z_1..z_{T-1} `[B, T-1, nz]`, the frames w is inferred from `[B, nt_inf]` and the frame
        the skips come from `[B]`."""
        c = self.config
        batch, length = video.shape[:2]
        rows = torch.arange(batch, device=video.device)
        h, skips = self.encode(video)
        w = self.infer_w(h[rows[:, None], w_frames])
        loc_y, std_y = self.q_y0(h[:, : c.nt_inf])
        y = loc_y + std_y * y0_noise
        q_params = self.q_z(self.inf_z(h.transpose(0, 1))[0][1:])  # [T-1, B, 2 nz]: LSTM output at frames 1..T-1
        ys, residuals, kl_z = [y], [], []
        for t in range(1, length):
            loc_p, std_p = gaussian(self.p_z(y))  # prior at the integer state y_{t-1}
            loc_q, std_q = gaussian(q_params[t - 1])
            z = loc_q + std_q * z_noise[:, t - 1]
            y, res = self.euler(y, z)
            ys.append(y)
            residuals += res
            kl_z.append(kl_normal(*map(_full, (loc_q, std_q, loc_p, std_p))).sum())
        states = torch.stack(ys, dim=1)  # [B, T, ny]
        frame_skips = None
        if c.skipco:
            frame_skips = [s[rows, skip_frame].unsqueeze(1).expand(-1, length, *s.shape[2:]).flatten(0, 1)
                           for s in skips]
        frames = self.decode(w.repeat_interleave(length, dim=0), states.flatten(0, 1), frame_skips)
        frames = frames.view(video.shape)
        nll = gaussian_nll(_full(frames), _full(video), c.obs_scale).sum()
        kl_y0 = kl_normal(_full(loc_y), _full(std_y), 0.0, 1.0).sum()
        kl_z_sum = torch.stack(kl_z).sum() if kl_z else nll.new_zeros(())
        res_all = torch.stack(residuals, dim=1) if residuals else states.new_zeros(batch, 0, c.ny)
        l2 = _full(res_all).norm(p=2, dim=2).sum()
        loss = (nll + c.beta_y * kl_y0 + c.beta_z * kl_z_sum + c.l2_res * l2) / batch
        return LossTerms(loss, nll, kl_y0, kl_z_sum, l2, frames, res_all)

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        """One Adam over every parameter (lr from the config, PyTorch's default betas, as official); the lr is
        constant for `lr_scheduling_burnin` steps, then decays linearly to 0 over `lr_scheduling_n_iter` steps
        (official LambdaLR stepped only after the burn-in, written as one schedule stepped every step)."""
        opt = torch.optim.Adam(self.parameters(), lr=self.config.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=LinearDecayAfterBurnin(
            self.config.lr_scheduling_burnin, self.config.lr_scheduling_n_iter))
        return Optimization([opt], [schedule])

    # -- sampling ---------------------------------------------------------------------------------------------------

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        """Per sample: y_0's draw, the posterior z's of context frames 1..n_context-1, the prior z's of the
        predicted frames."""
        c = self.config
        return {"y0_noise": (batch, c.ny), "posterior_noise": (batch, max(n_context - 1, 0), c.nz),
                "prior_noise": (batch, horizon, c.nz)}

    def export_plan(self) -> ExportPlan:
        """Graphs `encode`, `infer_w`, `infer_y0`, `posterior_step` (z LSTM state explicit), `prior_step`,
        `dynamics_step` (every Euler sub-step of one frame interval) and `decode`; noise enters as inputs."""
        param = next(self.parameters())
        device, dtype = param.device, param.dtype
        c = self.config
        batch = 2
        gen = torch.Generator().manual_seed(0)

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=gen).to(device=device, dtype=dtype)

        skip_names = tuple(f"skip{k}" for k in range(4)) if c.skipco else ()
        skips = tuple(rand(batch, *s) for s in skip_shapes(c.archi, c.nf)) if c.skipco else ()
        axis = {0: "batch"}

        def graph(module: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...], examples: tuple) -> Graph:
            return Graph(module, inputs, outputs, examples, {n: axis for n in (*inputs, *outputs)})

        return ExportPlan({
            "encode": graph(_Encode(self.encoder, c.skipco), ("frames",), ("h", *skip_names),
                            (rand(batch, *self.frame_shape),)),
            "infer_w": graph(_InferW(self), ("h_w",), ("w",), (rand(batch, c.nt_inf, c.nhx),)),
            "infer_y0": graph(_InferY0(self), ("h_y", "noise"), ("y",), (rand(batch, c.nt_inf, c.nhx), rand(batch, c.ny))),
            "posterior_step": graph(_PosteriorStep(self), ("h", "state_h", "state_c", "noise"),
                                    ("z", "next_state_h", "next_state_c"),
                                    (rand(batch, c.nhx), rand(batch, c.nh_inf), rand(batch, c.nh_inf),
                                     rand(batch, c.nz))),
            "prior_step": graph(_PriorStep(self), ("y", "noise"), ("z",), (rand(batch, c.ny), rand(batch, c.nz))),
            "dynamics_step": graph(_DynamicsStep(self), ("y", "z"), ("next_y",), (rand(batch, c.ny), rand(batch, c.nz))),
            "decode": graph((_DecodeSkip if c.skipco else _Decode)(self), ("w", "y", *skip_names), ("frames",),
                            (rand(batch, c.nh_inf), rand(batch, c.ny), *skips)),
        })

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """Official `test.py` sampling for one sample per row: encode the context (one call), w from its last nt_inf
        frames, skips from its last frame; re-infer y_0 (first nt_inf frames) and the posterior z's over the context;
        then `horizon` prior steps; decode all predicted states in one call."""
        c = self.config
        batch, n_context = context.shape[:2]
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        if n_context < c.nt_inf:
            raise VpkitError(f"SRVP needs at least nt_inf={c.nt_inf} context frames; got {n_context}.")
        for name, shape in self.noise_shapes(batch, n_context, horizon).items():
            if name not in noise or tuple(noise[name].shape) != shape:
                got = tuple(noise[name].shape) if name in noise else "nothing"
                raise VpkitError(f"rollout needs noise '{name}' of shape {shape}; got {got}.")
        out = backend.run("encode", {"frames": context.reshape(batch * n_context, *context.shape[2:])})
        h = out["h"].view(batch, n_context, -1)
        skips = [out[f"skip{k}"].view(batch, n_context, *out[f"skip{k}"].shape[1:])[:, -1]
                 for k in range(4)] if c.skipco else []
        w = backend.run("infer_w", {"h_w": h[:, n_context - c.nt_inf:]})["w"]
        y = backend.run("infer_y0", {"h_y": h[:, : c.nt_inf], "noise": noise["y0_noise"]})["y"]
        state_h = h.new_zeros(batch, c.nh_inf)
        state_c = h.new_zeros(batch, c.nh_inf)
        zero_z = h.new_zeros(batch, c.nz)
        for t in range(n_context):
            step = backend.run("posterior_step", {
                "h": h[:, t], "state_h": state_h, "state_c": state_c,
                "noise": noise["posterior_noise"][:, t - 1] if t > 0 else zero_z,
            })
            state_h, state_c = step["next_state_h"], step["next_state_c"]
            if t > 0:  # the LSTM output at frame 0 is never used
                y = backend.run("dynamics_step", {"y": y, "z": step["z"]})["next_y"]
        states = []
        for t in range(horizon):
            z = backend.run("prior_step", {"y": y, "noise": noise["prior_noise"][:, t]})["z"]
            y = backend.run("dynamics_step", {"y": y, "z": z})["next_y"]
            states.append(y)
        ys = torch.stack(states, dim=1).flatten(0, 1)  # [B * horizon, ny], video-major
        inputs = {"w": w.repeat_interleave(horizon, dim=0), "y": ys}
        for k, s in enumerate(skips):
            inputs[f"skip{k}"] = s.repeat_interleave(horizon, dim=0)
        frames = backend.run("decode", inputs)["frames"]
        return frames.view(batch, horizon, *frames.shape[1:])


class LinearDecayAfterBurnin:
    """LR factor at step i: 1 for i <= burnin, then (n - (i - burnin)) / n down to 0 (a picklable callable)."""

    def __init__(self, burnin: int, n_iter: int) -> None:
        self.burnin, self.n_iter = burnin, n_iter

    def __call__(self, step: int) -> float:
        return max(0.0, (self.n_iter - max(0, step - self.burnin)) / self.n_iter)


# -- exportable graphs ------------------------------------------------------------------------------------------------


class _Encode(nn.Module):
    def __init__(self, encoder: nn.Module, skipco: bool) -> None:
        super().__init__()
        self.encoder, self.skipco = encoder, skipco

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        h, skips = self.encoder(frames)
        return (h, *skips) if self.skipco else (h,)


class _InferW(nn.Module):
    def __init__(self, model: SRVP) -> None:
        super().__init__()
        self.w_proj, self.w_inf = model.w_proj, model.w_inf

    def forward(self, h_w: Tensor) -> tuple[Tensor]:
        return (self.w_inf(self.w_proj(h_w).sum(1)),)


class _InferY0(nn.Module):
    def __init__(self, model: SRVP) -> None:
        super().__init__()
        self.q_y = model.q_y

    def forward(self, h_y: Tensor, noise: Tensor) -> tuple[Tensor]:
        loc, std = gaussian(self.q_y(h_y.flatten(1)))
        return (loc + std * noise,)


class _PosteriorStep(nn.Module):
    """One step of the z LSTM (written out with its weights so every exporter sees plain ops), then q_z."""

    def __init__(self, model: SRVP) -> None:
        super().__init__()
        self.lstm, self.q_z = model.inf_z, model.q_z

    def forward(self, h: Tensor, state_h: Tensor, state_c: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lstm = self.lstm
        gates = F.linear(h, lstm.weight_ih_l0, lstm.bias_ih_l0) + F.linear(state_h, lstm.weight_hh_l0, lstm.bias_hh_l0)
        i, f, g, o = gates.chunk(4, dim=1)  # PyTorch's gate order
        c = torch.sigmoid(f) * state_c + torch.sigmoid(i) * torch.tanh(g)
        out = torch.sigmoid(o) * torch.tanh(c)
        loc, std = gaussian(self.q_z(out))
        return loc + std * noise, out, c


class _PriorStep(nn.Module):
    def __init__(self, model: SRVP) -> None:
        super().__init__()
        self.p_z = model.p_z

    def forward(self, y: Tensor, noise: Tensor) -> tuple[Tensor]:
        loc, std = gaussian(self.p_z(y))
        return (loc + std * noise,)


class _DynamicsStep(nn.Module):
    def __init__(self, model: SRVP) -> None:
        super().__init__()
        self.dynamics, self.n_steps = model.dynamics, model.config.n_euler_steps

    def forward(self, y: Tensor, z: Tensor) -> tuple[Tensor]:
        dt = 1.0 / self.n_steps
        for _ in range(self.n_steps):
            y = y + dt * self.dynamics(torch.cat([y, z], dim=1))
        return (y,)


class _Decode(nn.Module):
    def __init__(self, model: SRVP) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, w: Tensor, y: Tensor) -> tuple[Tensor]:
        return (torch.sigmoid(self.decoder(torch.cat([w, y], dim=1))).clamp(0, 1),)


class _DecodeSkip(_Decode):
    def forward(self, w: Tensor, y: Tensor, skip0: Tensor, skip1: Tensor, skip2: Tensor,  # type: ignore[override]
                skip3: Tensor) -> tuple[Tensor]:
        frames = torch.sigmoid(self.decoder(torch.cat([w, y], dim=1), [skip0, skip1, skip2, skip3]))
        return (frames.clamp(0, 1),)
