"""KITTI raw as SLAMP reads it, from a miniature copy: two train and two test drives (real names, shortened, with
static ranges) in KITTI's folder layout, both cameras, PNG frames. SLAMP's loops are re-run literally to check."""

from __future__ import annotations

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
from vpkit.plugins.datasets import kitti

A, B = "2011_09_26_drive_0001_sync", "2011_09_26_drive_0011_sync"  # train drives of SLAMP's list
C, D = "2011_09_26_drive_0002_sync", "2011_09_26_drive_0009_sync"  # test drives
MINI = kitti.Drives(
    train=(A, B), test=(C, D),
    info={A: ("2011_09_26", 20, ()), B: ("2011_09_26", 30, ((8, 11), (20, 21))),
          C: ("2011_09_26", 12, ()), D: ("2011_09_26", 25, ((2, 4),))})
SEQ, TEST = 5, 6  # miniature clip lengths (SLAMP: 20 and 30)


def slamp_starts(drives: kitti.Drives, names: tuple[str, ...], seq_len: int) -> list[tuple[str, int]]:
    """SLAMP's data/kitti.py get_data_paths, re-typed: its list of (camera folder, start), in its order."""
    data = []
    for drive in names:
        _, length, static = drives.info[drive]
        path = f"{drive}/image_02"
        if not static:
            for i in range(length - seq_len):
                data += [(path, i), (path.replace("image_02", "image_03"), i)]
        else:
            begin = 0
            for start, end in static:
                for i in range(begin, start - seq_len):
                    data += [(path, i), (path.replace("image_02", "image_03"), i)]
                begin = end + 1
            for i in range(begin, length - seq_len):
                data += [(path, i), (path.replace("image_02", "image_03"), i)]
    return data


def slamp_first(data: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """SLAMP's arange_val_paths: the first entry of each camera folder."""
    first: dict[str, int] = {}
    for folder, start in data:
        first.setdefault(folder, start)
    return list(first.items())


def frame_file(raw: Path, drive: str, camera: str, i: int) -> Path:
    return raw / "2011_09_26" / drive / camera / "data" / f"{i:010d}.png"


def make_raw(root: Path) -> None:
    """PNG frames of 124x37 (KITTI's 1242x375 shrunk), different for every drive, camera and frame."""
    rng = np.random.default_rng(0)
    for drive, (_, frames, _) in MINI.info.items():
        for camera in kitti.CAMERAS:
            for i in range(frames):
                path = frame_file(root / "raw", drive, camera, i)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (37, 124, 3), dtype=np.uint8)).save(path)


def slamp_frames(raw: Path, folder: str, start: int, length: int) -> np.ndarray:
    """What SLAMP's __getitem__ loads (PIL's default filter for resize is bicubic, as in its pillow 7.0.0)."""
    drive, camera = folder.split("/")
    return np.stack([np.asarray(Image.open(frame_file(raw, drive, camera, start + t)).convert("RGB").resize((310, 92)))
                     for t in range(length)])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    make_raw(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kitti, "DRIVES", MINI)
        warnings: list[str] = []
        kitti.prepare(root, PrepareOptions(progress=False, warn=warnings.append), test_length=TEST)
    assert warnings == []
    return root


def config(root: Path, **extra):
    spec = get_host().datasets.get("kitti")
    return spec, build_config(spec.config_cls, {"data_root": str(root), "seq_len": SEQ, "test_seq_len": TEST, **extra})


def item_key(dataset, index: int) -> tuple[str, int]:
    """(camera folder, first frame) of one item, from the stored names (the kept video's place in the file is found
    by its first frame's offset)."""
    video, first = dataset.locate(index)
    stored = _names(dataset.path)[_starts(dataset.path).tolist().index(int(dataset._starts[video]))]
    folder, begin = stored.rsplit("@", 1)
    return folder, int(begin) + first


def _names(path: Path) -> list[str]:
    with h5py.File(path, "r") as file:
        return [n.decode() for n in file["names"][:]]


def _starts(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as file:
        return file["starts"][:]


def test_drive_lists_load_with_slamps_values():
    drives = kitti.load_drives()
    assert len(drives.train) == 32 and len(drives.test) == 28 and not set(drives.train) & set(drives.test)
    assert drives.train[0] == "2011_09_26_drive_0001_sync" and drives.test[-1] == "2011_10_03_drive_0047_sync"
    assert set(drives.info) == set(drives.train) | set(drives.test)
    assert drives.info["2011_09_26_drive_0009_sync"] == ("2011_09_26", 447, ((386, 387), (390, 392), (394, 405),
                                                                            (407, 445)))
    assert drives.info["2011_09_26_drive_0001_sync"] == ("2011_09_26", 108, ())
    assert sum(drives.info[d][1] for d in drives.train) == 23410
    real_test = slamp_first(slamp_starts(drives, drives.test, 30))  # SLAMP's 52 test clips
    assert len(real_test) == 52 and [(f"{d}/{c}", s) for d, c, s in kitti.test_starts(drives, drives.test, 30)] == \
        real_test
    # SLAMP's starts on every real drive are exactly the starts inside vpkit's stretches, for any clip length
    for seq_len in (1, 20, 30, 100):
        for name in drives.train + drives.test:
            expected = sorted(i for folder, i in slamp_starts(drives, (name,), seq_len) if folder.endswith("02"))
            got = sorted(i for a, b in kitti.segments(*drives.info[name][1:]) for i in range(a, b - seq_len + 1))
            assert got == expected, (name, seq_len)


def test_train_clips_are_slamps_start_list(prepared):
    spec, cfg = config(prepared)
    train = spec.build(cfg, "train")
    expected = slamp_starts(MINI, MINI.train, SEQ)
    assert len(train) == len(expected) == 2 * (15 + 3 * 3)
    keys = [item_key(train, i) for i in range(len(train))]
    assert sorted(keys) == sorted(expected)
    assert _names(prepared / "train.h5") == [f"{A}/image_02@0", f"{A}/image_03@0", f"{B}/image_02@0",
                                             f"{B}/image_02@12", f"{B}/image_02@22", f"{B}/image_03@0",
                                             f"{B}/image_03@12", f"{B}/image_03@22"]
    assert train.frame_shape == (3, 92, 310)
    index = keys.index((f"{B}/image_03", 13))
    clip = train[index]
    assert clip.dtype == torch.uint8 and tuple(clip.shape) == (SEQ, 3, 92, 310)
    assert np.array_equal(clip.permute(0, 2, 3, 1).numpy(), slamp_frames(prepared / "raw", f"{B}/image_03", 13, SEQ))


def test_test_and_val_are_the_first_valid_start_per_camera(prepared):
    spec, cfg = config(prepared)
    test = spec.build(cfg, "test")
    expected = slamp_first(slamp_starts(MINI, MINI.test, TEST))
    assert expected == [(f"{C}/image_02", 0), (f"{C}/image_03", 0), (f"{D}/image_02", 5), (f"{D}/image_03", 5)]
    assert _names(prepared / "test.h5") == [f"{folder}@{start}" for folder, start in expected]
    assert len(test) == 4
    for i, (folder, start) in enumerate(expected):
        assert np.array_equal(test[i].permute(0, 2, 3, 1).numpy(), slamp_frames(prepared / "raw", folder, start, TEST))
    val = spec.build(cfg, "val")  # SLAMP validates on the train drives, first valid start of each camera
    assert [item_key(val, i) for i in range(len(val))] == slamp_first(slamp_starts(MINI, MINI.train, TEST))
    assert len(val) == 4 and tuple(val[0].shape) == (TEST, 3, 92, 310)
    _, longer = config(prepared, test_seq_len=8)  # B's stretches hold 7 frames: no val clip from B
    assert [item_key(spec.build(longer, "val"), i)[0] for i in range(2)] == [f"{A}/image_02", f"{A}/image_03"]


def test_augment_is_off_by_default_and_seeded(prepared):
    spec, cfg = config(prepared)
    plain = spec.build(cfg, "train")
    _, aug_cfg = config(prepared, augment=True)
    augmented = spec.build(aug_cfg, "train")
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(torch.stack([augmented[i] for i in range(8)]))
    assert torch.equal(outs[0], outs[1]) and outs[0].dtype == torch.uint8
    base = torch.stack([plain[i] for i in range(8)])
    assert not torch.equal(outs[0], base)
    clip = plain[0]
    seen = set()
    for seed in range(40):
        jitter, flip = (torch.rand(2, generator=torch.Generator().manual_seed(seed)) > 0.5).tolist()
        out = kitti.augment_clip(clip, torch.Generator().manual_seed(seed))
        if not jitter:
            assert torch.equal(out, clip.flip(-1) if flip else clip)
        else:
            assert not torch.equal(out, clip.flip(-1) if flip else clip)
        seen.add((jitter, flip))
    assert len(seen) == 4


def test_prepare_through_the_cli_and_again_reuses(tmp_path, monkeypatch):
    make_raw(tmp_path)
    monkeypatch.setattr(kitti, "DRIVES", MINI)
    monkeypatch.setattr(kitti, "TEST_LENGTH", TEST)
    result = CliRunner().invoke(data_cli.app, ["prepare", "kitti", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "train 8, test 4" in result.output.replace("\n", "")
    assert "train 8, test 4" in kitti.prepare(tmp_path, PrepareOptions(progress=False))


def test_missing_drives_name_the_zips_and_the_site(tmp_path):
    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}
    proc = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "kitti", "--root", str(tmp_path)],
                          check=False, capture_output=True, text=True, env=env, timeout=120)
    message = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "2011_09_26_drive_0001_sync.zip" in message and "2011_10_03_drive_0047_sync.zip" in message
    assert "cvlibs.net/datasets/kitti/raw_data.php" in message and "image_02/data/0000000000.png" in message
    assert not (tmp_path / "train.h5").exists()


def test_one_missing_camera_folder_is_named(tmp_path, monkeypatch):
    make_raw(tmp_path)
    monkeypatch.setattr(kitti, "DRIVES", MINI)
    for path in (tmp_path / "raw" / "2011_09_26" / D / "image_03" / "data").iterdir():
        path.unlink()
    (tmp_path / "raw" / "2011_09_26" / D / "image_03" / "data").rmdir()
    with pytest.raises(VpkitError) as error:
        kitti.prepare(tmp_path, PrepareOptions(progress=False), test_length=TEST)
    assert f"{D}.zip" in str(error.value) and f"{A}.zip" not in str(error.value)


def test_a_corrupt_frame_is_skipped_with_a_warning(tmp_path, monkeypatch):
    make_raw(tmp_path)
    monkeypatch.setattr(kitti, "DRIVES", MINI)
    bad_train = frame_file(tmp_path / "raw", B, "image_03", 14)
    bad_train.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bad_test = frame_file(tmp_path / "raw", D, "image_02", 7)
    bad_test.write_bytes(b"")
    warnings: list[str] = []
    kitti.prepare(tmp_path, PrepareOptions(progress=False, warn=warnings.append), test_length=TEST)
    names = _names(tmp_path / "train.h5")
    assert f"{B}/image_03@12" in names and f"{B}/image_03@15" in names  # the stretch [12, 19) split at frame 14
    with h5py.File(tmp_path / "train.h5", "r") as file:
        lengths = dict(zip(names, file["lengths"][:].tolist(), strict=True))
    assert lengths[f"{B}/image_03@12"] == 2 and lengths[f"{B}/image_03@15"] == 4
    assert _names(tmp_path / "test.h5") == [f"{C}/image_02@0", f"{C}/image_03@0", f"{D}/image_03@5"]
    assert any(str(bad_train) in w for w in warnings) and any(str(bad_test) in w for w in warnings)
    assert any(f"{D}/image_02@5" in w for w in warnings)
