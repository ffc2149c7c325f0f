"""OBJ3D: a miniature G-SWM OBJ3D tree (100-frame episodes of 16x16 RGBA PNGs), converted, then read with DDLP's
protocol (every 11-frame window for training, the first frames of each episode for val/test) and its PIL resize."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.prepared import PrepareOptions
from vpkit.plugins.datasets import obj3d

SIZE = 16
# Folder names on purpose out of lexical order: DDLP sorts episodes by number (1, 2, 10).
EPISODES = {"train": ["10", "2", "1"], "val": ["7", "3"], "test": ["0", "5"]}


def frame(split: str, episode: str, index: int) -> np.ndarray:
    """RGBA, fully opaque: R = frame index, G = episode number, B = split code, plus a pattern for the resize."""
    rng = np.random.RandomState(index + 1000 * int(episode))
    pixels = rng.randint(0, 256, (SIZE, SIZE, 4)).astype(np.uint8)
    pixels[0, 0, :3] = (index, int(episode), ["train", "val", "test"].index(split))
    pixels[..., 3] = 255
    return pixels


def write_tree(base: Path, frames: int = 100) -> None:
    for split, episodes in EPISODES.items():
        for episode in episodes:
            folder = base / split / episode
            folder.mkdir(parents=True)
            for index in range(frames):
                Image.fromarray(frame(split, episode, index), "RGBA").save(folder / f"test_{index}.png")
        (base / split / "notes").mkdir()  # not a number: ignored, as DDLP's int() filter does
    (base / "train" / "1" / "thumbnail.png").write_bytes(b"not a frame")  # not test_<i>.png: ignored


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("obj3d_src") / "OBJ3D"
    write_tree(base)
    return base


def options(warnings: list[str] | None = None, **kwargs) -> PrepareOptions:
    return PrepareOptions(warn=(warnings.append if warnings is not None else lambda text: None), progress=False,
                          **kwargs)


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("obj3d")
    shutil.copytree(tree, root / "raw" / "OBJ3D")  # as the zip unpacks: ROOT/raw/OBJ3D/{train,val,test}
    line = obj3d.prepare(root, options())
    assert "obj3d ready" in line and "train 3, val 2, test 2 videos" in line
    return root


def build(root: Path, split: str, **overrides):
    spec = get_host().datasets.get("obj3d")
    return spec.build(spec.config_cls(data_root=str(root), **overrides), split)


def reference(split: str, episode: str, frames) -> np.ndarray:
    return np.stack([frame(split, episode, i)[..., :3] for i in frames]).transpose(0, 3, 1, 2)


def test_training_items_are_every_11_frame_window_of_every_episode_in_numeric_order(prepared):
    data = build(prepared, "train", image_size=SIZE)
    assert data.frame_shape == (3, SIZE, SIZE)
    assert len(data) == 3 * 90  # DDLP: episodes x (100 - 11 + 1)
    for index, (episode, first) in {0: ("1", 0), 89: ("1", 89), 90: ("2", 0), 181: ("10", 1)}.items():
        item = data[index]
        assert item.dtype == torch.uint8 and tuple(item.shape) == (11, 3, SIZE, SIZE)
        np.testing.assert_array_equal(item.numpy(), reference("train", episode, range(first, first + 11)))


def test_val_and_test_items_are_one_episode_each_from_its_first_frame(prepared):
    for split in ("val", "test"):
        data = build(prepared, split, image_size=SIZE)
        episodes = sorted(EPISODES[split], key=int)
        assert len(data) == len(episodes)
        for index, episode in enumerate(episodes):
            np.testing.assert_array_equal(data[index].numpy(), reference(split, episode, range(50)))
    full = build(prepared, "test", image_size=SIZE, test_seq_len=100)
    np.testing.assert_array_equal(full[1].numpy(), reference("test", "5", range(100)))


def test_frames_are_stored_at_native_size_and_resized_at_load_as_ddlp_does(prepared, tree):
    with h5py.File(prepared / "val.h5") as file:
        assert file["frames"].shape == (200, SIZE, SIZE, 3)
        assert list(file["names"].asstr()[:]) == ["3", "7"]
    data = build(prepared, "val")  # the default image_size, 64: upsampled from 16
    assert data.frame_shape == (3, 64, 64)
    item = data[0].numpy()
    assert item.shape == (50, 3, 64, 64)
    for index in (0, 31):
        # DDLP obj3d_ds.py: Image.open(path).resize((res, res)) with PIL's default filter, then the first 3 channels.
        with Image.open(tree / "val" / "3" / f"test_{index}.png") as image:
            expected = np.asarray(image.resize((64, 64)))[..., :3]
        np.testing.assert_array_equal(item[index].transpose(1, 2, 0), expected)
    small = build(prepared, "train", image_size=8)[0].numpy()
    with Image.open(tree / "train" / "1" / "test_3.png") as image:
        np.testing.assert_array_equal(small[3].transpose(1, 2, 0), np.asarray(image.resize((8, 8)))[..., :3])


def test_the_zip_is_read_without_unpacking_through_the_cli(prepared, tree, tmp_path):
    root = tmp_path / "from_zip"
    (root / "raw").mkdir(parents=True)
    with zipfile.ZipFile(root / "raw" / "OBJ3D.zip", "w") as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                archive.write(path, "OBJ3D/" + path.relative_to(tree).as_posix())
        archive.writestr("__MACOSX/OBJ3D/train/1/._test_0.png", b"resource fork")
    result = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "obj3d", "--root", str(root)],
                            check=False, capture_output=True, text=True,
                            env={**os.environ, "VPKIT_LOAD_PLUGINS": "svg"})
    assert result.returncode == 0, result.stderr
    assert "train 3, val 2, test 2 videos" in result.stdout
    for split in obj3d.SPLITS:
        with h5py.File(root / f"{split}.h5") as mine, h5py.File(prepared / f"{split}.h5") as theirs:
            np.testing.assert_array_equal(mine["frames"][:], theirs["frames"][:])
            assert list(mine["names"].asstr()[:]) == list(theirs["names"].asstr()[:])


def test_ready_splits_are_kept_unless_forced(prepared):
    stamp = (prepared / "train.h5").stat().st_mtime_ns
    assert "train 3, val 2, test 2" in obj3d.prepare(prepared, options())
    assert (prepared / "train.h5").stat().st_mtime_ns == stamp


def test_missing_originals_name_what_to_fetch_and_where(tmp_path):
    with pytest.raises(VpkitError) as error:
        obj3d.prepare(tmp_path, options())
    message = str(error.value)
    for needle in ("OBJ3D.zip", "github.com/zhixuan-lin/G-SWM", "huggingface.co/datasets/taldatech/OBJ3D",
                   str(tmp_path / "raw"), "vpkit data prepare obj3d"):
        assert needle in message
    assert not list(tmp_path.glob("*.h5"))


def test_a_damaged_frame_skips_its_episode_and_a_short_one_is_kept_with_warnings(tree, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tree, raw)
    (raw / "train" / "2" / "test_40.png").write_bytes(b"\x89PNG broken")
    (raw / "test" / "5" / "test_99.png").unlink()
    warnings: list[str] = []
    line = obj3d.prepare(tmp_path, options(warnings))
    assert "train 2, val 2, test 2" in line
    assert any("test_40.png" in text and "skipped" in text for text in warnings)
    assert any(str(raw / "test") + "/5 has 99 frames" in text for text in warnings)
    with h5py.File(tmp_path / "train.h5") as file:
        assert list(file["names"].asstr()[:]) == ["1", "10"]


def test_an_empty_split_or_a_truncated_zip_is_one_clear_error_and_leaves_no_split_file(tree, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tree, raw)
    shutil.rmtree(raw / "test")
    (raw / "test").mkdir()
    with pytest.raises(VpkitError, match="holds no episode folder"):
        obj3d.prepare(tmp_path, options())
    assert not (tmp_path / "test.h5").exists()

    zipped = tmp_path / "zipped"
    (zipped / "raw").mkdir(parents=True)
    with zipfile.ZipFile(zipped / "raw" / "OBJ3D.zip", "w") as archive:
        archive.write(tree / "train" / "1" / "test_0.png", "OBJ3D/train/1/test_0.png")
    data = (zipped / "raw" / "OBJ3D.zip").read_bytes()
    (zipped / "raw" / "OBJ3D.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(VpkitError, match="not a complete zip archive"):
        obj3d.prepare(zipped, options())
    assert not list(zipped.glob("*.h5"))


def test_a_split_that_was_not_prepared_names_the_command(tmp_path):
    with pytest.raises(VpkitError, match="vpkit data prepare obj3d"):
        build(tmp_path, "train")

