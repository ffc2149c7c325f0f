"""Balls-Interaction from miniature G-SWM files: {train,val,test}.hdf5 with every key gen.py writes, 3 episodes each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.prepared import PrepareOptions
from vpkit.plugins.datasets import balls

ENV = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}
SPLIT_CODE = {"train": 0, "val": 100, "test": 200}
EPISODES, T, O = 3, 100, 3


def make_imgs(split: str, episodes: int = EPISODES) -> np.ndarray:
    """uint8 [N, 100, 64, 64, 3]: red = frame index, green = split code + episode, blue = a spatial pattern."""
    imgs = np.zeros((episodes, T, 64, 64, 3), np.uint8)
    imgs[..., 0] = np.arange(T)[None, :, None, None]
    imgs[..., 1] = (SPLIT_CODE[split] + np.arange(episodes))[:, None, None, None]
    imgs[..., 2] = (np.arange(64)[:, None] * 4 + np.arange(64)[None, :]) % 256
    return imgs


def write_gswm(path: Path, split: str, *, episodes: int = EPISODES, imgs: np.ndarray | None = None,
               keys: tuple[str, ...] | None = None) -> None:
    """What G-SWM's dump_data writes (same keys, shapes and dtypes: numpy float64 for the annotations)."""
    rng = np.random.default_rng(SPLIT_CODE[split])
    data = {
        "imgs": make_imgs(split, episodes) if imgs is None else imgs,
        "layers": np.zeros((episodes, T, O)),
        "positions": rng.uniform(0, 64, (episodes, T, O, 2)),
        "velocities": rng.normal(size=(episodes, T, O, 2)),
        "masses": np.ones((episodes, T, O)),
        "sizes": np.full((episodes, T, O), 8.0),
        "ids": np.tile(np.arange(1.0, O + 1), (episodes, T, 1)),
        "present": np.ones((episodes, T, O)),
        "colors": rng.uniform(0, 1, (episodes, T, O, 3)),
        "shapes": np.zeros((episodes, T, O)),
        "in_camera": np.ones((episodes, T, O)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        for key, value in data.items():
            if keys is None or key in keys:
                file.create_dataset(key, data=value)


def write_all(raw: Path) -> None:
    for split in balls.SPLITS:
        write_gswm(raw / f"{split}.hdf5", split)


def read_split(path: Path) -> tuple[list[str], list[np.ndarray]]:
    with h5py.File(path, "r") as file:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in file["names"][:]]
        frames = file["frames"][:]
        videos = [frames[s:s + n] for s, n in zip(file["starts"][:], file["lengths"][:], strict=True)]
    return names, videos


def ids(clip) -> list[tuple[int, int]]:
    """(split code + episode, frame) of each frame of a [T, C, H, W] clip."""
    clip = np.asarray(clip)
    return [(int(frame[1, 0, 0]), int(frame[0, 0, 0])) for frame in clip]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("balls")
    write_all(root / "raw")
    warnings: list[str] = []
    line = balls.prepare(root, PrepareOptions(progress=False, warn=warnings.append))
    assert "train 3, val 3, test 3" in line
    return root, warnings


def test_frames_only_one_video_per_episode(prepared):
    root, warnings = prepared
    for split in balls.SPLITS:
        names, videos = read_split(root / f"{split}.h5")
        assert names == [f"{split}.hdf5#{i}" for i in range(EPISODES)]
        assert all(np.array_equal(video, make_imgs(split)[i]) for i, video in enumerate(videos))
    with h5py.File(root / "train.h5", "r") as file:
        assert "positions" not in file and "in_camera" not in file and file.attrs["channels"] == 3
    assert len(warnings) == 3 and "5000" in warnings[0] and "holds 3 episodes" in warnings[0]


def test_loads_through_the_registry_with_ddlps_windows(prepared):
    root, _ = prepared
    spec = get_host().datasets.get("balls")
    assert spec.access == "by hand" and spec.splits == ("train", "val", "test")
    cfg = build_config(spec.config_cls, {"data_root": str(root)})
    train, val, test = (spec.build(cfg, split) for split in balls.SPLITS)
    assert len(train) == 3 * (100 - 11 + 1) and train.frame_shape == (3, 64, 64)
    assert ids(train[0]) == [(0, t) for t in range(11)]
    assert ids(train[89]) == [(0, t) for t in range(89, 100)]  # DDLP: ep = i // 90, offset = i % 90
    assert ids(train[90]) == [(1, t) for t in range(11)]
    assert ids(train[269]) == [(2, t) for t in range(89, 100)]
    assert len(val) == 3 and len(test) == 3
    assert tuple(val[2].shape) == (50, 3, 64, 64) and ids(val[2]) == [(102, t) for t in range(50)]
    assert ids(test[0]) == [(200, t) for t in range(50)]
    full = spec.build(build_config(spec.config_cls, {"data_root": str(root), "test_seq_len": 100}), "test")
    assert np.array_equal(full[1].permute(0, 2, 3, 1).numpy(), make_imgs("test")[1])


def test_cli_reads_the_generators_folder_and_names_what_is_missing(tmp_path):
    root = tmp_path / "b"
    write_all(root / "raw" / balls.GENERATED)  # where G-SWM's gen.py puts them: data/BALLS_INTERACTION/
    command = [sys.executable, "-m", "vpkit", "data", "prepare", "balls", "--root", str(root)]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train 3, val 3, test 3" in proc.stdout and "5000" in proc.stderr
    other = tmp_path / "missing"
    write_gswm(other / "raw" / "train.hdf5", "train")
    proc = subprocess.run([*command[:-1], str(other)], check=False, capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    assert "val.hdf5" in message and "test.hdf5" in message and "train.hdf5" not in message
    assert "dataset_balls/gen.py" in message and "balls_interaction" in message


@pytest.mark.parametrize("bad, message", [
    ("no_imgs", r"val.hdf5 has no 'imgs' array \(it holds colors, ids, in_camera, positions, sizes\)"),
    ("grey", r"val.hdf5: 'imgs' is uint8 \[3, 100, 64, 64\]"),
    ("float", r"val.hdf5: 'imgs' is float32 \[3, 100, 64, 64, 3\]"),
    ("not_hdf5", "val.hdf5 is not a readable HDF5 file"),
])
def test_a_bad_file_is_one_clear_error_and_no_split_is_written(tmp_path, bad, message):
    raw = tmp_path / "raw"
    write_all(raw)
    path = raw / "val.hdf5"
    path.unlink()
    if bad == "no_imgs":
        write_gswm(path, "val", keys=("positions", "sizes", "ids", "in_camera", "colors"))
    elif bad == "grey":
        write_gswm(path, "val", imgs=make_imgs("val")[..., 0])
    elif bad == "float":
        write_gswm(path, "val", imgs=make_imgs("val").astype(np.float32) / 255)
    else:
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(VpkitError, match=message):
        balls.prepare(tmp_path, PrepareOptions(progress=False))
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*tmp"))


def test_prepare_again_keeps_the_splits(prepared):
    root, _ = prepared
    stamp = (root / "test.h5").stat().st_mtime_ns
    assert "train 3, val 3, test 3" in balls.prepare(root, PrepareOptions(progress=False))
    assert (root / "test.h5").stat().st_mtime_ns == stamp
