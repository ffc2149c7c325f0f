"""SVG-LP and SVG-FP: stochastic video generation with a learned (LP) or fixed (FP) prior.

Denton & Fergus, "Stochastic Video Generation with a Learned Prior", ICML 2018.
    @inproceedings{denton2018stochastic, title={Stochastic Video Generation with a Learned Prior},
                   author={Denton, Emily and Fergus, Rob}, booktitle={ICML}, year={2018}}
Official code: github.com/edenton/svg (`train_svg_{lp,fp}.py`, `generate_svg_{lp,fp}.py`).

At step t a frame encoder gives h_t; a posterior LSTM q(z_t | x_{1:t}) is fed h_t, a learned-prior LSTM
p(z_t | x_{1:t-1}) is fed h_{t-1} (SVG-FP: p = N(0, I)); a predictor LSTM maps [h_{t-1}, z_t] to g_t, which the
decoder turns into x_t using skip features from an earlier frame. Loss: sum over t of the per-frame mean squared
error plus beta times the summed KL divided by the batch size.

Training is the official math, computed fast: every frame is encoded once in one batched call, the three LSTMs run
as fused sequence ops, and all predicted frames are decoded in one batched call whose skip half of each first conv
runs once per distinct skip frame (`SkipDecoder.forward_shared_skips`). BatchNorm keeps the official per-call
statistics and running-stat updates through `time_grouped` (see `vpkit.engine.batchnorm`); `reference.py` holds the official
frame-by-frame loop the tests compare against. Sampling is `rollout` over the exportable graphs of `export_plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
from vpkit.engine.batchnorm import time_grouped, use_batch_stats_in_eval
from vpkit_svg.config import SVGConfig
from vpkit_svg.lstm import GaussianLSTM, PredictorLSTM, sample
from vpkit_svg.networks import build_encoder_decoder, gather_frames, init_weights

if TYPE_CHECKING:
    from vpkit.core.config import TrainConfig

ADAM_BETA2 = 0.999  # fixed in the official scripts


@dataclass
class LossTerms:
    """The official objective and its two parts, each summed over the predicted steps."""

    loss: Tensor
    mse: Tensor
    kld: Tensor


def kl_gaussians(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mu1, e^logvar1) || N(mu2, e^logvar2)), in the official `kl_criterion`'s form."""
    sigma1 = torch.exp(0.5 * logvar1)
    sigma2 = torch.exp(0.5 * logvar2)
    return torch.log(sigma2 / sigma1) + (torch.exp(logvar1) + (mu1 - mu2) ** 2) / (2 * torch.exp(logvar2)) - 0.5


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL(N(mu, e^logvar) || N(0, I)), in the official SVG-FP `kl_criterion`'s form."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def _full(tensor: Tensor) -> Tensor:
    """`tensor` in float32 at least (loss terms are summed in full precision under any autocast)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def skip_sources(length: int, n_context: int, last_frame_skip: bool) -> list[int]:
    """For steps t = 1..length-1, the frame whose encoder features the decoder gets as skips.

    Official quirk (train/generate_svg_lp.py, issues #1 and #11): skips are refreshed only while t < n_past, so
    without `last_frame_skip` every later step keeps the features of frame n_past-2, not of the last context frame.
    """
    return [t - 1 if (last_frame_skip or t < n_context) else n_context - 2 for t in range(1, length)]


class SVG(VideoPredictor):
    """SVG-LP (`learned_prior=True`) or SVG-FP (`learned_prior=False`) on frames of `frame_shape` `(C, H, W)`."""

    def __init__(self, config: SVGConfig, frame_shape: tuple[int, int, int], *, learned_prior: bool = True) -> None:
        super().__init__()
        channels, height, width = frame_shape
        if (height, width) != (config.frame_size, config.frame_size):
            size = config.frame_size
            other = {64: "dcgan128 or vgg128", 128: "dcgan64 or vgg64"}[size]
            raise VpkitError(
                f"SVG architecture '{config.architecture}' takes {size}x{size} frames but the data has "
                f"{height}x{width}; resize the data to {size}x{size} or set model.architecture to {other}."
            )
        self.config = config
        self.frame_shape = (channels, height, width)
        self.learned_prior = learned_prior
        # Construction order and names are the official dict keys of the saved model.
        self.encoder, self.decoder = build_encoder_decoder(config.architecture, g_dim=config.g_dim, channels=channels)
        self.frame_predictor = PredictorLSTM(input_size=config.g_dim + config.z_dim, output_size=config.g_dim,
                                             hidden_size=config.rnn_size, n_layers=config.predictor_rnn_layers)
        self.posterior = GaussianLSTM(input_size=config.g_dim, output_size=config.z_dim,
                                      hidden_size=config.rnn_size, n_layers=config.posterior_rnn_layers)
        if learned_prior:
            self.prior = GaussianLSTM(input_size=config.g_dim, output_size=config.z_dim,
                                      hidden_size=config.rnn_size, n_layers=config.prior_rnn_layers)
        self.apply(init_weights)
        use_batch_stats_in_eval(self, config.sampling_batchnorm == "batch")

    def official_modules(self) -> dict[str, nn.Module]:
        """The official modules, by their official names, in the order the official script creates optimisers."""
        modules: dict[str, nn.Module] = {"frame_predictor": self.frame_predictor, "posterior": self.posterior}
        if self.learned_prior:
            modules["prior"] = self.prior
        return modules | {"encoder": self.encoder, "decoder": self.decoder}

    # -- training -------------------------------------------------------------------------------------------------

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """The official loss on a clip `[B, T, C, H, W]`; logs mse and kld divided by T as the official script
        prints them."""
        batch, length = video.shape[:2]
        with ctx.autocast():
            noise = torch.randn(batch, length - 1, self.config.z_dim, device=video.device, dtype=video.dtype)
            terms = self.loss_terms(video, noise)
        return StepOutput(terms.loss, {"mse": terms.mse.detach() / length, "kld": terms.kld.detach() / length})

    def loss_terms(self, video: Tensor, posterior_noise: Tensor) -> LossTerms:
        """Official objective on `video` `[B, T, C, H, W]` with the posterior's standard-normal noise given
        (`[B, T-1, z_dim]`, one draw per predicted step)."""
        batch, length = video.shape[:2]
        if length < 2:
            raise VpkitError(f"SVG trains on clips of at least 2 frames; got {length}.")
        steps = length - 1
        # Official call order per step t: encoder(x_{t-1}) then encoder(x_t) for SVG-LP; SVG-FP encodes each frame
        # once up front. One batched call, with BatchNorm updated as if called that way.
        if self.learned_prior:
            order = [frame for t in range(1, length) for frame in (t - 1, t)]
        else:
            order = list(range(length))
        with time_grouped(self.encoder, length, order):
            codes, skips = self.encoder(video.reshape(batch * length, *video.shape[2:]))
        codes = codes.view(batch, length, -1)

        mu, logvar, _ = self.posterior(codes[:, 1:])
        z = sample(mu, logvar, posterior_noise)
        if self.learned_prior:
            mu_prior, logvar_prior, _ = self.prior(codes[:, :-1])
            kld = kl_gaussians(*map(_full, (mu, logvar, mu_prior, logvar_prior))).sum() / batch
        else:
            kld = kl_standard_normal(_full(mu), _full(logvar)).sum() / batch
        predicted, _ = self.frame_predictor(torch.cat([codes[:, :-1], z], dim=-1))

        # Without last_frame_skip most steps share the skips of frame n_context-2: decode with the skip half of the
        # decoder's first convs run once per distinct source frame (same function, fewer FLOPs).
        sources = skip_sources(length, self.config.n_context, self.config.last_frame_skip)
        distinct = sorted(set(sources))
        per_frame = [s.view(batch, length, *s.shape[1:]) for s in skips]
        code = predicted.reshape(batch * steps, -1)
        with time_grouped(self.decoder, steps, range(steps)):
            if len(distinct) < steps:
                source_skips = [gather_frames(s, distinct).flatten(0, 1) for s in per_frame]
                frames = self.decoder.forward_shared_skips(code, source_skips, [distinct.index(s) for s in sources])
            else:
                frames = self.decoder(code, [gather_frames(s, sources).flatten(0, 1) for s in per_frame])
        frames = frames.view(batch, steps, *video.shape[2:])

        mse = (_full(frames) - _full(video[:, 1:])).pow(2).mean(dim=(0, 2, 3, 4)).sum()
        return LossTerms(loss=mse + self.config.beta * kld, mse=mse, kld=kld)

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        """One Adam per official module (frame_predictor, posterior, [prior], encoder, decoder), lr and beta1 from
        the model config, beta2 0.999, as official; nothing is read from the trainer config."""
        betas = (self.config.beta1, ADAM_BETA2)
        return Optimization([torch.optim.Adam(m.parameters(), lr=self.config.lr, betas=betas)
                             for m in self.official_modules().values()])

    # -- sampling -------------------------------------------------------------------------------------------------

    @property
    def z_dim(self) -> int:
        """Size of z_t (every noise tensor's last axis)."""
        return self.config.z_dim

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        """SVG-LP: posterior noise for the context steps and prior noise for the predicted ones. SVG-FP: only the
        N(0, I) draws of the predicted steps (its context steps use the posterior mean, as official)."""
        shapes = {"prior_noise": (batch, horizon, self.z_dim)}
        if self.learned_prior:
            shapes = {"posterior_noise": (batch, max(n_context - 1, 0), self.z_dim)} | shapes
        return shapes

    def export_plan(self) -> ExportPlan:
        """Graphs `encode`, `posterior_step`, [`prior_step`], `predictor_step` and `decode`; LSTM states and noise are
        explicit inputs and outputs."""
        param = next(self.parameters())
        device, dtype = param.device, param.dtype
        batch = 2
        gen = torch.Generator().manual_seed(0)

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=gen).to(device=device, dtype=dtype)

        g_dim, z_dim = self.config.g_dim, self.z_dim
        skip_names = tuple(f"skip{k}" for k in range(len(self.encoder.skip_shapes)))
        skips = tuple(rand(batch, *shape) for shape in self.encoder.skip_shapes)
        batch_axis = {0: "batch"}

        graphs = {
            "encode": Graph(
                _Encode(self.encoder), ("frames",), ("h", *skip_names), (rand(batch, *self.frame_shape),),
                {name: batch_axis for name in ("frames", "h", *skip_names)},
            ),
            "decode": Graph(
                (_Decode128 if len(skip_names) == 5 else _Decode)(self.decoder), ("g", *skip_names), ("frames",),
                (rand(batch, g_dim), *skips),
                {name: batch_axis for name in ("g", "frames", *skip_names)},
            ),
            "predictor_step": _step_graph(
                _PredictorStep(self.frame_predictor), ("h", "z", "state_h", "state_c"),
                ("g", "next_state_h", "next_state_c"),
                (rand(batch, g_dim), rand(batch, z_dim)), self.frame_predictor, rand,
            ),
        }
        gaussians = {"posterior_step": self.posterior}
        if self.learned_prior:
            gaussians["prior_step"] = self.prior
        for name, net in gaussians.items():
            graphs[name] = _step_graph(
                _GaussianStep(net), ("h", "state_h", "state_c", "noise"), ("z", "next_state_h", "next_state_c"),
                (rand(batch, g_dim),), net, rand, trailing=(rand(batch, z_dim),),
            )
        return ExportPlan(graphs)

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """Official `generate_svg_{lp,fp}.py` sampling. Context steps: ground truth is fed to the encoder, z_t comes
        from the posterior of the true next frame (SVG-LP: a sample; SVG-FP: its mean), the prior and predictor are
        stepped. Predicted steps: z_t from the prior (SVG-FP: N(0, I)), the generated frame is fed back."""
        batch, n_context = context.shape[:2]
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        if n_context < 2 and not self.config.last_frame_skip:
            raise VpkitError(f"SVG needs at least 2 context frames (got {n_context}) unless last_frame_skip is set.")
        expected = self.noise_shapes(batch, n_context, horizon)
        for name, shape in expected.items():
            if name not in noise or tuple(noise[name].shape) != shape:
                got = tuple(noise[name].shape) if name in noise else "nothing"
                raise VpkitError(f"rollout needs noise '{name}' of shape {shape}; got {got}.")
        n_skips = len(self.encoder.skip_shapes)
        device, dtype = context.device, context.dtype

        def encode(frames: Tensor) -> tuple[Tensor, list[Tensor]]:
            out = backend.run("encode", {"frames": frames})
            return out["h"], [out[f"skip{k}"] for k in range(n_skips)]

        def gaussian_step(name: str, h: Tensor, eps: Tensor) -> Tensor:
            out = backend.run(name, {"h": h, "state_h": states[name][0], "state_c": states[name][1], "noise": eps})
            states[name] = (out["next_state_h"], out["next_state_c"])
            return out["z"]

        def predictor_step(h: Tensor, z: Tensor) -> Tensor:
            state_h, state_c = states["predictor_step"]
            out = backend.run("predictor_step", {"h": h, "z": z, "state_h": state_h, "state_c": state_c})
            states["predictor_step"] = (out["next_state_h"], out["next_state_c"])
            return out["g"]

        nets: dict[str, nn.Module] = {"predictor_step": self.frame_predictor, "posterior_step": self.posterior}
        if self.learned_prior:
            nets["prior_step"] = self.prior
        states = {name: net.init_state(batch, device=device, dtype=dtype) for name, net in nets.items()}
        zeros = torch.zeros(batch, self.z_dim, device=device, dtype=dtype)

        h_in, skips_in = encode(context[:, 0])
        skip = skips_in
        for t in range(1, n_context):
            skip = skips_in  # t < n_past: skips from the frame fed to the encoder
            h_target, skips_target = encode(context[:, t])
            if self.learned_prior:
                z = gaussian_step("posterior_step", h_target, noise["posterior_noise"][:, t - 1])
                gaussian_step("prior_step", h_in, zeros)  # stepped for its state only, as official
            else:
                z = gaussian_step("posterior_step", h_target, zeros)  # zero noise: the mean
            predictor_step(h_in, z)
            h_in, skips_in = h_target, skips_target

        frames = []
        for t in range(horizon):
            if self.config.last_frame_skip:
                skip = skips_in
            if self.learned_prior:
                z = gaussian_step("prior_step", h_in, noise["prior_noise"][:, t])
            else:
                z = noise["prior_noise"][:, t]
            g = predictor_step(h_in, z)
            frame = backend.run("decode", {"g": g, **{f"skip{k}": s for k, s in enumerate(skip)}})["frames"]
            frames.append(frame)
            if t + 1 < horizon:
                h_in, skips_in = encode(frame)
        return torch.stack(frames, dim=1)


# -- exportable graphs ----------------------------------------------------------------------------------------------


class _Encode(nn.Module):
    """frames -> (h, skip0, ..., skipK)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        h, skips = self.encoder(frames)
        return (h, *skips)


class _Decode(nn.Module):
    """(g, skip0, ..., skip3) -> (frames,) for the 64x64 architectures (explicit arguments, no varargs, so
    `torch.export` sees one tensor per graph input)."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, g: Tensor, skip0: Tensor, skip1: Tensor, skip2: Tensor, skip3: Tensor) -> tuple[Tensor]:
        return (self.decoder(g, [skip0, skip1, skip2, skip3]),)


class _Decode128(_Decode):
    """(g, skip0, ..., skip4) -> (frames,) for the 128x128 architectures."""

    def forward(self, g: Tensor, skip0: Tensor, skip1: Tensor, skip2: Tensor, skip3: Tensor,  # type: ignore[override]
                skip4: Tensor) -> tuple[Tensor]:
        return (self.decoder(g, [skip0, skip1, skip2, skip3, skip4]),)


class _PredictorStep(nn.Module):
    """(h, z, state_h, state_c) -> (g, next_state_h, next_state_c)."""

    def __init__(self, net: PredictorLSTM) -> None:
        super().__init__()
        self.net = net

    def forward(self, h: Tensor, z: Tensor, state_h: Tensor, state_c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        g, (state_h, state_c) = self.net.step(torch.cat([h, z], dim=1), (state_h, state_c))
        return g, state_h, state_c


class _GaussianStep(nn.Module):
    """(h, state_h, state_c, noise) -> (z, next_state_h, next_state_c), z = mu + exp(logvar / 2) * noise."""

    def __init__(self, net: GaussianLSTM) -> None:
        super().__init__()
        self.net = net

    def forward(self, h: Tensor, state_h: Tensor, state_c: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z, _, _, (state_h, state_c) = self.net.step(h, (state_h, state_c), noise)
        return z, state_h, state_c


def _step_graph(module: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...], leading: tuple[Tensor, ...],
                net: PredictorLSTM | GaussianLSTM, rand, trailing: tuple[Tensor, ...] = ()) -> Graph:
    """A recurrent step graph whose inputs are `leading`, the (h, c) state, then `trailing`."""
    batch = leading[0].shape[0]
    state = tuple(rand(net.n_layers, batch, net.hidden_size) for _ in range(2))
    axes = {name: ({1: "batch"} if "state_" in name else {0: "batch"}) for name in (*inputs, *outputs)}
    return Graph(module, inputs, outputs, (*leading, *state, *trailing), axes)
