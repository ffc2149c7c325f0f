"""SLAMP's KITTI (92x310) and Cityscapes (128x256) variant: spatial codes and latents, ConvLSTM predictors.

Official code: github.com/kaanakan/slamp, `helpers.get_model_real` (the modules), the `is_real_dataset` branches of
`helpers.train_step` / `eval_step`, `models/{kitti,cityscapes}_models.py`, `models/conv_lstms.py`.

The frame loop is the 64x64 SLAMP's (`vpkit_slamp.model.SLAMP`, whose fusion and optimisers this class reuses), with
one difference in how frames are encoded: a shared image encoder (`img_encoder`, a 12th official module) turns each
frame into a 2g-channel code map at 4x4 (KITTI) or 4x8 (Cityscapes) plus five skips; the pixel encoder maps a frame's
code map to h, and the motion encoder maps the concatenated code maps of a frame pair to the motion code. Codes,
latents and LSTM states are all maps of that size; priors, posteriors and predictors are ConvLSTMs. As official,
the ConvLSTMs keep PyTorch's default initialisation (only the conv networks get the official `init_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit.core.errors import VpkitError
from vpkit.core.model import (
    Backend,
    ExportPlan,
    Graph,
    StepOutput,
    TrainContext,
    VideoPredictor,
)
from vpkit.engine.batchnorm import time_grouped, use_batch_stats_in_eval
from vpkit_slamp.model import (
    GAUSSIANS,
    PREDICTORS,
    SLAMP,
    LossTerms,
    _full,
    _GaussianStep,
    _PredictorStep,
    kl_gaussians,
    teacher_probability,
)
from vpkit_slamp.networks import MaskPredictor, init_weights
from vpkit_slamp.spatial_networks import (
    IMAGE_WIDTHS,
    ConvLSTM,
    GaussianConvLSTM,
    ImageEncoder,
    SpatialDecoder,
    SpatialEncoder,
    geometry,
)

if TYPE_CHECKING:
    from vpkit_slamp.config import SLAMPConfig

N_SKIPS = 5
SKIP_NAMES = tuple(f"skip{k}" for k in range(N_SKIPS))
CONV_NETS = ("img_encoder", "pixel_encoder", "motion_encoder", "pixel_decoder", "flow_decoder", "mask_decoder")


class SpatialSLAMP(SLAMP):
    """SLAMP with spatial latents on `frame_shape` `(C, 92, 310)` ('kitti') or `(C, 128, 256)` ('cityscapes'; any
    height and width divisible by 32 also runs, every map scaling with the frame)."""

    def __init__(self, config: SLAMPConfig, frame_shape: tuple[int, int, int]) -> None:
        VideoPredictor.__init__(self)  # SLAMP.__init__ builds the 64x64 networks
        geom = geometry(config.architecture, frame_shape)
        c = config
        if c.g_dim_app != c.g_dim_motion:
            raise VpkitError(f"SLAMP '{c.architecture}' needs g_dim_app == g_dim_motion (the motion encoder reads two "
                             f"image-encoder maps of 2 g_dim_app channels, as official); got {c.g_dim_app} and "
                             f"{c.g_dim_motion}.")
        channels = frame_shape[0]
        self.config = config
        self.frame_shape = (channels, *geom.frame)
        self.geometry = geom
        size = geom.latent
        g, r = c.g_dim_app, c.rnn_size
        # Names are the official keys of the saved model dict (helpers.get_model_real).
        self.static_frame_predictor = ConvLSTM(g + c.z_dim_app, g, r, c.predictor_rnn_layers, size)
        self.dynamic_frame_predictor = ConvLSTM(g + c.z_dim_motion, g, r, c.predictor_rnn_layers, size)
        self.posterior_app = GaussianConvLSTM(g, c.z_dim_app, r, c.posterior_rnn_layers, size)
        self.prior_app = GaussianConvLSTM(g, c.z_dim_app, r, c.prior_rnn_layers, size)
        self.posterior_motion = GaussianConvLSTM(g, c.z_dim_motion, r, c.posterior_rnn_layers, size)
        self.prior_motion = GaussianConvLSTM(g, c.z_dim_motion, r, c.prior_rnn_layers, size)
        self.img_encoder = ImageEncoder(2 * g, channels, geom)
        self.pixel_encoder = SpatialEncoder(g, 2 * g)
        self.motion_encoder = SpatialEncoder(g, 4 * g)
        self.pixel_decoder = SpatialDecoder(g, channels, geom)
        self.flow_decoder = SpatialDecoder(g, 2, geom, act=False)
        self.mask_decoder = MaskPredictor(2 * channels)
        for name in CONV_NETS:
            getattr(self, name).apply(init_weights)
        use_batch_stats_in_eval(self, c.sampling_batchnorm == "batch")

    def official_modules(self) -> dict[str, nn.Module]:
        """The 12 official modules by their official names, in the official dict order (one Adam each)."""
        return {name: getattr(self, name) for name in (*PREDICTORS, *GAUSSIANS, *CONV_NETS)}

    def _latent_shape(self, z_dim: int) -> tuple[int, ...]:
        return (z_dim, *self.geometry.latent)

    def _check_frames(self, video: Tensor, what: str) -> None:
        if video.dim() != 5 or tuple(video.shape[2:]) != self.frame_shape:
            raise VpkitError(f"SLAMP '{self.config.architecture}' was built for frames {self.frame_shape}; {what} "
                             f"has shape {tuple(video.shape)} (expected [B, T, *frame_shape]).")

    # -- training -------------------------------------------------------------------------------------------------

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """The official loss on a clip `[B, T, C, H, W]`; logs the three MSEs and the KL divided by T, as the
        official script prints them, and the scheduled-sampling probability."""
        batch, length = video.shape[:2]
        steps = length - 1
        c = self.config
        teacher_p = teacher_probability(c.sch_sampling, ctx.step // c.epoch_size)
        with ctx.autocast():
            noise = {name: torch.randn(batch, steps, *self._latent_shape(z), device=video.device, dtype=video.dtype)
                     for name, z in (("posterior_app", c.z_dim_app), ("posterior_motion", c.z_dim_motion))}
            use_truth = (torch.rand(steps) < teacher_p).tolist() if c.sch_sampling else None
            terms = self.loss_terms(video, noise, use_truth)
        logs = {name: getattr(terms, name).detach() / length for name in ("pixel_mse", "flow_mse", "mask_mse", "kld")}
        logs["teacher_p"] = teacher_p
        return StepOutput(terms.loss, logs)

    def loss_terms(self, video: Tensor, noise: Mapping[str, Tensor], use_truth: list[bool] | None = None
                   ) -> LossTerms:
        """Official `train_step` objective (its `is_real_dataset` branch) on `video` `[B, T, C, H, W]`.

        `noise` holds the posteriors' standard-normal draws, `posterior_app` `[B, T-1, z_dim_app, h, w]` and
        `posterior_motion` `[B, T-1, z_dim_motion, h, w]` (h x w: the latent map). `use_truth[i-1]` (scheduled
        sampling) says whether the input after step i >= n_context is the ground truth x_i (True) or the detached
        fused prediction; None: always the ground truth. The KL terms sum over channels and positions, / B. When
        every input is the ground truth the conv networks run once over all frames (`batched_loss_terms`);
        otherwise frame by frame, as official (`loop_loss_terms`)."""
        self._check_frames(video, "the training clip")
        return super().loss_terms(video, noise, use_truth)

    def batched_loss_terms(self, video: Tensor, noise: Mapping[str, Tensor]) -> LossTerms:
        """The official objective with every input the ground truth, each conv network called once per clip.

        Same math as `loop_loss_terms`: every BatchNorm normalises each time slice with its own statistics and
        updates its running statistics in the official call order (`vpkit.engine.batchnorm.time_grouped`). The
        official loop encodes every inner frame twice (as step i's target and step i+1's input) with identical
        results; here once, its running-stat update counted twice."""
        batch, length = video.shape[:2]
        steps = length - 1
        frames = video.reshape(batch * length, *video.shape[2:])
        # image and pixel encoders: official calls x_0, x_1, x_1, x_2, x_2, ..., x_{T-1} (input, target per step)
        order = [0] + [t for t in range(1, steps) for _ in range(2)] + [steps]
        with time_grouped(self.img_encoder, length, order):
            codes, frame_skips = self.img_encoder(frames)
        with time_grouped(self.pixel_encoder, length, order):
            hs = self.pixel_encoder(codes)
        hs = hs.view(batch, length, *hs.shape[1:])
        # motion encoder: slice 0 is the "zero motion" cat(c_0, c_0), slice i the pair cat(c_{i-1}, c_i) of code
        # maps; the official order at step 1 is the pair, then the zero motion
        codes = codes.view(batch, length, *codes.shape[1:])
        pairs = torch.cat([torch.cat([codes[:, :1], codes[:, :-1]], dim=1), codes], dim=2)
        with time_grouped(self.motion_encoder, length, [1, 0, *range(2, length)]):
            motions = self.motion_encoder(pairs.flatten(0, 1))
        motions = motions.view(batch, length, *motions.shape[1:])

        states = {name: getattr(self, name).init_state(batch, device=video.device, dtype=video.dtype)
                  for name in (*GAUSSIANS, *PREDICTORS)}

        def gaussian(name: str, h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            z, mu, logvar, states[name] = getattr(self, name).step(h, states[name], eps)
            return z, mu, logvar

        def predictor(name: str, x: Tensor) -> Tensor:
            out, states[name] = getattr(self, name).step(x, states[name])
            return out

        kld = video.new_zeros((), dtype=torch.float32)
        g_apps, g_motions = [], []
        for i in range(1, length):
            h, h_target, h_motion, last_motion = hs[:, i - 1], hs[:, i], motions[:, i], motions[:, i - 1]
            z_app, mu_app, logvar_app = gaussian("posterior_app", h_target, noise["posterior_app"][:, i - 1])
            _, mu_app_p, logvar_app_p = gaussian("prior_app", h, torch.zeros_like(z_app))
            z_mot, mu_mot, logvar_mot = gaussian("posterior_motion", h_motion, noise["posterior_motion"][:, i - 1])
            _, mu_mot_p, logvar_mot_p = gaussian("prior_motion", last_motion, torch.zeros_like(z_mot))
            g_apps.append(predictor("static_frame_predictor", torch.cat([h, z_app], dim=1)))
            g_motions.append(predictor("dynamic_frame_predictor", torch.cat([last_motion, z_mot], dim=1)))
            kld = kld + kl_gaussians(*map(_full, (mu_app, logvar_app, mu_app_p, logvar_app_p))).sum() / batch
            kld = kld + kl_gaussians(*map(_full, (mu_mot, logvar_mot, mu_mot_p, logvar_mot_p))).sum() / batch

        # decoder skips of step i: the running mean of the skips of frames 0 .. i-1
        counts = torch.arange(1, length, device=video.device, dtype=video.dtype)
        skips = []
        for skip in frame_skips:
            skip = skip.view(batch, length, *skip.shape[1:])[:, :-1]
            mean = skip.cumsum(dim=1) / counts.view(1, steps, 1, 1, 1)
            skips.append(mean.flatten(0, 1))
        inputs = video[:, :-1].flatten(0, 1)
        order = range(steps)  # the decoders and the mask net: one call per step
        with (time_grouped(self.pixel_decoder, steps, order), time_grouped(self.flow_decoder, steps, order),
              time_grouped(self.mask_decoder, steps, order)):
            pixel, warped, _, fused = self.fuse(inputs, torch.stack(g_apps, 1).flatten(0, 1),
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
        states = {name: getattr(self, name).init_state(batch, device=video.device, dtype=video.dtype)
                  for name in (*GAUSSIANS, *PREDICTORS)}

        def gaussian(name: str, h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            z, mu, logvar, states[name] = getattr(self, name).step(h, states[name], eps)
            return z, mu, logvar

        def predictor(name: str, x: Tensor) -> Tensor:
            out, states[name] = getattr(self, name).step(x, states[name])
            return out

        pixel_mse = flow_mse = mask_mse = kld = video.new_zeros((), dtype=torch.float32)
        x_in = frames[0]
        skips: list[Tensor] = []
        last_motion = None
        for i in range(1, length):
            target = frames[i]
            # The official call order (it sets the BatchNorm running statistics): both frames through the image
            # encoder, both maps through the pixel encoder, the pair through the motion encoder, then (i = 1) the
            # "zero motion" pair cat(x_0, x_0).
            code, skip = self.img_encoder(x_in)
            code_target = self.img_encoder(target)[0]
            h = self.pixel_encoder(code)
            h_target = self.pixel_encoder(code_target)
            h_motion = self.motion_encoder(torch.cat([code, code_target], dim=1))
            if i == 1:
                last_motion = self.motion_encoder(torch.cat([code, code], dim=1))
                skips = list(skip)
            else:
                skips = [(s * (i - 1) + new) / i for s, new in zip(skips, skip, strict=True)]
            z_app, mu_app, logvar_app = gaussian("posterior_app", h_target, noise["posterior_app"][:, i - 1])
            _, mu_app_p, logvar_app_p = gaussian("prior_app", h, torch.zeros_like(z_app))
            z_mot, mu_mot, logvar_mot = gaussian("posterior_motion", h_motion, noise["posterior_motion"][:, i - 1])
            _, mu_mot_p, logvar_mot_p = gaussian("prior_motion", last_motion, torch.zeros_like(z_mot))
            g_app = predictor("static_frame_predictor", torch.cat([h, z_app], dim=1))
            g_mot = predictor("dynamic_frame_predictor", torch.cat([last_motion, z_mot], dim=1))
            pixel, warped, _, fused = self.fuse(x_in, g_app, g_mot, skips)
            last_motion = h_motion

            pixel_mse = pixel_mse + F.mse_loss(_full(pixel), _full(target))
            flow_mse = flow_mse + F.mse_loss(_full(warped), _full(target))
            mask_mse = mask_mse + F.mse_loss(_full(fused), _full(target))
            kld = kld + kl_gaussians(*map(_full, (mu_app, logvar_app, mu_app_p, logvar_app_p))).sum() / batch
            kld = kld + kl_gaussians(*map(_full, (mu_mot, logvar_mot, mu_mot_p, logvar_mot_p))).sum() / batch
            if use_truth is None or i < n_context or use_truth[i - 1]:
                x_in = target
            else:
                x_in = fused.detach()
        loss = pixel_mse + flow_mse + mask_mse + self.config.beta * kld
        return LossTerms(loss, pixel_mse, flow_mse, mask_mse, kld)

    # -- sampling -------------------------------------------------------------------------------------------------

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        """Posterior draws for the context steps (they set the predictors' states, as official) and prior draws
        for the predicted ones, for the appearance and the motion latent maps."""
        c = self.config
        past = max(n_context - 1, 0)
        app, mot = self._latent_shape(c.z_dim_app), self._latent_shape(c.z_dim_motion)
        return {
            "posterior_app_noise": (batch, past, *app),
            "posterior_motion_noise": (batch, past, *mot),
            "prior_app_noise": (batch, horizon, *app),
            "prior_motion_noise": (batch, horizon, *mot),
        }

    def export_plan(self) -> ExportPlan:
        """Graphs `encode` (image + pixel encoders), `encode_motion` (motion encoder on two code maps), the four
        Gaussian ConvLSTM steps, the two predictor steps and `decode` (decoders, warp and fusion); ConvLSTM states
        and noise are explicit inputs and outputs."""
        param = next(self.parameters())
        device, dtype = param.device, param.dtype
        batch = 2
        gen = torch.Generator().manual_seed(0)

        def rand(*shape: int) -> Tensor:
            return torch.rand(shape, generator=gen).to(device=device, dtype=dtype)

        c = self.config
        g = c.g_dim_app
        latent = self.geometry.latent
        axis = {0: "batch"}
        frame = rand(batch, *self.frame_shape)
        skips = tuple(rand(batch, width, *size) for width, size in zip(IMAGE_WIDTHS, self.geometry.skips, strict=True))
        code_names = ("previous_code", "current_code")
        graphs = {
            "encode": Graph(_Encode(self), ("frames",), ("code", "h", *SKIP_NAMES), (frame,),
                            {name: axis for name in ("frames", "code", "h", *SKIP_NAMES)}),
            "encode_motion": Graph(_EncodeMotion(self.motion_encoder), code_names, ("h_motion",),
                                   (rand(batch, 2 * g, *latent), rand(batch, 2 * g, *latent)),
                                   {name: axis for name in (*code_names, "h_motion")}),
            "decode": Graph(_Decode(self), ("g_app", "g_motion", "previous", *SKIP_NAMES), ("frames",),
                            (rand(batch, g, *latent), rand(batch, g, *latent), frame, *skips),
                            {name: axis for name in ("g_app", "g_motion", "previous", "frames", *SKIP_NAMES)}),
        }

        def step_graph(module: nn.Module, net: nn.Module, inputs: tuple[str, ...], outputs: tuple[str, ...],
                       leading: tuple[Tensor, ...], trailing: tuple[Tensor, ...] = ()) -> Graph:
            state = tuple(rand(net.n_layers, batch, net.hidden_size, *latent) for _ in range(2))
            axes = {name: ({1: "batch"} if "state_" in name else {0: "batch"}) for name in (*inputs, *outputs)}
            return Graph(module, inputs, outputs, (*leading, *state, *trailing), axes)

        for name, z_dim in (("static_frame_predictor", c.z_dim_app), ("dynamic_frame_predictor", c.z_dim_motion)):
            net = getattr(self, name)
            graphs[name] = step_graph(_PredictorStep(net), net, ("h", "z", "state_h", "state_c"),
                                      ("g", "next_state_h", "next_state_c"),
                                      (rand(batch, g, *latent), rand(batch, z_dim, *latent)))
        for name in GAUSSIANS:
            net = getattr(self, name)
            z_dim = c.z_dim_app if name.endswith("app") else c.z_dim_motion
            graphs[name] = step_graph(_GaussianStep(net), net, ("h", "state_h", "state_c", "noise"),
                                      ("z", "next_state_h", "next_state_c"), (rand(batch, g, *latent),),
                                      (rand(batch, z_dim, *latent),))
        return ExportPlan(graphs)

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """Official `eval_step` (its `is_real_dataset` branch). Context steps i < n_context: ground truth is
        encoded, z from the posteriors (appearance: of the true next frame; motion: of the true pair's code maps),
        priors stepped for their state, predictors stepped, nothing decoded. Predicted steps: z from the priors, the
        fused frame is fed back and encoded, and the motion code is recomputed from (previous, new) code maps."""
        self._check_frames(context, "the context")
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

        def encode(frames: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
            out = backend.run("encode", {"frames": frames})
            return out["code"], out["h"], [out[name] for name in SKIP_NAMES]

        def motion(previous: Tensor, current: Tensor) -> Tensor:
            return backend.run("encode_motion", {"previous_code": previous, "current_code": current})["h_motion"]

        def gaussian(name: str, h: Tensor, eps: Tensor) -> Tensor:
            out = backend.run(name, {"h": h, "state_h": states[name][0], "state_c": states[name][1], "noise": eps})
            states[name] = (out["next_state_h"], out["next_state_c"])
            return out["z"]

        def predictor(name: str, h: Tensor, z: Tensor) -> Tensor:
            out = backend.run(name, {"h": h, "z": z, "state_h": states[name][0], "state_c": states[name][1]})
            states[name] = (out["next_state_h"], out["next_state_c"])
            return out["g"]

        c = self.config
        zeros_app = torch.zeros(batch, *self._latent_shape(c.z_dim_app), device=device, dtype=dtype)
        zeros_mot = torch.zeros(batch, *self._latent_shape(c.z_dim_motion), device=device, dtype=dtype)
        x_in = context[:, 0]
        code, h, skip = encode(x_in)
        last_motion = motion(code, code)  # "zero motion" of the pair (x_0, x_0)
        skips: list[Tensor] = []

        def average(i: int) -> list[Tensor]:
            return list(skip) if i == 1 else [(s * (i - 1) + new) / i for s, new in zip(skips, skip, strict=True)]

        for i in range(1, n_context):
            skips = average(i)
            target = context[:, i]
            code_target, h_target, skip_target = encode(target)
            h_motion = motion(code, code_target)
            z_app = gaussian("posterior_app", h_target, noise["posterior_app_noise"][:, i - 1])
            gaussian("prior_app", h, zeros_app)  # stepped for its state only, as official
            z_mot = gaussian("posterior_motion", h_motion, noise["posterior_motion_noise"][:, i - 1])
            gaussian("prior_motion", last_motion, zeros_mot)
            predictor("static_frame_predictor", h, z_app)
            predictor("dynamic_frame_predictor", last_motion, z_mot)
            x_in, code, h, skip, last_motion = target, code_target, h_target, skip_target, h_motion

        frames = []
        for t in range(horizon):
            skips = average(n_context + t)
            z_app = gaussian("prior_app", h, noise["prior_app_noise"][:, t])
            z_mot = gaussian("prior_motion", last_motion, noise["prior_motion_noise"][:, t])
            g_app = predictor("static_frame_predictor", h, z_app)
            g_mot = predictor("dynamic_frame_predictor", last_motion, z_mot)
            inputs = {"g_app": g_app, "g_motion": g_mot, "previous": x_in}
            frame = backend.run("decode", inputs | dict(zip(SKIP_NAMES, skips, strict=True)))["frames"]
            frames.append(frame)
            if t + 1 < horizon:
                code_new, h, skip = encode(frame)
                last_motion = motion(code, code_new)
                code = code_new
            x_in = frame
        return torch.stack(frames, dim=1)


# -- exportable graphs ----------------------------------------------------------------------------------------------


class _Encode(nn.Module):
    """frames -> (code, h, skip0, ..., skip4): the image encoder, then the pixel encoder on its code map."""

    def __init__(self, model: SpatialSLAMP) -> None:
        super().__init__()
        self.img_encoder = model.img_encoder
        self.pixel_encoder = model.pixel_encoder

    def forward(self, frames: Tensor) -> tuple[Tensor, ...]:
        code, skips = self.img_encoder(frames)
        return (code, self.pixel_encoder(code), *skips)


class _EncodeMotion(nn.Module):
    """(previous_code, current_code) -> (h_motion,): the motion encoder on the two image-encoder maps."""

    def __init__(self, encoder: SpatialEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, previous_code: Tensor, current_code: Tensor) -> tuple[Tensor]:
        return (self.encoder(torch.cat([previous_code, current_code], dim=1)),)


class _Decode(nn.Module):
    """(g_app, g_motion, previous, skip0..4) -> (fused frame,): pixel and flow decoders, warp, mask, fusion."""

    def __init__(self, model: SpatialSLAMP) -> None:
        super().__init__()
        self.pixel_decoder = model.pixel_decoder
        self.flow_decoder = model.flow_decoder
        self.mask_decoder = model.mask_decoder

    def forward(self, g_app: Tensor, g_motion: Tensor, previous: Tensor, skip0: Tensor, skip1: Tensor,
                skip2: Tensor, skip3: Tensor, skip4: Tensor) -> tuple[Tensor]:
        skips = [skip0, skip1, skip2, skip3, skip4]
        return (SLAMP.fuse(self, previous, g_app, g_motion, skips)[3],)  # type: ignore[arg-type]
