"""What this installation can do: library versions, devices, and the optional features each library enables.

Every check imports or probes one thing and reports what it found; a check never raises. A feature is "ok" only
when it was exercised, not merely importable: an ONNX Runtime provider counts when a one-node model runs on it, a
CUDA device when a kernel runs on it, decord when it decodes, ffmpeg when it runs. What is missing comes with the
command that fixes it.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

OK, MISSING, BROKEN = "ok", "missing", "broken"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, its status, what was found, and the fix when not ok."""

    name: str
    status: str
    found: str
    fix: str = ""
    feature: str = ""


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _library(name: str, module: str, feature: str, fix: str, distributions: tuple[str, ...] = ()) -> Check:
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        return Check(name, MISSING, f"not importable ({exc})", fix, feature)
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything at import
        return Check(name, BROKEN, f"import fails: {type(exc).__name__}: {exc}", fix, feature)
    version = getattr(imported, "__version__", None)
    for distribution in distributions or (name,):
        version = version or _version(distribution)
    return Check(name, OK, str(version or "installed"), "", feature)


def python_check() -> Check:
    return Check("python", OK, f"{sys.version.split()[0]} ({sys.executable})")


def torch_checks() -> list[Check]:
    """torch itself, CUDA (a kernel really runs), cuDNN and bf16 support."""
    try:
        import torch
    except ImportError as exc:
        return [Check("torch", MISSING, str(exc), "pip install torch==2.14.1 torchvision==0.29.1")]
    checks = [Check("torch", OK, torch.__version__, feature="everything")]
    built_cuda = torch.version.cuda
    if not torch.cuda.is_available():
        found = f"build with CUDA {built_cuda}, no GPU visible" if built_cuda else "CPU-only build"
        checks.append(Check("cuda", MISSING, found, "a CUDA build of torch and a visible NVIDIA GPU (nvidia-smi)",
                            "GPU training, --precision bf16-mixed/16-mixed, TensorRT"))
    else:
        try:
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            (torch.ones(8, device="cuda") * 2).sum().item()
            bf16 = torch.cuda.is_bf16_supported()
            checks.append(Check("cuda", OK, f"CUDA {built_cuda}; {len(names)} device(s): {', '.join(names)}; "
                                f"bf16 {'yes' if bf16 else 'no'}", feature="GPU training and mixed precision"))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check("cuda", BROKEN, f"a kernel failed: {exc}", "check the driver (nvidia-smi) against "
                                f"the CUDA {built_cuda} build of torch", "GPU training"))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    checks.append(Check("cudnn", OK if cudnn else MISSING, str(cudnn) if cudnn else "not available",
                        "" if cudnn else "comes with a CUDA build of torch", "fast GPU convolutions"))
    distributed = torch.distributed.is_available()
    backends = [name for name, ok in (("gloo", distributed and torch.distributed.is_gloo_available()),
                                      ("nccl", distributed and torch.distributed.is_nccl_available())) if ok]
    checks.append(Check("torch.distributed", OK if backends else MISSING, ", ".join(backends) or "not built in",
                        "" if backends else "a torch build with distributed support", "multi-process training"))
    return checks


def onnxruntime_check() -> Check:
    """ONNX Runtime, and which execution providers really run a one-node model."""
    feature = "vpkit export --format onnx, exported predict"
    fix = "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA), never both: they share one package folder"
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("onnxruntime", MISSING, str(exc), fix, feature)
    both = _version("onnxruntime") and _version("onnxruntime-gpu")
    try:
        import onnx
        from onnx import TensorProto, helper

        node = helper.make_node("Relu", ["x"], ["y"])
        graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, 8)
        payload = model.SerializeToString()
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        return Check("onnxruntime", BROKEN, f"{ort.__version__}; cannot build a probe model: {exc}",
                     "pip install onnx", feature)
    import numpy as np

    working, failing = [], []
    for provider in ort.get_available_providers():
        try:
            session = ort.InferenceSession(payload, providers=[provider])
            session.run(None, {"x": np.array([-1.0, 1.0], dtype=np.float32)})
            if provider in session.get_providers():
                working.append(provider.removesuffix("ExecutionProvider"))
            else:
                failing.append(provider.removesuffix("ExecutionProvider"))
        except Exception:  # noqa: BLE001
            failing.append(provider.removesuffix("ExecutionProvider"))
    found = f"{ort.__version__}; providers that run: {', '.join(working) or 'none'}"
    if failing:
        found += f"; listed but failing: {', '.join(failing)}"
    if both:
        return Check("onnxruntime", BROKEN, found + "; both onnxruntime and onnxruntime-gpu are installed", fix,
                     feature)
    return Check("onnxruntime", OK if working else BROKEN, found, "" if working else fix, feature)


def decord_check() -> Check:
    feature = "fast video decoding (vpkit predict, data convert)"
    fix = "pip install decord==0.6.0 (ffmpeg is used without it)"
    try:
        import decord
    except ImportError as exc:
        return Check("decord", MISSING, str(exc), fix, feature)
    except Exception as exc:  # noqa: BLE001
        return Check("decord", BROKEN, f"import fails: {exc}", fix, feature)
    return Check("decord", OK, getattr(decord, "__version__", "installed"), "", feature)


def ffmpeg_check() -> Check:
    feature = "reading and writing MP4 (predict, data convert, KTH preparation)"
    path = shutil.which("ffmpeg")
    if path is None:
        return Check("ffmpeg", MISSING, "not on PATH", "apt-get install ffmpeg (or conda install ffmpeg)", feature)
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return Check("ffmpeg", BROKEN, f"{path} does not run: {exc}", "reinstall ffmpeg", feature)
    return Check("ffmpeg", OK, out.splitlines()[0] if out else path, "", feature)


def report() -> list[Check]:
    """Every check, in the order `vpkit doctor` prints them."""
    checks = [python_check(), *torch_checks()]
    checks.append(_library("torchvision", "torchvision", "LPIPS backbones", "pip install torchvision==0.29.1"))
    checks.append(_library("lpips", "lpips", "--metrics lpips", "pip install lpips"))
    checks.append(_library("onnx", "onnx", "vpkit export", "pip install onnx"))
    checks.append(onnxruntime_check())
    checks.append(_library("tensorrt", "tensorrt", "vpkit export --format trt (NVIDIA GPUs)",
                           "pip install tensorrt (needs an NVIDIA GPU and NVIDIA's package index)"))
    checks.append(decord_check())
    checks.append(ffmpeg_check())
    checks.append(_library("h5py", "h5py", "prepared datasets (vpkit data)", "pip install h5py"))
    checks.append(_library("scikit-image", "skimage", "the shapes dataset (DDLP)", "pip install scikit-image",
                           ("scikit-image",)))
    checks.append(_library("tensorboard", "tensorboard", "TensorBoard event files during training",
                           "pip install tensorboard"))
    return checks


def as_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(check) for check in checks]
