"""SLAMP: stochastic latent appearance and motion prediction.

Akan, Erdem, Erdem, Güney, "SLAMP: Stochastic Latent Appearance and Motion Prediction", ICCV 2021.
    @inproceedings{akan2021slamp, title={SLAMP: Stochastic Latent Appearance and Motion Prediction},
                   author={Akan, Adil Kaan and Erdem, Erkut and Erdem, Aykut and G{\"u}ney, Fatma},
                   booktitle={ICCV}, year={2021}}
Official code: github.com/kaanakan/slamp (`helpers.py` train_step / eval_step, `models/*`, `flow_utils.py`).

Two branches share one frame loop. The pixel branch is SVG-LP: a pixel encoder, appearance posterior / prior LSTMs
and a static predictor LSTM decoded by the pixel decoder into x_p. The motion branch encodes frame pairs
cat(x_{t-1}, x_t) into motion codes; its prior and dynamic predictor see the *previous* pair's code (at t = 1 the
"zero motion" code of cat(x_0, x_0)) and its posterior the current pair's; the flow decoder turns the predictor's
output (with the pixel skips) into a backward flow in pixels that warps the previous frame into x_f. A mask network
on cat(x_p, x_f) fuses them: x = m x_p + (1 - m) x_f. Decoder skips are the running mean of the pixel-encoder skips
of every frame fed so far (official --last_frame_skip and --running_avg, both always on).

Training runs the convolutional networks once over all frames of a clip whenever every input is the ground truth,
with BatchNorm statistics and running-stat updates per time step as the official one-call-per-step loop
(`vpkit.engine.batchnorm`); once scheduled sampling feeds a prediction back it is the official frame-by-frame loop.
Sampling is `rollout` over the exportable graphs of `export_plan`, following official `eval_step`.
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
from vpkit.engine.batchnorm import time_grouped, use_batch_stats_in_eval
from vpkit_slamp.config import SLAMPConfig
from vpkit_slamp.networks import (
    LSTM,
    Decoder,
    Encoder,
    GaussianLSTM,
    MaskPredictor,
    init_weights,
    warp,
)

if TYPE_CHECKING:
    from vpkit.core.config import TrainConfig

ADAM_BETA2 = 0.999  # fixed in the official helpers.get_optimizers

GAUSSIANS = ("posterior_app", "prior_app", "posterior_motion", "prior_motion")
PREDICTORS = ("static_frame_predictor", "dynamic_frame_predictor")


@dataclass
class LossTerms:
    """The official objective and its parts, each summed over the predicted steps (KL: app + motion)."""

    loss: Tensor
    pixel_mse: Tensor
    flow_mse: Tensor
    mask_mse: Tensor
    kld: Tensor


def kl_gaussians(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mu1, e^logvar1) || N(mu2, e^logvar2)), in the official `kl_criterion`'s form."""
    sigma1 = torch.exp(0.5 * logvar1)
    sigma2 = torch.exp(0.5 * logvar2)
    return torch.log(sigma2 / sigma1) + (torch.exp(logvar1) + (mu1 - mu2) ** 2) / (2 * torch.exp(logvar2)) - 0.5


def teacher_probability(k: int, epoch: int) -> float:
    """Official scheduled sampling: probability of feeding the ground truth, k / (k + exp(epoch / k)); 1 if k = 0."""
    return 1.0 if k == 0 else k / (k + math.exp(epoch / k))


def _full(tensor: Tensor) -> Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class SLAMP(VideoPredictor):
    """SLAMP on 64x64 frames of `frame_shape` `(C, 64, 64)`."""

    def __init__(self, config: SLAMPConfig, frame_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = frame_shape
        if (height, width) != (64, 64):
            raise VpkitError(f"SLAMP architecture '{config.architecture}' takes 64x64 frames but the data has "
                             f"{height}x{width}; resize the data to 64x64.")
        self.config = config
        self.frame_shape = (channels, height, width)
        c = config
        # Names are the official keys of the saved model dict (helpers.get_model_generic).
        self.static_frame_predictor = LSTM(c.g_dim_app + c.z_dim_app, c.g_dim_app, c.rnn_size,
                                           c.predictor_rnn_layers)
        self.dynamic_frame_predictor = LSTM(c.g_dim_motion + c.z_dim_motion, c.g_dim_motion, c.rnn_size,
                                            c.predictor_rnn_layers)
        self.posterior_app = GaussianLSTM(c.g_dim_app, c.z_dim_app, c.rnn_size, c.posterior_rnn_layers)
        self.prior_app = GaussianLSTM(c.g_dim_app, c.z_dim_app, c.rnn_size, c.prior_rnn_layers)
        self.posterior_motion = GaussianLSTM(c.g_dim_motion, c.z_dim_motion, c.rnn_size, c.posterior_rnn_layers)
        self.prior_motion = GaussianLSTM(c.g_dim_motion, c.z_dim_motion, c.rnn_size, c.prior_rnn_layers)
        self.pixel_encoder = Encoder(c.architecture, c.g_dim_app, channels)
        self.motion_encoder = Encoder(c.architecture, c.g_dim_motion, 2 * channels)
        self.pixel_decoder = Decoder(c.architecture, c.g_dim_app, channels)
        self.flow_decoder = Decoder(c.architecture, c.g_dim_motion, 2, act=False)
        self.mask_decoder = MaskPredictor(2 * channels)
        self.apply(init_weights)
        use_batch_stats_in_eval(self, c.sampling_batchnorm == "batch")

    def official_modules(self) -> dict[str, nn.Module]:
        """The official modules by their official names, in the official dict order (one Adam each)."""
        names = (*PREDICTORS, *GAUSSIANS, "pixel_encoder", "motion_encoder", "pixel_decoder", "flow_decoder",
                 "mask_decoder")
        return {name: getattr(self, name) for name in names}

    # -- one step's fusion (shared by training and the `decode` graph) --------------------------------------------

    def fuse(self, previous: Tensor, g_app: Tensor, g_motion: Tensor, skips: list[Tensor]
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x_p, x_f, m, x) from the predictors' outputs: pixel decoder, flow decoder + warp of `previous`
        (clamped to [0, 1]), mask on cat(x_p, x_f), and the fused frame m x_p + (1 - m) x_f."""
        pixel = self.pixel_decoder(g_app, skips)
        flow = self.flow_decoder(g_motion, skips)
        warped = torch.clamp(warp(previous, flow), 0, 1)
        mask = self.mask_decoder(torch.cat([pixel, warped], dim=1))
        return pixel, warped, mask, mask * pixel + (1 - mask) * warped

    # -- training -------------------------------------------------------------------------------------------------

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """The official loss on a clip `[B, T, C, H, W]`; logs the three MSEs and the KL divided by T, as the
        official script prints them, and the scheduled-sampling probability."""
        batch, length = video.shape[:2]
        steps = length - 1
        c = self.config
        teacher_p = teacher_probability(c.sch_sampling, ctx.step // c.epoch_size)
        with ctx.autocast():
            noise = {name: torch.randn(batch, steps, *self.latent_shape(z), device=video.device, dtype=video.dtype)
                     for name, z in (("posterior_app", c.z_dim_app), ("posterior_motion", c.z_dim_motion))}
            use_truth = (torch.rand(steps) < teacher_p).tolist() if c.sch_sampling else None
            terms = self.loss_terms(video, noise, use_truth)
        logs = {name: getattr(terms, name).detach() / length for name in ("pixel_mse", "flow_mse", "mask_mse", "kld")}
        logs["teacher_p"] = teacher_p
        return StepOutput(terms.loss, logs)

    def latent_shape(self, z_dim: int) -> tuple[int, ...]:
        """Shape of one video's latent of `z_dim` channels: a vector here, a map in the KITTI/Cityscapes variant."""
        return (z_dim,)

    def loss_terms(self, video: Tensor, noise: Mapping[str, Tensor], use_truth: list[bool] | None = None
                   ) -> LossTerms:
        """Official `train_step` objective on `video` `[B, T, C, H, W]`.

        `noise` holds the posteriors' standard-normal draws, `posterior_app` `[B, T-1, *latent_shape(z_dim_app)]`
        and `posterior_motion` `[B, T-1, *latent_shape(z_dim_motion)]`. `use_truth[i-1]` (scheduled sampling) says
        whether the input after step i >= n_context is the ground truth x_i (True) or the detached fused
        prediction; None: always the ground truth. When every input is the ground truth, the convolutional
        networks run once over all frames (`batched_loss_terms`); otherwise frame by frame, as official
        (`loop_loss_terms`). KL terms sum over every latent entry and divide by B."""
        if video.shape[1] < 2:
            raise VpkitError(f"SLAMP trains on clips of at least 2 frames; got {video.shape[1]}.")
        n_context = self.config.n_context
        if use_truth is None or all(use_truth[n_context - 1:]):
            return self.batched_loss_terms(video, noise)
        return self.loop_loss_terms(video, noise, use_truth)

    # Encoding is what the 64x64 and the KITTI/Cityscapes variants do differently; the recurrences, the decoding and
    # the losses below are shared.

    def encode_clip(self, video: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Every frame of `video` through the encoders at once, with the official loop's BatchNorm behaviour:
        pixel codes `[B, T, ...]`, motion codes `[B, T, ...]` (slice 0 the "zero motion" cat(x_0, x_0), slice i the
        pair cat(x_{i-1}, x_i)) and the frames' skips `[B*T, ...]`."""
        batch, length = video.shape[:2]
        steps = length - 1
        shape = video.shape[2:]
        # pixel encoder: official calls x_0, x_1, x_1, x_2, x_2, ..., x_{T-1} (input then target of each step)
        order = [0] + [t for t in range(1, steps) for _ in range(2)] + [steps]
        with time_grouped(self.pixel_encoder, length, order):
            codes, frame_skips = self.pixel_encoder(video.reshape(batch * length, *shape))
        # official order at step 1: the pair, then the zero motion
        previous = torch.cat([video[:, :1], video[:, :-1]], dim=1)
        pairs = torch.cat([previous, video], dim=2).reshape(batch * length, 2 * shape[0], *shape[1:])
        with time_grouped(self.motion_encoder, length, [1, 0, *range(2, length)]):
            motions = self.motion_encoder(pairs)[0]
        return codes.view(batch, length, -1), motions.view(batch, length, -1), frame_skips

    def encode_step(self, x_in: Tensor, target: Tensor, first: bool
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, list[Tensor]]:
        """One official step's encoder calls, in the official order: (h of the input, h of the target, the pair's
        motion code, the "zero motion" code at the first step (else None), the input's skips)."""
        h, skip = self.pixel_encoder(x_in)
        h_target = self.pixel_encoder(target)[0]
        h_motion = self.motion_encoder(torch.cat([x_in, target], dim=1))[0]
        zero = self.motion_encoder(torch.cat([x_in, x_in], dim=1))[0] if first else None
        return h, h_target, h_motion, zero, list(skip)

    def _recurrences(self, batch: int, like: Tensor):
        """A closure running one step of the four Gaussian LSTMs and two predictors on shared states:
        `(h, h_target, h_motion, last_motion, eps_app, eps_motion) -> (g_app, g_motion, KL of this step)`."""
        states = {name: getattr(self, name).init_state(batch, device=like.device, dtype=like.dtype)
                  for name in (*GAUSSIANS, *PREDICTORS)}

        def run(name: str, *inputs: Tensor):
            *out, states[name] = getattr(self, name).step(*inputs[:1], states[name], *inputs[1:])
            return out

        def step(h: Tensor, h_target: Tensor, h_motion: Tensor, last_motion: Tensor, eps_app: Tensor,
                 eps_motion: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            z_app, mu_app, logvar_app = run("posterior_app", h_target, eps_app)
            _, mu_app_p, logvar_app_p = run("prior_app", h, torch.zeros_like(z_app))
            z_mot, mu_mot, logvar_mot = run("posterior_motion", h_motion, eps_motion)
            _, mu_mot_p, logvar_mot_p = run("prior_motion", last_motion, torch.zeros_like(z_mot))
            (g_app,) = run("static_frame_predictor", torch.cat([h, z_app], dim=1))
            (g_mot,) = run("dynamic_frame_predictor", torch.cat([last_motion, z_mot], dim=1))
            kld = kl_gaussians(*map(_full, (mu_app, logvar_app, mu_app_p, logvar_app_p))).sum() / batch
            kld = kld + kl_gaussians(*map(_full, (mu_mot, logvar_mot, mu_mot_p, logvar_mot_p))).sum() / batch
            return g_app, g_mot, kld

        return step

    def batched_loss_terms(self, video: Tensor, noise: Mapping[str, Tensor]) -> LossTerms:
        """The official objective with every input the ground truth, the conv networks called once per clip.

        Same math as `loop_loss_terms`: each network's BatchNorm normalises every time slice with its own statistics
        and updates its running statistics in the official call order (`vpkit.engine.batchnorm.time_grouped`). The
        official loop encodes every inner frame twice (once as step i's target, once as step i+1's input) with
        identical results; here it is encoded once and its running-stat update counted twice."""
        batch, length = video.shape[:2]
        steps = length - 1
        codes, motions, frame_skips = self.encode_clip(video)
        step = self._recurrences(batch, video)
        kld = video.new_zeros((), dtype=torch.float32)
        g_apps, g_motions = [], []
        for i in range(1, length):
            g_app, g_mot, kl = step(codes[:, i - 1], codes[:, i], motions[:, i], motions[:, i - 1],
                                    noise["posterior_app"][:, i - 1], noise["posterior_motion"][:, i - 1])
            g_apps.append(g_app)
            g_motions.append(g_mot)
            kld = kld + kl

        # decoder skips of step i: the running mean of the skips of frames 0 .. i-1
        counts = torch.arange(1, length, device=video.device, dtype=video.dtype)
        skips = []
        for skip in frame_skips:
            skip = skip.view(batch, length, *skip.shape[1:])[:, :-1]
            mean = skip.cumsum(dim=1) / counts.view(1, steps, *([1] * (skip.dim() - 2)))
            skips.append(mean.flatten(0, 1))
        order = range(steps)  # the decoders and the mask net: one call per step
        with (time_grouped(self.pixel_decoder, steps, order), time_grouped(self.flow_decoder, steps, order),
              time_grouped(self.mask_decoder, steps, order)):
            pixel, warped, _, fused = self.fuse(video[:, :-1].flatten(0, 1), torch.stack(g_apps, 1).flatten(0, 1),
                                                torch.stack(g_motions, 1).flatten(0, 1), skips)
        target = _full(video[:, 1:])

        def summed_mse(prediction: Tensor) -> Tensor:  # sum over steps of each step's F.mse_loss
            return (_full(prediction).view_as(target) - target).pow(2).mean(dim=(0, 2, 3, 4)).sum()

        pixel_mse, flow_mse, mask_mse = summed_mse(pixel), summed_mse(warped), summed_mse(fused)
        loss = pixel_mse + flow_mse + mask_mse + self.config.beta * kld
        return LossTerms(loss, pixel_mse, flow_mse, mask_mse, kld)

    def loop_loss_terms(self, video: Tensor, noise: Mapping[str, Tensor], use_truth: list[bool] | None = None
                        ) -> LossTerms:
        """The official objective frame by frame, as official `train_step` runs it (the path scheduled sampling
        needs once a prediction is fed back, and the reference the batched path is tested against)."""
        batch, length = video.shape[:2]
        n_context = self.config.n_context
        frames = video.unbind(1)
        step = self._recurrences(batch, video)
        pixel_mse = flow_mse = mask_mse = kld = video.new_zeros((), dtype=torch.float32)
        x_in = frames[0]
        skips: list[Tensor] = []
        last_motion: Tensor | None = None
        for i in range(1, length):
            target = frames[i]
            h, h_target, h_motion, zero, skip = self.encode_step(x_in, target, first=i == 1)
            if i == 1:
                last_motion, skips = zero, skip
            else:
                skips = [(s * (i - 1) + new) / i for s, new in zip(skips, skip, strict=True)]
            assert last_motion is not None
            g_app, g_mot, kl = step(h, h_target, h_motion, last_motion, noise["posterior_app"][:, i - 1],
                                    noise["posterior_motion"][:, i - 1])
            pixel, warped, _, fused = self.fuse(x_in, g_app, g_mot, skips)
            last_motion = h_motion

            pixel_mse = pixel_mse + F.mse_loss(_full(pixel), _full(target))
            flow_mse = flow_mse + F.mse_loss(_full(warped), _full(target))
            mask_mse = mask_mse + F.mse_loss(_full(fused), _full(target))
            kld = kld + kl
            if use_truth is None or i < n_context or use_truth[i - 1]:
                x_in = target
            else:
                x_in = fused.detach()
        loss = pixel_mse + flow_mse + mask_mse + self.config.beta * kld
        return LossTerms(loss, pixel_mse, flow_mse, mask_mse, kld)

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        """One Adam per official module (11), lr and beta1 from the model config, beta2 0.999, as official."""
        betas = (self.config.beta1, ADAM_BETA2)
        return Optimization([torch.optim.Adam(m.parameters(), lr=self.config.lr, betas=betas)
                             for m in self.official_modules().values()])

    # -- sampling -------------------------------------------------------------------------------------------------

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        """Posterior draws for the context steps (they set the predictors' states, as official) and prior draws
        for the predicted ones, for the appearance and the motion latents."""
        c = self.config
        past = max(n_context - 1, 0)
        app, mot = self.latent_shape(c.z_dim_app), self.latent_shape(c.z_dim_motion)
        return {
            "posterior_app_noise": (batch, past, *app),
            "posterior_motion_noise": (batch, past, *mot),
            "prior_app_noise": (batch, horizon, *app),
            "prior_motion_noise": (batch, horizon, *mot),
        }

    def export_plan(self) -> ExportPlan:
        """Graphs `encode`, `encode_motion`, the four Gaussian LSTM steps, the two predictor steps and `decode`
        (decoders, warp and fusion); LSTM states and noise are explicit inputs and outputs."""
        param = next(self.parameters())
        device, dtype = param.device, param.dtype
        batch = 2
        gen = torch.Generator().manual_seed(0)

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=gen).to(device=device, dtype=dtype)

        c = self.config
        skip_names = tuple(f"skip{k}" for k in range(4))
        skips = tuple(rand(batch, *shape) for shape in self.pixel_encoder.skip_shapes)
        axis = {0: "batch"}
        frame = rand(batch, *self.frame_shape)
        graphs = {
            "encode": Graph(_Encode(self.pixel_encoder), ("frames",), ("h", *skip_names), (frame,),
                            {name: axis for name in ("frames", "h", *skip_names)}),
            "encode_motion": Graph(_EncodeMotion(self.motion_encoder), ("previous", "current"), ("h_motion",),
                                   (frame, rand(batch, *self.frame_shape)),
                                   {name: axis for name in ("previous", "current", "h_motion")}),
            "decode": Graph(_Decode(self), ("g_app", "g_motion", "previous", *skip_names), ("frames",),
                            (rand(batch, c.g_dim_app), rand(batch, c.g_dim_motion), frame, *skips),
                            {name: axis for name in ("g_app", "g_motion", "previous", "frames", *skip_names)}),
        }
        for name, g_dim, z_dim in (("static_frame_predictor", c.g_dim_app, c.z_dim_app),
                                   ("dynamic_frame_predictor", c.g_dim_motion, c.z_dim_motion)):
            net = getattr(self, name)
            graphs[name] = _step_graph(_PredictorStep(net), ("h", "z", "state_h", "state_c"),
                                       ("g", "next_state_h", "next_state_c"),
                                       (rand(batch, g_dim), rand(batch, z_dim)), net, rand)
        for name in GAUSSIANS:
            net = getattr(self, name)
            g_dim, z_dim = (c.g_dim_app, c.z_dim_app) if name.endswith("app") else (c.g_dim_motion, c.z_dim_motion)
            graphs[name] = _step_graph(_GaussianStep(net), ("h", "state_h", "state_c", "noise"),
                                       ("z", "next_state_h", "next_state_c"), (rand(batch, g_dim),), net, rand,
                                       trailing=(rand(batch, z_dim),))
        return ExportPlan(graphs)

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """Official `eval_step` sampling. Context steps i < n_context: ground truth is encoded, z from the posteriors
        (appearance: of the true next frame; motion: of the true pair), priors stepped for their state, predictors
        stepped, nothing decoded. Predicted steps: z from the priors, the fused frame is fed back, and the motion code
        is recomputed from (previous frame, new frame)."""
        batch, n_context = context.shape[:2]
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        if n_context < 2:
            raise VpkitError(f"SLAMP needs at least 2 context frames (got {n_context}): its motion history starts "
                             "from the first observed pair, as official.")
        for name, shape in self.noise_shapes(batch, n_context, horizon).items():
            if name not in noise or tuple(noise[name].shape) != shape:
                got = tuple(noise[name].shape) if name in noise else "nothing"
                raise VpkitError(f"rollout needs noise '{name}' of shape {shape}; got {got}.")
        device, dtype = context.device, context.dtype
        states = {name: getattr(self, name).init_state(batch, device=device, dtype=dtype)
                  for name in (*GAUSSIANS, *PREDICTORS)}

        def encode(frames: Tensor) -> tuple[Tensor, list[Tensor]]:
            out = backend.run("encode", {"frames": frames})
            return out["h"], [out[f"skip{k}"] for k in range(4)]

        def motion(previous: Tensor, current: Tensor) -> Tensor:
            return backend.run("encode_motion", {"previous": previous, "current": current})["h_motion"]

        def gaussian(name: str, h: Tensor, eps: Tensor) -> Tensor:
            out = backend.run(name, {"h": h, "state_h": states[name][0], "state_c": states[name][1], "noise": eps})
            states[name] = (out["next_state_h"], out["next_state_c"])
            return out["z"]

        def predictor(name: str, h: Tensor, z: Tensor) -> Tensor:
            out = backend.run(name, {"h": h, "z": z, "state_h": states[name][0], "state_c": states[name][1]})
            states[name] = (out["next_state_h"], out["next_state_c"])
            return out["g"]

        zeros_app = torch.zeros(batch, self.config.z_dim_app, device=device, dtype=dtype)
        zeros_mot = torch.zeros(batch, self.config.z_dim_motion, device=device, dtype=dtype)
        x_in = context[:, 0]
        h, skip = encode(x_in)
        last_motion = motion(x_in, x_in)  # "zero motion" of cat(x_0, x_0)
        skips: list[Tensor] = []

        def average(i: int) -> list[Tensor]:
            return list(skip) if i == 1 else [(s * (i - 1) + new) / i for s, new in zip(skips, skip, strict=True)]

        for i in range(1, n_context):
            skips = average(i)
            target = context[:, i]
            h_target, skip_target = encode(target)
            h_motion = motion(x_in, target)
            z_app = gaussian("posterior_app", h_target, noise["posterior_app_noise"][:, i - 1])
            gaussian("prior_app", h, zeros_app)  # stepped for its state only, as official
            z_mot = gaussian("posterior_motion", h_motion, noise["posterior_motion_noise"][:, i - 1])
            gaussian("prior_motion", last_motion, zeros_mot)
            predictor("static_frame_predictor", h, z_app)
            predictor("dynamic_frame_predictor", last_motion, z_mot)
            x_in, h, skip, last_motion = target, h_target, skip_target, h_motion

        frames = []
        for t in range(horizon):
            if t > 0:
                h, skip = encode(x_in)
            skips = average(n_context + t)
            z_app = gaussian("prior_app", h, noise["prior_app_noise"][:, t])
            z_mot = gaussian("prior_motion", last_motion, noise["prior_motion_noise"][:, t])
            g_app = predictor("static_frame_predictor", h, z_app)
            g_mot = predictor("dynamic_frame_predictor", last_motion, z_mot)
            inputs = {"g_app": g_app, "g_motion": g_mot, "previous": x_in}
            frame = backend.run("decode", inputs | {f"skip{k}": s for k, s in enumerate(skips)})["frames"]
            frames.append(frame)
            if t + 1 < horizon:
                last_motion = motion(x_in, frame)
            x_in = frame
        return torch.stack(frames, dim=1)


# -- exportable graphs ----------------------------------------------------------------------------------------------


class _Encode(nn.Module):
    """frames -> (h, skip0, ..., skip3)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        h, skips = self.encoder(frames)
        return (h, *skips)


class _EncodeMotion(nn.Module):
    """(previous, current) -> (h_motion,): the motion encoder on cat(previous, current)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, previous: Tensor, current: Tensor) -> tuple[Tensor]:
        return (self.encoder(torch.cat([previous, current], dim=1))[0],)


class _Decode(nn.Module):
    """(g_app, g_motion, previous, skip0..3) -> (fused frame,): pixel and flow decoders, warp, mask, fusion."""

    def __init__(self, model: SLAMP) -> None:
        super().__init__()
        self.pixel_decoder = model.pixel_decoder
        self.flow_decoder = model.flow_decoder
        self.mask_decoder = model.mask_decoder

    def forward(self, g_app: Tensor, g_motion: Tensor, previous: Tensor, skip0: Tensor, skip1: Tensor,
                skip2: Tensor, skip3: Tensor) -> tuple[Tensor]:
        return (SLAMP.fuse(self, previous, g_app, g_motion, [skip0, skip1, skip2, skip3])[3],)  # type: ignore[arg-type]


class _PredictorStep(nn.Module):
    """(h, z, state_h, state_c) -> (g, next_state_h, next_state_c)."""

    def __init__(self, net: LSTM) -> None:
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
                net: LSTM, rand, trailing: tuple[Tensor, ...] = ()) -> Graph:
    """A recurrent step graph whose inputs are `leading`, the (h, c) state, then `trailing`."""
    batch = leading[0].shape[0]
    state = tuple(rand(net.n_layers, batch, net.hidden_size) for _ in range(2))
    axes = {name: ({1: "batch"} if "state_" in name else {0: "batch"}) for name in (*inputs, *outputs)}
    return Graph(module, inputs, outputs, (*leading, *state, *trailing), axes)
