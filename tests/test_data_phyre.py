"""PHYRE: a miniature copy of DDLP's frame folders (128x128 PNGs with red and blue swapped, as cv2 wrote them),
converted, then read with DDLP's loader quirks checked by value: the last 30 frames dropped, episodes cut or padded
to 100 frames, training windows moved back inside the real length, colours inverted, R/B as DDLP sees them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.prepared import PrepareOptions
from vpkit.plugins.datasets import phyre

# folder -> {episode: frames on disk}; names out of numeric order on purpose.
EPISODES = {
    "train": {"00003": 75, "00010": 25, "00002": 140, "00007": 40},
    "valid": {"00001": 60, "00000": 31},
    "test": {"00004": 200, "00001": 50},
}
CODE = {"train": 0, "valid": 1, "test": 2}


def file_pixel(folder: str, episode: str, index: int) -> tuple[int, int, int]:
    """The (R, G, B) every pixel of frame `index` has in the PNG file: DDLP's loader reads these values."""
    return index, 2 * int(episode), 200 + CODE[folder]


def write_tree(base: Path, episodes=EPISODES, size: int = 128) -> None:
    for folder, lengths in episodes.items():
        for episode, count in lengths.items():
            (base / folder / episode).mkdir(parents=True)
            for index in range(count):
                frame = np.empty((size, size, 3), np.uint8)
                frame[...] = file_pixel(folder, episode, index)
                Image.fromarray(frame).save(base / folder / episode / f"{index:05d}.png")


def options(warnings: list[str] | None = None, **kwargs) -> PrepareOptions:
    return PrepareOptions(warn=(warnings.append if warnings is not None else lambda text: None), progress=False,
                          **kwargs)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("phyre")
    write_tree(root / "raw")
    warnings: list[str] = []
    line = phyre.prepare(root, options(warnings))
    assert "phyre ready" in line and "train 4, val 2, test 2 videos" in line
    return root, warnings


def build(root: Path, split: str, **overrides):
    spec = get_host().datasets.get("phyre")
    return spec.build(spec.config_cls(data_root=str(root), **overrides), split)


def expected(folder: str, episode: str, indices) -> np.ndarray:
    """What DDLP's loader gives, in uint8: the file's channels, inverted, [T, 3, 128, 128]."""
    pixels = 255 - np.array([file_pixel(folder, episode, i) for i in indices], np.uint8)
    return np.broadcast_to(pixels[:, :, None, None], (len(pixels), 3, 128, 128))


def test_every_frame_is_stored_in_true_rgb(prepared):
    root, warnings = prepared
    with h5py.File(root / "train.h5") as file:
        assert list(file["names"].asstr()[:]) == ["train/00002", "train/00003", "train/00007", "train/00010"]
        assert list(file["lengths"][:]) == [140, 75, 40, 25]
        assert tuple(file["frames"][0, 5, 7]) == (200, 4, 0)  # cv2 wrote (R, G, B) = (0, 4, 200) as BGR
    with h5py.File(root / "val.h5") as file:  # the `valid` folder
        assert list(file["names"].asstr()[:]) == ["valid/00000", "valid/00001"]
    assert any("00010 has 25 frames" in text for text in warnings)


def test_training_windows_follow_ddlp_cut_pad_and_move_back(prepared):
    data = build(prepared[0], "train")
    assert data.frame_shape == (3, 128, 128) and data.skipped == 1  # 00010: 25 frames, none left after 30
    assert len(data) == 3 * 85  # DDLP: episodes x (100 - 16 + 1), whatever their real length
    cases = {
        0: ("00002", range(16)),
        84: ("00002", range(84, 100)),  # 140 - 30 = 110 frames, cut to 100
        85: ("00003", range(16)),
        114: ("00003", range(29, 45)),  # 75 - 30 = 45 real frames: the last window that fits
        115: ("00003", range(29, 45)),  # past the end: moved back
        169: ("00003", range(29, 45)),
        170: ("00007", [*range(10), *[9] * 6]),  # 10 real frames < 16: from 0, the last frame repeated
        254: ("00007", [*range(10), *[9] * 6]),
    }
    for index, (episode, frames) in cases.items():
        item = data[index]
        assert item.dtype == torch.uint8 and tuple(item.shape) == (16, 3, 128, 128)
        np.testing.assert_array_equal(item.numpy(), expected("train", episode, frames))
    assert data.locate(115) == (1, 29)
    with pytest.raises(IndexError):
        data.locate(255)


def test_test_episodes_are_cut_and_padded_to_100_frames(prepared):
    root, _ = prepared
    data = build(root, "test")
    assert len(data) == 2
    np.testing.assert_array_equal(data[0].numpy(), expected("test", "00001", [*range(20), *[19] * 30]))
    np.testing.assert_array_equal(data[1].numpy(), expected("test", "00004", range(50)))
    long = build(root, "test", test_seq_len=120)
    np.testing.assert_array_equal(long[1].numpy(), expected("test", "00004", [*range(100), *[99] * 20]))
    val = build(root, "val", test_seq_len=3)
    np.testing.assert_array_equal(val[0].numpy(), expected("valid", "00000", [0, 0, 0]))  # 31 - 30 = 1 frame


def test_each_quirk_has_its_option(prepared):
    root, _ = prepared
    true_rgb = np.array([200 + CODE["test"], 2 * 4, 7], np.uint8)  # frame 7 of test/00004, true colours
    for swap_rb, invert, pixel in ((False, False, true_rgb), (False, True, 255 - true_rgb),
                                   (True, False, true_rgb[::-1]), (True, True, 255 - true_rgb[::-1])):
        item = build(root, "test", swap_rb=swap_rb, invert=invert)[1]
        np.testing.assert_array_equal(item[7, :, 3, 3].numpy(), pixel)
    # No frame dropped, no padding: the whole stored episode, and windows over all 140 frames.
    whole = build(root, "test", drop_last=0, episode_length=200, test_seq_len=200, invert=False, swap_rb=False)
    assert whole[1][:, 2, 0, 0].tolist() == list(range(200))
    assert len(build(root, "train", drop_last=0, episode_length=140)) == 4 * 125


def test_uint8_inversion_is_ddlp_float_inversion(prepared):
    root, _ = prepared
    ours = build(root, "train")[3].float() / 255
    # DDLP: ToTensor()(Image.open(path).resize((128, 128)))[:3], then img = 1.0 - img (phyre_ds.py:105-119).
    with Image.open(root / "raw" / "train" / "00002" / "00003.png") as image:
        theirs = 1.0 - torch.from_numpy(np.array(image.resize((128, 128)))).permute(2, 0, 1).float() / 255
    assert float((ours[0] - theirs).abs().max()) < 1e-7  # equal to float32 rounding


def test_nested_copy_other_size_and_damaged_frame_through_the_cli(tmp_path):
    root = tmp_path / "nested"
    small = {"train": {"00000": 40, "00001": 40}, "valid": {"00000": 35}, "test": {"00000": 35}}
    write_tree(root / "raw" / "phyre", small, size=16)  # as an archive unpacks; frames not 128x128
    (root / "raw" / "phyre" / "train" / "00001" / "00012.png").write_bytes(b"\x89PNG truncated")
    result = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "phyre", "--root", str(root)],
                            check=False, capture_output=True, text=True,
                            env={**os.environ, "VPKIT_LOAD_PLUGINS": "svg", "COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    assert "train 1, val 1, test 1 videos" in result.stdout
    assert "00012.png" in result.stderr and "skipped" in result.stderr
    with h5py.File(root / "train.h5") as file:
        assert file["frames"].shape == (40, 128, 128, 3)
        with Image.open(root / "raw" / "phyre" / "train" / "00000" / "00009.png") as image:
            resized = np.asarray(image.resize((128, 128)))  # DDLP's loader: PIL's default filter
        np.testing.assert_array_equal(file["frames"][9], resized[..., ::-1])


def test_missing_folders_name_both_ways_to_get_them(tmp_path):
    (tmp_path / "raw" / "train").mkdir(parents=True)
    with pytest.raises(VpkitError) as error:
        phyre.prepare(tmp_path, options())
    message = str(error.value)
    for needle in ("valid/<5-digit episode>/<5-digit frame>.png", "phyre_preparation.py", "pip install phyre",
                   "mega.nz", str(tmp_path / "raw"), "vpkit data prepare phyre"):
        assert needle in message
    assert not list(tmp_path.glob("*.h5"))


def test_an_empty_split_is_an_error_that_leaves_no_file(tmp_path):
    write_tree(tmp_path / "raw", {"train": {"00000": 35}, "valid": {"00000": 35}, "test": {}}, size=16)
    (tmp_path / "raw" / "test").mkdir(exist_ok=True)
    with pytest.raises(VpkitError, match="holds no episode folder"):
        phyre.prepare(tmp_path, options())
    assert not (tmp_path / "test.h5").exists()
    shutil.rmtree(tmp_path / "raw")
    with pytest.raises(VpkitError, match="vpkit data prepare phyre"):
        build(tmp_path, "test")
