"""The TensorRT export format and its runtime backend.

Export writes the model's ONNX graphs (`vpkit.plugins.exporters.onnx.export_onnx_graphs`) and builds one serialized
engine per graph from them with the TensorRT Python API, `<graph>.engine` beside `<graph>.onnx`:

- **precision**: `half` exports fp16 ONNX graphs. TensorRT 10 builds them weakly typed with `BuilderFlag.FP16`
  (TensorRT picks fp16 kernels where it can); TensorRT 11 removed that flag and builds every network strongly
  typed, so the precision is the ONNX graph's own. An fp32 build clears `BuilderFlag.TF32` (on by default), so an
  fp32 engine computes in fp32 and its parity figures mean what they say.
- **batch**: static graphs are built for `batch`; with `dynamic`, one optimisation profile gives every input's
  batch axis the range 1..`batch` (optimised for `batch`).
- **timing cache**: kernel timings are kept in `$VPKIT_CACHE_DIR/tensorrt/timing.cache` (default
  `~/.cache/vpkit`), loaded before and written back (atomically) after every build, so a second export of a
  similar model skips most of the tuning. A cache from another TensorRT version or GPU is replaced.
- **build facts**: `tensorrt.json` in the export directory records the TensorRT version, the GPU, the precision
  settings, the profiles and the timing cache; the exporter copies it into `vpkit.json` (`export.tensorrt`).

`TensorRTBackend` runs the engines on one CUDA device with torch CUDA tensors as the I/O buffers (no pycuda or
cuda-python), enqueued on the caller's current torch stream. An engine runs only with the TensorRT version and
GPU model it was built for; a mismatch is a clear error that says to re-export.

`tensorrt` is imported only inside functions, so this module loads on machines without it; there `available()`
says what to install. API as in TensorRT 10.x/11.x `python/src/infer/pyCore.cpp` and `parsers/pyOnnx.cpp`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.model import ExportPlan, Graph
from vpkit.core.paths import cache_dir
from vpkit.core.specs import ExporterSpec, ExportOptions

INSTALL = ('pip install "vpkit[tensorrt]" (or pip install tensorrt: NVIDIA\'s wheels, for Linux or Windows with an '
           'NVIDIA GPU and a CUDA 12/13 driver)')
NO_GPU = "TensorRT needs an NVIDIA GPU; none is visible (torch.cuda.is_available() is False)"
BUILD_FILE = "tensorrt.json"
GIB = 1 << 30
# IExecutionContext.set_tensor_address: "The pointer must have at least 256-byte alignment" (NvInferRuntime.h).
ADDRESS_ALIGNMENT = 256

log = logging.getLogger(__name__)


def available() -> str | None:
    """None when TensorRT can build and run engines here, else one line saying what is missing."""
    try:
        import tensorrt  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "tensorrt":  # e.g. the metapackage without its tensorrt_libs / tensorrt_bindings
            return f"TensorRT is installed but incomplete ({exc.name} is missing); reinstall it: {INSTALL}"
        return f"TensorRT is not installed: {INSTALL}"
    except (ImportError, OSError) as exc:  # the wheel is there but its CUDA libraries do not load
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"TensorRT is installed but cannot be loaded ({detail}); reinstall it for your CUDA driver: {INSTALL}"
    if not torch.cuda.is_available():
        return NO_GPU
    return None


def _tensorrt() -> Any:
    """The `tensorrt` module, or a VpkitError saying what is missing."""
    missing = available()
    if missing:
        raise VpkitError(missing)
    import tensorrt

    return tensorrt


@functools.cache
def _logger(trt: Any) -> Any:
    """The process's one TensorRT logger (TensorRT wants the same logger for every builder and runtime).

    Warnings go to Python logging; errors are kept so the VpkitError of a failed parse, build or load can quote
    them (logging them too would print every failure twice)."""

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11 trampoline: the base must be initialised explicitly
            self.last_error: str | None = None

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.last_error = _one_line(msg)
                log.debug("TensorRT error: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.warning("TensorRT: %s", msg)

        def take_error(self) -> str | None:
            """The last error TensorRT logged since the previous call, if any."""
            error, self.last_error = self.last_error, None
            return error

    return Logger()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# -- timing cache ------------------------------------------------------------------------------------------------
def timing_cache_path() -> Path:
    """Where builds share their timing cache: `$VPKIT_CACHE_DIR/tensorrt/timing.cache`, default `~/.cache/vpkit`."""
    return cache_dir("tensorrt", "timing.cache")


class TimingCache:
    """TensorRT's timing cache kept in one file across builds (kernels timed once need not be timed again).

    The first `attach(config)` reads the stored cache; one that another TensorRT version or GPU made is refused
    by `set_timing_cache(..., ignore_mismatch=False)` and replaced by a fresh one. Later builds of the same export
    share that cache object (TensorRT allows it across builders). `save(config)` writes the cache back to the
    file after each build, atomically. `reused` tells whether the stored cache was accepted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reused = False
        self._cache: Any = None

    def attach(self, config: Any) -> None:
        """Give `config` the shared timing cache (read from the file on first use)."""
        if self._cache is None:
            stored = self._read()
            if stored:
                cache = config.create_timing_cache(stored)
                if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                    self._cache, self.reused = cache, True
                    return
                log.info("TensorRT timing cache %s is from another TensorRT version or GPU; starting a new one.",
                         self.path)
            self._cache = config.create_timing_cache(b"")
        config.set_timing_cache(self._cache, ignore_mismatch=False)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            log.warning("TensorRT timing cache %s cannot be read (%s); starting a new one.", self.path, exc)
            return b""

    def save(self, config: Any) -> None:
        """Write `config`'s timing cache to the file (a temporary name, then a rename: readers never see half)."""
        cache = config.get_timing_cache()
        if cache is None:
            return
        data = memoryview(cache.serialize())
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, self.path)
        except OSError as exc:  # the cache only saves time: a read-only home must not fail the export
            tmp.unlink(missing_ok=True)
            log.warning("TensorRT timing cache could not be written to %s (%s).", self.path, exc)


# -- export ------------------------------------------------------------------------------------------------------
Shape = tuple[int, ...]


def profile_shapes(graph_name: str, graph: Graph, inputs: Sequence[tuple[str, Shape]],
                   options: ExportOptions) -> dict[str, tuple[Shape, Shape, Shape]]:
    """`{input: (min, opt, max)}` for the network inputs with free (-1) dims, as TensorRT's parser reports them.

    A batch axis (named `batch` in `graph.dynamic_axes`) ranges over 1..`options.batch` (optimised for `batch`)
    with `options.dynamic`, else is fixed at `batch`; any other free axis is fixed at the example input's size.
    Fixed dims keep their size, as `IOptimizationProfile.set_shape` requires."""
    examples = dict(zip(graph.input_names, graph.example_inputs, strict=True))
    shapes: dict[str, tuple[Shape, Shape, Shape]] = {}
    for name, shape in inputs:
        if all(size >= 0 for size in shape):
            continue
        if name not in examples:
            raise VpkitError(f"TensorRT sees an input '{name}' in graph '{graph_name}' that the model's export "
                             f"plan does not declare (it has {', '.join(graph.input_names)}).")
        batch_axis = graph.batch_axes.get(name)
        low, opt, high = [], [], []
        for axis, size in enumerate(shape):
            if size >= 0:
                sizes = (size, size, size)
            elif axis == batch_axis:
                sizes = (1 if options.dynamic else options.batch, options.batch, options.batch)
            else:
                fixed = int(examples[name].shape[axis])
                sizes = (fixed, fixed, fixed)
            for bound, value in zip((low, opt, high), sizes, strict=True):
                bound.append(value)
        shapes[name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def build_engine(trt: Any, onnx_path: Path, graph_name: str, graph: Graph, options: ExportOptions,
                 timing_cache: TimingCache) -> tuple[memoryview, dict[str, Any]]:
    """Parse `onnx_path` and build a serialized engine for the current CUDA device.

    Returns the engine bytes and this build's facts (profile shapes, the engine's I/O dtypes)."""
    logger = _logger(trt)
    logger.take_error()  # forget errors of earlier, unrelated calls
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        first = _one_line(parser.get_error(0)) if parser.num_errors else logger.take_error() or "no detail given"
        raise VpkitError(f"TensorRT cannot parse graph '{graph_name}' ({onnx_path.name}): {first}")

    network_inputs = [network.get_input(i) for i in range(network.num_inputs)]
    config = builder.create_builder_config()
    if options.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace * GIB))
    fp16_flag = getattr(trt.BuilderFlag, "FP16", None)  # removed in TensorRT 11 (strong typing only)
    if options.half and fp16_flag is not None:
        config.set_flag(fp16_flag)
    elif options.half:
        fp32 = [t.name for t in network_inputs if t.dtype == trt.DataType.FLOAT]
        if fp32:
            raise VpkitError(f"TensorRT {trt.__version__} builds strongly typed engines, so --half needs fp16 ONNX "
                             f"graphs, but graph '{graph_name}' takes fp32 input(s) {', '.join(fp32)}.")
    else:
        config.clear_flag(trt.BuilderFlag.TF32)

    shapes = profile_shapes(graph_name, graph, [(t.name, tuple(t.shape)) for t in network_inputs], options)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        if config.add_optimization_profile(profile) < 0:
            raise VpkitError(f"TensorRT rejected the optimisation profile of graph '{graph_name}' ({shapes}): "
                             f"{logger.take_error() or 'no detail given'}")

    timing_cache.attach(config)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VpkitError(f"TensorRT could not build an engine for graph '{graph_name}': "
                         f"{logger.take_error() or 'no detail given'}")
    timing_cache.save(config)
    facts = {
        "profile": {name: {"min": list(low), "opt": list(opt), "max": list(high)}
                    for name, (low, opt, high) in shapes.items()},
        "inputs": {t.name: str(t.dtype) for t in network_inputs},
    }
    return memoryview(serialized), facts


def build_engines(trt: Any, plan: ExportPlan, out_dir: Path, onnx_files: Mapping[str, str], options: ExportOptions,
                  timing_cache: TimingCache) -> tuple[dict[str, str], dict[str, Any]]:
    """Build `<graph>.engine` in `out_dir` from each graph's ONNX file on the current CUDA device.

    Returns `{graph: engine file name}` and the build facts for `tensorrt.json`."""
    files: dict[str, str] = {}
    graphs: dict[str, Any] = {}
    for name, graph in plan.graphs.items():
        serialized, facts = build_engine(trt, out_dir / onnx_files[name], name, graph, options, timing_cache)
        path = out_dir / f"{name}.engine"
        path.write_bytes(serialized)
        files[name], graphs[name] = path.name, facts
    strong = getattr(trt.BuilderFlag, "FP16", None) is None
    build = {
        "tensorrt_version": trt.__version__,
        "fp16": options.half,
        "typing": "strong (precision of the ONNX graphs)" if strong else "weak (BuilderFlag.FP16 when fp16)",
        "tf32": options.half,  # allowed (TensorRT's default) for the fp32 layers of fp16 builds only
        "workspace_gib": options.workspace,
        "batch": options.batch,
        "dynamic": options.dynamic,
        "profiles": {name: facts["profile"] for name, facts in graphs.items()},
        "engine_inputs": {name: facts["inputs"] for name, facts in graphs.items()},
        "timing_cache": str(timing_cache.path),
        "timing_cache_reused": timing_cache.reused,
    }
    return files, build


def _build_device(device: str) -> torch.device:
    """The GPU engines are built for: the one `device` names, else the current CUDA device."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    return torch.device("cuda", torch.cuda.current_device())


def export_trt(plan: ExportPlan, out_dir: Path, options: ExportOptions) -> dict[str, str]:
    """Write `<graph>.onnx` and `<graph>.engine` for every graph of `plan` into `out_dir`, and `tensorrt.json`.

    Returns `{graph: "<graph>.engine"}`. The ONNX files stay beside the engines (an engine runs only on the
    TensorRT version and GPU model it was built for; the ONNX graphs rebuild it anywhere)."""
    from vpkit.plugins.exporters.onnx import export_onnx_graphs

    trt = _tensorrt()
    out_dir = Path(out_dir)
    device = _build_device(options.device)
    onnx_files = export_onnx_graphs(plan, out_dir, options)
    with torch.cuda.device(device):
        files, build = build_engines(trt, plan, out_dir, onnx_files, options, TimingCache(timing_cache_path()))
    major, minor = torch.cuda.get_device_capability(device)
    build.update(gpu=torch.cuda.get_device_name(device), compute_capability=f"{major}.{minor}")
    (out_dir / BUILD_FILE).write_text(json.dumps(build, indent=2) + "\n")
    return files


# -- runtime -----------------------------------------------------------------------------------------------------
def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.BF16: torch.bfloat16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64, trt.DataType.INT8: torch.int8,
             trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
    if dtype not in table:
        raise VpkitError(f"TensorRT tensors of type {dtype} have no torch counterpart; vpkit cannot run this engine.")
    return table[dtype]


def check_input_shape(graph: str, name: str, shape: Shape, low: Shape, high: Shape, batch_axis: int | None) -> None:
    """Raise a VpkitError naming the fix when `shape` lies outside the engine's range `low..high` for `name`."""
    if len(shape) == len(low) and all(lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)):
        return
    takes = "(" + ", ".join(str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in zip(low, high, strict=True)) + ")"
    message = f"TensorRT graph '{graph}' takes input '{name}' of shape {takes}; got {tuple(shape)}."
    if batch_axis is not None and len(shape) == len(low):
        outside = [a for a, (s, lo, hi) in enumerate(zip(shape, low, high, strict=True)) if not lo <= s <= hi]
        if outside == [batch_axis]:
            batch = shape[batch_axis]
            built = f"{low[batch_axis]}..{high[batch_axis]}" if low[batch_axis] != high[batch_axis] \
                else str(low[batch_axis])
            message += f" The engines were built for batch {built}: re-export with --batch {batch}."
    raise VpkitError(message)


@dataclass
class _Input:
    """One engine input: its dtype and the shape range the engine accepts."""

    name: str
    dtype: torch.dtype
    low: Shape
    high: Shape
    batch_axis: int | None


@dataclass
class _Engine:
    """A deserialized engine, its execution context and its I/O."""

    engine: Any
    context: Any
    inputs: list[_Input]
    outputs: list[tuple[str, torch.dtype]]


class TensorRTBackend:
    """Runs a TensorRT export directory's engines on one CUDA device.

    `run(name, inputs)` takes and returns torch tensors: inputs are copied to contiguous device tensors of the
    engine's dtypes (fp32 <-> fp16 casts at the boundary), outputs come back on the device in the dtype of the
    first floating input, so callers see the same types as with the eager backend. Work is enqueued on the
    caller's current torch stream; on the legacy default stream (where TensorRT adds synchronisations) it runs on
    a side stream ordered after and before the caller's work. `max_batch` is the largest batch every engine takes.
    """

    def __init__(self, export_dir: Path, export: Mapping[str, Any], device: torch.device) -> None:
        trt = _tensorrt()
        device = torch.device(device)
        if device.type != "cuda":
            raise VpkitError(f"TensorRT engines run on a CUDA device, not {device}; use --device cuda.")
        self.device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        self._trt, self._logger = trt, _logger(trt)
        built = export.get("tensorrt") or {}
        self.engines: dict[str, _Engine] = {}
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            for name, graph in export["graphs"].items():
                path = Path(export_dir) / graph["file"]
                if not path.is_file():
                    raise VpkitError(f"{export_dir} is incomplete: {graph['file']} is missing.")
                self._logger.take_error()
                engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
                if engine is None:
                    raise VpkitError(self._incompatible(path, built))
                context = engine.create_execution_context()
                if context is None:
                    raise VpkitError(f"TensorRT could not create an execution context for {path.name} "
                                     f"(out of GPU memory?): {self._logger.take_error() or 'no detail given'}")
                self.engines[name] = self._describe(engine, context, dict(graph.get("batch_axes", {})))
        self.max_batch = self._max_batch()
        self._side_stream: torch.cuda.Stream | None = None

    def _incompatible(self, path: Path, built: Mapping[str, Any]) -> str:
        here = f"TensorRT {self._trt.__version__} on {torch.cuda.get_device_name(self.device)}"
        there = ""
        if built:
            there = f" (built with TensorRT {built.get('tensorrt_version', '?')} on {built.get('gpu', '?')})"
        detail = self._logger.take_error() or "the engine could not be deserialized"
        return (f"{path.name} cannot be loaded by {here}{there}: {detail}. An engine runs only with the TensorRT "
                f"version and GPU model it was built for; re-export the checkpoint here with --format trt.")

    def _describe(self, engine: Any, context: Any, batch_axes: Mapping[str, int]) -> _Engine:
        trt = self._trt
        inputs, outputs = [], []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
            if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                outputs.append((name, dtype))
                continue
            shape = tuple(engine.get_tensor_shape(name))
            low = high = shape
            if any(size < 0 for size in shape):
                low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(name, 0))
            inputs.append(_Input(name, dtype, low, high, batch_axes.get(name)))
        return _Engine(engine, context, inputs, outputs)

    def _max_batch(self) -> int | None:
        limits = [spec.high[spec.batch_axis] for engine in self.engines.values() for spec in engine.inputs
                  if spec.batch_axis is not None and spec.batch_axis < len(spec.high)]
        return min(limits) if limits else None

    def run(self, name: str, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if name not in self.engines:
            raise VpkitError(f"This TensorRT export has no graph '{name}' (it has {', '.join(self.engines)}).")
        engine = self.engines[name]
        context = engine.context
        floats = [t.dtype for t in inputs.values() if t.is_floating_point()]
        out_dtype = floats[0] if floats else torch.float32
        with torch.cuda.device(self.device):
            keep: list[Tensor] = []  # the buffers TensorRT reads must live until the work is enqueued
            for spec in engine.inputs:
                if spec.name not in inputs:
                    raise VpkitError(f"TensorRT graph '{name}' needs input '{spec.name}'; got {', '.join(inputs)}.")
                buffer = _device_buffer(inputs[spec.name], spec.dtype, self.device)
                check_input_shape(name, spec.name, tuple(buffer.shape), spec.low, spec.high, spec.batch_axis)
                if not context.set_input_shape(spec.name, tuple(buffer.shape)):
                    raise VpkitError(f"TensorRT refused shape {tuple(buffer.shape)} for input '{spec.name}' of "
                                     f"graph '{name}': {self._logger.take_error() or 'no detail given'}")
                context.set_tensor_address(spec.name, buffer.data_ptr())
                keep.append(buffer)
            outputs: dict[str, Tensor] = {}
            for out_name, dtype in engine.outputs:
                shape = tuple(context.get_tensor_shape(out_name))
                if any(size < 0 for size in shape):
                    raise VpkitError(f"TensorRT graph '{name}' has a data-dependent output shape for '{out_name}' "
                                     f"{shape}; vpkit runs graphs whose output shapes follow from the inputs.")
                outputs[out_name] = torch.empty(shape, dtype=dtype, device=self.device)
                context.set_tensor_address(out_name, outputs[out_name].data_ptr())
            self._execute(name, context)
        return {n: (t.to(out_dtype) if t.is_floating_point() else t) for n, t in outputs.items()}

    def _execute(self, name: str, context: Any) -> None:
        caller = torch.cuda.current_stream(self.device)
        if caller != torch.cuda.default_stream(self.device):
            ok = context.execute_async_v3(caller.cuda_stream)
        else:
            # TensorRT's execute_async_v3 docs: on the default stream it adds cudaDeviceSynchronize calls; run on a
            # side stream that waits for the caller's work, and make the caller wait for the engine's.
            if self._side_stream is None:
                self._side_stream = torch.cuda.Stream(self.device)
            side = self._side_stream
            side.wait_stream(caller)
            ok = context.execute_async_v3(side.cuda_stream)
            caller.wait_stream(side)
        if not ok:
            raise VpkitError(f"TensorRT failed to run graph '{name}': {self._logger.take_error() or 'no detail given'}")


def _device_buffer(tensor: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`tensor` as a contiguous `dtype` tensor on `device` whose address TensorRT accepts (256-byte aligned)."""
    buffer = tensor.detach().to(device=device, dtype=dtype).contiguous()
    if buffer.data_ptr() % ADDRESS_ALIGNMENT:  # a view into a larger tensor (e.g. one time step of the noise)
        buffer = buffer.clone()
    return buffer


def _embed_in_onnx(export_dir: Path, metadata: Mapping[str, Any]) -> None:
    """The engines cannot hold metadata; the ONNX graphs they were built from (kept beside them) do."""
    from vpkit.plugins.exporters.onnx import embed_in_directory

    embed_in_directory(export_dir, metadata)


def open_backend(export_dir: Path, export: Mapping[str, Any], device: torch.device) -> TensorRTBackend:
    return TensorRTBackend(export_dir, export, device)


@vpkit.hookimpl
def register_exporters(register: Any) -> None:
    register(ExporterSpec(
        name="trt", aliases=("tensorrt", "engine"), suffix=".engine", gpu=True,
        options=("opset", "half", "batch", "dynamic", "workspace", "device"),
        export=export_trt, open=open_backend, embed=_embed_in_onnx, available=available,
        description="TensorRT engines built from the ONNX graphs (fp16 option, timing cache), run on an NVIDIA GPU",
    ))
