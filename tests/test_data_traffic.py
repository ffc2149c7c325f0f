"""Traffic from a miniature img128np.npy: 1234 frames of 8x8 RGB whose red/green channels spell the frame index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.prepared import PrepareOptions
from vpkit.plugins.datasets import traffic

FRAMES = 1234  # train int(987.2) = 987, val int(123.4) = 123 (2 episodes + 23), test 1234 - 1110 = 124 (2 + 24)
ENV = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}


def make_frames(count: int, size: int = 8) -> np.ndarray:
    index = np.arange(count)
    frames = np.empty((count, size, size, 3), np.uint8)
    frames[..., 0] = (index % 256)[:, None, None]
    frames[..., 1] = (index // 256)[:, None, None]
    frames[..., 2] = ((np.arange(size)[:, None] * 37 + np.arange(size)[None, :] * 11 + index[:, None, None] * 3)
                      % 256)
    return frames


def frame_ids(frames: np.ndarray) -> list[int]:
    """The source frame index of each frame, [T, C, H, W] or [T, H, W, C]."""
    frames = np.asarray(frames)
    if frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)
    return [int(f[0, 0, 0]) + 256 * int(f[0, 0, 1]) for f in frames]


def write_npy(root: Path, frames: np.ndarray) -> Path:
    path = root / "raw" / traffic.NPY
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, frames)
    return path


def options(warnings: list[str] | None = None) -> PrepareOptions:
    return PrepareOptions(progress=False, warn=(warnings if warnings is not None else []).append)


def read_split(path: Path) -> tuple[list[str], list[np.ndarray]]:
    with h5py.File(path, "r") as file:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in file["names"][:]]
        frames = file["frames"][:]
        videos = [frames[s:s + n] for s, n in zip(file["starts"][:], file["lengths"][:], strict=True)]
    return names, videos


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return make_frames(FRAMES)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, source) -> Path:
    root = tmp_path_factory.mktemp("traffic")
    write_npy(root, source)
    line = traffic.prepare(root, options())
    assert "train 1, val 2, test 2" in line
    return root


def test_split_arithmetic_is_ddlps():
    assert traffic.split_bounds(500) == {"train": (0, 400), "val": (400, 450), "test": (450, 500)}
    assert traffic.split_bounds(FRAMES) == {"train": (0, 987), "val": (987, 1110), "test": (1110, 1234)}
    assert traffic.episodes(987, 1110) == [(987, 1037), (1037, 1087)]


def test_files_hold_one_long_train_video_and_50_frame_episodes(prepared, source):
    names, videos = read_split(prepared / "train.h5")
    assert names == ["img128np.npy[0:987]"] and np.array_equal(videos[0], source[:987])
    names, videos = read_split(prepared / "val.h5")
    assert names == ["img128np.npy[987:1037]", "img128np.npy[1037:1087]"]
    assert [frame_ids(v) for v in videos] == [list(range(987, 1037)), list(range(1037, 1087))]
    names, videos = read_split(prepared / "test.h5")
    assert names == ["img128np.npy[1110:1160]", "img128np.npy[1160:1210]"]
    assert np.array_equal(videos[1], source[1160:1210])  # frames 1087-1109 and 1210-1233 are in no episode


def test_loads_through_the_registry_every_start_and_the_episodes(prepared, source):
    spec = get_host().datasets.get("traffic")
    assert spec.access == "by hand" and spec.splits == ("train", "val", "test")
    cfg = build_config(spec.config_cls, {"data_root": str(prepared), "image_size": 8})
    train, val, test = (spec.build(cfg, split) for split in ("train", "val", "test"))
    assert len(train) == 987 - 11 + 1 and train.frame_shape == (3, 8, 8)
    assert frame_ids(train[0]) == list(range(11)) and frame_ids(train[976]) == list(range(976, 987))
    assert frame_ids(train[500]) == list(range(500, 511))
    assert tuple(train[3].shape) == (11, 3, 8, 8) and np.array_equal(train[3].permute(0, 2, 3, 1), source[3:14])
    assert len(val) == 2 and len(test) == 2
    assert frame_ids(val[1]) == list(range(1037, 1087)) and frame_ids(test[0]) == list(range(1110, 1160))
    with pytest.raises(VpkitError, match="splits"):
        spec.build(cfg, "valid")


def test_image_size_resizes_at_load_like_torchvision_resize(prepared, source):
    spec = get_host().datasets.get("traffic")
    cfg = build_config(spec.config_cls, {"data_root": str(prepared), "image_size": 5})
    test = spec.build(cfg, "test")
    assert test.frame_shape == (3, 5, 5) and len(test) == 2
    clip = test[1].numpy()
    assert clip.shape == (50, 3, 5, 5) and clip.dtype == np.uint8
    for t in (0, 49):
        expected = np.asarray(Image.fromarray(source[1160 + t]).resize((5, 5), Image.Resampling.BILINEAR))
        assert np.array_equal(clip[t].transpose(1, 2, 0), expected)
    transforms = pytest.importorskip("torchvision.transforms")
    ddlp = np.asarray(transforms.Resize(5)(transforms.ToPILImage()(source[1160])))  # DDLP's loader, before ToTensor
    assert np.array_equal(clip[0].transpose(1, 2, 0), ddlp)
    default = spec.build(build_config(spec.config_cls, {"data_root": str(prepared)}), "train")
    assert default.frame_shape == (3, 128, 128) and tuple(default[0].shape) == (11, 3, 128, 128)


def test_cli_prepares_then_reuses_and_names_the_missing_file(tmp_path, source):
    root = tmp_path / "t"
    write_npy(root, source[:500])
    command = [sys.executable, "-m", "vpkit", "data", "prepare", "traffic", "--root", str(root)]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train 1, val 1, test 1" in proc.stdout
    _, videos = read_split(root / "train.h5")
    assert len(videos[0]) == 400
    stamp = (root / "train.h5").stat().st_mtime_ns
    assert "train 1, val 1, test 1" in traffic.prepare(root, options())
    assert (root / "train.h5").stat().st_mtime_ns == stamp
    proc = subprocess.run([*command[:-1], str(tmp_path / "empty")], check=False, capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "img128np.npy" in proc.stderr and "mega.nz" in proc.stderr.lower()


def test_train_is_copied_in_blocks(tmp_path, source, monkeypatch):
    monkeypatch.setattr(traffic, "BLOCK", 100)
    write_npy(tmp_path, source)
    traffic.prepare(tmp_path, options())
    _, videos = read_split(tmp_path / "train.h5")
    assert np.array_equal(videos[0], source[:987])


@pytest.mark.parametrize("bad, message", [
    ("truncated", "not a readable .npy"),
    ("float", "float32"),
    ("grey", r"\[600, 8, 8\]"),
    ("short", "no whole 50-frame episode"),
])
def test_bad_arrays_are_refused_and_leave_no_split(tmp_path, source, bad, message):
    path = tmp_path / "raw" / traffic.NPY
    if bad == "truncated":
        write_npy(tmp_path, source)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif bad == "float":
        write_npy(tmp_path, source[:600].astype(np.float32))
    elif bad == "grey":
        write_npy(tmp_path, source[:600, ..., 0])
    else:
        write_npy(tmp_path, source[:499])  # val part: frames 399-448, 49 frames
    with pytest.raises(VpkitError, match=message):
        traffic.prepare(tmp_path, options())
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*tmp"))


def test_a_failure_while_writing_train_leaves_no_file(tmp_path, source, monkeypatch):
    write_npy(tmp_path, source)

    def broken(data, first, end):
        yield np.ascontiguousarray(data[first:first + 10])
        raise OSError("disk full")

    monkeypatch.setattr(traffic, "_blocks", broken)
    with pytest.raises(OSError, match="disk full"):
        traffic.prepare(tmp_path, options())
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*tmp"))
