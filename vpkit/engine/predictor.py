"""The engine behind `vpkit predict`: read a video, fit its frames to a model, predict, and write panel videos.

Frames are selected (`FrameSelection`: where the context starts, every k-th frame or a resampled frame rate),
fitted to the model's `frame_shape` (`preprocess`: shorter side resized with antialiasing, centre crop, ITU-R 601
grey for one-channel models) and laid out side by side (`PanelLayout`: context | sample 1..K | ground truth, with
coloured borders). `predict_video` runs one prediction from one context (one-shot) or walks the whole video in
windows of `context + horizon` frames that hop by `horizon` (`sliding`), so the predictions tile the video. It
streams: the source is read in chunks, at most one window of preprocessed frames is held, and panels go to the
MP4 and GIF writers as soon as each window is predicted, so memory does not grow with the video's length.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vpkit.core.errors import VpkitError
from vpkit.core.source import VideoSource
from vpkit.engine.media import BORDER_COLOURS, add_border, join_columns, to_uint8
from vpkit.engine.video_writer import (
    FfmpegWriter,
    GifWriter,
    Mp4Writer,
    abort_all,
    close_all,
)

if TYPE_CHECKING:
    from vpkit.engine.runtime import Runtime

# ITU-R BT.601 luma weights (what PIL's "L" mode and most grey datasets use).
LUMA_601 = (0.299, 0.587, 0.114)
# Small model frames (e.g. 64x64) are enlarged by an integer nearest-neighbour factor to at least this many rows.
MIN_TILE_HEIGHT = 128
# Playback rate when neither the source nor --fps gives one (e.g. a folder of frames or a .npy array).
DEFAULT_FPS = 8.0
# Frames decoded per read from the source.
CHUNK = 32
# A column whose ground truth has run out (the video ended) shows this flat tile and border.
MISSING_FILL = (235, 235, 235)
MISSING_BORDER = (150, 150, 150)

Progress = Callable[[int, "int | None"], None]


# -- frame selection --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSelection:
    """Which source frames make the video the model sees. Output frame `i` (counted after striding or
    resampling) is source frame `i * stride`, or, with `fps`, the source frame nearest to time `i / fps`.
    The context starts at output frame `start`."""

    start: int = 0
    stride: int = 1
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.start < 0:
            raise VpkitError(f"--start must be 0 or more; got {self.start}.")
        if self.stride < 1:
            raise VpkitError(f"--stride must be at least 1; got {self.stride}.")
        if self.fps is not None:
            if not self.fps > 0 or not math.isfinite(self.fps):
                raise VpkitError(f"--fps must be a positive number; got {self.fps}.")
            if self.stride != 1:
                raise VpkitError("--fps and --stride both choose frames; pass one of them.")

    def ratio(self, source_fps: float | None, uri: str = "the source") -> float:
        """Source frames per output frame."""
        if self.fps is None:
            return float(self.stride)
        if not source_fps or source_fps <= 0:
            raise VpkitError(f"{uri} does not say its frame rate, so --fps cannot resample it; use --stride "
                             "to take every k-th frame instead.")
        return source_fps / self.fps

    def output_fps(self, source_fps: float | None) -> float | None:
        """The frame rate of the selected frames, when it is known."""
        if self.fps is not None:
            return self.fps
        return source_fps / self.stride if source_fps else None

    @staticmethod
    def source_index(i: int, ratio: float) -> int:
        """The source frame shown as output frame `i` (nearest in time; halves round up, as ffmpeg's fps filter)."""
        return math.floor(i * ratio + 0.5 + 1e-9)

    def count(self, num_frames: int, ratio: float) -> int:
        """How many output frames from `start` on a source of `num_frames` frames gives."""
        if num_frames <= 0:
            return 0
        if _integral(ratio):
            total = -(-num_frames // round(ratio))
        else:
            total = max(0, math.ceil((num_frames - 0.5) / ratio))
            while total > 0 and self.source_index(total - 1, ratio) >= num_frames:
                total -= 1
            while self.source_index(total, ratio) < num_frames:
                total += 1
        return max(0, total - self.start)

    def describe(self) -> str:
        """The options that shaped the frame count, for error messages (e.g. ' from --start 4 at --stride 2')."""
        parts = [f" from --start {self.start}"] if self.start else []
        if self.fps is not None:
            parts.append(f" at --fps {self.fps:g}")
        elif self.stride != 1:
            parts.append(f" at --stride {self.stride}")
        return "".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "stride": self.stride, "fps": self.fps}


def _integral(ratio: float) -> bool:
    return ratio >= 1 and abs(ratio - round(ratio)) < 1e-6


def selected_chunks(source: VideoSource, selection: FrameSelection, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """The selected frames from output frame `selection.start` on, as uint8 chunks `[n <= chunk, H, W, 3]`.

    Striding (and resampling by a whole factor) is left to the source, which may skip decoding; other rates decode
    every frame and keep the nearest to each output time (a frame repeats when --fps exceeds the source's rate).
    """
    ratio = selection.ratio(source.fps, source.uri)
    if _integral(ratio):
        step = round(ratio)
        yield from source.chunks(selection.start * step, step, chunk)
        return
    i = selection.start
    base = selection.source_index(i, ratio)
    for block in source.chunks(base, 1, chunk):
        picks = []
        while selection.source_index(i, ratio) < base + len(block):
            picks.append(selection.source_index(i, ratio) - base)
            i += 1
        for lo in range(0, len(picks), chunk):
            yield block[picks[lo: lo + chunk]]
        base += len(block)


# -- preprocessing ----------------------------------------------------------------------------------------------


def preprocess(frames: np.ndarray, frame_shape: Sequence[int]) -> Tensor:
    """uint8 RGB frames `[n, H, W, 3]` -> float `[n, C, h, w]` in [0, 1] for a model of `frame_shape` (C, h, w).

    The frame is scaled (bilinear, antialiased when shrinking) so that it covers h x w with its aspect ratio kept
    (for a square model: the shorter side becomes h), then the centre is cropped. C == 1 takes ITU-R 601 luma.
    """
    channels, height, width = (int(v) for v in frame_shape)
    if channels not in (1, 3):
        raise VpkitError(f"The model takes {channels}-channel frames; vpkit predict feeds RGB (3) or grey (1) video.")
    # Resized as uint8 in channels-last layout: PyTorch's vectorised uint8 kernel for that case is ~7x faster than
    # float resizing (measured 1,900 vs 260 frames/s for 640x360 -> 64x114 on 2 cores); it rounds to 1/255, the
    # precision the video had anyway.
    frames = np.ascontiguousarray(frames)
    if not frames.flags.writeable:  # a memory-mapped .npy: torch wants a writable buffer
        frames = frames.copy()
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    src_h, src_w = video.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    if (new_h, new_w) != (src_h, src_w):
        video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    video = video[..., top: top + height, left: left + width].float().div_(255)
    if channels == 1:
        video = torch.einsum("nchw,c->nhw", video, torch.tensor(LUMA_601))[:, None]
    return video.contiguous()


# -- panels -----------------------------------------------------------------------------------------------------


class PanelLayout:
    """One panel frame per time step: columns context | sample 1..K | ground truth (when the video continues).

    During context steps every column shows the context frame (green border). During predicted steps the context
    column holds the last context frame, the sample columns show the predictions (red) and the truth column the
    true frame (blue), or a flat grey tile once the video has ended. Tiles are enlarged by `scale` (nearest
    neighbour; default: the smallest integer that makes them at least `MIN_TILE_HEIGHT` rows tall).
    """

    def __init__(self, frame_size: tuple[int, int], num_samples: int, truth: bool, *, scale: int | None = None,
                 border: int = 2, pad: int = 2) -> None:
        self.frame_size = frame_size
        self.num_samples = num_samples
        self.truth = truth
        self.scale = scale if scale is not None else max(1, math.ceil(MIN_TILE_HEIGHT / frame_size[0]))
        self.border, self.pad = border, pad
        self.tile_size = (frame_size[0] * self.scale + 2 * border, frame_size[1] * self.scale + 2 * border)

    @property
    def columns(self) -> list[str]:
        return ["context", *[f"sample {k + 1}" for k in range(self.num_samples)], *(["truth"] if self.truth else [])]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of a panel frame."""
        n = len(self.columns)
        return self.tile_size[0], n * self.tile_size[1] + (n - 1) * self.pad

    def _tile(self, frame: np.ndarray | None, colour: tuple[int, int, int]) -> np.ndarray:
        if frame is None:
            size = (self.frame_size[0] * self.scale, self.frame_size[1] * self.scale, 3)
            inner = np.full(size, MISSING_FILL, np.uint8)
        else:
            inner = frame.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        return add_border(inner, colour, self.border)

    def _join(self, tiles: list[np.ndarray]) -> np.ndarray:
        return join_columns(tiles, self.pad)

    def context_step(self, frame: np.ndarray) -> np.ndarray:
        """A context time step: every column shows `frame` (uint8 `[h, w, 3]`) with the context border."""
        tile = self._tile(frame, BORDER_COLOURS["context"])
        return self._join([tile] * len(self.columns))

    def predicted_step(self, last_context: np.ndarray, samples: Sequence[np.ndarray],
                       truth: np.ndarray | None) -> np.ndarray:
        """A predicted time step: the last context frame, each sample's frame, and the true frame (None once the
        video has ended), all uint8 `[h, w, 3]`."""
        if len(samples) != self.num_samples:
            raise ValueError(f"expected {self.num_samples} sample frames, got {len(samples)}")
        tiles = [self._tile(last_context, BORDER_COLOURS["context"])]
        tiles += [self._tile(frame, BORDER_COLOURS["sample"]) for frame in samples]
        if self.truth:
            tiles.append(self._tile(truth, BORDER_COLOURS["truth"] if truth is not None else MISSING_BORDER))
        return self._join(tiles)


# -- windows ----------------------------------------------------------------------------------------------------


def plan_windows(num_frames: int, context: int, horizon: int) -> list[tuple[int, int]]:
    """Sliding windows over `num_frames` selected frames: `(first context frame, frames to predict)` for each.
    Windows hop by `horizon`, so their predictions tile frames `context .. num_frames - 1`; the last one predicts
    only the frames that remain."""
    windows = []
    first = 0
    while first + context < num_frames:
        windows.append((first, min(horizon, num_frames - first - context)))
        first += horizon
    return windows


# -- result -----------------------------------------------------------------------------------------------------


@dataclass
class PredictResult:
    """What `predict_video` wrote and from what."""

    mp4: Path
    gif: Path
    frames: int
    windows: int
    context: int
    horizon: int
    num_samples: int
    truth_frames: int
    columns: list[str]
    panel_size: tuple[int, int]
    fps: float
    runtime: str
    backend: str
    model: str
    seed: int
    sliding: bool
    source: dict[str, Any]
    selection: dict[str, Any]
    peak_buffered: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "mp4": str(self.mp4), "gif": str(self.gif), "frames": self.frames, "windows": self.windows,
            "backend": self.backend, "runtime": self.runtime, "model": self.model, "context": self.context,
            "horizon": self.horizon, "samples": self.num_samples, "seed": self.seed, "sliding": self.sliding,
            "truth_frames": self.truth_frames, "columns": self.columns,
            "panel_size": {"height": self.panel_size[0], "width": self.panel_size[1]}, "fps": self.fps,
            "source": self.source, "selection": self.selection,
        }


# -- prediction -------------------------------------------------------------------------------------------------


class _Outputs:
    """The MP4 and GIF writers of one run. The panel size is fixed by the first frame. On any error both are
    aborted and folders created for them removed again, so a failed run leaves nothing behind."""

    def __init__(self, mp4: Path, gif: Path, fps: float) -> None:
        self.created = sorted(set(_missing_parents(mp4)) | set(_missing_parents(gif)), key=lambda p: -len(p.parts))
        self.writers: list[FfmpegWriter] = [Mp4Writer(mp4, fps), GifWriter(gif, fps)]
        self.frames = 0

    def append(self, panel: np.ndarray) -> None:
        for writer in self.writers:
            writer.append(panel)
        self.frames += 1

    def close(self) -> None:
        close_all(self.writers)

    def abort(self) -> None:
        abort_all(self.writers)
        for folder in self.created:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty: something else was put there meanwhile
                continue


def _missing_parents(path: Path) -> list[Path]:
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    return missing


def predict_video(
    runtime: Runtime,
    source: VideoSource,
    out: Path | str,
    *,
    context: int | None = None,
    horizon: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    selection: FrameSelection | None = None,
    sliding: bool = False,
    gif: Path | str | None = None,
    chunk: int = CHUNK,
    on_progress: Progress | None = None,
) -> PredictResult:
    """Predict from `source` with `runtime` and write the panel video to `out` (MP4) and `gif` (default: `out`
    with `.gif`).

    One-shot: the `context` frames from `selection.start`, `horizon` predicted frames, and the frames that follow
    in the video as ground truth (as many as there are). `sliding`: windows of `context + horizon` frames hopping
    by `horizon` to the end of the video. Defaults: the model's `n_context` and `n_future`; 3 samples for a
    stochastic model, 1 otherwise. `seed` seeds the CPU generator every random draw comes from, so a seed gives the
    same samples on every backend and device. `on_progress(frames_written, total_or_None)` is called as panels are
    written.
    """
    selection = selection or FrameSelection()
    context = runtime.n_context if context is None else context
    horizon = runtime.n_future if horizon is None else horizon
    if num_samples is None:
        num_samples = 3 if runtime.stochastic else 1
    if context < 1:
        raise VpkitError(f"--context must be at least 1; got {context}.")
    if horizon < 1:
        raise VpkitError(f"--horizon must be at least 1; got {horizon}.")
    if num_samples < 1:
        raise VpkitError(f"--samples must be at least 1; got {num_samples}.")
    if not runtime.stochastic:
        num_samples = 1  # a deterministic model predicts one future however many are asked for
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise VpkitError(f"--out must name an .mp4 file (the GIF is written beside it); got {out}.")
    gif = Path(gif) if gif is not None else out.with_suffix(".gif")

    ratio = selection.ratio(source.fps, source.uri)  # fails early on --fps without a known source rate
    available = selection.count(source.num_frames, ratio) if source.num_frames is not None else None
    need = context + 1 if sliding else context
    if available is not None and available < need:
        raise _too_short(source, selection, available, context, sliding)

    frame_shape = tuple(runtime.frame_shape)
    fps = selection.output_fps(source.fps) or DEFAULT_FPS
    generator = torch.Generator().manual_seed(seed)
    state = _RunState(runtime, context, num_samples, generator, (frame_shape[1], frame_shape[2]))
    frames_in = _preprocessed(source, selection, frame_shape, chunk)

    outputs = _Outputs(out, gif, fps)
    try:
        if sliding:
            windows, truth_frames = _run_sliding(state, frames_in, outputs, context, horizon, available, on_progress,
                                                 lambda seen: _too_short(source, selection, seen, context, True))
        else:
            windows, truth_frames = _run_one_shot(state, frames_in, outputs, context, horizon, on_progress,
                                                  lambda seen: _too_short(source, selection, seen, context, False))
        outputs.close()
    except BaseException:
        outputs.abort()
        raise
    finally:
        frames_in.close()

    layout = state.layout
    assert layout is not None
    return PredictResult(
        mp4=out, gif=gif, frames=outputs.frames, windows=windows, context=context, horizon=horizon,
        num_samples=num_samples, truth_frames=truth_frames, columns=layout.columns, panel_size=layout.size,
        fps=fps, runtime=runtime.describe(), backend=runtime.backend_name, model=runtime.model_key, seed=seed,
        sliding=sliding,
        source={"uri": source.uri, "size": list(source.size), "num_frames": source.num_frames, "fps": source.fps},
        selection=selection.to_json(), peak_buffered=state.peak_buffered,
    )


def _too_short(source: VideoSource, selection: FrameSelection, available: int, context: int,
               sliding: bool) -> VpkitError:
    name = Path(source.uri).name or source.uri
    total = f" of {source.num_frames}" if source.num_frames is not None and available != source.num_frames else ""
    frames = f"{available}{total} frame{'' if available == 1 and not total else 's'}{selection.describe()}"
    if sliding:
        return VpkitError(f"{name} gives {frames}; --sliding needs more than --context {context} (at least "
                          f"{context + 1}). Use a smaller --context or --start, or a longer video.")
    return VpkitError(f"{name} gives {frames}, fewer than --context {context}. Use a smaller --context or --start, "
                      "or a longer video.")


def _preprocessed(source: VideoSource, selection: FrameSelection, frame_shape: Sequence[int],
                  chunk: int) -> Iterator[Tensor]:
    """Selected frames, fitted to the model, one float `[C, h, w]` at a time (decoded and resized per chunk)."""
    for block in selected_chunks(source, selection, chunk):
        yield from preprocess(block, frame_shape)


class _RunState:
    """The runtime, generator and panel layout shared by the windows of one run, and the buffer high-water mark."""

    def __init__(self, runtime: Runtime, context: int, num_samples: int, generator: torch.Generator,
                 frame_size: tuple[int, int]) -> None:
        self.runtime, self.context, self.num_samples, self.generator = runtime, context, num_samples, generator
        self.frame_size = frame_size
        self.layout: PanelLayout | None = None
        self.peak_buffered = 0

    def note_buffered(self, count: int) -> None:
        self.peak_buffered = max(self.peak_buffered, count)

    def predict(self, context_frames: Sequence[Tensor], horizon: int) -> np.ndarray:
        """uint8 `[S, horizon, h, w, 3]` samples after `context_frames`."""
        clip = torch.stack(list(context_frames))[None]
        samples = self.runtime.predict(clip, horizon, num_samples=self.num_samples, generator=self.generator)
        return to_uint8(samples[0].float())


def _run_one_shot(state: _RunState, frames_in: Iterator[Tensor], outputs: _Outputs, context: int, horizon: int,
                  on_progress: Progress | None, too_short: Callable[[int], VpkitError]) -> tuple[int, int]:
    clip: list[Tensor] = []
    for frame in frames_in:
        clip.append(frame)
        state.note_buffered(len(clip))
        if len(clip) == context + horizon:
            break  # the rest of the video is not decoded
    if len(clip) < context:
        raise too_short(len(clip))
    truth = to_uint8(torch.stack(clip[context:])) if len(clip) > context else None
    shown = to_uint8(torch.stack(clip[:context]))
    samples = state.predict(clip[:context], horizon)
    state.layout = PanelLayout(state.frame_size, samples.shape[0], truth is not None)
    total = context + horizon
    for t in range(context):
        outputs.append(state.layout.context_step(shown[t]))
        _report(on_progress, outputs.frames, total)
    for t in range(horizon):
        true_frame = truth[t] if truth is not None and t < len(truth) else None
        outputs.append(state.layout.predicted_step(shown[-1], list(samples[:, t]), true_frame))
        _report(on_progress, outputs.frames, total)
    return 1, 0 if truth is None else len(truth)


def _run_sliding(state: _RunState, frames_in: Iterator[Tensor], outputs: _Outputs, context: int, horizon: int,
                 total: int | None, on_progress: Progress | None,
                 too_short: Callable[[int], VpkitError]) -> tuple[int, int]:
    window: deque[Tensor] = deque()
    seen = windows = truth_frames = 0

    def flush(predict: int) -> None:
        nonlocal windows, truth_frames
        frames = list(window)
        samples = state.predict(frames[:context], predict)
        future = to_uint8(torch.stack(frames[context: context + predict]))
        if state.layout is None:
            state.layout = PanelLayout(state.frame_size, samples.shape[0], truth=True)
            for frame in to_uint8(torch.stack(frames[:context])):
                outputs.append(state.layout.context_step(frame))
                _report(on_progress, outputs.frames, total)
        last_context = to_uint8(frames[context - 1][None])[0]
        for t in range(predict):
            outputs.append(state.layout.predicted_step(last_context, list(samples[:, t]), future[t]))
            _report(on_progress, outputs.frames, total)
        windows += 1
        truth_frames += predict
        for _ in range(min(horizon, len(window))):
            window.popleft()

    for frame in frames_in:
        window.append(frame)
        seen += 1
        state.note_buffered(len(window))
        if len(window) == context + horizon:
            flush(horizon)
    if len(window) > context:
        flush(len(window) - context)
    if windows == 0:
        raise too_short(seen)
    return windows, truth_frames


def _report(on_progress: Progress | None, done: int, total: int | None) -> None:
    if on_progress is not None:
        on_progress(done, total)


def default_output(source_uri: str) -> Path:
    """`runs/predict/<source stem>.mp4` (a folder's or array's name without its suffix)."""
    stem = Path(os.path.normpath(source_uri)).stem or "predict"
    return Path("runs") / "predict" / f"{stem}.mp4"
