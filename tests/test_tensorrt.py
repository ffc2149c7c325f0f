"""TensorRT export format and backend.

Without TensorRT and a GPU (CI): the clear install message, export/open refusing with it, and the registration.
The engine build is exercised on real ONNX files against a stand-in `tensorrt` module that keeps the documented
contract of the calls vpkit makes (`FakeTensorRT` below): optimisation profiles, precision flags, parser and
builder errors, the persisted timing cache. Where TensorRT and a GPU exist, a tiny SVG-LP is exported for real and
its engines are checked against eager PyTorch through the model's own `rollout`.
"""

from __future__ import annotations

import contextlib
import enum
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import vpkit.plugins.exporters.tensorrt as trt_plugin
from vpkit.core.errors import VpkitError
from vpkit.core.model import ExportPlan, Graph, TorchBackend
from vpkit.core.specs import ExportOptions
from vpkit.plugins.exporters.onnx import export_onnx_graphs
from vpkit.plugins.exporters.tensorrt import (
    NO_GPU,
    TimingCache,
    available,
    build_engines,
    check_input_shape,
    export_trt,
    open_backend,
    timing_cache_path,
)

TRT_MISSING = available()
needs_tensorrt = pytest.mark.skipif(TRT_MISSING is not None, reason=TRT_MISSING or "")


# -- a stand-in for the parts of the `tensorrt` module the build uses ------------------------------------------------
class FakeTensorRT(types.ModuleType):
    """The build-side API of TensorRT 10 (`fp16_flag=True`) or 11 (no `BuilderFlag.FP16`), with the checks the
    TensorRT docs state: the parser reads the real ONNX file (free dims are -1); `build_serialized_network` fails,
    logging an error, when a dynamic input has no profile or a profile breaks `IOptimizationProfile.set_shape`'s
    rules; the timing cache refuses a blob from elsewhere; a build adds its timings to the attached cache."""

    CACHE_MAGIC = b"fake-timing-cache"

    def __init__(self, *, fp16_flag: bool = True, unsupported: tuple[str, ...] = (), build_error: str = "") -> None:
        super().__init__("tensorrt")
        self.__version__ = "10.16.1.11" if fp16_flag else "11.4.0.106"
        self.DataType = enum.Enum("DataType", "FLOAT HALF BF16 INT8 INT32 INT64 BOOL UINT8")
        self.BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32" if fp16_flag else "TF32")
        self.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
        self.builds: list[dict] = []
        trt = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self) -> None:
                pass

        class Tensor:
            def __init__(self, name, shape, dtype):
                self.name, self.shape, self.dtype = name, shape, dtype

        class Network:
            def __init__(self):
                self.inputs: list[Tensor] = []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, index):
                return self.inputs[index]

        class ParserError:
            def __init__(self, node, op):
                self.node, self.op = node, op

            def __str__(self):  # the layout of pyOnnx.cpp's parserErrorStr, with a line break inside
                return (f"In node {self.node} with name: node_{self.op}_{self.node} and operator: {self.op} "
                        f"(parseNode): UNSUPPORTED_NODE:\n No importer registered for op: {self.op}")

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, index):
                return self.errors[index]

            def parse_from_file(self, path):
                import onnx

                model = onnx.load(path, load_external_data=False)
                for index, node in enumerate(model.graph.node):
                    if node.op_type in unsupported:
                        self.errors.append(ParserError(index, node.op_type))
                if self.errors:
                    return False
                weights = {init.name for init in model.graph.initializer}
                for value in model.graph.input:
                    if value.name in weights:
                        continue
                    kind = value.type.tensor_type
                    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim)
                    dtype = trt.DataType.HALF if kind.elem_type == onnx.TensorProto.FLOAT16 else trt.DataType.FLOAT
                    self.network.inputs.append(Tensor(value.name, shape, dtype))
                return True

        class TimingCacheBlob:
            def __init__(self, blob):
                self.blob = blob

            def serialize(self):
                return self.blob

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, low, opt, high):
                self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

        class Config:
            def __init__(self):
                self.flags = {trt.BuilderFlag.TF32}  # TF32 is on by default
                self.pools, self.profiles, self.cache = {}, [], None

            def set_flag(self, flag):
                self.flags.add(flag)

            def clear_flag(self, flag):
                self.flags.discard(flag)

            def set_memory_pool_limit(self, pool, size):
                self.pools[pool] = size

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def create_timing_cache(self, blob):
                return TimingCacheBlob(bytes(blob) or trt.CACHE_MAGIC)

            def set_timing_cache(self, cache, ignore_mismatch):
                if not cache.blob.startswith(trt.CACHE_MAGIC) and not ignore_mismatch:
                    return False  # made by another TensorRT version or on another GPU
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                assert flags == 0
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                shapes = config.profiles[0].shapes if config.profiles else {}
                problem = build_error or _profile_problem(network, shapes)
                if problem:
                    self.logger.log(ILogger.ERROR, problem)
                    return None
                record = {"flags": sorted(f.name for f in config.flags), "pools": {p.name: s for p, s in
                                                                                  config.pools.items()},
                          "profiles": {n: [list(s) for s in v] for n, v in shapes.items()},
                          "cache_in": config.cache.blob.decode()}
                trt.builds.append(record)
                config.cache.blob += f"|timed:{'+'.join(t.name for t in network.inputs)}".encode()
                return json.dumps(record).encode()

        self.ILogger, self.Builder, self.OnnxParser = ILogger, Builder, OnnxParser


def _profile_problem(network, shapes) -> str:
    """What TensorRT would reject in `shapes` for `network` (rules of IOptimizationProfile.set_shape), or ''."""
    for tensor in network.inputs:
        if tensor.name not in shapes:
            if -1 in tensor.shape:
                return f"Network has dynamic or shape inputs, but no optimization profile has been defined for " \
                       f"{tensor.name}."
            continue
        low, opt, high = shapes[tensor.name]
        if not len(low) == len(opt) == len(high) == len(tensor.shape):
            return f"{tensor.name}: profile rank differs from the input's"
        for real, lo, op, hi in zip(tensor.shape, low, opt, high, strict=True):
            if not 0 <= lo <= op <= hi or (real != -1 and not lo == op == hi == real):
                return f"{tensor.name}: invalid profile {low} {opt} {high} for {tensor.shape}"
    return ""


# -- real ONNX files of a small recurrent step (batch axis 0 for x/y, 1 for the state) ----------------------------------
class _Step(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.linear(x)
        return y, state + y.unsqueeze(0)


def _toy_plan() -> ExportPlan:
    torch.manual_seed(0)
    axes = {"x": {0: "batch"}, "state": {1: "batch"}, "y": {0: "batch"}, "next_state": {1: "batch"}}
    graph = Graph(_Step().eval(), ("x", "state"), ("y", "next_state"), (torch.rand(2, 4), torch.rand(2, 2, 3)), axes)
    return ExportPlan({"step": graph})


VARIANTS = {
    "dynamic": ExportOptions(batch=4, dynamic=True),
    "static": ExportOptions(batch=3, dynamic=False),
    "half": ExportOptions(batch=4, dynamic=True, half=True),
}


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory) -> dict[str, Path]:
    """`{variant: folder holding step.onnx}`, exported once with vpkit's real ONNX exporter."""
    plan, folders = _toy_plan(), {}
    for variant, options in VARIANTS.items():
        folder = tmp_path_factory.mktemp(variant)
        assert export_onnx_graphs(plan, folder, options) == {"step": "step.onnx"}
        folders[variant] = folder
    return folders


def _build(trt, toy_onnx, tmp_path, variant, options=None, cache=None):
    out = tmp_path / variant
    out.mkdir(exist_ok=True)
    shutil.copy(toy_onnx[variant] / "step.onnx", out / "step.onnx")
    cache = cache or TimingCache(tmp_path / "cache" / "timing.cache")
    return build_engines(trt, _toy_plan(), out, {"step": "step.onnx"}, options or VARIANTS[variant], cache)


# -- without TensorRT --------------------------------------------------------------------------------------------
def test_available_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails as when it is not installed
    message = available()
    assert message.startswith("TensorRT is not installed")
    assert 'pip install "vpkit[tensorrt]"' in message and "pip install tensorrt" in message
    assert "\n" not in message


def test_available_needs_a_visible_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert available() == NO_GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert available() is None


def test_export_and_open_refuse_with_the_install_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(VpkitError) as raised:
        export_trt(_toy_plan(), tmp_path, ExportOptions())
    assert str(raised.value) == available()
    assert list(tmp_path.iterdir()) == []  # refused before writing anything
    with pytest.raises(VpkitError) as raised:
        open_backend(tmp_path, {"graphs": {"step": {"file": "step.engine"}}}, torch.device("cuda"))
    assert str(raised.value) == available()


def test_registered_with_aliases(fresh_host):
    from vpkit.engine.runtime import resolve_format

    if "trt" not in fresh_host.exporters:  # until the host lists it among its built-ins
        fresh_host.register_plugin(trt_plugin, name="tensorrt", distribution="vpkit")
    spec = resolve_format("trt")
    assert resolve_format("tensorrt") is spec and resolve_format("ENGINE") is spec
    assert spec.suffix == ".engine" and spec.gpu and spec.plugin == "tensorrt"
    assert set(spec.options) == {"opset", "half", "batch", "dynamic", "workspace", "device"}
    assert spec.export is export_trt and spec.open is open_backend and spec.available is available


# -- the engine build, against the stand-in -------------------------------------------------------------------------
def test_dynamic_batch_gets_a_profile_from_1_to_batch(toy_onnx, tmp_path):
    trt = FakeTensorRT()
    files, build = _build(trt, toy_onnx, tmp_path, "dynamic",
                          ExportOptions(batch=4, dynamic=True, workspace=1.5))
    assert files == {"step": "step.engine"}
    engine = json.loads((tmp_path / "dynamic" / "step.engine").read_text())
    # x [batch, 4] and state [2, batch, 3]: the batch axis is wherever the plan names it.
    assert engine["profiles"] == {"x": [[1, 4], [4, 4], [4, 4]], "state": [[2, 1, 3], [2, 4, 3], [2, 4, 3]]}
    assert engine["flags"] == []  # fp32: TF32 (on by default) cleared, no FP16
    assert engine["pools"] == {"WORKSPACE": 1610612736}
    assert build["profiles"]["step"]["state"] == {"min": [2, 1, 3], "opt": [2, 4, 3], "max": [2, 4, 3]}
    assert build["tensorrt_version"] == trt.__version__ and build["fp16"] is False and build["workspace_gib"] == 1.5
    assert (tmp_path / "dynamic" / "step.onnx").is_file()


def test_static_batch_needs_no_profile(toy_onnx, tmp_path):
    trt = FakeTensorRT()
    _, build = _build(trt, toy_onnx, tmp_path, "static")
    assert trt.builds[0]["profiles"] == {} and build["profiles"] == {"step": {}}
    assert trt.builds[0]["pools"] == {}  # no --workspace: TensorRT's own default


def test_a_profile_is_required_for_every_free_dim(toy_onnx, tmp_path):
    """The stand-in refuses what TensorRT refuses: a dynamic export with a free axis the plan does not call batch."""
    trt = FakeTensorRT()
    plan = _toy_plan()
    graph = plan.graphs["step"]
    graph.dynamic_axes = {"x": {0: "batch"}}  # state's free axis is not named batch: fixed at the example size
    out = tmp_path / "renamed"
    out.mkdir()
    shutil.copy(toy_onnx["dynamic"] / "step.onnx", out / "step.onnx")
    build_engines(trt, plan, out, {"step": "step.onnx"}, VARIANTS["dynamic"], TimingCache(tmp_path / "c"))
    assert trt.builds[0]["profiles"]["state"] == [[2, 2, 3]] * 3


def test_half_sets_the_fp16_flag_on_tensorrt_10(toy_onnx, tmp_path):
    trt = FakeTensorRT(fp16_flag=True)
    _, build = _build(trt, toy_onnx, tmp_path, "half")
    assert trt.builds[0]["flags"] == ["FP16", "TF32"]
    assert build["fp16"] is True and build["typing"].startswith("weak")
    assert build["engine_inputs"]["step"] == {"x": "DataType.HALF", "state": "DataType.HALF"}


def test_half_on_tensorrt_11_takes_the_precision_of_the_onnx_graphs(toy_onnx, tmp_path):
    trt = FakeTensorRT(fp16_flag=False)
    _, build = _build(trt, toy_onnx, tmp_path, "half")
    assert trt.builds[0]["flags"] == ["TF32"] and build["typing"].startswith("strong")
    with pytest.raises(VpkitError, match=r"strongly typed.*fp16 ONNX.*'step'.*fp32 input\(s\) x, state"):
        _build(trt, toy_onnx, tmp_path, "dynamic", ExportOptions(batch=4, half=True))


def test_parser_error_is_one_line_naming_the_graph(toy_onnx, tmp_path):
    trt = FakeTensorRT(unsupported=("Gemm",))
    with pytest.raises(VpkitError) as raised:
        _build(trt, toy_onnx, tmp_path, "dynamic")
    message = str(raised.value)
    assert message.startswith("TensorRT cannot parse graph 'step' (step.onnx): In node 0")
    assert "No importer registered for op: Gemm" in message and "\n" not in message
    assert not (tmp_path / "dynamic" / "step.engine").exists()


def test_build_failure_quotes_the_tensorrt_error(toy_onnx, tmp_path):
    trt = FakeTensorRT(build_error="Internal Error (could not find any implementation for node Gemm)")
    with pytest.raises(VpkitError, match=r"could not build an engine for graph 'step': Internal Error \(could not"):
        _build(trt, toy_onnx, tmp_path, "dynamic")


def test_timing_cache_persists_across_builds(toy_onnx, tmp_path):
    trt = FakeTensorRT()
    path = tmp_path / "cache" / "tensorrt" / "timing.cache"
    _, first = _build(trt, toy_onnx, tmp_path, "dynamic", cache=TimingCache(path))
    assert trt.builds[0]["cache_in"] == FakeTensorRT.CACHE_MAGIC.decode()  # nothing stored yet: a fresh cache
    assert path.read_bytes() == FakeTensorRT.CACHE_MAGIC + b"|timed:x+state"
    assert first["timing_cache"] == str(path) and first["timing_cache_reused"] is False

    _, second = _build(trt, toy_onnx, tmp_path, "static", cache=TimingCache(path))
    assert trt.builds[1]["cache_in"] == (FakeTensorRT.CACHE_MAGIC + b"|timed:x+state").decode()
    assert second["timing_cache_reused"] is True
    assert path.read_bytes().count(b"|timed:") == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["timing.cache"]  # no temporary file left


def test_graphs_of_one_export_share_the_timing_cache(toy_onnx, tmp_path):
    trt = FakeTensorRT()
    plan = _toy_plan()
    plan.graphs["step_again"] = plan.graphs["step"]
    shutil.copy(toy_onnx["dynamic"] / "step.onnx", tmp_path / "step.onnx")
    cache = TimingCache(tmp_path / "timing.cache")
    _, build = build_engines(trt, plan, tmp_path, {"step": "step.onnx", "step_again": "step.onnx"},
                             VARIANTS["dynamic"], cache)
    assert trt.builds[1]["cache_in"] == (FakeTensorRT.CACHE_MAGIC + b"|timed:x+state").decode()
    assert build["timing_cache_reused"] is False  # nothing was stored before this export
    assert (tmp_path / "timing.cache").read_bytes().count(b"|timed:") == 2


def test_timing_cache_from_another_gpu_is_replaced(toy_onnx, tmp_path):
    trt = FakeTensorRT()
    path = tmp_path / "timing.cache"
    path.write_bytes(b"made-on-another-gpu")
    _, build = _build(trt, toy_onnx, tmp_path, "dynamic", cache=TimingCache(path))
    assert trt.builds[0]["cache_in"] == FakeTensorRT.CACHE_MAGIC.decode() and build["timing_cache_reused"] is False
    assert path.read_bytes().startswith(FakeTensorRT.CACHE_MAGIC)


def test_timing_cache_lives_in_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VPKIT_CACHE_DIR", str(tmp_path / "vpkit-cache"))
    assert timing_cache_path() == tmp_path / "vpkit-cache" / "tensorrt" / "timing.cache"
    monkeypatch.delenv("VPKIT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert timing_cache_path() == tmp_path / ".cache" / "vpkit" / "tensorrt" / "timing.cache"


def test_export_writes_onnx_engines_and_build_facts(toy_onnx, tmp_path, monkeypatch):
    """export_trt end to end with the stand-in for TensorRT and a pretend GPU (torch's CUDA calls answered)."""
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    monkeypatch.setattr(trt_plugin, "available", lambda: None)  # (torch.cuda.is_available stays honest for torch)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    monkeypatch.setenv("VPKIT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "export"
    out.mkdir()
    files = export_trt(_toy_plan(), out, ExportOptions(batch=2, dynamic=True))
    assert files == {"step": "step.engine"}
    assert sorted(p.name for p in out.iterdir()) == ["step.engine", "step.onnx", "tensorrt.json"]
    build = json.loads((out / "tensorrt.json").read_text())
    assert build["gpu"] == "NVIDIA H100 80GB HBM3" and build["compute_capability"] == "9.0"
    assert build["profiles"]["step"]["x"] == {"min": [1, 4], "opt": [2, 4], "max": [2, 4]}
    assert Path(build["timing_cache"]).is_file()


def test_input_shape_errors_name_the_fix():
    check_input_shape("encode", "frames", (2, 1, 64, 64), (1, 1, 64, 64), (4, 1, 64, 64), 0)
    with pytest.raises(VpkitError, match=r"takes input 'frames' of shape \(1\.\.4, 1, 64, 64\); got \(8, 1, 64, 64\)\. "
                                         r"The engines were built for batch 1\.\.4: re-export with --batch 8\."):
        check_input_shape("encode", "frames", (8, 1, 64, 64), (1, 1, 64, 64), (4, 1, 64, 64), 0)
    with pytest.raises(VpkitError, match=r"built for batch 2: re-export with --batch 3\.$"):
        check_input_shape("step", "state_h", (1, 3, 16), (1, 2, 16), (1, 2, 16), 1)
    with pytest.raises(VpkitError, match=r"of shape \(1\.\.4, 1, 64, 64\); got \(2, 3, 64, 64\)\.$"):
        check_input_shape("encode", "frames", (2, 3, 64, 64), (1, 1, 64, 64), (4, 1, 64, 64), 0)


# -- with TensorRT and a GPU ---------------------------------------------------------------------------------------
def _tiny_svg():
    from vpkit.core.config import build_config
    from vpkit.core.plugins import get_host

    spec = get_host().models.get("svg-lp")
    torch.manual_seed(0)
    return spec.build(build_config(spec.config_cls, spec.presets["tiny"].model), (1, 64, 64))


@needs_tensorrt
@pytest.mark.parametrize(("half", "atol"), [(False, 1e-3), (True, 5e-2)], ids=["fp32", "fp16"])
def test_engines_match_eager_pytorch(tmp_path, monkeypatch, half, atol):
    monkeypatch.setenv("VPKIT_CACHE_DIR", str(tmp_path / "cache"))
    # Eager convolutions default to TF32 on recent GPUs; the fp32 engine computes in fp32, so compare like with like.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = _tiny_svg().cuda().eval()
    plan = model.export_plan()
    for graph in plan.graphs.values():
        graph.module.eval()
    out = tmp_path / "export"
    out.mkdir()
    files = export_trt(plan, out, ExportOptions(batch=2, dynamic=True, half=half, device="cuda"))
    assert files == {name: f"{name}.engine" for name in plan.graphs}
    assert all((out / f"{name}.onnx").is_file() for name in plan.graphs)
    build = json.loads((out / "tensorrt.json").read_text())
    assert build["fp16"] is half and build["profiles"]["encode"]["frames"]["max"][0] == 2
    assert (tmp_path / "cache" / "tensorrt" / "timing.cache").is_file()

    section = {"graphs": {name: {"file": file, "batch_axes": {n: a for n, axes in plan.graphs[name].dynamic_axes.items()
                                                              for a, label in axes.items() if label == "batch"}}
                          for name, file in files.items()},
               "tensorrt": build}
    backend = open_backend(out, section, torch.device("cuda"))
    assert backend.max_batch == 2
    context = torch.rand(2, 3, 1, 64, 64, generator=torch.Generator().manual_seed(1)).cuda()
    noise = model.sample_noise(2, 3, 4, generator=torch.Generator().manual_seed(2), device="cuda")
    with torch.no_grad():
        eager = model.rollout(TorchBackend(plan), context, 4, noise)
        frames = model.rollout(backend, context, 4, noise)
    assert frames.dtype == torch.float32 and frames.device.type == "cuda" and frames.shape == eager.shape
    assert float((frames - eager).abs().max()) <= atol

    with pytest.raises(VpkitError, match="re-export with --batch 3"):
        backend.run("encode", {"frames": torch.rand(3, 1, 64, 64, device="cuda")})
