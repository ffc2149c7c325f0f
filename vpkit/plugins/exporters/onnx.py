"""The ONNX export format and its ONNX Runtime backend.

Graphs are exported with PyTorch's dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`), one `.onnx` file per
graph of the model's `ExportPlan`, the batch axis named `batch`. The directory's `vpkit.json` is also embedded in each
file's `metadata_props` under the key `vpkit`. ONNX Runtime runs them on the CPU or CUDA provider; a session that
silently fell back to another provider than the one asked for is an error, never a quiet slowdown.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.model import ExportPlan
from vpkit.core.specs import ExporterSpec, ExportOptions

METADATA_KEY = "vpkit"
# Above this many bytes of weights a graph goes to ONNX external data (protobuf files stop at 2 GiB).
EXTERNAL_DATA_BYTES = 1_800_000_000
INSTALL_CPU = "pip install 'vpkit[onnx]'"
INSTALL_GPU = "pip install 'vpkit[onnx-gpu]' (onnxruntime-gpu replaces onnxruntime: uninstall that first)"

_ORT_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(double)": torch.float64,
              "tensor(int64)": torch.int64, "tensor(int32)": torch.int32, "tensor(bool)": torch.bool}


def available() -> str | None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        return f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is missing): {INSTALL_CPU}"
    return None


# -- export ------------------------------------------------------------------------------------------------------
def _resize_batch(tensor: Tensor, axis: int, size: int) -> Tensor:
    """`tensor` with `size` entries along `axis` (repeating its entries cyclically)."""
    index = torch.arange(size, device=tensor.device) % tensor.shape[axis]
    return tensor.index_select(axis, index)


def export_onnx_graphs(plan: ExportPlan, out_dir: Path, options: ExportOptions) -> dict[str, str]:
    """Write `<graph>.onnx` for every graph of `plan` into `out_dir`; returns `{graph: file name}`.

    Example inputs are resized to `options.batch` along each input's batch axis. With `options.dynamic` the batch
    axis stays free (one symbolic dim `batch` shared by all inputs); `options.half` exports fp16 graphs."""
    from torch.export import Dim

    files: dict[str, str] = {}
    batch_dim = Dim("batch", min=1, max=1 << 16)
    for name, graph in plan.graphs.items():
        module, axes = graph.module, graph.batch_axes
        examples = tuple(
            _resize_batch(x, axes[n], options.batch) if n in axes else x
            for n, x in zip(graph.input_names, graph.example_inputs, strict=True))
        if options.half:
            module = copy.deepcopy(module).half()
            examples = tuple(x.half() if x.is_floating_point() else x for x in examples)
        module.eval()
        dynamic_shapes = None
        if options.dynamic:
            dynamic_shapes = tuple({axes[n]: batch_dim} if n in axes else None for n in graph.input_names)
        weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
        path = out_dir / f"{name}.onnx"
        log = io.StringIO()
        try:
            # The exporter reports its progress on stdout and through warnings; keep them for the error message.
            with contextlib.redirect_stdout(log), warnings.catch_warnings(), _quiet_onnxscript():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    module, examples, dynamo=True, input_names=list(graph.input_names),
                    output_names=list(graph.output_names), opset_version=options.opset,
                    dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)
            assert program is not None
            program.save(str(path), external_data=weight_bytes > EXTERNAL_DATA_BYTES)
        except Exception as exc:  # the exporter raises many types; the user needs the graph and the cause
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VpkitError(f"ONNX export of graph '{name}' failed: {detail}") from exc
        files[name] = path.name
    return files


@contextlib.contextmanager
def _quiet_onnxscript():
    loggers = [logging.getLogger(n) for n in ("onnxscript", "torch.onnx", "torch._export", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def embed_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Store `metadata` as JSON in the ONNX file's `metadata_props` under `vpkit` (replacing an older entry)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata, sort_keys=True))
    onnx.save(model, str(path))


def embed_in_directory(export_dir: Path, metadata: Mapping[str, Any]) -> None:
    """`embed_metadata` into every ONNX file of an export directory."""
    for path in sorted(Path(export_dir).glob("*.onnx")):
        embed_metadata(path, metadata)


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The `vpkit` metadata embedded in an ONNX file, or None."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


def export(plan: ExportPlan, out_dir: Path, options: ExportOptions) -> dict[str, str]:
    if options.half and torch.device(options.device).type != "cuda":
        raise VpkitError("--half ONNX graphs need a CUDA device (ONNX Runtime's CPU provider has no fp16 kernels "
                         "for most layers); add --device cuda, or drop --half.")
    return export_onnx_graphs(plan, out_dir, options)


# -- runtime -----------------------------------------------------------------------------------------------------
class OnnxRuntimeBackend:
    """Runs an ONNX export directory's graphs with ONNX Runtime on `device` (CPU or CUDA provider).

    Inputs and outputs are torch tensors; inputs are cast to each graph's input dtype (fp16 exports) and outputs
    back to the dtype of the first floating input, so callers see the same types as with the eager backend."""

    def __init__(self, export_dir: Path, export: Mapping[str, Any], device: torch.device,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.device = torch.device(device)
        provider = "CUDAExecutionProvider" if self.device.type == "cuda" else "CPUExecutionProvider"
        if provider not in ort.get_available_providers():
            raise VpkitError(f"ONNX Runtime has no {provider} here (it has: {', '.join(ort.get_available_providers())})"
                             f"; for CUDA install onnxruntime-gpu instead of onnxruntime: {INSTALL_GPU}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT warns about every node it leaves on the CPU
        # A rollout alternates many short graph calls with torch work in Python; ORT's worker threads spin-waiting
        # between calls take the cores from that work (measured: 13.9 vs 10.7 ms per frame for SVG-LP on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        providers: list[Any] = ["CPUExecutionProvider"]
        if provider == "CUDAExecutionProvider":
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        self.provider = provider
        self.sessions: dict[str, Any] = {}
        for name, graph in export["graphs"].items():
            path = Path(export_dir) / graph["file"]
            if not path.is_file():
                raise VpkitError(f"{export_dir} is incomplete: {graph['file']} is missing.")
            try:
                session = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
                raise VpkitError(f"ONNX Runtime cannot load {path}: {str(exc).strip().splitlines()[0]}") from None
            active = session.get_providers()
            if provider not in active:
                raise VpkitError(f"ONNX Runtime fell back to {active[0]} instead of {provider} for {path.name} "
                                 f"(CUDA/cuDNN libraries missing or mismatched?); check `nvidia-smi` and the "
                                 f"onnxruntime-gpu requirements, or use --device cpu.")
            self.sessions[name] = session
        self._inputs = {n: [(i.name, _ORT_TYPES.get(i.type, torch.float32)) for i in s.get_inputs()]
                        for n, s in self.sessions.items()}
        self._outputs = {n: [o.name for o in s.get_outputs()] for n, s in self.sessions.items()}

    def run(self, name: str, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        session = self.sessions[name]
        floats = [t.dtype for t in inputs.values() if t.is_floating_point()]
        out_dtype = floats[0] if floats else torch.float32
        if self.provider == "CUDAExecutionProvider":
            return self._run_cuda(name, session, inputs, out_dtype)
        feed = {n: np.ascontiguousarray(inputs[n].detach().to("cpu", dtype).numpy()) for n, dtype in self._inputs[name]}
        outputs = session.run(self._outputs[name], feed)
        return {n: _as_caller_dtype(torch.from_numpy(o), out_dtype).to(self.device)
                for n, o in zip(self._outputs[name], outputs, strict=True)}

    def _run_cuda(self, name: str, session: Any, inputs: Mapping[str, Tensor], out_dtype: torch.dtype
                  ) -> dict[str, Tensor]:
        """Zero-copy on the GPU: inputs and outputs are torch CUDA tensors bound by pointer (IO binding)."""
        binding = session.io_binding()
        index = self.device.index or 0
        keep = []
        for n, dtype in self._inputs[name]:
            tensor = inputs[n].detach().to(self.device, dtype).contiguous()
            keep.append(tensor)
            binding.bind_input(n, "cuda", index, _numpy_dtype(dtype), tuple(tensor.shape), tensor.data_ptr())
        for n in self._outputs[name]:
            binding.bind_output(n, "cuda", index)
        torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch must be ready
        session.run_with_iobinding(binding)
        return {n: _as_caller_dtype(_ortvalue_to_torch(value, self.device), out_dtype)
                for n, value in zip(self._outputs[name], binding.get_outputs(), strict=True)}


def _numpy_dtype(dtype: torch.dtype) -> Any:
    return torch.empty((), dtype=dtype).numpy().dtype


def _as_caller_dtype(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def _ortvalue_to_torch(value: Any, device: torch.device) -> Tensor:
    """An ORT-owned CUDA OrtValue as a torch tensor (DLPack when this ORT build has it, else through the host)."""
    to_dlpack = getattr(value, "to_dlpack", None)
    if to_dlpack is not None:
        try:
            return torch.from_dlpack(to_dlpack()).clone()
        except (RuntimeError, TypeError):
            pass
    return torch.from_numpy(value.numpy()).to(device)


def open_backend(export_dir: Path, export: Mapping[str, Any], device: torch.device) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(export_dir, export, device)


@vpkit.hookimpl
def register_exporters(register: Any) -> None:
    register(ExporterSpec(
        name="onnx", export=export, open=open_backend, embed=embed_in_directory, available=available, suffix=".onnx",
        options=("opset", "half", "batch", "dynamic", "device"),
        description="ONNX graphs (dynamo exporter) run with ONNX Runtime, CPU or CUDA provider",
    ))
