"""Decoding speed of `vpkit predict`'s video source: frames per second through `open_video(...).chunks()`.

Writes a 640x360 h264 clip with the real ffmpeg (`vpkit.testing.videos.write_test_video`) into a temporary folder and
decodes every frame, as `vpkit predict` streams a video; a pass includes opening the file (10-30 ms). Two kinds of
content bracket real footage: `shapes` (two shapes on a gradient, ~140 kbit/s, cheap to decode) and `textured` (the
same with a fixed grain texture and fresh noise in every frame, ~1.3 Mbit/s, more than most 360p footage). Each
figure is the median of `--repeat` passes, passes of the variants interleaved so load from other processes hits them
alike. `--resize` also times decode plus an antialiased bilinear resize to
64x64 (the frame size of the small models), done with torch on each uint8 chunk.

    python benchmarks/decode.py                    # both contents, vpkit's decoder threads and batch size
    python benchmarks/decode.py --content textured --threads 1 2 --batch-mb 4 16 44 --resize
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vpkit.core.plugins import get_host
from vpkit.engine.video_source import open_video
from vpkit.plugins.sources import video as video_plugin
from vpkit.testing.videos import moving_shapes, write_test_video

CHUNK = 64  # frames asked per chunk: the VideoSource default


def make_clip(folder: Path, content: str, num_frames: int, seed: int = 0) -> Path:
    """A 640x360 25 fps h264 MP4 of `shapes` or `textured` content."""
    frames = moving_shapes(num_frames, 360, 640, seed=seed)
    quality = 8
    if content == "textured":
        rng = np.random.default_rng(seed)
        grain = rng.normal(0, 12, (360, 640, 1)).astype(np.float32)
        for frame in frames:
            frame[...] = np.clip(frame + grain + rng.normal(0, 3, (360, 640, 1)), 0, 255)
        quality = 6
    return write_test_video(folder / f"{content}.mp4", frames, fps=25, quality=quality)


def decode_all(path: Path, resize: bool) -> int:
    """Open `path` and stream every frame (resizing each chunk if asked); the number of frames read."""
    count = 0
    with open_video(str(path)) as source:
        for block in source.chunks(chunk=CHUNK):
            if resize:
                # uint8 straight from the decoder, channels-last: torch's fast antialiased path (a float "area"
                # resize of the same frames runs at ~110 frames/s on one core, far below decoding).
                frames = torch.from_numpy(block).permute(0, 3, 1, 2)
                F.interpolate(frames, size=(64, 64), mode="bilinear", antialias=True)
            count += len(block)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content", nargs="+", default=["shapes", "textured"], choices=["shapes", "textured"])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--batch-mb", type=float, nargs="+", default=[video_plugin.BATCH_BYTES / 2**20],
                        help="most MiB decord decodes per batch (vpkit uses %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[video_plugin.NUM_THREADS],
                        help="decord decoder threads (vpkit uses %(default)s here)")
    parser.add_argument("--resize", action="store_true", help="also time decode + area resize to 64x64")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    host = get_host()  # the sources are built-in plugins; register them here if this checkout predates that
    if not host.pm.is_registered(video_plugin):
        host.register_plugin(video_plugin, "video")
    torch.set_num_threads(1)  # the resize runs between decodes; keep it off the decoder's cores

    with tempfile.TemporaryDirectory() as tmp:
        clips = {}
        for content in args.content:
            start = time.perf_counter()
            clips[content] = make_clip(Path(tmp), content, args.frames)
            kbit_s = clips[content].stat().st_size * 8 / 1000 / (args.frames / 25)
            print(f"{content}: {args.frames} frames 640x360 h264, {kbit_s:.0f} kbit/s, "
                  f"written in {time.perf_counter() - start:.1f} s")
        variants: dict[str, tuple[int, float, Callable[[], int]]] = {}
        for content, path in clips.items():
            for threads in args.threads:
                for batch_mb in args.batch_mb:
                    for resize in (False, True) if args.resize else (False,):
                        name = f"{content:8s} threads {threads} batch {batch_mb:g} MiB" + (
                            " +resize 64x64" if resize else "")
                        variants[name] = (threads, batch_mb, lambda p=path, r=resize: decode_all(p, r))
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):
            for name, (threads, batch_mb, run) in variants.items():
                video_plugin.NUM_THREADS = threads
                video_plugin.BATCH_BYTES = int(batch_mb * 2**20)
                start = time.perf_counter()
                count = run()
                rates[name].append(count / (time.perf_counter() - start))
                assert count == args.frames, f"decoded {count} of {args.frames} frames"
        for name, values in rates.items():
            print(f"{name}: {statistics.median(values):6.0f} frames/s (min {min(values):.0f}, "
                  f"max {max(values):.0f}, {args.repeat} passes)")


if __name__ == "__main__":
    main()
