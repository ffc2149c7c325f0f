"""Export a checkpoint to a format's graphs, check them against eager PyTorch, and write an export directory.

An export directory holds one file per graph of the model's `ExportPlan` and the checkpoint's `vpkit.json` with an
`export` section: format, precision, opset, batch, dynamic, the graphs' files and names, library versions and the
parity figures. Parity is part of export: the eager model and the exported graphs sample the same clips with the
same noise through the model's own `rollout`; past the tolerance of the precision the export fails and nothing is
written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vpkit.core.checkpoint import META_FILE, atomic_dir, load_model, read_checkpoint
from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.model import Backend, TorchBackend, VideoPredictor
from vpkit.core.plugins import get_host
from vpkit.core.specs import ExporterSpec, ExportOptions
from vpkit.engine.runtime import eval_plan, open_export, resolve_device, resolve_format
from vpkit.plugins.metrics.psnr import psnr

# Largest |exported - eager| pixel difference (frames in [0, 1]) an export may show over a whole rollout.
PARITY_ATOL = {"fp32": 1e-3, "fp16": 5e-2}
PARITY_SEED = 0
OPTION_FLAGS = {"opset": "--opset", "half": "--half", "batch": "--batch", "dynamic": "--dynamic/--static",
                "workspace": "--workspace", "device": "--device"}


@dataclass
class ExportResult:
    """Where the export went and what parity showed (`export` is the `export` section of its vpkit.json)."""

    path: Path
    export: dict[str, Any]

    @property
    def parity(self) -> dict[str, Any]:
        return self.export["parity"]


def build_options(spec: ExporterSpec, given: Mapping[str, Any]) -> ExportOptions:
    """`ExportOptions` from the options the user set (None = not set); options the format does not take are
    errors that name what it does take."""
    given = {k: v for k, v in given.items() if v is not None}
    unknown = [k for k in given if k not in {f.name for f in dataclasses.fields(ExportOptions)}]
    if unknown:
        raise VpkitError(f"Unknown export option(s): {', '.join(unknown)}.")
    refused = [k for k in given if k not in spec.options]
    if refused:
        takes = ", ".join(OPTION_FLAGS.get(k, k) for k in spec.options)
        raise VpkitError(f"{', '.join(OPTION_FLAGS.get(k, k) for k in refused)} is not an option of the "
                         f"{spec.name} format (it takes {takes}).")
    options = ExportOptions(**given)
    if options.batch < 1:
        raise VpkitError(f"--batch must be at least 1; got {options.batch}.")
    if not 18 <= options.opset <= 23:
        raise VpkitError(f"--opset {options.opset} is out of range: PyTorch's ONNX exporter writes opsets 18 to 23 "
                         f"(18 is the default).")
    if options.workspace is not None and options.workspace <= 0:
        raise VpkitError(f"--workspace must be a positive number of GiB; got {options.workspace}.")
    return options


def default_out(checkpoint: Path, spec: ExporterSpec) -> Path:
    """`runs/x/checkpoints/best` -> `runs/x/checkpoints/best-onnx`."""
    return checkpoint.parent / f"{checkpoint.name}-{spec.name}"


def parity_clips(meta: Mapping[str, Any], batch: int, device: torch.device) -> tuple[Tensor, Tensor | None, str]:
    """`batch` test clips of the checkpoint's own dataset (context + future, float in [0, 1]) and where they came
    from; uniform noise frames when that dataset cannot be read here (its files are not prepared)."""
    data = meta["data"]
    length = int(data["n_context"]) + int(data["n_future"])
    host = get_host()
    reason = f"dataset '{data['name']}' is not registered"
    if data["name"] in host.datasets:
        spec = host.datasets.get(data["name"])
        try:
            dataset = spec.build(build_config(spec.config_cls, data.get("config", {})), "test")
            clips = [torch.as_tensor(dataset[i % len(dataset)]) for i in range(batch)]
            video = torch.stack(clips)[:, :length]
            video = video.float() / 255 if video.dtype == torch.uint8 else video.float()
            if video.shape[1] == length and tuple(video.shape[2:]) == tuple(data["frame_shape"]):
                return video.to(device), video.to(device), f"{data['name']} test clips 0..{batch - 1}"
            reason = f"its test clips have shape {tuple(video.shape[1:])}"
        except (VpkitError, OSError, ValueError) as exc:
            reason = str(exc)
    generator = torch.Generator().manual_seed(PARITY_SEED)
    video = torch.rand(batch, length, *data["frame_shape"], generator=generator)
    return video.to(device), None, f"uniform random frames ({reason})"


def compare(eager: Tensor, exported: Tensor, truth: Tensor | None) -> dict[str, Any]:
    """Parity figures of two `[B, T, C, H, W]` predictions of the same clips and noise."""
    diff = (exported.float() - eager.float()).abs()
    figures: dict[str, Any] = {
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "psnr_vs_eager_min_db": float(psnr(exported.float(), eager.float()).min()),
    }
    if truth is not None:
        delta = (psnr(exported.float(), truth) - psnr(eager.float(), truth)).mean(dim=0)  # per predicted frame
        figures["psnr_delta_per_frame_db"] = [round(float(d), 5) for d in delta]
        figures["psnr_delta_max_db"] = float(delta.abs().max())
    return figures


@contextmanager
def exact_fp32() -> Iterator[None]:
    """Eager CUDA convolutions default to TF32; the reference of a parity check must be true fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def check_parity(
    model: VideoPredictor, eager: Backend, exported: Backend, video: Tensor, truth: Tensor | None,
    n_context: int, precision: str, atol: float | None,
) -> dict[str, Any]:
    """Roll out the `eager` and `exported` backends on the same context and noise; the figures say whether the
    largest difference is within the tolerance of `precision` (or `atol`)."""
    context, horizon = video[:, :n_context], video.shape[1] - n_context
    noise = model.sample_noise(video.shape[0], n_context, horizon,
                               generator=torch.Generator().manual_seed(PARITY_SEED), device=video.device)
    with torch.no_grad(), exact_fp32():
        reference = model.rollout(eager, context, horizon, noise)
    with torch.no_grad():
        out = model.rollout(exported, context, horizon, noise)
    figures = compare(reference, out, None if truth is None else truth[:, n_context:])
    tolerance = PARITY_ATOL[precision] if atol is None else atol
    figures.update(tolerance=tolerance, passed=figures["max_abs_error"] <= tolerance)
    return figures


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorrt"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def export_model(
    checkpoint: Path | str,
    fmt: str,
    *,
    out: Path | str | None = None,
    options: Mapping[str, Any] | None = None,
    atol: float | None = None,
    sampling: Mapping[str, Any] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export `checkpoint` to `fmt` (a format name or alias) with `options` (ExportOptions fields; None = default),
    check parity against eager PyTorch and write the export directory. Returns where it went and the figures.
    `sampling` ({name: value}) applies the model's sampling options first; the export's `vpkit.json` then holds the
    changed model config, so the export samples that way."""
    from vpkit.core.sampling import reconfigure, record

    stage = on_stage or (lambda _: None)
    checkpoint = Path(checkpoint)
    spec = resolve_format(fmt)
    missing = spec.available()
    if missing:
        raise VpkitError(missing)
    ckpt = read_checkpoint(checkpoint)
    if "export" in ckpt.meta:
        raise VpkitError(f"{checkpoint} is an export directory ({ckpt.meta['export']['format']}), not a checkpoint; "
                         f"export the checkpoint it came from ({ckpt.meta['export'].get('source', '?')}).")
    given = dict(options or {})
    device = resolve_device(given.get("device") or "cpu")
    opts = dataclasses.replace(build_options(spec, given), device=str(device))
    if spec.gpu and device.type != "cuda":
        raise VpkitError(f"The {spec.name} format builds for a CUDA device; add --device cuda.")
    precision = "fp16" if opts.half else "fp32"
    target = Path(out) if out is not None else default_out(checkpoint, spec)
    if target.exists():
        try:
            is_export = "export" in read_checkpoint(target).meta
        except VpkitError:
            is_export = False
        if not is_export:
            raise VpkitError(f"{target} exists and is not a vpkit export directory; choose another --out.")

    stage("loading the checkpoint")
    model, _ = load_model(checkpoint, device=device)
    model = reconfigure(model.eval(), ckpt.model_key, sampling)
    plan = eval_plan(model)
    meta = json.loads(json.dumps(ckpt.meta))  # a deep copy that is surely JSON
    meta["model"]["config"] = model.config.model_dump(mode="json")
    graphs = {name: {"file": "", "inputs": list(g.input_names), "outputs": list(g.output_names),
                     "batch_axes": g.batch_axes} for name, g in plan.graphs.items()}
    section: dict[str, Any] = {
        "format": spec.name, "precision": precision, "opset": opts.opset, "batch": opts.batch,
        "dynamic": opts.dynamic, "device": str(device), "graphs": graphs, "source": str(checkpoint),
        "versions": _versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "parity": {},
    }
    if opts.workspace is not None:
        section["workspace_gib"] = opts.workspace
    if sampling:
        section["sampling"] = record(sampling)
    meta["export"] = section

    with atomic_dir(target) as tmp:
        stage(f"exporting {len(plan.graphs)} graphs to {spec.name}")
        files = spec.export(plan, tmp, opts)
        missing_graphs = set(plan.graphs) - set(files)
        if missing_graphs:
            raise VpkitError(f"The {spec.name} exporter wrote no file for graph(s) {', '.join(sorted(missing_graphs))}.")
        for name, file in files.items():
            graphs[name]["file"] = file
        for facts in tmp.glob("*.json"):  # format-specific build facts (e.g. tensorrt.json)
            section[facts.stem] = json.loads(facts.read_text())

        stage("checking parity against eager PyTorch")
        video, truth, source = parity_clips(meta, opts.batch, device)
        figures = check_parity(model, TorchBackend(plan), open_export(spec, tmp, section, device), video, truth,
                               int(meta["data"]["n_context"]), precision, atol)
        section["parity"] = {"clips": source, "batch": opts.batch, "noise_seed": PARITY_SEED,
                             "horizon": int(meta["data"]["n_future"]), **figures}
        if not figures["passed"]:
            raise VpkitError(
                f"Parity check failed: the {spec.name} graphs differ from eager PyTorch by up to "
                f"{figures['max_abs_error']:.3g} (tolerance {figures['tolerance']:.3g} for {precision}); nothing "
                f"was written. Pass --atol to accept a larger error.")
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if spec.embed is not None:
            spec.embed(tmp, meta)
    return ExportResult(target, section)

