"""RIVER's refinement network (official `refinement/`): an RCAN that removes the autoencoder's artefacts from a frame
given the previous frame, trained as the official `refinement/train.py`, and applied to RIVER's generated frames.

Network (official `refinement/rcan.py`, Zhang et al. 2018): the previous frame and the autoencoded current frame,
concatenated on channels (in [-1, 1]) -> conv3x3 head (64 ch) -> `stages` residual groups, each `blocks` residual
channel-attention blocks (conv3x3 - ReLU - conv3x3 - channel attention: global average pool, 1x1 down by
`reduction`, ReLU, 1x1 up, sigmoid, scale) + a conv3x3, with a skip around the group -> conv3x3 -> skip around the
body -> conv3x3 tail to the frame's channels (optional tanh, off by default). The output replaces the frame (it is
not added to the input). Training defaults 3 x 3 x 64, reduction 8: 827,531 parameters (the class defaults 4 x 5:
1,688,931). State-dict keys are the official ones (`head.*`, `body.*`, `tail.*`), under `refiner.` here.

Objective (official `forward` in `refinement/train.py`): on a clip of ground-truth frames x_0..x_T (the official
17-frame BAIR clips), target = x_1..x_T, input = (x_{t-1}, decode(encode(x_t))) through the frozen autoencoder;
loss = MSE (or L1) between refined and target frames in [-1, 1] + `perceptual_weight` (0.1) x MSE between I3D
features (StyleGAN-V `i3d_torchscript.pt`, `rescale=False, resize=True, return_features=True`) of the refined and
the target clips. AdamW (weight decay 5e-4) or SGD (momentum 0.9), lr 3e-4 x batch / 256 (linear scaling rule),
linear warm-up from 0 then a per-step cosine to 0.

How the paper applied it to generated frames is not released (`refinement/eval.py`: "TODO SEQUENTIAL
(Autoregressive) REFINED"). `river` with `refiner=CKPT` refines frame by frame after decoding: the first generated
frame with the last context frame as its previous frame, every later one with the previous *refined* frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from vpkit.core.config import BaseConfig
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
from vpkit.core.specs import ModelSpec, Preset
from vpkit_river.config import RCANConfig, VQVAEConfig
from vpkit_river.vqgan_config import VQGANConfig

if TYPE_CHECKING:
    from vpkit.core.config import TrainConfig

# -- config -----------------------------------------------------------------------------------------------------------


class RefinerConfig(BaseConfig):
    """`river-refiner`: the RCAN, its objective and optimiser, and the frozen autoencoder whose artefacts it learns
    to remove (read from `autoencoder`, a river-vqvae / river-vqgan checkpoint, as `river` does; the weights are
    then kept in the refiner's checkpoint under `ae.`)."""

    rcan: RCANConfig = Field(default_factory=RCANConfig, description="the network")
    autoencoder: str | None = Field(None, description="river-vqvae or river-vqgan checkpoint of the frozen "
                                    "autoencoder (official --vqgan_path)")
    autoencoder_source: str | None = Field(None, description="where the autoencoder's weights came from")
    vqvae: VQVAEConfig | None = Field(None, description="architecture of a frozen river-vqvae (set when "
                                      "`autoencoder` is read)")
    vqgan: VQGANConfig | None = Field(None, description="architecture of a frozen river-vqgan (set when "
                                      "`autoencoder` is read)")
    pixel_loss: Literal["mse", "l1"] = Field("mse", description="official: MSE (--l1 for L1)")
    perceptual_weight: float = Field(0.1, ge=0, description="weight of the I3D feature MSE (official 0.1; "
                                     "needs i3d_torchscript.pt and clips of at least 10 target frames)")
    i3d: str | None = Field(None, description="path of i3d_torchscript.pt (default: vpkit's FVD cache)")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="official --optim adam (AdamW) or sgd")
    lr: float = Field(3e-4, gt=0, description="base learning rate, multiplied by batch / 256 (official)")
    weight_decay: float = Field(5e-4, ge=0, description="official 5e-4")
    warmup_steps: int = Field(3_605, ge=0, description="linear warm-up from 0 (official 2 epochs: BAIR's 43,264 "
                              "training videos at batch 24 on one GPU)")
    total_steps: int = Field(18_027, gt=0, description="end of the cosine decay to 0 (official 10 epochs)")
    n_context: int = Field(1, gt=0, description="frames before the first target of a training clip (official 1: "
                           "targets are frames 1..16 of a 17-frame clip)")
    n_future: int = Field(16, gt=0, description="targets per training clip (official 16)")

    @model_validator(mode="after")
    def _check(self) -> RefinerConfig:
        if self.perceptual_weight > 0 and self.n_context + self.n_future - 1 < 10:
            raise ValueError(f"the I3D perceptual loss needs clips of at least 10 target frames; n_context + "
                             f"n_future - 1 = {self.n_context + self.n_future - 1} (or set perceptual_weight=0)")
        if self.total_steps < self.warmup_steps:
            raise ValueError(f"total_steps ({self.total_steps}) must not be below warmup_steps ({self.warmup_steps})")
        return self


# -- the network (official key layout) -------------------------------------------------------------------------------


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels: `conv_du` = 1x1 down, ReLU, 1x1 up, sigmoid on the pooled map."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        squeezed = channels // reduction
        self.conv_du = nn.Sequential(nn.Conv2d(channels, squeezed, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(squeezed, channels, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class AttentionBlock(nn.Module):
    """Residual channel-attention block: x + attention(conv(relu(conv(x))))."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels)]
        if reduction > 0:
            layers.append(ChannelAttention(channels, reduction))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """`blocks` attention blocks and a conv3x3, with a skip around them."""

    def __init__(self, channels: int, reduction: int, blocks: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*(AttentionBlock(channels, reduction) for _ in range(blocks)),
                                  conv3x3(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class RCAN(nn.Module):
    """(previous frame, autoencoded frame) `[N, 2C, H, W]` in [-1, 1] -> refined frame `[N, C, H, W]`."""

    def __init__(self, config: RCANConfig, channels: int = 3) -> None:
        super().__init__()
        c = config
        self.head = conv3x3(2 * channels, c.channels)
        self.body = nn.Sequential(*(ResidualGroup(c.channels, c.reduction, c.blocks) for _ in range(c.stages)),
                                  conv3x3(c.channels, c.channels))
        tail = conv3x3(c.channels, channels)
        self.tail = nn.Sequential(tail, nn.Tanh()) if c.tanh else tail

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(x)
        return self.tail(features + self.body(features))

    def refine(self, previous: Tensor, decoded: Tensor) -> Tensor:
        """Frames in [0, 1] -> the refined frame in [0, 1] (clamped)."""
        out = self(torch.cat([previous * 2 - 1, decoded * 2 - 1], dim=1))
        return ((out + 1) / 2).clamp(0, 1)


class RefineGraph(nn.Module):
    """Exportable: (`previous`, `decoded`) frames in [0, 1] -> `frames` (refined, in [0, 1])."""

    def __init__(self, rcan: RCAN) -> None:
        super().__init__()
        self.rcan = rcan

    def forward(self, previous: Tensor, decoded: Tensor) -> tuple[Tensor]:
        return (self.rcan.refine(previous, decoded),)


def refine_graph(rcan: RCAN, frame_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Graph:
    gen = torch.Generator().manual_seed(0)
    examples = tuple(torch.rand((2, *frame_shape), generator=gen).to(device, dtype) for _ in range(2))
    axis = {0: "batch"}
    return Graph(RefineGraph(rcan), ("previous", "decoded"), ("frames",), examples,
                 {"previous": axis, "decoded": axis, "frames": axis})


def refine_sequence(backend: Backend, previous: Tensor, decoded: Tensor) -> Tensor:
    """Refine decoded frames `[B, T, C, H, W]` one after the other, each with the previous refined frame (the first
    with `previous` `[B, C, H, W]`) through `backend`'s `refine` graph."""
    out = []
    for k in range(decoded.shape[1]):
        previous = backend.run("refine", {"previous": previous, "decoded": decoded[:, k]})["frames"]
        out.append(previous)
    return torch.stack(out, dim=1)


class CosineWarmup:
    """LR factor of the official `cosine_scheduler` (picklable): linspace(0, 1, warmup) during the warm-up, then
    0.5 (1 + cos(pi i / (total - warmup))) to 0, and 0 after `total`."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup - 1)
        if step >= self.total:
            return 0.0
        return 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / (self.total - self.warmup)))


# -- the vpkit model ---------------------------------------------------------------------------------------------------


class RiverRefiner(VideoPredictor):
    """The RCAN (`refiner.*`) with its frozen autoencoder (`ae.*`, as in `river`). As a predictor it repeats the
    refined reconstruction of the last context frame (deterministic), so validation scores reconstruction +
    refinement."""

    def __init__(self, config: RefinerConfig, frame_shape: tuple[int, int, int], autoencoder: Any = None) -> None:
        super().__init__()
        self.config = config
        self.frame_shape = tuple(frame_shape)  # type: ignore[assignment]
        self.ae = frozen_autoencoder(config, frame_shape, autoencoder)
        self.refiner = RCAN(config.rcan, frame_shape[0])
        object.__setattr__(self, "_i3d", None)  # the perceptual loss's I3D: loaded on first use, never saved

    def reconstruct(self, frames: Tensor) -> Tensor:
        """Frames in [0, 1] -> autoencoded (quantised) frames in [0, 1], unclamped (as the official training)."""
        with torch.no_grad():
            return self.ae.decode(self.ae.encode(frames))

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """Official objective on `video` `[B, T, C, H, W]`: targets frames 1..T-1, each refined from (the true
        previous frame, its own reconstruction); pixel loss + perceptual_weight x I3D feature MSE, in [-1, 1]."""
        c = self.config
        batch, length = video.shape[:2]
        if length < 2:
            raise VpkitError(f"river-refiner trains on clips of at least 2 frames; got {length}.")
        target = video[:, 1:].flatten(0, 1)
        recon = self.reconstruct(target)
        refined = self.refiner(torch.cat([video[:, :-1].flatten(0, 1) * 2 - 1, recon * 2 - 1], dim=1))
        full = torch.promote_types(refined.dtype, torch.float32)
        refined, target = refined.to(full), (target * 2 - 1).to(full)
        error = F.mse_loss if c.pixel_loss == "mse" else F.l1_loss
        pixel = error(refined, target)
        logs: dict[str, float | Tensor] = {"pixel": pixel.detach(), "recon_pixel": error(recon * 2 - 1, target)}
        loss = pixel
        if c.perceptual_weight > 0:
            i3d = self.i3d(video.device)

            def features(frames: Tensor) -> Tensor:  # [B*T', C, H, W] -> I3D features of [B, 3, T', H, W] clips
                clips = frames.view(batch, length - 1, *frames.shape[1:]).transpose(1, 2)
                if clips.shape[1] == 1:
                    clips = clips.expand(-1, 3, -1, -1, -1)
                return i3d(clips, rescale=False, resize=True, return_features=True)

            with torch.no_grad():
                reference = features(target)
            perceptual = F.mse_loss(features(refined), reference)
            loss = loss + c.perceptual_weight * perceptual
            logs["perceptual"] = perceptual.detach()
        return StepOutput(loss, logs)

    def i3d(self, device: torch.device) -> Any:
        """The frozen I3D of the perceptual loss (loaded once; not part of the state dict)."""
        if self._i3d is None:
            from vpkit.plugins.metrics.fvd import load_i3d

            module, _, _ = load_i3d(self.config.i3d)
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
            object.__setattr__(self, "_i3d", module)
        return self._i3d.to(device)

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        """AdamW / SGD over the RCAN, lr x batch / 256, under the official warm-up + cosine schedule."""
        c = self.config
        if c.autoencoder_source is None:
            raise VpkitError("river-refiner learns to clean a trained autoencoder's reconstructions: pass "
                             "--set model.autoencoder=RUN/checkpoints/last (a river-vqvae or river-vqgan run).")
        lr = c.lr * (train.batch_size if train is not None else 256) / 256
        params = self.refiner.parameters()
        opt: torch.optim.Optimizer
        if c.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=c.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=c.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, CosineWarmup(c.warmup_steps, c.total_steps))
        return Optimization([opt], [schedule])

    # -- sampling ---------------------------------------------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        return False

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        return {}

    def export_plan(self) -> ExportPlan:
        """Graphs `encode`, `decode` (the autoencoder's, as in `river`) and `refine`."""
        from vpkit_river.vqvae import autoencoder_graphs

        param = next(self.refiner.parameters())
        gen = torch.Generator().manual_seed(0)
        frames = torch.rand((2, *self.frame_shape), generator=gen).to(param.device, param.dtype)
        codec = getattr(self.ae, "backbone", self.ae)  # a river-vqvae inside FrozenAutoencoder, or a FrozenVQGAN
        latents = torch.randn((2, *codec.latent_shape), generator=gen).to(param.device, param.dtype)
        graphs = autoencoder_graphs(codec, frames, latents)
        graphs["refine"] = refine_graph(self.refiner, self.frame_shape, param.device, param.dtype)
        return ExportPlan(graphs)

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """The last context frame autoencoded and refined (with the frame before it, or itself), `horizon` times."""
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        latents = backend.run("encode", {"frames": context[:, -1]})["latents"]
        decoded = backend.run("decode", {"latents": latents})["frames"]
        previous = context[:, -2] if context.shape[1] > 1 else context[:, -1]
        frames = backend.run("refine", {"previous": previous, "decoded": decoded})["frames"]
        return frames.unsqueeze(1).expand(-1, horizon, *frames.shape[1:]).contiguous()


def frozen_autoencoder(config: RefinerConfig, frame_shape: tuple[int, int, int], autoencoder: Any = None) -> nn.Module:
    """The frozen autoencoder as `river` holds it: a river-vqgan as `ae.*`, a river-vqvae as `ae.backbone.*`."""
    from vpkit_river.model import FrozenAutoencoder
    from vpkit_river.vqvae import RiverVQVAE

    if config.vqgan is not None:
        from vpkit_river.vqgan import FrozenVQGAN

        weights = None if autoencoder is None else autoencoder.state_dict()
        return FrozenVQGAN(config.vqgan, frame_shape, weights)
    if autoencoder is None:
        autoencoder = RiverVQVAE(config.vqvae or VQVAEConfig(), frame_shape)
    return FrozenAutoencoder(autoencoder)


def build_refiner(config: RefinerConfig, frame_shape: tuple[int, int, int]) -> RiverRefiner:
    """Reads the autoencoder checkpoint `config.autoencoder` when set (weights and architecture, as `river`)."""
    if config.autoencoder is None:
        return RiverRefiner(config, frame_shape)
    from vpkit_river.model import load_autoencoder

    autoencoder = load_autoencoder(config.autoencoder, frame_shape)
    kind = "vqvae" if type(autoencoder).__name__ == "RiverVQVAE" else "vqgan"
    config = config.model_copy(update={"autoencoder": None, "autoencoder_source": config.autoencoder,
                                       kind: autoencoder.config})
    return RiverRefiner(config, frame_shape, autoencoder)


def load_refiner_weights(path: str, frame_shape: tuple[int, int, int]) -> tuple[RCANConfig, dict[str, Tensor]]:
    """The RCAN architecture and weights (`head.*`, `body.*`, `tail.*`) of a river-refiner checkpoint."""
    from safetensors.torch import load_file

    from vpkit.core.checkpoint import WEIGHTS_FILE, read_checkpoint

    ckpt = read_checkpoint(path)
    if ckpt.model_key != "river-refiner":
        raise VpkitError(f"model.refiner={path} holds model '{ckpt.model_key}'; it must be a river-refiner "
                         "checkpoint (train one with: vpkit train --plugin river --model river-refiner).")
    if tuple(ckpt.frame_shape) != tuple(frame_shape):
        raise VpkitError(f"The refiner {path} was trained on frames {tuple(ckpt.frame_shape)}, this model makes "
                         f"{tuple(frame_shape)}.")
    config = RCANConfig(**ckpt.meta["model"]["config"]["rcan"])
    state = load_file(str(ckpt.path / WEIGHTS_FILE))
    return config, {k.removeprefix("refiner."): v for k, v in state.items() if k.startswith("refiner.")}


def with_refiner(model: Any, refiner: str) -> Any:
    """A copy of the `river` model `model` that refines its generated frames with the river-refiner checkpoint
    `refiner` (any refiner it had is replaced), on the same device and dtype, in eval mode."""
    from vpkit_river.model import River

    net, weights = load_refiner_weights(refiner, model.frame_shape)
    config = model.config.model_copy(update={"refiner": None, "refiner_source": str(refiner), "refiner_net": net})
    combined = River(config, model.frame_shape)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("refiner.")}
    combined.load_state_dict({**state, **{"refiner." + k: v for k, v in weights.items()}})
    parameter = next(model.parameters())
    return combined.to(device=parameter.device, dtype=parameter.dtype).eval()


# -- registration ------------------------------------------------------------------------------------------------------

TINY_REFINER = {"rcan": {"stages": 1, "blocks": 1, "channels": 8, "reduction": 4}, "perceptual_weight": 0.0,
                "n_context": 1, "n_future": 2, "warmup_steps": 1, "total_steps": 1000,
                "vqvae": {"num_embeddings": 64, "encoder_channels": 8, "decoder_channels": 32, "norm_groups": 4}}

REFINER_PRESETS = {
    "bair64": Preset(
        model={}, dataset="bair", data={"seq_len": 17}, train={"batch_size": 24, "steps": 18_027},
        frame_shape=(3, 64, 64),
        description="the official recipe (refinement/train.py): 17-frame BAIR clips, RCAN 3x3x64, MSE + 0.1 I3D, "
        "AdamW 3e-4 x 24/256, 10 epochs with 2 of warm-up (on a river-vqgan f8_small of BAIR)"),
    "smmnist": Preset(
        model={}, dataset="smmnist", train={"batch_size": 24, "steps": 18_027}, frame_shape=(1, 64, 64),
        description="the official recipe on Stochastic Moving MNIST (grey frames repeated to 3 channels for I3D)"),
    "tiny": Preset(
        model=TINY_REFINER, dataset="smmnist", train={"batch_size": 4}, frame_shape=(1, 64, 64),
        description="small widths, no perceptual loss, 3-frame clips, for tests"),
}

REFINER_SPEC = ModelSpec(
    name="river-refiner", config_cls=RefinerConfig, build=build_refiner, presets=REFINER_PRESETS,
    default_preset="smmnist",
    description="RIVER's RCAN refinement network (0.83 M): cleans autoencoded frames given the previous frame; "
    "needs --set model.autoencoder=CKPT; apply to RIVER's samples with vpkit predict/eval/export --refine CKPT",
)
