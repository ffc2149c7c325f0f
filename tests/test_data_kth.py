"""KTH from miniature copies of its real files: AVIs named like KTH's, in zips named like KTH's, served over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from vpkit.core.checkpoint import read_checkpoint
from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.prepared import PrepareOptions
from vpkit.plugins.datasets import kth
from vpkit.testing.http import MirrorServer

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
TRAIN = [(person, action, 1) for person in (1, 2, 17, 20) for action in ("boxing", "walking")]
TEST = [(person, action, trial) for person in range(21, 26) for action in kth.CLASSES for trial in range(1, 5)]


def avi_name(person: int, action: str, trial: int) -> str:
    return f"person{person:02d}_{action}_d{trial}_uncomp.avi"


def make_avi(path: Path, frames: int, seed: int) -> None:
    """A 32x24 grey MPEG-4 AVI at 25 fps whose content differs per video (a moving test pattern, offset by seed)."""
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size=32x24:rate=25,hue=s=0,scroll=h={0.01 * (seed % 7)}", "-ss", f"{seed % 5 * 0.04}",
                    "-frames:v", str(frames), "-c:v", "mpeg4", "-q:v", "2", "-y", str(path)], check=True)


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, bytes]:
    """The six class zips of a miniature KTH (8 train videos, all 120 test videos, 41-60 frames each)."""
    folder = tmp_path_factory.mktemp("kth_avi")
    jobs = [(folder / avi_name(*key), 41 + (i * 7) % 20, i) for i, key in enumerate(TRAIN + TEST)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: make_avi(*job), jobs))
    blobs = {}
    for action in kth.CLASSES:
        archive = folder / f"{action}.zip"
        with zipfile.ZipFile(archive, "w") as out:
            for path, _, _ in jobs:
                if f"_{action}_" in path.name:
                    out.write(path, path.name)
        blobs[archive.name] = archive.read_bytes()
    return blobs


def options() -> PrepareOptions:
    warnings: list[str] = []
    return PrepareOptions(progress=False, warn=warnings.append)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, zips) -> Path:
    root = tmp_path_factory.mktemp("kth")
    with MirrorServer(zips) as server:
        kth.prepare(root, options(), mirrors=(server.mirror("missing"), server.mirror("flaky")), test_size=60)
    return root


def read_split(path: Path) -> tuple[list[str], list[np.ndarray]]:
    with h5py.File(path, "r") as file:
        names = [n.decode() for n in file["names"][:]]
        frames = file["frames"][:]
        videos = [frames[s:s + n] for s, n in zip(file["starts"][:], file["lengths"][:], strict=True)]
    return names, videos


def srvp_frames(avi: Path, out: Path) -> np.ndarray:
    """What SRVP's convert.py + data/kth.py give: `ffmpeg -r 25 -f image2 -s 64x64 image-%03d.png`, first channel."""
    out.mkdir()
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", str(avi), "-r", "25", "-f", "image2", "-s", "64x64",
                    str(out / "image-%03d.png")], check=True)
    return np.stack([np.array(Image.open(p))[:, :, 0] for p in sorted(out.iterdir())])


def test_frames_match_srvps_ffmpeg_pngs(prepared, tmp_path):
    names, videos = read_split(prepared / "train.h5")
    avi = prepared / "raw" / "walking" / avi_name(17, "walking", 1)
    expected = srvp_frames(avi, tmp_path / "png")
    got = videos[names.index("person17_walking_d1")]
    assert got.shape == (*expected.shape, 1) and got.dtype == np.uint8
    assert np.array_equal(got[..., 0], expected)


def test_train_holds_persons_up_to_20_in_class_then_name_order(prepared):
    names, _ = read_split(prepared / "train.h5")
    expected = [f"person{p:02d}_{a}_d1" for a in ("boxing", "walking") for p in (1, 2, 17, 20)]
    assert names == expected
    assert not list((prepared / "raw").glob("*.part"))
    assert (prepared / "raw" / "boxing.zip.sha256").is_file()  # no published checksum: pinned on first download


def test_test_clips_are_srvps_draws(prepared):
    """The test file holds exactly the clips SRVP's make_test_set.py picks (its loop, re-run here literally)."""
    raw_lengths = {}
    for avi in (prepared / "raw").rglob("*.avi"):
        raw_lengths[avi.name.removesuffix("_uncomp.avi")] = len(kth.decode(avi))
    np.random.seed(42)
    expected = []
    for _ in range(60):
        c = np.random.randint(len(kth.CLASSES))
        person = np.random.randint(21, 26)
        trial = np.random.randint(1, 5)
        vid = f"person{person:02d}_{kth.CLASSES[c]}_d{trial}"
        t_0 = np.random.randint(raw_lengths[vid] - 40 + 1)
        expected.append((vid, t_0))
    names, clips = read_split(prepared / "test.h5")
    assert names == [f"{vid}@{t_0}" for vid, t_0 in expected]
    vid, t_0 = expected[7]
    whole = kth.decode(next((prepared / "raw").rglob(f"{vid}_uncomp.avi")))
    assert np.array_equal(clips[7], whole[t_0:t_0 + 40])
    assert all(len(clip) == 40 for clip in clips)


def test_loads_through_the_registry_with_srvps_holdout(prepared):
    spec = get_host().datasets.get("kth")
    cfg = build_config(spec.config_cls, {"data_root": str(prepared)})
    train, val, test = (spec.build(cfg, split) for split in ("train", "val", "test"))
    assert len(train) + len(val) == 8 and len(val) == 8 - int(0.95 * 8)
    assert train.frame_shape == (1, 64, 64)
    assert tuple(train[0].shape) == (20, 1, 64, 64) and tuple(test[0].shape) == (40, 1, 64, 64)
    few = build_config(spec.config_cls, {"data_root": str(prepared), "train_persons": list(range(1, 17))})
    assert len(spec.build(few, "train")) + len(spec.build(few, "val")) == 4  # persons 1 and 2, two classes


def test_rgb_repeats_the_grey_frames_as_rivers_kth_files(prepared):
    spec = get_host().datasets.get("kth")
    grey, rgb = (spec.build(build_config(spec.config_cls, {"data_root": str(prepared), "rgb": flag}), "test")
                 for flag in (False, True))
    assert rgb.frame_shape == (3, 64, 64)
    assert torch.equal(rgb[0], grey[0].expand(-1, 3, -1, -1))  # PIL's convert("RGB") of an "L" frame


def test_prepare_again_reuses_the_splits_and_no_download_names_the_missing_zips(prepared, tmp_path):
    line = kth.prepare(prepared, options())
    assert "train 8, test 60" in line
    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}
    proc = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "kth", "--root", str(tmp_path / "k"),
                           "--no-download"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "boxing.zip" in proc.stderr and "walking.zip" in proc.stderr and "csc.kth.se" in proc.stderr


def test_a_truncated_zip_is_refused_and_nothing_is_left(tmp_path, zips):
    broken = {name: blob[: len(blob) // 2] if name == "running.zip" else blob for name, blob in zips.items()}
    with MirrorServer(broken) as server, pytest.raises(VpkitError, match="running.zip"):
        kth.prepare(tmp_path, options(), mirrors=(server.mirror("good"),), test_size=5)
    assert not (tmp_path / "raw" / "running.zip").exists() and not (tmp_path / "train.h5").exists()


def test_a_corrupt_training_video_is_skipped_with_a_warning(tmp_path, zips):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, blob in zips.items():
        (raw / name).write_bytes(blob)
    warnings: list[str] = []
    with zipfile.ZipFile(raw / "boxing.zip") as archive:
        archive.extractall(raw / "boxing")
    (raw / "boxing" / avi_name(2, "boxing", 1)).write_bytes(b"RIFF\x00\x00\x00\x00AVI junk")
    kth.prepare(tmp_path, PrepareOptions(progress=False, download=False, warn=warnings.append), test_size=5)
    names, _ = read_split(tmp_path / "train.h5")
    assert "person02_boxing_d1" not in names and len(names) == 7
    assert any("person02_boxing_d1_uncomp.avi" in w for w in warnings)


def test_size_128_for_svgs_kth128_preset(tmp_path, zips):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "walking.zip").write_bytes(zips["walking.zip"])
    with zipfile.ZipFile(raw / "walking.zip") as archive:
        archive.extractall(raw / "walking")
    avi = raw / "walking" / avi_name(1, "walking", 1)
    frames = kth.decode(avi, 128)
    assert frames.shape[1:] == (128, 128, 1)
    proc = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "kth", "--root", str(tmp_path),
                           "--size", "4"], capture_output=True, text=True,
                          env={**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}, timeout=120, check=False)
    assert proc.returncode != 0 and "--size must be at least 8" in proc.stderr


@pytest.mark.slow
def test_train_on_prepared_kth_with_data_root(prepared, tmp_path):
    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}
    proc = subprocess.run([sys.executable, "-m", "vpkit", "train", "--plugin", "svg", "--preset", "tiny", "--dataset",
                           "kth", "--data-root", str(prepared), "--steps", "2", "--batch-size", "2", "--out",
                           str(tmp_path / "run"), "--set", "train.val_every=2", "--set", "train.val_videos=2",
                           "--set", "train.sample_every=100", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on kth (1, 64, 64)" in proc.stdout
    meta = read_checkpoint(tmp_path / "run" / "checkpoints" / "last").meta
    assert meta["data"]["name"] == "kth" and meta["data"]["config"]["data_root"] == str(prepared)
