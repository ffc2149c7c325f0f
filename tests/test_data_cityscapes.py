"""Cityscapes leftImg8bit_sequence as SLAMP reads it, from a miniature copy: the real folder layout and file names,
30-frame snippets of tiny PNGs (one seq holding two snippets, as some real cities do). SLAMP's loops are re-run."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import h5py
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
from vpkit.plugins.datasets import cityscapes

LAYOUT = {  # split -> city -> first frame of each snippet, as (seq, frame)
    "train": {"aachen": [(0, 0), (1, 0)], "bochum": [(0, 100), (0, 500)]},
    "val": {"lindau": [(0, 0), (1, 0), (2, 0)]},
    "test": {"berlin": [(0, 0), (0, 40), (0, 90)], "bonn": [(5, 10), (6, 10), (7, 10)]},
}
SNIPPETS = 2  # per city in val/test (SLAMP: 20)


def frame_file(root: Path, split: str, city: str, seq: int, frame: int) -> Path:
    return (root / "raw" / "leftImg8bit_sequence" / split / city /
            f"{city}_{seq:06d}_{frame:06d}_leftImg8bit.png")


def make_raw(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, cities in LAYOUT.items():
        for city, snippets in cities.items():
            for seq, first in snippets:
                for frame in range(first, first + 30):
                    path = frame_file(root, split, city, seq, frame)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)).save(path)


def slamp_paths(root: Path, split: str, seq_len: int) -> list[str]:
    """SLAMP's data/cityscapes.py get_data_paths, re-typed (20 -> SNIPPETS snippets per test city)."""
    base = str(root / "raw" / "leftImg8bit_sequence")
    data = []
    stride = 30 - seq_len + 1
    if split == "train":
        for d in sorted(glob.glob(os.path.join(base, "train", "*"))):
            imgs = sorted(glob.glob(os.path.join(d, "*")))
            data += [imgs[i:i + stride] for i in range(0, len(imgs), 30)]
        return [item for sublist in data for item in sublist]
    for d in sorted(glob.glob(os.path.join(base, split, "*"))):
        imgs = sorted(glob.glob(os.path.join(d, "*")))
        data += [imgs[i] for i in range(0, SNIPPETS * 30, 30)]
    return data


def slamp_clip(first_path: str, seq_len: int) -> np.ndarray:
    """SLAMP's __getitem__: frames t0..t0+seq_len-1 by frame number, resized with PIL's default (bicubic) filter."""
    folder, name = os.path.split(first_path)
    parts = name.split("_")
    t0 = int(parts[2])
    return np.stack([np.asarray(Image.open(os.path.join(folder, "_".join([*parts[:2], f"{t0 + t:06d}", *parts[3:]])))
                                .convert("RGB").resize((256, 128))) for t in range(seq_len)])


def names(path: Path) -> list[str]:
    with h5py.File(path, "r") as file:
        return [n.decode() for n in file["names"][:]]


def item_first_file(root: Path, dataset, index: int, split: str = "train") -> str:
    """The file of an item's first frame, from the stored snippet name and the item's offset in it."""
    video, first = dataset.locate(index)
    with h5py.File(dataset.path, "r") as file:
        stored = file["names"][:][file["starts"][:].tolist().index(int(dataset._starts[video]))].decode()
    city, seq, frame = stored.split("_")
    return str(frame_file(root, split, city, int(seq), int(frame) + first))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    make_raw(root)
    warnings: list[str] = []
    cityscapes.prepare(root, PrepareOptions(progress=False, warn=warnings.append), test_snippets=SNIPPETS)
    assert warnings == []
    return root


def build(root: Path, split: str, **extra):
    spec = get_host().datasets.get("cityscapes")
    return spec.build(build_config(spec.config_cls, {"data_root": str(root), **extra}), split)


def test_train_clips_start_at_every_offset_slamp_lists(prepared):
    train = build(prepared, "train")  # seq_len 20: offsets 0..10 of each snippet
    expected = slamp_paths(prepared, "train", 20)
    assert len(train) == len(expected) == 4 * 11
    assert sorted(item_first_file(prepared, train, i) for i in range(len(train))) == sorted(expected)
    assert names(prepared / "train.h5") == ["aachen_000000_000000", "aachen_000001_000000", "bochum_000000_000100",
                                            "bochum_000000_000500"]
    index = [item_first_file(prepared, train, i) for i in range(len(train))].index(expected[-1])
    clip = train[index]
    assert clip.dtype == torch.uint8 and tuple(clip.shape) == (20, 3, 128, 256) and train.frame_shape == (3, 128, 256)
    assert np.array_equal(clip.permute(0, 2, 3, 1).numpy(), slamp_clip(expected[-1], 20))
    short = build(prepared, "train", seq_len=10)
    assert len(short) == len(slamp_paths(prepared, "train", 10)) == 4 * 21


def test_test_and_val_are_the_first_snippets_of_each_city_from_frame_0(prepared):
    test = build(prepared, "test")
    expected = slamp_paths(prepared, "test", 30)
    assert [Path(p).name for p in expected] == ["berlin_000000_000000_leftImg8bit.png",
                                                "berlin_000000_000040_leftImg8bit.png",
                                                "bonn_000005_000010_leftImg8bit.png",
                                                "bonn_000006_000010_leftImg8bit.png"]
    assert names(prepared / "test.h5") == [Path(p).name.removesuffix("_leftImg8bit.png") for p in expected]
    assert len(test) == 4
    for i, path in enumerate(expected):
        assert np.array_equal(test[i].permute(0, 2, 3, 1).numpy(), slamp_clip(path, 30))
    val = build(prepared, "val")
    assert names(prepared / "val.h5") == ["lindau_000000_000000", "lindau_000001_000000"]
    assert tuple(val[1].shape) == (30, 3, 128, 256)
    assert np.array_equal(val[1].permute(0, 2, 3, 1).numpy(),
                          slamp_clip(str(frame_file(prepared, "val", "lindau", 1, 0)), 30))


def test_augment_flag(prepared):
    plain, augmented = build(prepared, "train"), build(prepared, "train", augment=True)
    torch.manual_seed(0)
    first = torch.stack([augmented[i] for i in range(6)])
    torch.manual_seed(0)
    assert torch.equal(first, torch.stack([augmented[i] for i in range(6)]))
    assert not torch.equal(first, torch.stack([plain[i] for i in range(6)]))


def test_prepare_through_the_cli_then_reuse(tmp_path, monkeypatch):
    make_raw(tmp_path)
    monkeypatch.setattr(cityscapes, "TEST_SNIPPETS", SNIPPETS)
    result = CliRunner().invoke(data_cli.app, ["prepare", "cityscapes", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "train 4, val 2, test 4" in result.output.replace("\n", "")
    assert "train 4, val 2, test 4" in cityscapes.prepare(tmp_path, PrepareOptions(progress=False))


def test_missing_archive_is_named_with_the_site_and_layout(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "cityscapes", "--root", str(tmp_path)],
                          check=False, capture_output=True, text=True,
                          env={**os.environ, "VPKIT_LOAD_PLUGINS": "svg"},
                          timeout=120)
    message = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "leftImg8bit_sequence_trainvaltest.zip" in message and "cityscapes-dataset.com" in message
    assert "leftImg8bit_sequence/train" in message and "leftImg8bit_sequence/test" in message
    (tmp_path / "raw" / "leftImg8bit_sequence" / "train").mkdir(parents=True)
    (tmp_path / "raw" / "leftImg8bit_sequence" / "val").mkdir()
    with pytest.raises(VpkitError, match="leftImg8bit_sequence/test"):
        cityscapes.prepare(tmp_path, PrepareOptions(progress=False))


def test_corrupt_frames_are_skipped_with_warnings_and_short_snippets_flagged(tmp_path):
    make_raw(tmp_path)
    bad_train = frame_file(tmp_path, "train", "bochum", 0, 512)
    bad_train.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bad_test = frame_file(tmp_path, "test", "bonn", 5, 20)
    bad_test.write_bytes(b"")
    frame_file(tmp_path, "val", "lindau", 0, 29).unlink()  # a 29-frame snippet
    warnings: list[str] = []
    cityscapes.prepare(tmp_path, PrepareOptions(progress=False, warn=warnings.append), test_snippets=SNIPPETS)
    assert names(tmp_path / "train.h5")[-2:] == ["bochum_000000_000500", "bochum_000000_000500+13"]
    with h5py.File(tmp_path / "train.h5", "r") as file:
        assert file["lengths"][:].tolist() == [30, 30, 30, 12, 17]
    assert names(tmp_path / "test.h5") == ["berlin_000000_000000", "berlin_000000_000040", "bonn_000006_000010"]
    assert names(tmp_path / "val.h5") == ["lindau_000001_000000"]
    assert any(str(bad_train) in w for w in warnings) and any(str(bad_test) in w for w in warnings)
    assert any("lindau_000000_000000" in w and "29 frames" in w for w in warnings)
    assert len(build(tmp_path, "train")) == 3 * 11  # the pieces of the split snippet are shorter than a clip
