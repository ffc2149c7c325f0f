"""`vpkit data convert` / `info` and the `h5` dataset on sources made in the test: ffmpeg-encoded MP4s, a folder of
PNG frames, a .npy array, and a file that is not a video."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vpkit.cli.data import app
from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine import convert, h5videos
from vpkit.testing.videos import moving_shapes, write_test_video


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    clips = {"a_clip2.mp4": moving_shapes(20, 48, 64, seed=1), "a_clip10.mp4": moving_shapes(16, 48, 64, seed=2)}
    for name, content in clips.items():
        write_test_video(root / name, content, fps=25)
    frames = moving_shapes(12, 48, 64, seed=3)
    (root / "b_frames").mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(root / "b_frames" / f"{i}.png")
    array = moving_shapes(14, 48, 64, seed=4)
    np.save(root / "c_array.npy", array)
    (root / "d_notes.mp4").write_text("not a video\n" * 10)
    (root / ".DS_Store").write_bytes(b"hidden")
    return root, {"a_clip2.mp4": clips["a_clip2.mp4"], "a_clip10.mp4": clips["a_clip10.mp4"], "b_frames": frames,
                  "c_array.npy": array}


def test_a_folder_of_mixed_sources_converts_and_bad_files_are_skipped(sources, tmp_path):
    root, content = sources
    warnings = []
    path, written, skipped = convert.convert(root, tmp_path / "train.h5", warn=warnings.append)
    assert (written, skipped) == (4, 1) and len(warnings) == 1 and "d_notes.mp4" in warnings[0]
    data = h5videos.H5Videos(path, clip_length=12, clips="first")
    assert data.frame_shape == (3, 48, 64)
    names = ["a_clip2.mp4", "a_clip10.mp4", "b_frames", "c_array.npy"]  # natural order: clip2 before clip10
    info = h5videos.read_info(path)
    assert info["videos"] == 4 and info["length"]["max"] == 20 and info["warnings"] == []
    for i, name in enumerate(names):
        clip = data[i].permute(0, 2, 3, 1).numpy()
        if name.endswith(".mp4"):  # lossy h264: close, not equal
            error = np.abs(clip.astype(float) - content[name][:12]).mean()
            assert error < 6
        else:  # lossless sources are stored exactly
            np.testing.assert_array_equal(clip, content[name][:12])


def test_resize_and_grey(sources, tmp_path):
    root, content = sources
    path, written, _ = convert.convert(root / "c_array.npy", tmp_path / "test.h5", size=32, grey=True)
    data = h5videos.H5Videos(path, clip_length=14, clips="first")
    assert written == 1 and data.frame_shape == (1, 32, 32)
    luma = content["c_array.npy"].astype(float) @ np.array([0.299, 0.587, 0.114])
    assert abs(data[0].float().mean().item() - luma.mean()) < 3


def test_nothing_readable_writes_nothing(sources, tmp_path):
    root, _ = sources
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_text("no")
    with pytest.raises(VpkitError, match=r"No video of .*bad could be read \(1 tried\)"):
        convert.convert(bad, tmp_path / "out" / "train.h5", warn=lambda text: None)
    assert not (tmp_path / "out" / "train.h5").exists()
    with pytest.raises(VpkitError, match="must name an .h5 file"):
        convert.convert(root, tmp_path / "train.hdf")
    with pytest.raises(VpkitError, match="does not exist"):
        convert.convert(tmp_path / "nowhere", tmp_path / "train.h5")


def test_sizes_that_differ_need_size(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    np.save(root / "a.npy", moving_shapes(5, 16, 16, seed=0))
    np.save(root / "b.npy", moving_shapes(5, 24, 16, seed=0))
    warnings = []
    _, written, skipped = convert.convert(root, tmp_path / "train.h5", warn=warnings.append)
    assert (written, skipped) == (1, 1) and "pass --size" in warnings[0]


def test_cli_convert_info_and_the_h5_dataset(sources, tmp_path):
    root, _ = sources
    runner = CliRunner()
    for split in ("train", "test"):
        result = runner.invoke(app, ["convert", str(root), "--out", str(tmp_path / f"{split}.h5"),
                                     "--size", "32", "--grey"])
        assert result.exit_code == 0, result.output
        assert "4 videos (1 skipped)" in result.output and "d_notes.mp4" in result.output
    result = runner.invoke(app, ["info", str(tmp_path / "train.h5")])
    assert result.exit_code == 0, result.output
    assert "4 videos" in result.output and "32x32, 1 channel(s)" in result.output
    spec = get_host().datasets.get("h5")
    config = build_config(spec.config_cls, {"data_root": str(tmp_path), "seq_len": 10, "test_seq_len": 12})
    train, test = spec.build(config, "train"), spec.build(config, "test")
    assert len(train) == 4 and train[0].shape == (10, 1, 32, 32) and test[3].shape == (12, 1, 32, 32)
    with pytest.raises(VpkitError, match="needs its folder"):
        spec.build(build_config(spec.config_cls, {}), "train")


def test_data_list_names_source_size_and_licence_of_every_dataset():
    import json

    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    papers = ("kth", "bair", "human36m", "kitti", "cityscapes", "obj3d", "traffic", "phyre", "clevrer", "balls",
              "shapes")
    assert {"smmnist", "mmnist", "h5", *papers} <= set(rows)
    for name in ("smmnist", "mmnist", "h5", *papers):
        assert rows[name]["source"] and rows[name]["size"] and rows[name]["licence"], name
    for name in papers:
        assert rows[name]["access"] in ("download", "registration", "by hand", "generated"), name
        assert rows[name]["prepare"] == (rows[name]["access"] != "generated"), name
    assert {rows[name]["access"] for name in ("human36m", "kitti", "cityscapes")} == {"registration"}
    assert "CC BY-SA 3.0" in rows["smmnist"]["licence"]


def write_river_shard(path, videos, broken_index=None):
    """RIVER's `convert_to_h5.py` layout: group `len` (int64 per video), an empty `videos` group, and per video a
    group of frame datasets "0".."T-1", uint8 [H, W, 3], lzf."""
    import h5py

    with h5py.File(path, "w") as file:
        lengths = file.create_group("len")
        file.create_group("videos")
        for i, frames in enumerate(videos):
            lengths.create_dataset(str(i), data=np.int64(len(frames)))
            group = file.create_group(str(i))
            for t, frame in enumerate(frames):
                if i == broken_index and t == 2:
                    continue  # a frame missing from the shard
                group.create_dataset(str(t), data=frame, compression="lzf")


def test_rivers_hdf5_layout_converts(tmp_path):
    split = tmp_path / "river" / "train"
    split.mkdir(parents=True)
    content = [moving_shapes(n, 32, 32, seed=n) for n in (9, 12, 7)]
    write_river_shard(split / "shard_0001.hdf5", content, broken_index=2)
    warnings = []
    path, written, skipped = convert.convert(split, tmp_path / "train.h5", warn=warnings.append)
    assert (written, skipped) == (2, 1) and "video 2" in warnings[0] and "lacks frames 2" in warnings[0]
    data = h5videos.H5Videos(path, clip_length=9, clips="first")
    for i in range(2):
        np.testing.assert_array_equal(data[i].permute(0, 2, 3, 1).numpy(), content[i][:9])
    # a single shard file works too, and its names say where each video came from
    _, written, _ = convert.convert(split / "shard_0001.hdf5", tmp_path / "test.h5", warn=lambda text: None)
    import h5py

    with h5py.File(tmp_path / "test.h5") as file:
        assert written == 2 and [n.decode() for n in file["names"][:]] == ["shard_0001/0", "shard_0001/1"]


def test_a_frame_folder_tree_by_split_converts_in_one_go(tmp_path):
    """DDLP's and RIVER's frame-folder layout, `train|valid|test/<seq>/<frame>.png`, into OUT/{train,val,test}.h5."""
    source = tmp_path / "frames"
    content = {}
    for s, split in enumerate(("train", "valid", "test")):
        for v in range(2 + s):
            frames = moving_shapes(6 + v, 16, 16, seed=10 * s + v)
            folder = source / split / f"{v:05d}"
            folder.mkdir(parents=True)
            for t, frame in enumerate(frames):
                Image.fromarray(frame).save(folder / f"{t:05d}.png")
            content[(split, v)] = frames
    result = CliRunner().invoke(app, ["convert", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "train.h5: 2 videos" in result.output and "val.h5: 3 videos" in result.output
    assert "--dataset h5 --data-root" in result.output
    spec = get_host().datasets.get("h5")
    config = build_config(spec.config_cls, {"data_root": str(tmp_path / "out"), "seq_len": 6})
    val = spec.build(config, "val")
    assert len(val) == 3
    np.testing.assert_array_equal(val[2].permute(0, 2, 3, 1).numpy(), content[("valid", 2)][:6])


def test_rivers_split_folders_convert_and_val_falls_back_to_test_with_a_warning(tmp_path):
    river = tmp_path / "river"
    for split, n in (("train", 3), ("test", 2)):
        (river / split).mkdir(parents=True)
        write_river_shard(river / split / "shard_0001.hdf5", [moving_shapes(8, 16, 16, seed=i) for i in range(n)])
    results = convert.convert_splits(river, tmp_path / "out", warn=lambda text: None)
    assert {split: written for split, (_, written, _) in results.items()} == {"train": 3, "test": 2}
    spec = get_host().datasets.get("h5")
    config = build_config(spec.config_cls, {"data_root": str(tmp_path / "out"), "seq_len": 8})
    with pytest.warns(UserWarning, match="no val.h5"):
        assert len(spec.build(config, "val")) == 2


def test_convert_to_a_folder_needs_split_folders(sources, tmp_path):
    root, _ = sources
    result = CliRunner().invoke(app, ["convert", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "must name an .h5 file" in str(result.exception or result.output)
