"""The conformance suite every model plugin runs: shapes, gradients, seeding, save/load, export parity and an
ONNX export checked against eager PyTorch.

A plugin subclasses `ModelConformance` in its tests with a tiny config:

    class TestSVGLP(ModelConformance):
        model_key = "svg-lp"
        preset = "tiny"
        config_overrides = {"z_dim": 3}

pytest collects the subclass (its name starts with `Test`) and runs every `test_*` method on a fresh model.
The same checks are plain functions over a `Harness` (`CHECKS`), so the core test-suite can run them over every
registered model (`tests/test_conformance_registry.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor

from vpkit.core.config import build_config
from vpkit.core.model import TorchBackend, TrainContext, VideoPredictor
from vpkit.core.specs import ModelSpec

# -- setup ----------------------------------------------------------------------------------------------------------


def make_train_context(device: torch.device | str = "cpu", step: int = 0) -> TrainContext:
    """A full-precision `TrainContext`; `backward` records that it was called (for models that optimise by hand)."""
    calls: list[Tensor] = []

    def backward(loss: Tensor) -> None:
        calls.append(loss)
        loss.backward()

    ctx = TrainContext(step=step, device=torch.device(device), autocast=contextlib.nullcontext,
                       backward=backward, optimizer_step=lambda opt: opt.step())
    ctx.backward_calls = calls  # type: ignore[attr-defined]
    return ctx


@dataclass
class Harness:
    """A freshly built model and the inputs every check uses."""

    spec: ModelSpec
    model: VideoPredictor
    frame_shape: tuple[int, int, int]
    context: Tensor
    horizon: int
    video: Tensor
    num_samples: int = 2
    seed: int = 0
    atol: float = 1e-5
    tmp_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + offset)


def prepare(
    spec: ModelSpec,
    *,
    preset: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    frame_shape: tuple[int, int, int] = (1, 64, 64),
    batch_size: int = 2,
    n_context: int = 2,
    horizon: int = 3,
    train_frames: int | None = None,
    num_samples: int = 2,
    seed: int = 0,
    atol: float = 1e-5,
    tmp_path: Path | None = None,
) -> Harness:
    """Build `spec`'s model from `preset`'s model overrides plus `config_overrides`, and seeded inputs.

    The training clip has `train_frames` frames; by default the config's `n_context + n_future` where it has those
    fields, else `n_context + horizon`."""
    layers = [spec.presets[preset].model if preset else None, config_overrides]
    config = build_config(spec.config_cls, *layers, what=f"{spec.name} conformance config")
    torch.manual_seed(seed)
    model = spec.build(config, frame_shape)
    if train_frames is None:
        if hasattr(config, "n_context") and hasattr(config, "n_future"):
            train_frames = config.n_context + config.n_future
        else:
            train_frames = n_context + horizon
    gen = torch.Generator().manual_seed(seed + 1000)
    video = torch.rand(batch_size, train_frames, *frame_shape, generator=gen)
    context = torch.rand(batch_size, n_context, *frame_shape, generator=gen)
    return Harness(spec, model, frame_shape, context, horizon, video, num_samples, seed, atol, tmp_path)


# -- checks ---------------------------------------------------------------------------------------------------------


def check_predict_shapes(h: Harness) -> None:
    """`predict` gives `[B, S, horizon, C, H, W]` (S = 1 for deterministic models), finite, in [0, 1]."""
    h.model.eval()
    out = h.model.predict(h.context, h.horizon, num_samples=h.num_samples, generator=h.generator())
    samples = h.num_samples if h.model.stochastic else 1
    assert tuple(out.shape) == (h.context.shape[0], samples, h.horizon, *h.frame_shape)
    assert torch.isfinite(out).all(), "predict returned NaN/Inf"
    assert out.min() >= 0 and out.max() <= 1, f"predict left [0, 1]: [{out.min():.4g}, {out.max():.4g}]"


def check_training_step(h: Harness) -> None:
    """`training_step` returns a finite scalar and every parameter gets a finite gradient."""
    model = h.model
    model.train()
    model.zero_grad(set_to_none=True)
    ctx = make_train_context()
    out = model.training_step(h.video, ctx)
    assert out.loss.dim() == 0, f"loss must be a scalar, got shape {tuple(out.loss.shape)}"
    assert torch.isfinite(out.loss), f"loss is not finite: {out.loss}"
    if not ctx.backward_calls:  # type: ignore[attr-defined]
        out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    for name, value in out.logs.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), f"log '{name}' is not finite"


def check_seeding(h: Harness) -> None:
    """The same generator seed gives the same samples; a different seed different ones (stochastic models)."""
    h.model.eval()
    first = h.model.predict(h.context, h.horizon, num_samples=h.num_samples, generator=h.generator())
    again = h.model.predict(h.context, h.horizon, num_samples=h.num_samples, generator=h.generator())
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    if h.model.stochastic:
        other = h.model.predict(h.context, h.horizon, num_samples=h.num_samples, generator=h.generator(1))
        assert not torch.equal(first, other), "a different seed gave the same samples"


def _save(h: Harness, name: str = "ckpt") -> Path:
    """Train one step (so BatchNorm-style statistics leave their initial values) and save a checkpoint."""
    from vpkit.core.checkpoint import plugin_section, save_checkpoint

    assert h.tmp_path is not None, "this check needs a tmp_path"
    model = h.model
    model.train()
    with torch.no_grad():
        model.training_step(h.video, make_train_context())
    model.eval()
    try:
        plugin = plugin_section(h.spec.plugin)
    except KeyError:
        plugin = {"name": h.spec.plugin or "local", "distribution": "local", "version": "0"}
    data = {"name": "conformance", "frame_shape": list(h.frame_shape), "n_context": h.context.shape[1],
            "n_future": h.horizon}
    return save_checkpoint(h.tmp_path / name, model, model_key=h.spec.name, plugin=plugin, data=data)


def check_checkpoint_round_trip(h: Harness) -> None:
    """`save_checkpoint` then `load_model` rebuilds a model with identical predictions."""
    from vpkit.core.checkpoint import load_model

    path = _save(h)
    model = h.model
    loaded, _ = load_model(path)
    loaded.eval()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=f"weight {key} changed")
    expected = model.predict(h.context, h.horizon, num_samples=h.num_samples, generator=h.generator())
    got = loaded.predict(h.context, h.horizon, num_samples=h.num_samples, generator=h.generator())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def check_onnx_export(h: Harness) -> None:
    """`vpkit export --format onnx` passes its own parity check; the export directory, loaded as a runtime,
    predicts what the eager model predicts for the same seed, also for a batch size it was not traced with
    (dynamic batch axis); and every ONNX file carries the directory's vpkit.json in its metadata."""
    import json

    from vpkit.core.checkpoint import META_FILE
    from vpkit.engine.exporter import export_model
    from vpkit.engine.runtime import load_runtime
    from vpkit.plugins.exporters.onnx import available, read_metadata

    missing = available()
    if missing:
        pytest.skip(missing)
    path = _save(h)
    result = export_model(path, "onnx", options={"batch": h.context.shape[0]})
    assert result.parity["passed"] and result.parity["max_abs_error"] <= 1e-3, result.parity
    runtime = load_runtime(result.path)
    assert runtime.backend_name == "onnx"
    context = torch.cat([h.context, h.context[:1]])  # one more video than the export was traced with
    expected = h.model.predict(context, h.horizon, num_samples=h.num_samples, generator=h.generator())
    got = runtime.predict(context, h.horizon, num_samples=h.num_samples, generator=h.generator())
    torch.testing.assert_close(got, expected, rtol=0, atol=max(h.atol, 1e-4))
    meta = json.loads((result.path / META_FILE).read_text())
    for graph in meta["export"]["graphs"].values():
        assert read_metadata(result.path / graph["file"]) == meta, f"{graph['file']} lacks the vpkit metadata"


def check_export_parity(h: Harness) -> None:
    """`rollout` on a TorchBackend of `export_plan()` with noise from `sample_noise` equals `predict` for the
    same generator."""
    model = h.model
    model.eval()
    batch, n_context = h.context.shape[:2]
    with torch.no_grad():
        noise = model.sample_noise(batch, n_context, h.horizon, generator=h.generator()) if model.stochastic else {}
        rolled = model.rollout(TorchBackend(model.export_plan()), h.context, h.horizon, noise)
    predicted = model.predict(h.context, h.horizon, num_samples=1, generator=h.generator())
    assert tuple(rolled.shape) == (batch, h.horizon, *h.frame_shape)
    torch.testing.assert_close(rolled, predicted[:, 0], rtol=0, atol=h.atol)


def check_export_graphs(h: Harness) -> None:
    """Every graph of `export_plan()` has distinct input and output names (ONNX requires it), runs on its
    `example_inputs`, returns one tensor per output name, and has no random op inside (the same inputs give the
    same outputs whatever the global RNG state)."""
    model = h.model
    model.eval()
    plan = model.export_plan()
    assert plan.graphs, "export_plan() has no graphs"
    for name, graph in plan.graphs.items():
        assert len(graph.example_inputs) == len(graph.input_names), f"graph '{name}': inputs and names differ"
        names = (*graph.input_names, *graph.output_names)
        assert len(set(names)) == len(names), f"graph '{name}': a name is used twice in {names}"
        for axis_owner in graph.dynamic_axes:
            assert axis_owner in (*graph.input_names, *graph.output_names), f"graph '{name}': unknown '{axis_owner}'"
        runs = []
        for rng_seed in (1, 2):
            torch.manual_seed(rng_seed)
            with torch.no_grad():
                out = graph.module(*graph.example_inputs)
            runs.append((out,) if isinstance(out, Tensor) else tuple(out))
        assert len(runs[0]) == len(graph.output_names), (
            f"graph '{name}' returned {len(runs[0])} tensors for {len(graph.output_names)} output names"
        )
        for out_name, a, b in zip(graph.output_names, *runs, strict=True):
            assert torch.isfinite(a).all(), f"graph '{name}' output '{out_name}' is not finite"
            assert torch.equal(a, b), f"graph '{name}' output '{out_name}' depends on the global RNG"


CHECKS: dict[str, Callable[[Harness], None]] = {
    "predict_shapes": check_predict_shapes,
    "training_step": check_training_step,
    "seeding": check_seeding,
    "checkpoint_round_trip": check_checkpoint_round_trip,
    "export_parity": check_export_parity,
    "export_graphs": check_export_graphs,
    "onnx_export": check_onnx_export,
}


# -- the class plugins subclass ---------------------------------------------------------------------------------------


class ModelConformance:
    """Subclass as `Test...` and set `model_key` (and a tiny `preset` and/or `config_overrides`)."""

    model_key: ClassVar[str] = ""
    preset: ClassVar[str | None] = None
    config_overrides: ClassVar[Mapping[str, Any]] = {}
    frame_shape: ClassVar[tuple[int, int, int]] = (1, 64, 64)
    batch_size: ClassVar[int] = 2
    n_context: ClassVar[int] = 2
    horizon: ClassVar[int] = 3
    train_frames: ClassVar[int | None] = None
    num_samples: ClassVar[int] = 2
    seed: ClassVar[int] = 0
    atol: ClassVar[float] = 1e-5

    def model_spec(self) -> ModelSpec:
        """The spec under test; by default looked up in the plugin host's registry."""
        from vpkit.core.plugins import get_host

        return get_host().models.get(self.model_key)

    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        return prepare(
            self.model_spec(), preset=self.preset, config_overrides=self.config_overrides,
            frame_shape=self.frame_shape, batch_size=self.batch_size, n_context=self.n_context,
            horizon=self.horizon, train_frames=self.train_frames, num_samples=self.num_samples, seed=self.seed,
            atol=self.atol, tmp_path=tmp_path,
        )

    def test_predict_shapes(self, harness: Harness) -> None:
        check_predict_shapes(harness)

    def test_training_step(self, harness: Harness) -> None:
        check_training_step(harness)

    def test_seeding(self, harness: Harness) -> None:
        check_seeding(harness)

    def test_checkpoint_round_trip(self, harness: Harness) -> None:
        check_checkpoint_round_trip(harness)

    def test_export_parity(self, harness: Harness) -> None:
        check_export_parity(harness)

    def test_export_graphs(self, harness: Harness) -> None:
        check_export_graphs(harness)

    def test_onnx_export(self, harness: Harness) -> None:
        check_onnx_export(harness)
