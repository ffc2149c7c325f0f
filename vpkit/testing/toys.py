"""A toy model and toy videos, small enough to train in milliseconds, for engine and CLI tests.

`ToyPredictor` is a complete `VideoPredictor`: stochastic (it draws random numbers in `training_step`, like a VAE's
posterior sample), with BatchNorm buffers, an optional learning-rate schedule, an optional manual-optimisation path
with two optimisers, and export graphs. `ToyVideos` yields uint8 clips of a square moving across the frame, with
random pixel noise in the train split (drawn from the global RNG, as on-the-fly datasets do).
`register_toy_plugin()` registers both as model `toy` and dataset `toy-videos` under plugin name `toy`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

import vpkit
from vpkit.core.config import BaseConfig, TrainConfig
from vpkit.core.model import (
    Backend,
    ExportPlan,
    Graph,
    Optimization,
    StepOutput,
    TrainContext,
    VideoPredictor,
)
from vpkit.core.specs import DatasetSpec, ModelSpec, Preset

# -- model ----------------------------------------------------------------------------------------------------------


class ToyConfig(BaseConfig):
    """Settings of `ToyPredictor`; the last three switch on behaviours the trainer must handle."""

    n_context: int = 2
    n_future: int = 2
    hidden: int = 8
    noise_dim: int = 4
    lr: float = 1e-2
    schedule: bool = True  # a StepLR schedule, so scheduler state has to survive a resume
    manual: bool = False  # two optimisers stepped by hand through ctx.backward / ctx.optimizer_step
    nan_at_step: int | None = None  # the loss becomes NaN from this step index on
    batchnorm: bool = True  # False: no BatchNorm, so a batch's gradient is the mean of its videos' (data parallel)
    noise: bool = True  # False: zero noise in training, so a step is a deterministic function of the batch


class _StepGraph(nn.Module):
    """One prediction step, `(frame, noise) -> next_frame`: the toy's only export graph."""

    def __init__(self, encoder: nn.Module, noise_proj: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.noise_proj, self.decoder = encoder, noise_proj, decoder

    def forward(self, frame: Tensor, noise: Tensor) -> Tensor:
        hidden = self.encoder(frame) + self.noise_proj(noise)[:, :, None, None]
        return torch.sigmoid(self.decoder(hidden))


class ToyPredictor(VideoPredictor):
    """Predicts each frame from the previous one plus a noise vector; conv -> BatchNorm -> ReLU -> conv."""

    def __init__(self, config: ToyConfig, frame_shape: Sequence[int]) -> None:
        super().__init__()
        self.config = config
        self.frame_shape = tuple(frame_shape)  # type: ignore[assignment]
        channels = self.frame_shape[0]
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, config.hidden, 3, padding=1),
            nn.BatchNorm2d(config.hidden) if config.batchnorm else nn.Identity(), nn.ReLU()
        )
        self.noise_proj = nn.Linear(config.noise_dim, config.hidden)
        self.decoder = nn.Conv2d(config.hidden, channels, 3, padding=1)

    def _step(self, frame: Tensor, noise: Tensor) -> Tensor:
        return _StepGraph(self.encoder, self.noise_proj, self.decoder)(frame, noise)

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        batch, length = video.shape[:2]
        # Random numbers drawn from the global RNG in training, as a VAE's posterior sample would be.
        noise = torch.randn(batch, length - 1, self.config.noise_dim, device=video.device)
        if not self.config.noise:
            noise = torch.zeros_like(noise)
        preds = torch.stack([self._step(video[:, t - 1], noise[:, t - 1]) for t in range(1, length)], dim=1)
        mse = F.mse_loss(preds.float(), video[:, 1:].float())
        loss = mse
        if self.config.nan_at_step is not None and ctx.step >= self.config.nan_at_step:
            loss = loss * float("nan")
        if self.config.manual:
            ctx.backward(loss)
            for opt in self._optimizers:
                ctx.optimizer_step(opt)
        return StepOutput(loss=loss, logs={"mse": mse.detach()})

    def configure_optimizers(self, train: TrainConfig) -> Optimization:
        if self.config.manual:
            first = list(self.encoder.parameters()) + list(self.noise_proj.parameters())
            optimizers = [torch.optim.Adam(first, lr=self.config.lr),
                          torch.optim.Adam(self.decoder.parameters(), lr=self.config.lr)]
        else:
            optimizers = [torch.optim.Adam(self.parameters(), lr=self.config.lr)]
        # Kept outside the module tree (optimisers are no submodules), for the manual path's training_step.
        self._optimizers = optimizers
        schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.9) for o in optimizers] \
            if self.config.schedule else []
        return Optimization(optimizers=optimizers, schedulers=schedulers, manual=self.config.manual)

    # -- sampling -------------------------------------------------------------------------------------------------
    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        return {"noise": (batch, horizon, self.config.noise_dim)}

    def export_plan(self) -> ExportPlan:
        channels, height, width = self.frame_shape
        step = _StepGraph(self.encoder, self.noise_proj, self.decoder)
        example = (torch.zeros(1, channels, height, width), torch.zeros(1, self.config.noise_dim))
        return ExportPlan(graphs={"step": Graph(
            module=step, input_names=("frame", "noise"), output_names=("next_frame",), example_inputs=example,
            dynamic_axes={"frame": {0: "batch"}, "noise": {0: "batch"}, "next_frame": {0: "batch"}},
        )})

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        frame, frames = context[:, -1], []
        for t in range(horizon):
            frame = backend.run("step", {"frame": frame, "noise": noise["noise"][:, t]})["next_frame"]
            frames.append(frame)
        return torch.stack(frames, dim=1)


def build_toy(config: BaseConfig, frame_shape: tuple[int, int, int]) -> ToyPredictor:
    assert isinstance(config, ToyConfig)
    return ToyPredictor(config, frame_shape)


# -- data -----------------------------------------------------------------------------------------------------------


class ToyVideosConfig(BaseConfig):
    """Settings of `ToyVideos`."""

    num_videos: int = 32
    seq_len: int = 6
    size: int = 8
    channels: int = 1
    batched: bool = True  # implement `__getitems__` (build a whole batch at once)


class ToyVideos(Dataset):
    """uint8 clips `[seq_len, C, size, size]` of a 3x3 square moving one pixel per frame from an index-dependent
    start. The train split adds pixel noise from the global torch RNG; the test split is a fixed function of the
    index."""

    def __init__(self, config: ToyVideosConfig, split: str = "train") -> None:
        self.config = config
        self.split = split
        self.frame_shape = (config.channels, config.size, config.size)

    def __len__(self) -> int:
        return self.config.num_videos

    def __getitem__(self, index: int) -> Tensor:
        cfg = self.config
        if not 0 <= index < len(self):
            raise IndexError(index)
        video = torch.zeros(cfg.seq_len, cfg.channels, cfg.size, cfg.size, dtype=torch.uint8)
        row = index % (cfg.size - 2)
        for t in range(cfg.seq_len):
            col = (index + t) % (cfg.size - 2)
            video[t, :, row: row + 3, col: col + 3] = 255
        if self.split == "train":
            video = (video.int() + torch.randint(0, 40, video.shape)).clamp(0, 255).to(torch.uint8)
        return video


class BatchedToyVideos(ToyVideos):
    """`ToyVideos` that also builds a whole batch at once, counting how often it was asked to."""

    def __init__(self, config: ToyVideosConfig, split: str = "train") -> None:
        super().__init__(config, split)
        self.batch_calls = 0

    def __getitems__(self, indices: Sequence[int]) -> Tensor:
        self.batch_calls += 1
        return torch.stack([self[i] for i in indices])


def build_toy_videos(config: BaseConfig, split: str) -> ToyVideos:
    assert isinstance(config, ToyVideosConfig)
    return (BatchedToyVideos if config.batched else ToyVideos)(config, split)


# -- plugin ---------------------------------------------------------------------------------------------------------


class ToyPlugin:
    """Registers model `toy` (preset `tiny`) and dataset `toy-videos`."""

    @staticmethod
    @vpkit.hookimpl
    def register_models(register: Any) -> None:
        register(ModelSpec(
            name="toy", config_cls=ToyConfig, build=build_toy, default=True, default_preset="tiny",
            presets={"tiny": Preset(dataset="toy-videos", frame_shape=(1, 8, 8), train={
                "steps": 4, "batch_size": 4, "val_every": 2, "val_videos": 4, "sample_every": 2,
                "checkpoint_every": 2, "log_every": 1, "val_metric": "psnr",
            }, description="seconds on a CPU")},
            description="toy predictor for tests",
        ))

    @staticmethod
    @vpkit.hookimpl
    def register_datasets(register: Any) -> None:
        register(DatasetSpec(name="toy-videos", config_cls=ToyVideosConfig, build=build_toy_videos,
                             splits=("train", "test"), description="moving squares for tests"))


def register_toy_plugin(host: Any = None) -> Any:
    """Register `ToyPlugin` as plugin `toy` on `host` (default: the process-wide host) unless it already is."""
    if host is None:
        from vpkit.core.plugins import get_host

        host = get_host()
    if host.pm.get_plugin("toy") is None:
        host.register_plugin(ToyPlugin(), name="toy", distribution="vpkit-toy", version="0.0")
    return host
