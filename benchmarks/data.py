"""Reading and writing vpkit's HDF5 video format: random-clip reads per second and conversion speed.

A split of synthetic videos (moving shapes, `--videos` of `--length` frames, RGB) is written at 64×64 and 128×128
with `H5VideoWriter`, then read as random 20-frame clips through a DataLoader (batch 16) with 0 and 2 workers.
Peak memory (max RSS of this process) shows a split is never loaded whole: the files are larger than what is read.
The same splits written with lzf compression (`vpkit data prepare --compress`) show the size/speed trade.
Conversion from real sources is timed too: `vpkit data convert` of a folder of 160×120 MP4s to 64×64 (decord
decode, antialiased resize, write), and KTH's path (`ffmpeg -r 25 -s 64x64` on MPEG-4 AVIs, first channel, write).

    python benchmarks/data.py
    python benchmarks/data.py --videos 400 --length 100
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vpkit.engine import h5videos
from vpkit.testing.videos import moving_shapes


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write(path: Path, videos: int, length: int, size: int, compression: str | None = None) -> tuple[float, int]:
    """Seconds to write the split (frames made beforehand) and its frame count."""
    template = moving_shapes(length, size, size, seed=0)
    start = time.perf_counter()
    with h5videos.H5VideoWriter(path, (size, size), 3, compression=compression) as writer:
        for i in range(videos):
            writer.add(np.roll(template, i, axis=2), name=f"video{i}")
    return time.perf_counter() - start, videos * length


def read(path: Path, workers: int, clips: int, clip_length: int = 20) -> float:
    """Random clips per second through a DataLoader."""
    data = h5videos.H5Videos(path, clip_length, clips="random", seed=0)
    sampler = torch.utils.data.RandomSampler(data, replacement=True, num_samples=clips,
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(data, batch_size=16, sampler=sampler, num_workers=workers,
                                         persistent_workers=False)
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


def convert_rates(tmp: Path, videos: int = 12, length: int = 100) -> tuple[float, float]:
    """Frames per second of `convert` on MP4s and of KTH's ffmpeg path on AVIs (both 160x120 -> 64x64)."""
    from vpkit.engine.convert import convert
    from vpkit.engine.prepared import write_split
    from vpkit.plugins.datasets import kth
    from vpkit.testing.videos import write_test_video

    for i in range(videos):
        clip = moving_shapes(length, 120, 160, seed=i)
        write_test_video(tmp / "mp4" / f"v{i:02d}.mp4", clip)
        write_test_video(tmp / "avi" / f"person01_walking_d{i}_uncomp.avi", clip, codec="mpeg4")
    start = time.perf_counter()
    convert(tmp / "mp4", tmp / "mp4.h5", size=64, warn=print)
    mp4_rate = videos * length / (time.perf_counter() - start)
    start = time.perf_counter()
    write_split(tmp / "avi.h5", ((p.name, kth.decode(p)) for p in sorted((tmp / "avi").iterdir())))
    return mp4_rate, videos * length / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--length", type=int, default=60)
    parser.add_argument("--clips", type=int, default=2000, help="random clips read per row")
    args = parser.parse_args()
    print(f"{args.videos} videos × {args.length} frames, RGB, 20-frame random clips, batch 16; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'size':>8} {'file MiB':>9} {'write frames/s':>15} {'workers':>8} {'clips/s':>9} {'frames/s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size, compression in ((64, None), (128, None), (64, "lzf"), (128, "lzf")):
            path = Path(tmp) / f"train{size}{compression}.h5"
            seconds, frames = write(path, args.videos, args.length, size, compression)
            mib = path.stat().st_size / 2**20
            label = f"{size}²" + (f" {compression}" if compression else "")
            for workers in (0, 2):
                rate = read(path, workers, args.clips)
                print(f"{label:>8} {mib:>9.1f} {frames / seconds:>15.0f} {workers:>8} {rate:>9.0f} "
                      f"{rate * 20:>9.0f}")
        (Path(tmp) / "mp4").mkdir()
        (Path(tmp) / "avi").mkdir()
        mp4_rate, kth_rate = convert_rates(Path(tmp))
    print(f"convert MP4 160x120 -> 64x64 h5: {mp4_rate:.0f} frames/s; KTH path (ffmpeg -s 64x64, AVI): "
          f"{kth_rate:.0f} frames/s")
    print(f"peak RSS of this process: {max_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
