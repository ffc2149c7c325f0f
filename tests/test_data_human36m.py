"""Human3.6M as SRVP reads it, from a miniature copy: short 912x912 MP4s at 50 fps named like the real videos, in
the real S<n>/Videos layout. SRVP's convert.py (imageio's ffmpeg reader, crop, LANCZOS) and make_test_set.py's draw
are re-run literally to check the frames and the clips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vpkit.cli import data as data_cli
from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.prepared import PrepareOptions
from vpkit.plugins.datasets import human36m

VIDEOS = {  # subject -> (file name, frames)
    1: [("Directions 1.54138969.mp4", 24), ("Walking.55011271.mp4", 30), ("_ALL 1.54138969.mp4", 20)],
    5: [("Eating.58860488.mp4", 20)],
    6: [("Phoning 1.60457274.mp4", 26)],
    7: [("Greeting.54138969.mp4", 18)],
    8: [("Sitting 1.55011271.mp4", 22)],
    9: [("Directions 1.54138969.mp4", 41), ("Walking.60457274.mp4", 50)],
    11: [("Directions.54138969.mp4", 36), ("WalkDog 1.58860488.mp4", 45)],
}
TEST_SIZE, TEST_LENGTH, SUB = 12, 5, 8  # miniature draw (SRVP: 1000 clips of 53, one frame in 8)


def write_video(path: Path, frames: int, seed: int) -> None:
    """A 912x912 H.264 MP4 at 50 fps whose frames differ per video and per frame."""
    yy, xx = np.mgrid[0:912, 0:912]
    writer = imageio.get_writer(path, fps=50, codec="libx264", macro_block_size=16, ffmpeg_log_level="error",
                                ffmpeg_params=["-preset", "ultrafast"])
    for t in range(frames):
        writer.append_data(np.stack([(xx // 3 + 11 * t + 29 * seed) % 256, (yy // 5 + 7 * t) % 256,
                                     ((xx + yy) // 9 + 13 * seed + 3 * t) % 256], -1).astype(np.uint8))
    writer.close()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """The miniature ROOT/raw, made once and copied by each test that changes it."""
    raw = tmp_path_factory.mktemp("h36m_videos") / "raw"
    jobs = []
    for subject, files in VIDEOS.items():
        (raw / f"S{subject}" / "Videos").mkdir(parents=True)
        jobs += [(raw / f"S{subject}" / "Videos" / name, frames, len(jobs)) for name, frames in files]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: write_video(*job), jobs))
    return raw


def copy_raw(videos: Path, root: Path) -> Path:
    shutil.copytree(videos, root / "raw")
    return root


def srvp_convert(path: Path) -> np.ndarray:
    """convert.py: imageio's ffmpeg reader, crop (100, 100, 900, 900), then LANCZOS to 64x64."""
    reader = imageio.get_reader(path, "ffmpeg")
    return np.stack([np.array(Image.fromarray(frame).crop((100, 100, 900, 900)).resize((64, 64),
                                                                                      resample=Image.LANCZOS))
                     for frame in reader.iter_data()])


def srvp_npz_folder(raw: Path, subjects: tuple[int, ...]) -> dict[str, Path]:
    """SRVP's npz file names (`S<n>-<stem>.npz`) for the videos convert.py keeps, to their source video."""
    return {f"S{s}-{os.path.splitext(f)[0]}.npz": raw / f"S{s}" / "Videos" / f
            for s in subjects for f in os.listdir(raw / f"S{s}" / "Videos") if f[0] != "_"}


def read_split(path: Path) -> tuple[list[str], list[np.ndarray]]:
    with h5py.File(path, "r") as file:
        names = [n.decode() for n in file["names"][:]]
        frames = file["frames"][:]
        clips = [frames[s:s + n] for s, n in zip(file["starts"][:], file["lengths"][:], strict=True)]
    return names, clips


@pytest.fixture(scope="module")
def prepared(videos, tmp_path_factory) -> Path:
    root = copy_raw(videos, tmp_path_factory.mktemp("h36m"))
    warnings: list[str] = []
    human36m.prepare(root, PrepareOptions(progress=False, warn=warnings.append), test_size=TEST_SIZE,
                     test_length=TEST_LENGTH, subsampling=SUB)
    assert warnings == []
    return root


def test_train_holds_srvps_frames_in_srvps_order(prepared):
    names, stored = read_split(prepared / "train.h5")
    npz = srvp_npz_folder(prepared / "raw", human36m.TRAIN_SUBJECTS)
    assert names == [n.removesuffix(".npz") for n in sorted(npz)]  # data/human.py: sorted(os.listdir(train))
    assert names == ["S1-Directions 1.54138969", "S1-Walking.55011271", "S5-Eating.58860488",
                     "S6-Phoning 1.60457274", "S7-Greeting.54138969", "S8-Sitting 1.55011271"]  # no _ALL
    for i in (0, 3):
        expected = srvp_convert(npz[names[i] + ".npz"])
        assert stored[i].dtype == np.uint8 and stored[i].shape == expected.shape  # full frame rate, 64x64x3
        assert np.array_equal(stored[i], expected)


def test_test_clips_are_make_test_sets_draws(prepared):
    raw = prepared / "raw"
    npz = srvp_npz_folder(raw, human36m.TEST_SUBJECTS)
    # make_test_set.py, re-typed (its lengths: the frames convert.py wrote)
    np.random.seed(42)
    video_files = sorted(npz)
    assert video_files[0].startswith("S11-")
    converted = {name: srvp_convert(npz[name]) for name in video_files}
    actual_seq_len = (TEST_LENGTH - 1) * SUB + 1
    expected = []
    for _ in range(TEST_SIZE):
        video_id = np.random.randint(len(video_files))
        image = converted[video_files[video_id]]
        t_0 = np.random.randint(image.shape[0] - actual_seq_len + 1)
        # data/human.py (test): vid[t0 : t0 + actual_seq_len : subsampling] of the saved extract
        expected.append((f"{video_files[video_id].removesuffix('.npz')}@{t_0}",
                         image[t_0: t_0 + actual_seq_len][0: actual_seq_len: SUB]))
    names, clips = read_split(prepared / "test.h5")
    assert names == [name for name, _ in expected]
    assert len({n.split("@")[0] for n in names}) > 2
    for clip, (_, frames) in zip(clips, expected, strict=True):
        assert np.array_equal(clip, frames)


def test_loads_with_step_8_srvps_holdout_and_a_step_1_test(prepared):
    spec = get_host().datasets.get("human36m")
    assert spec.access == "registration"
    defaults = spec.config_cls()
    assert (defaults.seq_len, defaults.test_seq_len, defaults.step) == (16, 53, 8)
    cfg = build_config(spec.config_cls, {"data_root": str(prepared), "seq_len": 3, "test_seq_len": 3})
    train, val, test = (spec.build(cfg, split) for split in ("train", "val", "test"))
    rng = np.random.RandomState(42)  # data/base.py get_fold
    ids = list(range(6))
    rng.shuffle(ids)
    assert len(train) == int(0.95 * 6) == 5 and len(val) == 1
    _, stored = read_split(prepared / "train.h5")
    assert train.frame_shape == (3, 64, 64) and tuple(train[0].shape) == (3, 3, 64, 64)
    # the held-out video, from its first frame, one frame in 8; 17-frame span: S7's 18 frames are enough
    val_clip = val[0].permute(0, 2, 3, 1).numpy()
    assert np.array_equal(val_clip, stored[ids[5]][0:17:8])
    short = build_config(spec.config_cls, {"data_root": str(prepared), "seq_len": 4})  # 25-frame span
    assert len(spec.build(short, "train")) == len([i for i in ids[:5] if len(stored[i]) >= 25])
    _, clips = read_split(prepared / "test.h5")
    assert len(test) == TEST_SIZE and torch.equal(test[4], torch.from_numpy(clips[4][:3]).permute(0, 3, 1, 2))
    whole = spec.build(build_config(spec.config_cls, {"data_root": str(prepared), "test_seq_len": TEST_LENGTH}),
                       "test")  # test.h5 is stored subsampled: read with step 1 whatever `step` says
    assert torch.equal(whole[7], torch.from_numpy(clips[7]).permute(0, 3, 1, 2))


def test_cli_prepare_then_reuse(videos, tmp_path, monkeypatch):
    root = copy_raw(videos, tmp_path)
    monkeypatch.setattr(human36m, "TEST_SIZE", 3)
    monkeypatch.setattr(human36m, "TEST_LENGTH", 4)
    result = CliRunner().invoke(data_cli.app, ["prepare", "human36m", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "train 6, test 3" in result.output.replace("\n", "")
    _, clips = read_split(root / "test.h5")
    assert [len(c) for c in clips] == [4, 4, 4]
    assert "train 6, test 3" in human36m.prepare(root, PrepareOptions(progress=False))


def test_missing_subjects_are_named_with_the_site(tmp_path, videos):
    proc = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "human36m", "--root", str(tmp_path)],
                          check=False, capture_output=True, text=True,
                          env={**os.environ, "VPKIT_LOAD_PLUGINS": "svg"},
                          timeout=120)
    message = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    for subject in (1, 5, 6, 7, 8, 9, 11):
        assert f"S{subject}/Videos/*.mp4" in message
    assert "vision.imar.ro/human3.6m" in message and "Videos_S1.tgz" in message
    root = copy_raw(videos, tmp_path / "partial")
    shutil.rmtree(root / "raw" / "S6")
    with pytest.raises(VpkitError) as error:
        human36m.prepare(root, PrepareOptions(progress=False))
    assert "S6/Videos" in str(error.value) and "S5/Videos" not in str(error.value)
    assert not (root / "train.h5").exists() and not (root / "test.h5").exists()
    shutil.copytree(videos / "S6", root / "raw" / "S6")  # test clips longer than the 36-frame S11 video
    with pytest.raises(VpkitError, match="Directions.54138969.mp4 has 36 frames, fewer than the 41"):
        human36m.prepare(root, PrepareOptions(progress=False), test_size=TEST_SIZE, test_length=6, subsampling=SUB)
    assert not (root / "train.h5").exists() and not (root / "test.h5").exists()


def test_corrupt_videos_are_skipped_with_warnings(videos, tmp_path):
    root = copy_raw(videos, tmp_path)
    bad_train = root / "raw" / "S6" / "Videos" / "Phoning 1.60457274.mp4"
    bad_train.write_bytes(bad_train.read_bytes()[:2000])  # cut short: the MP4 index is lost
    bad_test = root / "raw" / "S9" / "Videos" / "Walking.60457274.mp4"
    bad_test.write_bytes(b"\x00\x00\x00\x18ftypmp42 junk")  # cannot be opened
    warnings: list[str] = []
    human36m.prepare(root, PrepareOptions(progress=False, warn=warnings.append), test_size=TEST_SIZE,
                     test_length=TEST_LENGTH, subsampling=SUB)
    names, _ = read_split(root / "train.h5")
    assert "S6-Phoning 1.60457274" not in names and len(names) == 5
    assert any("S6-Phoning 1.60457274" in w and "Phoning 1.60457274.mp4" in w for w in warnings)
    assert any(str(bad_test) in w and "differ from SRVP" in w for w in warnings)
    test_names, _ = read_split(root / "test.h5")
    assert len(test_names) == TEST_SIZE and not any(n.startswith("S9-Walking") for n in test_names)
