"""The VideoPredictor contract every model plugin implements.

Videos are batch-first float tensors `[B, T, C, H, W]` in [0, 1]. Sampling draws every random number up front
(`sample_noise`) and passes it to `rollout` as explicit tensors, so eager prediction and an exported graph driven
by the same `rollout` code are the same function of (context, noise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from vpkit.core.config import BaseConfig, TrainConfig


@dataclass
class StepOutput:
    """What `training_step` returns: the scalar loss to minimise and floats to log."""

    loss: Tensor
    logs: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass
class TrainContext:
    """Handed to `training_step`. `autocast()` enters the run's precision; models that optimise by hand
    (`Optimization.manual`) call `backward(loss)` and `optimizer_step(opt)` themselves."""

    step: int
    device: torch.device
    autocast: Callable[[], AbstractContextManager[Any]]
    backward: Callable[[Tensor], None]
    optimizer_step: Callable[[torch.optim.Optimizer], None]


@dataclass
class Optimization:
    """What `configure_optimizers` returns. Schedulers are stepped once per optimisation step."""

    optimizers: list[torch.optim.Optimizer]
    schedulers: list[Any] = field(default_factory=list)
    manual: bool = False


@dataclass
class Graph:
    """One exportable graph: a module whose `forward` takes `input_names` (in order) and returns a tuple in the
    order of `output_names`. `example_inputs` fixes shapes for tracing; `dynamic_axes` names the free axes."""

    module: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    example_inputs: tuple[Tensor, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    @property
    def batch_axes(self) -> dict[str, int]:
        """`{tensor name: axis}` of every input and output whose dynamic axis is named `batch`."""
        return {name: axis for name, axes in self.dynamic_axes.items() for axis, label in axes.items()
                if label == "batch"}


@dataclass
class ExportPlan:
    """The graphs a model is made of at inference time (e.g. encode / step / decode)."""

    graphs: dict[str, Graph]


class Backend(Protocol):
    """Runs a named graph: `run(name, inputs) -> outputs`, both keyed by the graph's names."""

    def run(self, name: str, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]: ...


class TorchBackend:
    """Runs an ExportPlan's graphs eagerly with PyTorch (the reference every exported backend is checked against)."""

    def __init__(self, plan: ExportPlan) -> None:
        self.plan = plan

    def run(self, name: str, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        graph = self.plan.graphs[name]
        outputs = graph.module(*(inputs[n] for n in graph.input_names))
        if isinstance(outputs, Tensor):
            outputs = (outputs,)
        return dict(zip(graph.output_names, outputs, strict=True))


class VideoPredictor(nn.Module):
    """Base class of every model. Subclasses set `config` and `frame_shape` and implement the methods below."""

    config: BaseConfig
    frame_shape: tuple[int, int, int]

    # -- training ---------------------------------------------------------------------------------------------
    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """One optimisation step's loss on `video` `[B, T, C, H, W]` (T = n_context + n_future of the recipe)."""
        raise NotImplementedError

    def configure_optimizers(self, train: TrainConfig) -> Optimization:
        """The optimisers (and schedules) this model trains with, hyper-parameters from its own config."""
        raise NotImplementedError

    # -- sampling ---------------------------------------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        """Whether `predict` draws different samples for different noise."""
        return True

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the standard-normal noise tensors `rollout` consumes."""
        raise NotImplementedError

    def sample_noise(
        self, batch: int, n_context: int, horizon: int, *, generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, Tensor]:
        """Draw every random number one rollout needs from `generator` (standard normal, float32)."""
        device = device if device is not None else next(self.parameters()).device
        gen_device = generator.device if generator is not None else device
        return {
            name: torch.randn(shape, generator=generator, device=gen_device).to(device)
            for name, shape in self.noise_shapes(batch, n_context, horizon).items()
        }

    def export_plan(self) -> ExportPlan:
        """The inference graphs; all randomness enters as explicit inputs."""
        raise NotImplementedError

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """Predict `horizon` frames after `context` `[B, T0, C, H, W]` by driving `backend`'s graphs.
        Returns `[B, horizon, C, H, W]` in [0, 1]. Parameters and buffers must be reached only through the graphs:
        an export's rollout runs on a copy of the model built on the meta device (no data)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(
        self, context: Tensor, horizon: int, *, num_samples: int = 1, generator: torch.Generator | None = None,
        backend: Backend | None = None,
    ) -> Tensor:
        """`num_samples` futures of `horizon` frames for each context video: `[B, S, horizon, C, H, W]`.
        `backend` runs the graphs (default: this module's own, eagerly), so exported graphs sample the same way."""
        batch, n_context = context.shape[:2]
        if not self.stochastic:
            num_samples = 1
        repeated = context.repeat_interleave(num_samples, dim=0)
        noise = self.sample_noise(batch * num_samples, n_context, horizon, generator=generator,
                                  device=context.device)
        frames = self.rollout(backend or TorchBackend(self.export_plan()), repeated, horizon, noise)
        return frames.view(batch, num_samples, horizon, *frames.shape[2:])
