"""Write a Stochastic Moving MNIST test video as an H.264 MP4 (what `scripts/demo.sh` feeds to `vpkit predict`).

    python scripts/make_demo_video.py OUT.mp4 [--frames 100] [--index 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vpkit.core.config import build_config
from vpkit.core.plugins import get_host
from vpkit.testing.videos import write_test_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--index", type=int, default=0, help="which test video")
    args = parser.parse_args()
    spec = get_host().datasets.get("smmnist")
    dataset = spec.build(build_config(spec.config_cls, {"test_seq_len": args.frames, "test_videos": args.index + 1}),
                         "test")
    video = np.asarray(dataset[args.index])  # uint8 [T, 1, 64, 64]
    frames = np.repeat(video.transpose(0, 2, 3, 1), 3, axis=-1)  # [T, 64, 64, 3]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_test_video(args.out, np.ascontiguousarray(frames), fps=10)
    print(f"wrote {args.out} ({len(frames)} frames, 64x64, 10 fps)")


if __name__ == "__main__":
    main()
