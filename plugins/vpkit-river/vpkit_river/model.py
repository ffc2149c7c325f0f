"""RIVER: latent flow matching with sparse conditioning, and its autoregressive ODE sampler.

Davtyan, Sameni, Favaro, "Efficient Video Prediction via Sparsely Conditioned Flow Matching", ICCV 2023.
Official code: github.com/Araachie/river (`model/model.py`, `training/trainer.py`).

Training (official `Model.forward`): per video, a target frame tau ~ U{2..n-1}, the reference tau-1 and one
conditioning frame c ~ U{0..tau-2} are encoded by the frozen autoencoder (continuous pre-quantisation latents, no
scaling); x_t = (1 - (1 - sigma) t) eps + t z_1 with t ~ U(0, 1); the regressor predicts z_1 - (1 - sigma) eps
(written, as official, as (z_1 - (1 - sigma) x_t) / (1 - (1 - sigma) t)); plain MSE. AdamW with a linear warm-up
and a polynomial (power 0.5) decay.

Sampling (official `Model.generate_frames`): encode the context (a single context frame is duplicated, so the first
prediction sees reference = conditioning with distance 1); per new frame integrate the ODE on the fixed grid
linspace(s, 1, int((1 - s) steps)) from (1 - (1 - sigma) s) eps + s z_prev (s = `warm_start`), drawing the
conditioning frame anew, per video, at every vector-field evaluation; append the final state unquantised; decode
through the quantiser. All randomness is explicit: `initial_noise` per frame and `conditioning_noise` per
evaluation (standard normal, mapped to a uniform index through the normal CDF), so exported graphs sample the same.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
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
from vpkit_river.config import RiverConfig
from vpkit_river.refiner import (
    RCAN,
    load_refiner_weights,
    refine_graph,
    refine_sequence,
)
from vpkit_river.vector_field import VectorFieldRegressor
from vpkit_river.vqgan import FrozenVQGAN
from vpkit_river.vqgan_model import RiverVQGAN
from vpkit_river.vqvae import RiverVQVAE, autoencoder_graphs

if TYPE_CHECKING:
    from vpkit.core.config import TrainConfig

VelocityFn = Callable[[Tensor, float, int], Tensor]  # (state, time, evaluation index) -> velocity


class FrozenAutoencoder(nn.Module):
    """Holds the autoencoder as `backbone` (the official `ae.backbone.*` keys of CLEVRER's model.pth), always in
    eval mode, without gradients."""

    def __init__(self, backbone: RiverVQVAE) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> FrozenAutoencoder:
        return super().train(False)

    def encode(self, frames: Tensor) -> Tensor:
        return self.backbone.encode(frames)

    def decode(self, latents: Tensor) -> Tensor:
        return self.backbone.decode(latents)


def load_autoencoder(path: str, frame_shape: tuple[int, int, int]) -> RiverVQVAE | RiverVQGAN:
    """The river-vqvae or river-vqgan of a vpkit checkpoint, with its weights, checked against the data's frame
    shape."""
    from vpkit.core.checkpoint import load_model, read_checkpoint

    ckpt = read_checkpoint(path)
    if ckpt.model_key not in ("river-vqvae", "river-vqgan"):
        raise VpkitError(f"model.autoencoder={path} holds model '{ckpt.model_key}'; RIVER needs a river-vqvae "
                         "or river-vqgan checkpoint (train one with: vpkit train --plugin river --model "
                         "river-vqvae).")
    if tuple(ckpt.frame_shape) != tuple(frame_shape):
        raise VpkitError(f"The autoencoder {path} was trained on frames {tuple(ckpt.frame_shape)}, the data has "
                         f"{tuple(frame_shape)}; train RIVER on the autoencoder's data.")
    model, _ = load_model(path)
    return model  # type: ignore[return-value]


class PolynomialWarmupDecay:
    """LR factor of `transformers.get_polynomial_decay_schedule_with_warmup` (a picklable callable): i / warmup
    during the warm-up, then ((lr - lr_end) (1 - progress)^power + lr_end) / lr, then lr_end / lr."""

    def __init__(self, lr: float, warmup: int, total: int, power: float, lr_end: float) -> None:
        self.lr, self.warmup, self.total, self.power, self.lr_end = lr, warmup, total, power, lr_end

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        if step > self.total:
            return self.lr_end / self.lr
        remaining = 1 - (step - self.warmup) / (self.total - self.warmup)
        return ((self.lr - self.lr_end) * remaining ** self.power + self.lr_end) / self.lr


def uniform_index(noise: Tensor, count: int) -> Tensor:
    """Standard-normal `noise` -> integers uniform on {0, ..., count - 1} (through the normal CDF)."""
    uniform = 0.5 * (1 + torch.erf(noise.double() / math.sqrt(2)))
    return (uniform * count).floor().long().clamp_(0, count - 1)


def integrate(velocity: VelocityFn, start: Tensor, grid: Tensor, solver: str) -> Tensor:
    """Fixed-grid ODE solve of dy/dt = velocity(y, t) over `grid` (1-D, increasing). `rk4` is torchdiffeq's
    "rk4" (the 3/8 rule, 4 evaluations per interval), `euler` one evaluation per interval. `velocity` also gets
    the running evaluation index."""
    y, evaluation = start, 0
    for t0, t1 in itertools.pairwise(grid):
        dt = t1 - t0
        if solver == "euler":
            y = y + dt * velocity(y, float(t0), evaluation)
            evaluation += 1
            continue
        k1 = velocity(y, float(t0), evaluation)
        k2 = velocity(y + dt * k1 * (1 / 3), float(t0 + dt * (1 / 3)), evaluation + 1)
        k3 = velocity(y + dt * (k2 - k1 * (1 / 3)), float(t0 + dt * (2 / 3)), evaluation + 2)
        k4 = velocity(y + dt * (k1 - k2 + k3), float(t1), evaluation + 3)
        y = y + (k1 + 3 * (k2 + k3) + k4) * dt * 0.125
        evaluation += 4
    return y


class River(VideoPredictor):
    """RIVER on frames of `frame_shape` with a frozen river-vqvae (`ae.backbone`) and the vector-field regressor
    (`vector_field_regressor`)."""

    def __init__(self, config: RiverConfig, frame_shape: tuple[int, int, int],
                 autoencoder: RiverVQVAE | RiverVQGAN | None = None) -> None:
        super().__init__()
        if config.vqgan is not None:  # a taming VQGAN under `ae.` (official ldm-vq keys)
            weights = None if autoencoder is None else autoencoder.state_dict()
            autoencoder = FrozenVQGAN(config.vqgan, frame_shape, weights)  # type: ignore[assignment]
        elif autoencoder is None:
            autoencoder = RiverVQVAE(config.vqvae, frame_shape)
        elif autoencoder.config != config.vqvae:
            raise VpkitError("the autoencoder given to River does not have the architecture of config.vqvae")
        self.config = config
        self.frame_shape = tuple(frame_shape)  # type: ignore[assignment]
        self.ae = autoencoder if config.vqgan is not None else FrozenAutoencoder(autoencoder)
        self.latent_shape = autoencoder.latent_shape
        self.vector_field_regressor = VectorFieldRegressor(config, self.latent_shape)
        self.refiner = None if config.refiner_net is None else RCAN(config.refiner_net, frame_shape[0])
        if self.refiner is not None:  # a trained river-refiner, applied after decoding; never trained here
            self.refiner.requires_grad_(False)

    # -- training ---------------------------------------------------------------------------------------------------
    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """The flow-matching loss with the official random draws, in the official order: target indices, the
        conditioning index of each video, then the noise and the times."""
        batch, length = video.shape[:2]
        if length < 3:
            raise VpkitError(f"RIVER trains on clips of at least 3 frames; got {length}.")
        target_index = torch.randint(2, length, (batch,))
        conditioning_index = torch.cat([torch.randint(0, int(s) - 1, (1,)) for s in target_index])
        return self.flow_matching_loss(video, target_index, conditioning_index)

    def flow_matching_loss(self, video: Tensor, target_index: Tensor, conditioning_index: Tensor,
                           noise: Tensor | None = None, time: Tensor | None = None) -> StepOutput:
        """The loss for given draws: target/conditioning frame indices `[B]` (CPU), the noise `[B, c, h, w]`
        and the times `[B]` (drawn here when None)."""
        batch = video.shape[0]
        rows = torch.arange(batch)
        reference_index = target_index - 1
        frames = torch.stack([video[rows, target_index], video[rows, reference_index],
                              video[rows, conditioning_index]], dim=1)
        with torch.no_grad():
            latents = self.ae.encode(frames.flatten(0, 1)).view(batch, 3, *self.latent_shape)
        target, reference, conditioning = latents.unbind(1)
        if noise is None:
            noise = torch.randn_like(target)
        if time is None:
            time = torch.rand(batch)
        t = time.to(target.device, target.dtype).view(batch, 1, 1, 1)
        sigma = self.config.sigma
        state = (1 - (1 - sigma) * t) * noise + t * target
        velocity_target = (target - (1 - sigma) * state) / (1 - (1 - sigma) * t)
        distance = (reference_index - conditioning_index).to(target.device)
        velocity = self.vector_field_regressor(state, reference, conditioning, distance, t.view(batch))
        full = torch.promote_types(velocity.dtype, torch.float32)  # float32 under autocast, float64 stays
        loss = F.mse_loss(velocity.to(full), velocity_target.to(full))
        return StepOutput(loss)

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        """AdamW (betas 0.9, 0.999) over the regressor (the autoencoder is frozen), stepped under the official
        warm-up + polynomial decay (its step 0 has lr 0, as official)."""
        c = self.config
        if c.autoencoder_source is None:
            raise VpkitError("RIVER flows in the latent space of a trained autoencoder: pass "
                             "--set model.autoencoder=RUN/checkpoints/last (train one first with "
                             "`vpkit train --plugin river --model river-vqvae`).")
        opt = torch.optim.AdamW(self.vector_field_regressor.parameters(), lr=c.lr, weight_decay=c.weight_decay,
                                betas=(0.9, 0.999))
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, PolynomialWarmupDecay(
            c.lr, c.warmup_steps, c.decay_steps, c.decay_power, c.lr_end))
        return Optimization([opt], [schedule])

    # -- sampling ---------------------------------------------------------------------------------------------------
    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        """`initial_noise`: the ODE's starting noise of each generated frame; `conditioning_noise`: one draw per
        vector-field evaluation of each frame, picking the conditioning frame."""
        return {"initial_noise": (batch, horizon, *self.latent_shape),
                "conditioning_noise": (batch, horizon, self.config.evaluations_per_frame)}

    def export_plan(self) -> ExportPlan:
        """Graphs `encode` (frames -> latents), `vector_field` (one evaluation) and `decode` (latents ->
        quantised -> frames); the conditioning frame is gathered outside the graphs."""
        param = next(self.vector_field_regressor.parameters())
        device, dtype = param.device, param.dtype
        gen = torch.Generator().manual_seed(0)
        batch = 2

        def randn(*shape: int) -> Tensor:
            return torch.randn(shape, generator=gen).to(device, dtype)

        frames = torch.rand((batch, *self.frame_shape), generator=gen).to(device, dtype)
        codec = getattr(self.ae, "backbone", self.ae)  # FrozenAutoencoder wraps a river-vqvae; FrozenVQGAN is one
        graphs = autoencoder_graphs(codec, frames, randn(batch, *self.latent_shape))
        names = ("state", "reference", "conditioning", "distance", "time")
        examples = (randn(batch, *self.latent_shape), randn(batch, *self.latent_shape),
                    randn(batch, *self.latent_shape), torch.tensor([1.0, 3.0]).to(device, dtype),
                    torch.tensor([0.0, 0.5]).to(device, dtype))
        axis = {0: "batch"}
        graphs["vector_field"] = Graph(VectorFieldGraph(self.vector_field_regressor), names, ("velocity",), examples,
                                       {name: axis for name in (*names, "velocity")})
        if self.refiner is not None:
            graphs["refine"] = refine_graph(self.refiner, self.frame_shape, device, dtype)
        return ExportPlan(graphs)

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """Generate `horizon` frames after `context` `[B, T0, C, H, W]`, one at a time (official
        `generate_frames` with this config's solver, steps and warm start); returns the predicted frames only."""
        c = self.config
        batch, n_context = context.shape[:2]
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        for name, shape in self.noise_shapes(batch, n_context, horizon).items():
            if name not in noise or tuple(noise[name].shape) != shape:
                got = tuple(noise[name].shape) if name in noise else "nothing"
                raise VpkitError(f"rollout needs noise '{name}' of shape {shape}; got {got}.")
        encoded = backend.run("encode", {"frames": context.flatten(0, 1)})["latents"]
        latents = list(encoded.view(batch, n_context, *encoded.shape[1:]).unbind(1))
        if n_context == 1:
            latents = latents * 2  # reference = conditioning = the only frame, distance 1 (official)
        rows = torch.arange(batch, device=context.device)
        sigma, s = c.sigma, c.warm_start
        grid = torch.linspace(s, 1, c.grid_points)
        generated = []
        for k in range(horizon):
            history = torch.stack(latents, dim=1)  # [B, L, c, h, w]; the newest is the reference
            newest = len(latents) - 1
            reference = latents[-1]
            picks = uniform_index(noise["conditioning_noise"][:, k], newest).to(context.device)  # [B, evaluations]

            def velocity(y: Tensor, t: float, evaluation: int, history: Tensor = history, newest: int = newest,
                         reference: Tensor = reference, picks: Tensor = picks) -> Tensor:
                index = picks[:, evaluation]  # a fresh conditioning frame for every evaluation, per video
                return backend.run("vector_field", {
                    "state": y, "reference": reference, "conditioning": history[rows, index],
                    "distance": (newest - index).to(y.dtype),
                    "time": torch.full((batch,), t, dtype=y.dtype, device=y.device),
                })["velocity"]

            eps = noise["initial_noise"][:, k].to(reference.dtype)
            start = (1 - (1 - sigma) * s) * eps + s * reference
            latent = integrate(velocity, start, grid.to(reference.device, reference.dtype), c.solver)
            latents.append(latent)
            generated.append(latent)
        frames = backend.run("decode", {"latents": torch.stack(generated, dim=1).flatten(0, 1)})["frames"]
        frames = frames.view(batch, horizon, *frames.shape[1:])
        if c.refiner_net is not None:  # frame by frame, each with the previous refined (first: last context) frame
            frames = refine_sequence(backend, context[:, -1], frames)
        return frames


class VectorFieldGraph(nn.Module):
    def __init__(self, regressor: VectorFieldRegressor) -> None:
        super().__init__()
        self.regressor = regressor

    def forward(self, state: Tensor, reference: Tensor, conditioning: Tensor, distance: Tensor,
                time: Tensor) -> tuple[Tensor]:
        return (self.regressor(state, reference, conditioning, distance, time),)


def build_river(config: RiverConfig, frame_shape: tuple[int, int, int]) -> River:
    """Reads the autoencoder checkpoint `config.autoencoder` (weights and architecture) when set; otherwise builds
    the architecture `config.vqvae` (a RIVER checkpoint's saved config: its weights come with the checkpoint).
    Likewise reads the river-refiner checkpoint `config.refiner` once, keeping its weights under `refiner.`."""
    if config.refiner is not None:
        net, weights = load_refiner_weights(config.refiner, frame_shape)
        model = build_river(config.model_copy(update={"refiner": None, "refiner_source": config.refiner,
                                                      "refiner_net": net}), frame_shape)
        model.refiner.load_state_dict(weights)  # type: ignore[union-attr]
        return model
    if config.autoencoder is None:
        return River(config, frame_shape)
    autoencoder = load_autoencoder(config.autoencoder, frame_shape)
    # the checkpoint's architecture replaces the preset's (a vqvae checkpoint clears a preset's VQGAN shape)
    shape = {"vqgan": autoencoder.config} if isinstance(autoencoder, RiverVQGAN) else {
        "vqvae": autoencoder.config, "vqgan": None}
    config = config.model_copy(update={"autoencoder": None, "autoencoder_source": config.autoencoder, **shape})
    return River(config, frame_shape, autoencoder)


def reconfigure(model: River, config: RiverConfig) -> River:
    """`model` with a new sampling config (`vpkit predict/eval/export --steps/--solver/--warm-start/--refine`): rebuilt
    with its own weights; a `refiner` checkpoint then replaces any refinement network it had."""
    from vpkit.core.sampling import rebuild
    from vpkit_river.refiner import with_refiner

    model = rebuild(build_river, model, config.model_copy(update={"refiner": None}))  # type: ignore[assignment]
    return model if config.refiner is None else with_refiner(model, config.refiner)
