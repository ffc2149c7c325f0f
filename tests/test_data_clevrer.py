"""CLEVRER: miniature copies of the two public video zips (real names, 128-frame h264 MP4s) served by a local mirror,
converted with DDLP's protocol (frames 18..117 at 128x128; train = training videos 0-4999, val/test = validation
videos 10000-10999 / 11000-11999), and DDLP's own frame-folder layout through the CLI."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.prepared import PrepareOptions
from vpkit.engine.video_source import open_video
from vpkit.plugins.datasets import clevrer
from vpkit.testing.http import MirrorServer
from vpkit.testing.videos import moving_shapes, write_test_video

HEIGHT, WIDTH = 64, 96  # CLEVRER's 3:2 (480x320), small


def clip(number: int, frames: int = 128) -> np.ndarray:
    """Moving shapes under a band whose grey level is twice the frame index: the frame can be read back after h264."""
    video = moving_shapes(frames, HEIGHT, WIDTH, seed=number)
    video[:, :16] = (2 * np.arange(frames, dtype=np.uint8))[:, None, None, None]
    return video


def mp4(tmp: Path, number: int, frames: int = 128) -> bytes:
    return write_test_video(tmp / f"video_{number:05d}.mp4", clip(number, frames)).read_bytes()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("clevrer_src")
    train = {f"video_00000-01000/video_{n:05d}.mp4": mp4(tmp, n) for n in (0, 1)}
    train["video_00000-01000/video_00002.mp4"] = b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50  # corrupt
    train["video_05000-06000/video_05000.mp4"] = mp4(tmp, 5000)  # past training video 4999: not used
    validation = {f"video_10000-11000/video_{n:05d}.mp4": mp4(tmp, n) for n in (10000, 10001)}
    validation["video_11000-12000/video_11000.mp4"] = mp4(tmp, 11000)
    validation["video_11000-12000/video_11001.mp4"] = mp4(tmp, 11001, frames=100)  # too short: no frame 117
    validation["video_12000-13000/video_12000.mp4"] = mp4(tmp, 12000)  # past the test range: not used
    return {"video_train.zip": zip_bytes(train), "video_validation.zip": zip_bytes(validation)}


def options(warnings: list[str] | None = None, **kwargs) -> PrepareOptions:
    return PrepareOptions(warn=(warnings.append if warnings is not None else lambda text: None), progress=False,
                          **kwargs)


@pytest.fixture(scope="module")
def served(zips, tmp_path_factory):
    """ROOT prepared from the zips downloaded from a local mirror: (root, warnings, request log)."""
    root = tmp_path_factory.mktemp("clevrer")
    warnings: list[str] = []
    with MirrorServer(zips) as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr(clevrer, "MIRRORS", {name: [server.mirror("missing"), server.mirror("good")] for name in zips})
        line = clevrer.prepare(root, options(warnings))
        again = clevrer.prepare(root, options())  # ready: no request, no rewrite
        log = list(server.log)
    assert "train 2, val 2, test 1 videos" in line and again == line
    return root, warnings, log


def build(root: Path, split: str, **overrides):
    spec = get_host().datasets.get("clevrer")
    return spec.build(spec.config_cls(data_root=str(root), **overrides), split)


def assert_frames(frames: np.ndarray, first: int) -> None:
    """[T, 3, H, W] frames are source frames first, first + 1, ...: the grey band (rows 0..15 of 64, rows 0..31 of
    128) holds twice the frame index, give or take h264's rounding."""
    indices = frames[:, :, 2:28].astype(np.float64).mean(axis=(1, 2, 3)) / 2
    np.testing.assert_array_less(np.abs(indices - np.arange(first, first + len(frames))), 0.75)


def test_the_zips_are_downloaded_checked_pinned_and_fetched_once(served, zips):
    root, _, log = served
    assert [path for path, _ in log] == ["/missing/video_train.zip", "/good/video_train.zip",
                                         "/missing/video_validation.zip", "/good/video_validation.zip"]
    for name, data in zips.items():
        assert (root / "raw" / name).read_bytes() == data
        assert (root / "raw" / f"{name}.sha256").is_file()
    assert not list((root / "raw").glob(".clevrer-*")) and not list((root / "raw").glob("*.part"))


def test_splits_follow_ddlp_readme_and_bad_videos_are_named(served):
    root, warnings, _ = served
    names = {}
    for split in clevrer.SPLITS:
        with h5py.File(root / f"{split}.h5") as file:
            names[split] = list(file["names"].asstr()[:])
            assert file["frames"].shape[1:] == (128, 128, 3)
            assert list(file["lengths"][:]) == [100] * len(names[split])
    assert names == {"train": ["video_00000", "video_00001"], "val": ["video_10000", "video_10001"],
                     "test": ["video_11000"]}
    assert any("video_00002.mp4 is corrupt, skipped" in text for text in warnings)
    assert any("video_11001.mp4 has 100 frames" in text and "skipped" in text for text in warnings)
    assert any("video_train.zip holds 3 of the 5000 videos" in text for text in warnings)


def test_frames_18_to_117_resized_with_an_area_filter(served, tmp_path):
    root, _, _ = served
    with zipfile.ZipFile(root / "raw" / "video_validation.zip") as archive:
        (tmp_path / "v.mp4").write_bytes(archive.read("video_10000-11000/video_10001.mp4"))
    with open_video(str(tmp_path / "v.mp4")) as video:
        decoded = np.concatenate(list(video.chunks()))
    expected = np.stack([np.asarray(Image.fromarray(frame).resize((128, 128), Image.Resampling.BOX))
                         for frame in decoded[18:118]])
    with h5py.File(root / "val.h5") as file:
        stored = file["frames"][100:200]
    np.testing.assert_array_equal(stored, expected)
    assert_frames(stored.transpose(0, 3, 1, 2), 18)


def test_items_are_every_21_frame_window_for_training_and_first_frames_for_test(served):
    root, _, _ = served
    train = build(root, "train")
    assert train.frame_shape == (3, 128, 128)
    assert len(train) == 2 * 80  # DDLP: episodes x (100 - 21 + 1)
    assert tuple(train[0].shape) == (21, 3, 128, 128)
    assert_frames(train[0].numpy(), 18)
    assert_frames(train[79].numpy(), 97)
    assert train.locate(80) == (1, 0)
    for split, count in (("val", 2), ("test", 1)):
        data = build(root, split)
        assert len(data) == count and tuple(data[0].shape) == (50, 3, 128, 128)
        assert_frames(data[count - 1].numpy(), 18)  # test_seq_len 50 from frame 18


def test_ddlp_frame_folders_through_the_cli(tmp_path):
    root = tmp_path / "folders"
    rng = np.random.RandomState(0)
    originals = {}
    for folder in ("train", "valid", "test"):
        for episode in ("2", "10"):
            frames = rng.randint(0, 256, (100, 32, 32, 3)).astype(np.uint8)
            originals[folder, episode] = frames
            (root / "raw" / folder / episode).mkdir(parents=True)
            for index, frame in enumerate(frames):
                Image.fromarray(frame).save(root / "raw" / folder / episode / f"{index}.png")
    result = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "clevrer", "--root", str(root),
                             "--no-download"], check=False, capture_output=True, text=True,
                            env={**os.environ, "VPKIT_LOAD_PLUGINS": "svg"})
    assert result.returncode == 0, result.stderr
    assert "train 2, val 2, test 2 videos" in result.stdout
    assert not (root / "raw" / "video_train.zip").exists()
    val = build(root, "val", test_seq_len=100)
    assert len(val) == 2
    item = val[1].numpy()  # episode 10 comes after episode 2
    for index in (0, 57, 99):
        # DDLP's loader: Image.open(path).resize((128, 128)) with PIL's default filter.
        with Image.open(root / "raw" / "valid" / "10" / f"{index}.png") as image:
            np.testing.assert_array_equal(item[index].transpose(1, 2, 0), np.asarray(image.resize((128, 128))))
    assert len(build(root, "train")) == 2 * 80


def test_without_download_the_missing_zips_are_named_with_their_urls(tmp_path):
    with pytest.raises(VpkitError) as error:
        clevrer.prepare(tmp_path, options(download=False))
    message = str(error.value)
    assert "video_train.zip" in message and "http://data.csail.mit.edu/clevrer/videos/train/video_train.zip" in message
    assert not list(tmp_path.glob("*.h5"))


def test_a_damaged_zip_is_refused_by_its_crc_and_a_bad_mirror_copy_is_rejected(zips, tmp_path):
    data = bytearray(zips["video_train.zip"])
    data[len(data) // 3] ^= 0xFF  # inside a member's compressed bytes: the directory still reads
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "video_train.zip").write_bytes(bytes(data))
    with pytest.raises(VpkitError, match="fails its CRC check"):
        clevrer.prepare(tmp_path, options(download=False))
    assert not list(tmp_path.glob("*.h5")) and not (tmp_path / "raw" / "video_train.zip.sha256").exists()

    other = tmp_path / "other"
    with MirrorServer(zips) as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr(clevrer, "MIRRORS", {name: [server.mirror("bad")] for name in zips})
        with pytest.raises(VpkitError, match="not a complete zip archive"):
            clevrer.prepare(other, options())
    assert not (other / "raw" / "video_train.zip").exists() and not list(other.glob("*.h5"))
