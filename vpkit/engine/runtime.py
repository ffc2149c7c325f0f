"""Runtimes: a model's sampling code (`rollout`) bound to a backend that runs its graphs.

`load_runtime(path)` accepts a checkpoint directory (the eager PyTorch backend, optionally `torch.compile`d) or an
export directory (the backend of its format: ONNX Runtime, TensorRT, ...). Either way `Runtime.predict` samples
through the model's own `rollout`, so every backend predicts the same function of (context, noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vpkit.core.checkpoint import build_model, load_model, read_checkpoint
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit.core.model import Backend, ExportPlan, Graph, TorchBackend, VideoPredictor
from vpkit.core.plugins import get_host
from vpkit.core.specs import ExporterSpec

TORCH = "torch"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (default: cuda when available), with a clear error for a missing GPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise VpkitError(f"Unknown device '{device}'; use cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise VpkitError(f"--device {device} was asked for but no CUDA device is visible; use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise VpkitError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
    elif dev.type != "cpu":
        raise VpkitError(f"Unsupported device '{device}'; use cpu, cuda or cuda:N.")
    return dev


def resolve_format(name: str) -> ExporterSpec:
    """The export format called `name` or one of its aliases (e.g. trt, tensorrt, engine)."""
    exporters = get_host().exporters
    key = name.lower()
    for spec in exporters:
        if key == spec.name or key in spec.aliases:
            return spec
    known = [n for spec in exporters for n in (spec.name, *spec.aliases)]
    raise VpkitError(f"Unknown format '{name}'.{did_you_mean(name, known)} Formats: {', '.join(exporters.names())}.")


def compiled(plan: ExportPlan) -> ExportPlan:
    """The plan with every graph module wrapped in `torch.compile`."""
    return ExportPlan({name: Graph(torch.compile(g.module), g.input_names, g.output_names, g.example_inputs,
                                   g.dynamic_axes) for name, g in plan.graphs.items()})


class BatchedBackend:
    """Runs a backend whose graphs take a limited batch: splits larger batches (along each tensor's recorded batch
    axis) and, for static graphs, pads the last piece by repeating its entries. Predictions of a batch-independent
    model are unchanged; a model that normalises with batch statistics at sampling should be exported `dynamic`."""

    def __init__(self, backend: Backend, graphs: Mapping[str, Mapping[str, Any]], batch: int, exact: bool) -> None:
        self.backend, self.batch, self.exact = backend, batch, exact
        self.axes = {name: dict(graph.get("batch_axes", {})) for name, graph in graphs.items()}

    def run(self, name: str, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        axes = self.axes[name]
        sizes = {inputs[n].shape[a] for n, a in axes.items() if n in inputs}
        if len(sizes) != 1:
            return self.backend.run(name, inputs)
        size = sizes.pop()
        if size == self.batch or (size < self.batch and not self.exact):
            return self.backend.run(name, inputs)
        pieces = []
        for lo in range(0, size, self.batch):
            count = min(self.batch, size - lo)
            width = self.batch if self.exact else count
            index = lo + torch.arange(width) % count
            part = {n: (t.index_select(axes[n], index.to(t.device)) if n in axes else t) for n, t in inputs.items()}
            out = self.backend.run(name, part)
            pieces.append({n: (t.narrow(axes[n], 0, count) if n in axes else t) for n, t in out.items()})
        return {n: (torch.cat([p[n] for p in pieces], dim=axes[n]) if n in axes else pieces[0][n])
                for n in pieces[0]}


def open_export(spec: ExporterSpec, directory: Path, export: Mapping[str, Any], device: torch.device) -> Backend:
    """The format's backend over an export directory; exports with a fixed batch (or a bounded one, e.g. a
    TensorRT profile: `backend.max_batch`) are wrapped in `BatchedBackend` so callers may use any batch size."""
    backend: Backend = spec.open(directory, export, device)
    dynamic = bool(export.get("dynamic", False))
    limit = getattr(backend, "max_batch", None) if dynamic else int(export["batch"])
    if limit is None:
        return backend
    return BatchedBackend(backend, export["graphs"], int(limit), exact=not dynamic)


@dataclass
class Runtime:
    """A model's sampling code bound to a backend. `model` owns `rollout` and the noise shapes; for an export
    directory it lives on the meta device (no weights: the graphs hold them)."""

    model: VideoPredictor
    runner: Backend | None  # None: the eager model samples through its own `predict`
    backend_name: str
    meta: dict[str, Any]
    device: torch.device
    path: Path
    compiled: bool = False
    sampling: dict[str, Any] = field(default_factory=dict)  # the sampling options applied, {name: value}

    @property
    def backend(self) -> Backend:
        """The backend that runs the graphs (for eager runtimes, built from `export_plan()` on first use)."""
        if self.runner is None:
            self.runner = TorchBackend(eval_plan(self.model))
        return self.runner

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["data"]["frame_shape"])  # type: ignore[return-value]

    @property
    def n_context(self) -> int:
        return int(self.meta["data"]["n_context"])

    @property
    def n_future(self) -> int:
        return int(self.meta["data"]["n_future"])

    @property
    def model_key(self) -> str:
        return self.meta["model"]["key"]

    @property
    def stochastic(self) -> bool:
        return bool(self.model.stochastic)

    def describe(self) -> str:
        detail = ""
        if self.backend_name != TORCH:
            export = self.meta["export"]
            detail = f" {export.get('precision', 'fp32')}"
            provider = getattr(getattr(self.runner, "backend", self.runner), "provider", None)
            if provider:
                detail += f", {provider}"
        elif self.compiled:
            detail = " compiled"
        options = "".join(f" --{name} {value}" for name, value in self.sampling.items())
        return f"{self.model_key}{options} · {self.backend_name}{detail} on {self.device}"

    @torch.no_grad()
    def predict(self, context: Tensor, horizon: int, *, num_samples: int = 1,
                generator: torch.Generator | None = None) -> Tensor:
        """`[B, S, horizon, C, H, W]` futures of `context` `[B, T0, C, H, W]` (float in [0, 1])."""
        if context.dim() != 5 or tuple(context.shape[2:]) != self.frame_shape:
            raise VpkitError(f"context must be [B, T, *{self.frame_shape}]; got {tuple(context.shape)}.")
        run_on = {"backend": self.runner} if self.runner is not None else {}
        return self.model.predict(context.to(self.device, torch.float32), horizon, num_samples=num_samples,
                                  generator=generator, **run_on)


def eval_plan(model: VideoPredictor) -> ExportPlan:
    """The model's plan with every graph module in eval mode (new wrapper modules start in training mode, and
    exporters flip modes: keep the whole model in eval)."""
    plan = model.export_plan()
    for graph in plan.graphs.values():
        graph.module.eval()
    return plan


def load_runtime(path: Path | str, *, backend: str | None = None, device: str | torch.device | None = "cpu",
                 compile: bool = False, sampling: Mapping[str, Any] | None = None) -> Runtime:
    """A runtime for a checkpoint or export directory. `backend` defaults to `torch` for a checkpoint and to the
    export's own format for an export directory; `device` None picks CUDA when there is a GPU for torch and GPU
    formats, the CPU otherwise; `compile` wraps the eager graphs in `torch.compile`. `sampling` holds the model's
    sampling options to apply ({name: value}, `vpkit.core.sampling`)."""
    from vpkit.core.sampling import reconfigure, record

    path = Path(path)
    ckpt = read_checkpoint(path)
    export = ckpt.meta.get("export")
    wanted = backend.lower() if backend else (TORCH if export is None else export["format"])
    if wanted != TORCH:
        wanted = resolve_format(wanted).name
    if device is None:  # torch and GPU formats use a GPU when there is one; CPU formats (ONNX Runtime) the CPU
        on_gpu = wanted == TORCH or resolve_format(wanted).gpu
        device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
    dev = resolve_device(device)
    if compile and wanted != TORCH:
        raise VpkitError("--compile applies to the torch backend only.")

    if export is None:
        if wanted != TORCH:
            raise VpkitError(f"{path} is a checkpoint; the {wanted} backend runs an export of it. Export first: "
                             f"vpkit export {path} --format {wanted}")
        model, _ = load_model(path, device=dev)
        model = reconfigure(model.eval(), ckpt.model_key, sampling)
        runner = TorchBackend(compiled(eval_plan(model))) if compile else None
        return Runtime(model, runner, TORCH, ckpt.meta, dev, path, compiled=compile, sampling=record(sampling))

    fmt = export["format"]
    if wanted == TORCH:
        raise VpkitError(f"{path} is a {fmt} export and holds no PyTorch weights; pass its checkpoint "
                         f"({export.get('source', 'the directory it was exported from')}) for --backend torch.")
    if wanted != fmt:
        raise VpkitError(f"{path} holds a {fmt} export, not {wanted}; use --backend {fmt}, or export the "
                         f"checkpoint with --format {wanted}.")
    spec = resolve_format(fmt)
    missing = spec.available()
    if missing:
        raise VpkitError(missing)
    if spec.gpu and dev.type != "cuda":
        raise VpkitError(f"{fmt} exports run on a CUDA device; add --device cuda.")
    with torch.device("meta"):  # the rollout code and noise shapes only: the graphs hold the weights
        model = build_model(ckpt).eval()
    model = reconfigure(model, ckpt.model_key, sampling, export=True)
    return Runtime(model, open_export(spec, path, export, dev), fmt, ckpt.meta, dev, path,
                   sampling=record(sampling))
