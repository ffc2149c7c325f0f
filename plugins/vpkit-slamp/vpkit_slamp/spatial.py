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
from torch import Tensor, nn

from vpkit.core.errors import VpkitError
from vpkit.core.model import (
    Backend,
    ExportPlan,
    Graph,
    VideoPredictor,
)
from vpkit.engine.batchnorm import time_grouped, use_batch_stats_in_eval
from vpkit_slamp.model import (
    GAUSSIANS,
    PREDICTORS,
    SLAMP,
    LossTerms,
    _GaussianStep,
    _PredictorStep,
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

    def latent_shape(self, z_dim: int) -> tuple[int, ...]:
        return (z_dim, *self.geometry.latent)

    def _check_frames(self, video: Tensor, what: str) -> None:
        if video.dim() != 5 or tuple(video.shape[2:]) != self.frame_shape:
            raise VpkitError(f"SLAMP '{self.config.architecture}' was built for frames {self.frame_shape}; {what} "
                             f"has shape {tuple(video.shape)} (expected [B, T, *frame_shape]).")

    # -- training -------------------------------------------------------------------------------------------------

    def loss_terms(self, video: Tensor, noise: Mapping[str, Tensor], use_truth: list[bool] | None = None
                   ) -> LossTerms:
        """`SLAMP.loss_terms` (official `train_step`, its `is_real_dataset` branch) after checking the frame size;
        the latents are maps `[z_dim, h, w]` and the KL sums over channels and positions."""
        self._check_frames(video, "the training clip")
        return super().loss_terms(video, noise, use_truth)

    def encode_clip(self, video: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Every frame through the image encoder, its code maps through the pixel encoder and the pairs of code maps
        through the motion encoder, each once per clip with the official loop's BatchNorm behaviour."""
        batch, length = video.shape[:2]
        steps = length - 1
        # image and pixel encoders: official calls x_0, x_1, x_1, x_2, x_2, ..., x_{T-1} (input, target per step)
        order = [0] + [t for t in range(1, steps) for _ in range(2)] + [steps]
        with time_grouped(self.img_encoder, length, order):
            codes, frame_skips = self.img_encoder(video.flatten(0, 1))
        with time_grouped(self.pixel_encoder, length, order):
            hs = self.pixel_encoder(codes)
        # motion: slice 0 the "zero motion" cat(c_0, c_0), slice i cat(c_{i-1}, c_i); official order: pair, zero
        codes = codes.view(batch, length, *codes.shape[1:])
        pairs = torch.cat([torch.cat([codes[:, :1], codes[:, :-1]], dim=1), codes], dim=2)
        with time_grouped(self.motion_encoder, length, [1, 0, *range(2, length)]):
            motions = self.motion_encoder(pairs.flatten(0, 1))
        return hs.view(batch, length, *hs.shape[1:]), motions.view(batch, length, *motions.shape[1:]), frame_skips

    def encode_step(self, x_in: Tensor, target: Tensor, first: bool
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, list[Tensor]]:
        """The official call order: both frames through the image encoder, both code maps through the pixel
        encoder, the pair through the motion encoder, then (first step) the "zero motion" pair cat(c_0, c_0)."""
        code, skip = self.img_encoder(x_in)
        code_target = self.img_encoder(target)[0]
        h = self.pixel_encoder(code)
        h_target = self.pixel_encoder(code_target)
        h_motion = self.motion_encoder(torch.cat([code, code_target], dim=1))
        zero = self.motion_encoder(torch.cat([code, code], dim=1)) if first else None
        return h, h_target, h_motion, zero, list(skip)

    # -- sampling -------------------------------------------------------------------------------------------------

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
        zeros_app = torch.zeros(batch, *self.latent_shape(c.z_dim_app), device=device, dtype=dtype)
        zeros_mot = torch.zeros(batch, *self.latent_shape(c.z_dim_motion), device=device, dtype=dtype)
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
