"""`vpkit export`, runtimes over export directories, `vpkit eval` on an export, and `vpkit benchmark`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.test_cli import assert_one_line_error, vpkit
from vpkit.core.checkpoint import META_FILE, plugin_section, save_checkpoint
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.exporter import export_model
from vpkit.engine.runtime import BatchedBackend, load_runtime

pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra: pip install 'vpkit[onnx]'")


def make_checkpoint(path: Path, model_key: str = "svg-lp", n_context: int = 3, n_future: int = 4) -> Path:
    spec = get_host().models.get(model_key)
    preset = spec.presets["tiny"]
    torch.manual_seed(0)
    model = spec.build(spec.config_cls(**dict(preset.model)), preset.frame_shape)
    data = {"name": "smmnist", "config": {}, "frame_shape": list(preset.frame_shape), "n_context": n_context,
            "n_future": n_future}
    return save_checkpoint(path, model, model_key=model_key, plugin=plugin_section("svg"), data=data)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    ckpt = make_checkpoint(root / "best")
    return ckpt, export_model(ckpt, "onnx").path


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_export_directory_is_self_describing(exported):
    ckpt, out = exported
    assert out == ckpt.parent / "best-onnx"
    meta = json.loads((out / META_FILE).read_text())
    section = meta["export"]
    assert section["format"] == "onnx" and section["precision"] == "fp32" and section["dynamic"]
    assert set(section["graphs"]) == {"encode", "decode", "predictor_step", "posterior_step", "prior_step"}
    for graph in section["graphs"].values():
        assert (out / graph["file"]).is_file()
    assert section["graphs"]["predictor_step"]["batch_axes"]["state_h"] == 1  # LSTM state: [layers, batch, hidden]
    parity = section["parity"]
    assert parity["passed"] and parity["max_abs_error"] < 1e-4
    assert parity["clips"].startswith("smmnist test clips")  # real clips of the checkpoint's dataset
    assert len(parity["psnr_delta_per_frame_db"]) == 4
    assert meta["model"] == json.loads((ckpt / META_FILE).read_text())["model"]
    assert not leftovers(ckpt.parent)


def test_runtime_of_an_export_predicts_like_the_checkpoint(exported):
    ckpt, out = exported
    eager, onnx = load_runtime(ckpt), load_runtime(out)
    assert onnx.backend_name == "onnx" and "CPUExecutionProvider" in onnx.describe()
    context = torch.rand(3, 3, 1, 64, 64, generator=torch.Generator().manual_seed(5))
    a = eager.predict(context, 6, num_samples=2, generator=torch.Generator().manual_seed(1))
    b = onnx.predict(context, 6, num_samples=2, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 2, 6, 1, 64, 64)  # a horizon beyond the training one
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4)


def test_static_export_splits_and_pads_other_batch_sizes(exported, tmp_path):
    ckpt, _ = exported
    out = export_model(ckpt, "onnx", out=tmp_path / "static", options={"batch": 2, "dynamic": False}).path
    runtime = load_runtime(out)
    assert isinstance(runtime.backend, BatchedBackend) and runtime.backend.exact
    context = torch.rand(3, 3, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    expected = load_runtime(ckpt).predict(context, 3, generator=torch.Generator().manual_seed(0))
    got = runtime.predict(context, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_backend_mismatches_are_explained(exported):
    ckpt, out = exported
    with pytest.raises(VpkitError, match="Export first: vpkit export"):
        load_runtime(ckpt, backend="onnx")
    with pytest.raises(VpkitError, match="holds no PyTorch weights"):
        load_runtime(out, backend="torch")
    with pytest.raises(VpkitError, match="torch backend only"):
        load_runtime(out, compile=True)
    with pytest.raises(VpkitError, match="not a checkpoint|is an export directory"):
        export_model(out, "onnx")
    with pytest.raises(VpkitError, match="no CUDA device|CUDA"):
        load_runtime(out, device="cuda")


def test_failed_parity_writes_nothing(exported, tmp_path):
    ckpt, _ = exported
    with pytest.raises(VpkitError, match="Parity check failed"):
        export_model(ckpt, "onnx", out=tmp_path / "strict", atol=0.0)
    assert not (tmp_path / "strict").exists() and not leftovers(tmp_path)


def test_options_are_checked_per_format(exported, tmp_path):
    ckpt, _ = exported
    cases = [
        ({"workspace": 2.0}, "--workspace is not an option of the onnx format"),
        ({"batch": 0}, "--batch must be at least 1"),
        ({"opset": 11}, "--opset 11 is out of range"),
        ({"half": True}, "need a CUDA device"),
    ]
    for options, needle in cases:
        with pytest.raises(VpkitError, match=needle):
            export_model(ckpt, "onnx", out=tmp_path / "x", options=options)
        assert not (tmp_path / "x").exists() and not leftovers(tmp_path)
    (tmp_path / "taken").mkdir()
    with pytest.raises(VpkitError, match="not a vpkit export directory"):
        export_model(ckpt, "onnx", out=tmp_path / "taken")


def test_trt_aliases_and_missing_tensorrt():
    from vpkit.engine.runtime import resolve_format

    spec = resolve_format("engine")
    assert spec.name == "trt" and resolve_format("tensorrt") is spec
    if spec.available() is None:
        pytest.skip("TensorRT is installed here: the missing-TensorRT message is not shown")
    assert "tensorrt" in spec.available().lower()


def test_ort_provider_checks(exported, monkeypatch):
    import onnxruntime as ort

    from vpkit.plugins.exporters.onnx import OnnxRuntimeBackend

    _, out = exported
    section = json.loads((out / META_FILE).read_text())["export"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(VpkitError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        OnnxRuntimeBackend(out, section, torch.device("cuda"))

    class FellBack:  # what ORT does when the CUDA libraries fail to load: a session on the CPU provider only
        def __init__(self, *args, **kwargs):
            pass

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", FellBack)
    with pytest.raises(VpkitError, match="fell back to CPUExecutionProvider instead of CUDAExecutionProvider"):
        OnnxRuntimeBackend(out, section, torch.device("cuda"))


def test_benchmark_rows(exported):
    from vpkit.engine.benchmark import benchmark

    ckpt, _ = exported
    rows = benchmark(ckpt, batches=(1, 2), runs=1, warmup=0, horizon=2)
    timed = {(r.backend, r.batch): r for r in rows if r.status == "ok"}
    assert set(timed) >= {("torch", 1), ("torch", 2), ("onnx", 1), ("onnx", 2)}
    for row in timed.values():
        assert row.latency_ms_per_frame > 0 and row.throughput_fps > 0 and row.peak_memory_mib >= 0
    assert timed[("torch", 1)].speedup_vs_eager == 1.0 and timed[("onnx", 1)].parity_max_abs < 1e-3
    skipped = [r for r in rows if r.status == "skipped"]
    assert all(r.detail["reason"] for r in skipped)


@pytest.mark.slow
def test_train_export_predict_eval_end_to_end(tmp_path):
    """What a user does on a fresh clone: train, export to ONNX, predict a real MP4 with the export, evaluate it."""
    import imageio.v3 as iio

    from vpkit.testing.videos import moving_shapes, write_test_video

    run = tmp_path / "run"
    vpkit("train", "--plugin", "svg", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--out", str(run),
          "--set", "train.val_videos=2")
    ckpt = run / "checkpoints" / "last"
    proc = vpkit("export", str(ckpt), "--format", "onnx")
    export = ckpt.parent / "last-onnx"
    assert "Parity vs eager PyTorch" in proc.stdout and "passed" in proc.stdout
    assert f"vpkit predict VIDEO.mp4 --model {export}" in proc.stdout.replace("\n", "")
    video = write_test_video(tmp_path / "some_video.mp4", moving_shapes(24, 90, 160, seed=3), fps=12)
    proc = vpkit("predict", str(video), "--model", str(export), "--samples", "3", "--out", str(tmp_path / "p.mp4"),
                 "--json")
    outputs = json.loads(proc.stdout)
    mp4, gif = iio.imread(outputs["mp4"]), iio.imread(outputs["gif"])
    assert len(mp4) == len(gif) == 2 + 2  # the tiny recipe: 2 context + 2 predicted frames
    assert mp4.shape[2] > 5 * mp4.shape[1]  # context | 3 samples | ground truth, side by side
    proc = vpkit("eval", str(export), "--samples", "2", "--videos", "2", "--metrics", "psnr", "--device", "cpu",
                 "--out", str(tmp_path / "eval"), "--json")
    report = json.loads(proc.stdout)
    assert "onnx" in report["checkpoint"]["backend"] and report["checkpoint"]["export"]["format"] == "onnx"
    assert_one_line_error(vpkit("export", str(ckpt), "--format", "onx", ok=False), "Did you mean 'onnx'?")
    assert_one_line_error(vpkit("export", str(tmp_path / "nope"), ok=False), "not found")
    assert_one_line_error(vpkit("export", str(ckpt), "--format", "trt", ok=False), "vpkit[tensorrt]")


def test_checkpoint_of_a_missing_plugin(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt")
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["model"]["key"], meta["plugin"] = "srvp", {"name": "srvp", "distribution": "vpkit-srvp", "version": "0.1.0"}
    (ckpt / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(VpkitError, match="pip install 'vpkit-srvp==0.1.0'"):
        export_model(ckpt, "onnx")
    assert not leftovers(tmp_path)



@pytest.mark.slow
def test_compiled_torch_runtime_predicts_like_eager(exported):
    ckpt, _ = exported
    eager, compiled = load_runtime(ckpt), load_runtime(ckpt, compile=True)
    assert "compiled" in compiled.describe()
    context = torch.rand(2, 3, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    a = eager.predict(context, 3, num_samples=2, generator=torch.Generator().manual_seed(0))
    b = compiled.predict(context, 3, num_samples=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-4)
