"""`vpkit predict`: streaming MP4/GIF writers, frame selection and preprocessing, panel layout, one-shot and sliding
prediction on real ffmpeg-encoded videos with a tiny SVG checkpoint, and the bad inputs of the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from vpkit.core.errors import VpkitError
from vpkit.core.source import VideoSource
from vpkit.engine.media import BORDER_COLOURS
from vpkit.engine.predictor import (
    MIN_TILE_HEIGHT,
    FrameSelection,
    PanelLayout,
    default_output,
    plan_windows,
    predict_video,
    preprocess,
    selected_chunks,
)
from vpkit.engine.video_writer import GifWriter, Mp4Writer, close_all
from vpkit.testing.videos import moving_shapes, write_test_video

ENV = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg", "PYTHONUNBUFFERED": "1"}


def vpkit(*args: str, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "vpkit", *args], capture_output=True, text=True, cwd=cwd, env=ENV,
                          timeout=600, check=False)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def read_mp4(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def read_gif(path: Path) -> np.ndarray:
    return iio.imread(path, index=None)[..., :3]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# -- test doubles: an in-memory source and a runtime that needs no model ------------------------------------------


class ArraySource(VideoSource):
    """Frames from an array, counting how many it has handed out (to check that reading is lazy)."""

    def __init__(self, frames: np.ndarray, fps: float | None = 25.0, known_length: bool = True) -> None:
        self.video = frames
        self.uri = "array"
        self.size = frames.shape[1:3]
        self.num_frames = len(frames) if known_length else None
        self.fps = fps
        self.yielded = 0

    def chunks(self, start: int = 0, stride: int = 1, chunk: int = 64) -> Iterator[np.ndarray]:
        indices = list(range(start, len(self.video), stride))
        for lo in range(0, len(indices), chunk):
            block = self.video[indices[lo: lo + chunk]]
            self.yielded += len(block)
            yield block


def index_video(num_frames: int, size: int = 8) -> np.ndarray:
    """Frame i is flat grey with value i: the selected indices can be read back off the pixels."""
    return np.repeat(np.arange(num_frames, dtype=np.uint8), size * size * 3).reshape(num_frames, size, size, 3)


class FakeRuntime:
    """Predicts the last context frame plus generator noise; records what the source had handed out per call."""

    backend_name = "fake"
    model_key = "fake"
    device = torch.device("cpu")

    def __init__(self, frame_shape=(1, 16, 16), n_context=3, n_future=4, stochastic=True, source=None):
        self.frame_shape, self.n_context, self.n_future = frame_shape, n_context, n_future
        self.stochastic, self.source = stochastic, source
        self.calls: list[tuple[int, int, int]] = []  # (context length, horizon, frames read from the source so far)

    def describe(self) -> str:
        return "fake · fake on cpu"

    def predict(self, context, horizon, *, num_samples=1, generator=None):
        self.calls.append((context.shape[1], horizon, self.source.yielded if self.source else -1))
        s = num_samples if self.stochastic else 1
        base = context[:, None, -1:].expand(-1, s, horizon, *context.shape[2:])
        return (base + 0.1 * torch.randn(base.shape, generator=generator)).clamp(0, 1)


# -- writers --------------------------------------------------------------------------------------------------------


def test_writers_stream_playable_mp4_and_gif(tmp_path):
    frames = np.repeat(moving_shapes(4, 37, 51, seed=0), 2, axis=0)  # an odd size; repeated frames
    frames[:, 10:20, 10:30] = [255, 0, 0]
    mp4, gif = Mp4Writer(tmp_path / "a.mp4", fps=10), GifWriter(tmp_path / "a.gif", fps=10)
    for frame in frames:
        mp4.append(frame)
        gif.append(frame)
    # while encoding, only hidden temporary names may exist (whether ffmpeg created them yet is a race)
    assert [p for p in files_under(tmp_path) if not p.name.startswith(".")] == []
    assert close_all([mp4, gif]) == [tmp_path / "a.mp4", tmp_path / "a.gif"]
    assert files_under(tmp_path) == [tmp_path / "a.gif", tmp_path / "a.mp4"]

    video = read_mp4(tmp_path / "a.mp4")
    assert video.shape == (8, 38, 52, 3)  # padded to even for yuv420p
    assert np.abs(video[:, :37, :51].astype(int) - frames).mean() < 5  # measured 2.9 (4:2:0 chroma at the red block)
    assert np.abs(video[:, 12:18, 12:28].astype(int) - [255, 0, 0]).max() < 40
    looped = read_gif(tmp_path / "a.gif")
    assert looped.shape == (8, 37, 51, 3)
    assert np.abs(looped[:, 12:18, 12:28].astype(int) - [255, 0, 0]).max() < 10
    assert np.abs(looped.astype(int) - frames).mean() < 3


def test_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError), Mp4Writer(tmp_path / "b.mp4", fps=5) as writer:
        writer.append(np.zeros((16, 16, 3), np.uint8))
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="differs"), GifWriter(tmp_path / "b.gif", fps=5) as writer:
        writer.append(np.zeros((16, 16, 3), np.uint8))
        writer.append(np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(VpkitError, match="No frames"):
        Mp4Writer(tmp_path / "c.mp4", fps=5).close()
    assert files_under(tmp_path) == []


# -- frame selection and preprocessing ------------------------------------------------------------------------------


def selected_indices(source: VideoSource, selection: FrameSelection, chunk: int = 4) -> list[int]:
    return [int(frame[0, 0, 0]) for block in selected_chunks(source, selection, chunk) for frame in block]


@pytest.mark.parametrize("selection, source_fps, expected", [
    (FrameSelection(), 25, list(range(10))),
    (FrameSelection(start=3), 25, list(range(3, 10))),
    (FrameSelection(stride=3), None, [0, 3, 6, 9]),
    (FrameSelection(start=1, stride=3), None, [3, 6, 9]),  # --start counts frames after striding
    (FrameSelection(fps=12.5), 25, [0, 2, 4, 6, 8]),  # a whole factor: the same as --stride 2
    (FrameSelection(fps=10), 25, [0, 3, 5, 8]),  # nearest frame to t = i / 10 s, halves rounded up
    (FrameSelection(start=2, fps=10), 25, [5, 8]),
    (FrameSelection(fps=50), 25, [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]),  # faster: repeats
])
def test_frame_selection(selection, source_fps, expected):
    source = ArraySource(index_video(10), fps=source_fps)
    assert selected_indices(source, selection) == expected
    ratio = selection.ratio(source_fps)
    assert selection.count(10, ratio) == len(expected)


def test_frame_selection_rejects_bad_combinations():
    with pytest.raises(VpkitError, match="--fps and --stride"):
        FrameSelection(stride=2, fps=10)
    with pytest.raises(VpkitError, match="--start"):
        FrameSelection(start=-1)
    with pytest.raises(VpkitError, match="--stride"):
        FrameSelection(stride=0)
    with pytest.raises(VpkitError, match="--fps"):
        FrameSelection(fps=0)
    with pytest.raises(VpkitError, match="frame rate"):
        FrameSelection(fps=10).ratio(None, "frames/")


def test_preprocess_resizes_the_shorter_side_and_crops_the_centre():
    frame = np.zeros((1, 40, 80, 3), np.uint8)
    frame[..., :20, :] = [255, 0, 0]  # left quarter red: cropped away
    frame[..., 20:60, :] = [0, 255, 0]  # middle half green: kept
    frame[..., 60:, :] = [0, 0, 255]
    rgb = preprocess(frame, (3, 20, 20))
    assert rgb.shape == (1, 3, 20, 20) and rgb.dtype == torch.float32
    torch.testing.assert_close(rgb[0, :, 2:-2, 2:-2].mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]), atol=1e-3,
                               rtol=0)
    grey = preprocess(frame, (1, 20, 20))
    assert grey.shape == (1, 1, 20, 20)
    torch.testing.assert_close(grey[0, 0, 5:-5, 5:-5], torch.full((10, 10), 0.587), atol=1e-3, rtol=0)
    # a portrait frame onto a landscape model: the width fills, the height is cropped; values stay in [0, 1]
    tall = np.random.default_rng(0).integers(0, 256, (2, 90, 30, 3), dtype=np.uint8)
    out = preprocess(tall, (3, 16, 24))
    assert out.shape == (2, 3, 16, 24) and 0 <= out.min() and out.max() <= 1
    # the same size passes through untouched
    torch.testing.assert_close(preprocess(tall, (3, 90, 30))[0], torch.from_numpy(tall[0]).permute(2, 0, 1) / 255)


# -- panels and windows ---------------------------------------------------------------------------------------------


def test_panel_layout_columns_and_borders():
    layout = PanelLayout((64, 64), num_samples=3, truth=True)
    assert layout.scale == 2 and layout.columns == ["context", "sample 1", "sample 2", "sample 3", "truth"]
    tile = 64 * 2 + 4
    assert layout.size == (tile, 5 * tile + 4 * 2)
    frame = np.full((64, 64, 3), 100, np.uint8)
    context = layout.context_step(frame)
    assert context.shape == (*layout.size, 3)
    for column in range(5):
        assert tuple(context[0, column * (tile + 2) + 5]) == BORDER_COLOURS["context"]
    predicted = layout.predicted_step(frame, [frame] * 3, None)
    colours = [tuple(predicted[0, column * (tile + 2) + 5]) for column in range(5)]
    assert colours == [BORDER_COLOURS["context"], *[BORDER_COLOURS["sample"]] * 3, (150, 150, 150)]
    assert (predicted[10, -10] == 235).all()  # no ground truth left: a flat tile
    assert tuple(layout.predicted_step(frame, [frame] * 3, frame)[0, -5]) == BORDER_COLOURS["truth"]
    assert PanelLayout((16, 20), 1, truth=False).scale == math.ceil(MIN_TILE_HEIGHT / 16)
    assert PanelLayout((200, 200), 1, truth=False).scale == 1


def test_sliding_windows_tile_the_video():
    assert plan_windows(12, 3, 4) == [(0, 4), (4, 4), (8, 1)]  # predictions cover frames 3..11 exactly once
    assert plan_windows(11, 3, 4) == [(0, 4), (4, 4)]
    assert plan_windows(3, 3, 4) == []
    covered = [f + 3 + t for f, n in plan_windows(50, 3, 5) for t in range(n)]
    assert covered == list(range(3, 50))


def test_default_output_is_named_after_the_source():
    assert default_output("clips/walk.mp4") == Path("runs/predict/walk.mp4")
    assert default_output("frames/") == Path("runs/predict/frames.mp4")


# -- streaming with a fake runtime ----------------------------------------------------------------------------------


@pytest.mark.parametrize("known_length", [True, False])
def test_sliding_streams_with_bounded_buffering(tmp_path, known_length):
    peaks = []
    for length in (40, 120):
        source = ArraySource(index_video(length, 16), known_length=known_length)
        runtime = FakeRuntime(source=source)
        progress: list[tuple[int, int | None]] = []
        result = predict_video(runtime, source, tmp_path / f"s{length}.mp4", sliding=True, chunk=4,
                               on_progress=lambda done, total, seen=progress: seen.append((done, total)))
        windows = plan_windows(length, 3, 4)
        assert result.windows == len(windows) and result.frames == length and result.truth_frames == length - 3
        assert [(c, h) for c, h, _ in runtime.calls] == [(3, n) for _, n in windows]
        # the source is read lazily: when window w is predicted, at most one chunk past its frames has been read
        for (first, n), (_, _, read) in zip(windows, runtime.calls, strict=True):
            assert read <= first + 3 + n + 4
        assert progress[-1] == (length, length if known_length else None)
        peaks.append(result.peak_buffered)
        assert len(read_mp4(result.mp4)) == length and len(read_gif(result.gif)) == length
    assert peaks == [7, 7]  # one window (context + horizon) however long the video


def test_one_shot_reads_only_what_it_needs(tmp_path):
    source = ArraySource(index_video(500, 16))
    runtime = FakeRuntime(source=source, stochastic=False)
    result = predict_video(runtime, source, tmp_path / "o.mp4", num_samples=3, chunk=4)
    assert source.yielded <= 3 + 4 + 4
    assert result.num_samples == 1 and result.columns == ["context", "sample 1", "truth"]
    assert result.frames == 7 and result.truth_frames == 4


def test_prediction_errors_leave_no_files(tmp_path):
    out = tmp_path / "deep" / "er" / "x.mp4"
    source = ArraySource(index_video(5, 16))
    with pytest.raises(VpkitError, match=r"gives 5 frames, fewer than --context 6"):
        predict_video(FakeRuntime(), source, out, context=6)
    with pytest.raises(VpkitError, match=r"gives 2 of 5 frames from --start 3; --sliding needs"):
        predict_video(FakeRuntime(), source, out, sliding=True, selection=FrameSelection(start=3))
    with pytest.raises(VpkitError, match=r"gives 2 frames at --stride 3, fewer than --context 3"):
        predict_video(FakeRuntime(), ArraySource(index_video(5, 16), known_length=False), out,
                      selection=FrameSelection(stride=3))
    with pytest.raises(VpkitError, match=r"\.mp4"):
        predict_video(FakeRuntime(), source, tmp_path / "x.avi")

    class Failing(FakeRuntime):
        def predict(self, *args, **kwargs):
            if len(self.calls) == 2:
                raise VpkitError("the backend failed")
            return super().predict(*args, **kwargs)

    with pytest.raises(VpkitError, match="backend failed"):  # after the first window's panels were written
        predict_video(Failing(), ArraySource(index_video(30, 16)), out, sliding=True)
    assert files_under(tmp_path) == [] and not (tmp_path / "deep").exists()


# -- real videos, a tiny SVG checkpoint --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained svg-lp of the `tiny` preset: 2 context -> 2 predicted frames, 64x64 grey."""
    from vpkit.core.checkpoint import plugin_section, save_checkpoint
    from vpkit.core.config import build_config
    from vpkit.core.plugins import get_host

    spec = get_host().models.get("svg-lp")
    preset = spec.presets["tiny"]
    torch.manual_seed(0)
    model = spec.build(build_config(spec.config_cls, preset.model), preset.frame_shape)
    data = {"name": "smmnist", "config": {}, "frame_shape": list(preset.frame_shape), "n_context": 2, "n_future": 2}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model.eval(), model_key="svg-lp",
                           plugin=plugin_section(spec.plugin), data=data)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Real h264 files (48x80 at 25 fps) of several lengths."""
    folder = tmp_path_factory.mktemp("videos")
    shapes = moving_shapes(40, 48, 80, seed=1)
    return {name: write_test_video(folder / f"{name}.mp4", shapes[:length])
            for name, length in (("one", 1), ("two", 2), ("three", 3), ("short", 12), ("long", 40))}


def run_predict(checkpoint: Path, uri: str | Path, out: Path, **options):
    from vpkit.engine.runtime import load_runtime
    from vpkit.engine.video_source import open_video

    runtime = load_runtime(options.pop("model", checkpoint), backend=options.pop("backend", None))
    with open_video(str(uri)) as source:
        return predict_video(runtime, source, out, **options)


def tiles(panel_video: np.ndarray, columns: int, scale: int = 2) -> np.ndarray:
    """Split panel frames `[T, H, W, 3]` into their columns' pictures `[columns, T, 64 * scale, 64 * scale, 3]`."""
    size, step = 64 * scale, 64 * scale + 4 + 2
    return np.stack([panel_video[:, 2: 2 + size, c * step + 2: c * step + 2 + size] for c in range(columns)])


def test_one_shot_panels_on_a_real_video(checkpoint, videos, tmp_path):
    result = run_predict(checkpoint, videos["short"], tmp_path / "p.mp4", horizon=4, num_samples=3)
    assert (result.frames, result.windows, result.truth_frames) == (6, 1, 4)
    assert result.columns == ["context", "sample 1", "sample 2", "sample 3", "truth"]
    height, width = 64 * 2 + 4, 5 * (64 * 2 + 4) + 4 * 2
    assert result.panel_size == (height, width) and result.fps == 25
    assert read_mp4(result.mp4).shape == (6, height, width, 3)
    gif = read_gif(result.gif)
    assert gif.shape == (6, height, width, 3) and result.gif == tmp_path / "p.gif"
    # what the model saw: frames fitted to 64x64 grey, shown 2x; the truth column is the video's next frames
    from vpkit.engine.media import to_uint8

    fitted = to_uint8(preprocess(moving_shapes(40, 48, 80, seed=1)[:6], (1, 64, 64)))
    fitted = fitted.repeat(2, axis=1).repeat(2, axis=2).astype(int)
    columns = tiles(gif, 5).astype(int)
    assert np.abs(columns[:, :2] - fitted[None, :2]).mean() < 3  # context steps: every column
    assert np.abs(columns[0, 2:] - fitted[1]).mean() < 3  # the context column holds the last context frame
    assert np.abs(columns[4, 2:] - fitted[2:]).mean() < 3
    assert np.abs(columns[1, 2:] - fitted[2:]).mean() > 10  # an untrained model's samples are not the truth
    assert sorted(p.name for p in files_under(tmp_path)) == ["p.gif", "p.mp4"]


def test_ground_truth_column_only_while_the_video_continues(checkpoint, videos, tmp_path):
    ended = run_predict(checkpoint, videos["two"], tmp_path / "ended.mp4", horizon=3, num_samples=2)
    assert ended.columns == ["context", "sample 1", "sample 2"] and ended.truth_frames == 0
    assert read_gif(ended.gif).shape[:3] == (5, 132, 3 * 132 + 2 * 2)
    partial = run_predict(checkpoint, videos["three"], tmp_path / "partial.mp4", horizon=3, num_samples=2)
    assert partial.columns[-1] == "truth" and partial.truth_frames == 1
    truth = tiles(read_gif(partial.gif), 4)[3]
    assert truth[2].std() > 5  # the one true future frame
    assert (np.abs(truth[3:].astype(int) - 235) <= 2).all()  # then a flat tile: the video has ended


def test_sliding_tiles_a_real_video(checkpoint, videos, tmp_path):
    result = run_predict(checkpoint, videos["long"], tmp_path / "stride.mp4", sliding=True, horizon=3,
                         num_samples=1, selection=FrameSelection(stride=4, start=1))
    # frames 4, 8, ..., 36: 9 frames; windows of 2 + 3 hopping by 3 predict the 7 after the context (3 + 3 + 1)
    assert (result.frames, result.windows, result.truth_frames) == (9, 3, 7)
    assert result.fps == 6.25 and result.peak_buffered == 5
    assert result.columns == ["context", "sample 1", "truth"]
    assert len(read_mp4(result.mp4)) == 9 and len(read_gif(result.gif)) == 9


def test_fps_resamples_a_real_video(videos, tmp_path):
    from vpkit.engine.video_source import open_video

    with open_video(str(videos["long"])) as source:
        runtime = FakeRuntime(frame_shape=(3, 24, 40), n_context=2, n_future=3)
        result = predict_video(runtime, source, tmp_path / "fps.mp4", sliding=True, num_samples=1,
                               selection=FrameSelection(fps=10))
    # 40 frames at 25 fps resampled to 10 fps: source frames 0, 3, 5, 8, ..., 38 (16 frames)
    assert (result.frames, result.windows, result.fps) == (16, 5, 10)
    import decord

    assert decord.VideoReader(str(result.mp4)).get_avg_fps() == pytest.approx(10)
    assert len(read_gif(result.gif)) == 16


def test_frame_folders_and_npy_arrays(checkpoint, tmp_path):
    shapes = moving_shapes(7, 30, 40, seed=2)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(shapes):
        iio.imwrite(folder / f"{i:03d}.png", frame)
    grey = (shapes.mean(axis=-1)).astype(np.uint8)
    np.save(tmp_path / "clip.npy", grey)
    for uri, name in ((folder, "folder"), (tmp_path / "clip.npy", "array")):
        result = run_predict(checkpoint, uri, tmp_path / "out" / f"{name}.mp4", horizon=3, num_samples=2)
        assert (result.frames, result.truth_frames, result.fps) == (5, 3, 8.0)  # no frame rate: 8 fps
        assert len(read_mp4(result.mp4)) == 5 and len(read_gif(result.gif)) == 5
    with pytest.raises(VpkitError, match="frame rate"):
        run_predict(checkpoint, folder, tmp_path / "x.mp4", selection=FrameSelection(fps=5))


def test_the_same_seed_gives_the_same_samples(checkpoint, videos, tmp_path):
    from vpkit.engine.runtime import load_runtime
    from vpkit.engine.video_source import open_video

    runtime = load_runtime(checkpoint)
    drawn = []
    predict = runtime.predict

    def recording(*args, **kwargs):
        drawn.append(predict(*args, **kwargs))
        return drawn[-1]

    runtime.predict = recording
    for seed in (7, 7, 8):
        with open_video(str(videos["short"])) as source:
            predict_video(runtime, source, tmp_path / f"{seed}.mp4", num_samples=2, seed=seed)
    first, again, other = drawn
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first[:, 0], first[:, 1])  # the two samples differ


@pytest.mark.slow
def test_onnx_export_predicts_like_the_checkpoint(checkpoint, videos, tmp_path):
    pytest.importorskip("onnxruntime")
    from vpkit.engine.exporter import export_model

    export = export_model(checkpoint, "onnx", out=tmp_path / "onnx").path
    onnx = run_predict(checkpoint, videos["short"], tmp_path / "onnx.mp4", model=export, horizon=3)
    eager = run_predict(checkpoint, videos["short"], tmp_path / "eager.mp4", horizon=3)
    assert onnx.backend == "onnx" and eager.backend == "torch" and "onnx" in onnx.runtime
    assert onnx.columns == eager.columns == ["context", "sample 1", "sample 2", "sample 3", "truth"]
    assert np.abs(read_gif(onnx.gif).astype(int) - read_gif(eager.gif).astype(int)).max() <= 2


# -- the command line --------------------------------------------------------------------------------------------


def invoke(*args: str):
    """`vpkit predict ARGS` in this process (the subprocess tests cover the real entry point and error printing)."""
    import typer
    from typer.testing import CliRunner

    from vpkit.cli.predict import predict_command

    app = typer.Typer()
    app.command()(predict_command)
    return CliRunner().invoke(app, list(args))


def test_cli_writes_mp4_and_gif_and_prints_json(checkpoint, videos, tmp_path, monkeypatch):
    shutil.copy(videos["short"], tmp_path / "clip.mp4")
    proc = vpkit("predict", "clip.mp4", "--model", str(checkpoint), "--samples", "2", "--horizon", "5",
                 "--seed", "3", "--json", cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert report["mp4"] == str(Path("runs/predict/clip.mp4")) and report["gif"] == str(Path("runs/predict/clip.gif"))
    assert (report["frames"], report["windows"], report["backend"], report["samples"]) == (7, 1, "torch", 2)
    assert report["source"]["num_frames"] == 12 and report["selection"] == {"start": 0, "stride": 1, "fps": None}
    assert len(read_mp4(tmp_path / report["mp4"])) == 7 and len(read_gif(tmp_path / report["gif"])) == 7
    assert proc.stderr == ""  # no progress bar with --json

    monkeypatch.chdir(tmp_path)
    text = invoke("clip.mp4", "--model", str(checkpoint), "--out", "o/x.mp4", "--sliding", "--horizon", "5",
                  "--samples", "1")
    assert text.exit_code == 0, text.output
    assert "o/x.mp4" in text.output and "2 windows" in text.output and "context | sample 1 | truth" in text.output
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"x.mp4", "x.gif"}
    help_text = invoke("--help").output
    for option in ("--model", "--context", "--horizon", "--samples", "--seed", "--backend", "--device", "--compile",
                   "--start", "--stride", "--fps", "--sliding", "--out", "--json"):
        assert option in help_text


@pytest.fixture(scope="module")
def bad_models(checkpoint, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-models")
    other = folder / "other-plugin"
    shutil.copytree(checkpoint, other)
    meta = json.loads((other / "vpkit.json").read_text())
    meta["model"]["key"] = "srvp"
    meta["plugin"] = {"name": "srvp", "distribution": "vpkit-srvp", "version": "0.3.0"}
    (other / "vpkit.json").write_text(json.dumps(meta))
    trt = folder / "trt-export"
    shutil.copytree(checkpoint, trt)
    meta = json.loads((trt / "vpkit.json").read_text())
    meta["export"] = {"format": "trt", "precision": "fp16", "batch": 1, "dynamic": True, "graphs": {}}
    (trt / "vpkit.json").write_text(json.dumps(meta))
    (folder / "not-a-checkpoint").mkdir()
    (folder / "not-a-checkpoint" / "weights.bin").write_bytes(b"\0" * 10)
    return {"other": other, "trt": trt, "none": folder / "not-a-checkpoint"}


def prepare(video: str, model: str, videos, checkpoint, bad_models, folder: Path) -> tuple[str, str]:
    if video == "truncated.mp4":
        data = videos["long"].read_bytes()
        (folder / video).write_bytes(data[: len(data) // 2])
    elif video == "garbage.mp4":
        (folder / video).write_text("not a video at all\n" * 100)
    elif video in videos:
        shutil.copy(videos[video], folder / "clip.mp4")
        video = "clip.mp4"
    return video, str(checkpoint if model == "ckpt" else bad_models[model])


@pytest.mark.parametrize("video, model, extra, needle", [
    ("missing.mp4", "ckpt", [], "no such file"),
    ("one", "ckpt", [], "clip.mp4 gives 1 frame, fewer than --context 2"),
    ("short", "trt", ["--backend", "trt"], "TensorRT"),
])
def test_bad_input_gives_one_clear_line_and_no_files(checkpoint, videos, bad_models, tmp_path, video, model,
                                                     extra, needle):
    if model == "trt":
        from vpkit.plugins.exporters.tensorrt import available

        if available() is None:
            pytest.skip("TensorRT and a GPU are here; this case checks the message given without them")
    video, model_path = prepare(video, model, videos, checkpoint, bad_models, tmp_path)
    before = files_under(tmp_path)
    proc = vpkit("predict", video, "--model", model_path, *extra, cwd=tmp_path, ok=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error:") and needle in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr  # that one line, nothing else
    assert files_under(tmp_path) == before and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("video, model, extra, needle", [
    ("truncated.mp4", "ckpt", [], "truncated or corrupt"),
    ("garbage.mp4", "ckpt", [], "is not a video ffmpeg can read"),
    ("long", "ckpt", ["--start", "39"], "clip.mp4 gives 1 of 40 frames from --start 39, fewer than --context 2"),
    ("short", "ckpt", ["--context", "13"], "gives 12 frames, fewer than --context 13"),
    ("short", "ckpt", ["--sliding", "--stride", "6"], "gives 2 of 12 frames at --stride 6; --sliding needs"),
    ("short", "other", [], ("needs model 'srvp' from plugin 'srvp', which is not installed. Install it with: "
                            "pip install 'vpkit-srvp==0.3.0'")),
    ("short", "none", [], "vpkit.json is missing"),
    ("short", "ckpt", ["--backend", "trt"], "Export first"),
    ("short", "ckpt", ["--backend", "onxx"], "Did you mean 'onnx'"),
    ("short", "ckpt", ["--fps", "10", "--stride", "2"], "--fps and --stride"),
    ("short", "ckpt", ["--out", "x.gif"], "--out must name an .mp4"),
    ("short", "ckpt", ["--samples", "0"], "--samples must be at least 1"),
])
def test_bad_options_are_rejected_before_writing(checkpoint, videos, bad_models, tmp_path, monkeypatch, video, model,
                                                 extra, needle):
    monkeypatch.chdir(tmp_path)
    video, model_path = prepare(video, model, videos, checkpoint, bad_models, tmp_path)
    before = files_under(tmp_path)
    result = invoke(video, "--model", model_path, *extra)
    assert isinstance(result.exception, VpkitError), result.output
    assert needle in str(result.exception) and "\n" not in str(result.exception)
    assert files_under(tmp_path) == before and not (tmp_path / "runs").exists()
