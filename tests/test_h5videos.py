"""vpkit's HDF5 video format: what is written reads back exactly, clips touch only their chunks, files are complete
or absent, DataLoader workers open their own handles, and broken files say what is wrong."""

from __future__ import annotations

import io
import pickle

import h5py
import numpy as np
import pytest
import torch

from vpkit.core.errors import VpkitError
from vpkit.engine import h5videos
from vpkit.testing.videos import moving_shapes


def videos(lengths=(30, 12, 25), size=(24, 32), channels=3):
    out = []
    for i, length in enumerate(lengths):
        frames = moving_shapes(length, *size, seed=i)
        if channels == 1:
            frames = frames[..., :1]
        out.append((f"video{i}", frames))
    return out


def test_round_trip_and_index(tmp_path):
    source = videos()
    path = h5videos.write_videos(tmp_path / "train.h5", source, fps=25)
    with h5py.File(path) as file:
        assert file.attrs["format"] == h5videos.FORMAT and file.attrs["fps"] == 25
        np.testing.assert_array_equal(file["lengths"][:], [30, 12, 25])
        np.testing.assert_array_equal(file["starts"][:], [0, 30, 42])
        assert [n.decode() for n in file["names"][:]] == ["video0", "video1", "video2"]
        assert file["frames"].chunks == (h5videos.CHUNK_FRAMES, 24, 32, 3)
    data = h5videos.H5Videos(path, clip_length=12, clips="first")
    assert len(data) == 3 and data.frame_shape == (3, 24, 32) and data.fps == 25
    for i, (_, frames) in enumerate(source):
        clip = data[i]
        assert clip.dtype == torch.uint8 and clip.shape == (12, 3, 24, 32)
        np.testing.assert_array_equal(clip.permute(0, 2, 3, 1).numpy(), frames[:12])


def test_rgb_repeats_grey_frames_and_refuses_colour_ones(tmp_path):
    grey = h5videos.write_videos(tmp_path / "grey.h5", videos(lengths=(6,), channels=1))
    plain, rgb = (h5videos.H5Videos(grey, clip_length=4, clips="first", rgb=flag) for flag in (False, True))
    assert rgb.frame_shape == (3, 24, 32) and rgb[0].shape == (4, 3, 24, 32)
    for channel in range(3):
        assert torch.equal(rgb[0][:, channel], plain[0][:, 0])
    colour = h5videos.write_videos(tmp_path / "colour.h5", videos(lengths=(6,)))
    with pytest.raises(VpkitError, match="holds 3-channel frames; rgb repeats grey"):
        h5videos.H5Videos(colour, clip_length=4, rgb=True)


def test_every_start_with_a_frame_step(tmp_path):
    source = videos(lengths=(10, 7, 9), channels=1)
    path = h5videos.write_videos(tmp_path / "test.h5", source)
    data = h5videos.H5Videos(path, clip_length=4, step=2, clips="all")  # a clip spans 7 frames
    assert data.skipped == 0 and len(data) == 4 + 1 + 3
    expected = [frames[s:s + 7:2] for _, frames in source for s in range(len(frames) - 6)]
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(data[i].permute(0, 2, 3, 1).numpy(), want)
    with pytest.raises(IndexError):
        data[len(data)]


def test_random_clips_are_seeded_and_short_videos_left_out(tmp_path):
    path = h5videos.write_videos(tmp_path / "train.h5", videos(lengths=(40, 5, 30)))
    first = h5videos.H5Videos(path, clip_length=8, seed=3)
    second = h5videos.H5Videos(path, clip_length=8, seed=3)
    other = h5videos.H5Videos(path, clip_length=8, seed=4)
    assert first.skipped == 1 and len(first) == 2

    def starts(data: h5videos.H5Videos, global_seed: int = 0) -> list[int]:
        torch.manual_seed(global_seed)  # the trainer seeds torch's global generator per batch
        return [data.locate(0)[1] for _ in range(20)]

    # the same under the same global seed, whichever copy reads (a DataLoader worker's, a resumed run's)
    assert starts(first) == starts(second) == starts(first) and len(set(starts(first))) > 1
    assert starts(first) != starts(other) and starts(first) != starts(first, global_seed=1)
    assert all(0 <= s <= 32 for s in starts(first))
    with pytest.raises(VpkitError, match=r"No video in .* has the 41 frames a clip of 41 .* the longest has 40"):
        h5videos.H5Videos(path, clip_length=41)


class CountingFile(io.FileIO):
    """A file that counts the bytes HDF5 reads from it."""

    bytes_read = 0

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.bytes_read += n or 0
        return n


def test_a_clip_reads_only_its_own_chunks(tmp_path):
    path = h5videos.write_videos(tmp_path / "train.h5", videos(lengths=(64, 64)))
    data = h5videos.H5Videos(path, clip_length=20, clips="all")
    item = 64 - 19 + 10  # the second video from its frame 10: frames 74..93 of the file, in chunks [72, 96)
    assert data.locate(item) == (1, 10)
    counting = CountingFile(path, "rb")
    data._file = h5py.File(counting, "r")
    data._file["frames"].id.get_chunk_info(0)  # load the chunk index before counting
    counting.bytes_read = 0
    clip = data[item]
    frame_bytes = 24 * 32 * 3
    assert clip.shape[0] == 20
    assert 20 * frame_bytes <= counting.bytes_read <= 6 * h5videos.CHUNK_FRAMES * frame_bytes + 8192
    assert path.stat().st_size > 5 * counting.bytes_read  # the rest of the file was not touched


def test_workers_open_their_own_handles(tmp_path):
    path = h5videos.write_videos(tmp_path / "train.h5", videos(lengths=(16, 16, 16, 16)))
    data = h5videos.H5Videos(path, clip_length=8, clips="first")
    data[0]  # the parent process opens a handle...
    clone = pickle.loads(pickle.dumps(data))  # ...which is never pickled
    assert clone._file is None
    np.testing.assert_array_equal(clone[2].numpy(), data[2].numpy())
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    batches = torch.cat(list(loader))
    np.testing.assert_array_equal(batches.numpy(), torch.stack([data[i] for i in range(4)]).numpy())


def test_a_failed_write_leaves_no_file(tmp_path):
    def broken():
        yield "good", moving_shapes(5, 16, 16, seed=0)
        raise RuntimeError("the source died")

    with pytest.raises(RuntimeError, match="the source died"):
        h5videos.write_videos(tmp_path / "train.h5", broken())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(VpkitError, match="frames must be uint8"):
        h5videos.write_videos(tmp_path / "train.h5", [("f", np.zeros((3, 8, 8, 3), np.float32))])
    with pytest.raises(VpkitError, match=r"frames must be \[T, 8, 8, 3\]"):
        h5videos.write_videos(tmp_path / "train.h5", [("a", np.zeros((3, 8, 8, 3), np.uint8)),
                                                      ("b", np.zeros((3, 9, 8, 3), np.uint8))])
    with pytest.raises(VpkitError, match="the source is empty"):
        h5videos.write_videos(tmp_path / "train.h5", [])
    assert list(tmp_path.iterdir()) == []


def test_broken_or_foreign_files_say_what_is_wrong(tmp_path):
    with pytest.raises(VpkitError, match="does not exist; convert the split first"):
        h5videos.H5Videos(tmp_path / "none.h5", 4)
    (tmp_path / "cut.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(VpkitError, match="is not a readable HDF5 file"):
        h5videos.H5Videos(tmp_path / "cut.h5", 4)
    with h5py.File(tmp_path / "river.h5", "w") as file:
        file.create_dataset("image", data=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(VpkitError, match=r"lacks frames, starts, lengths \(it holds image\)"):
        h5videos.H5Videos(tmp_path / "river.h5", 4)
    with pytest.raises(VpkitError, match="Unknown clips mode 'middle'"):
        h5videos.H5Videos(tmp_path / "river.h5", 4, clips="middle")


def test_info_counts_and_catches_unscaled_or_grey_data(tmp_path):
    path = h5videos.write_videos(tmp_path / "train.h5", videos(lengths=(10, 20)), fps=10)
    info = h5videos.read_info(path)
    assert (info["videos"], info["frames"], info["height"], info["width"], info["channels"]) == (2, 30, 24, 32, 3)
    assert info["length"] == {"min": 10, "mean": 15.0, "max": 20} and info["warnings"] == []
    unscaled = (moving_shapes(6, 16, 16, seed=1) > 127).astype(np.uint8)  # [0, 1] data cast without * 255
    info = h5videos.read_info(h5videos.write_videos(tmp_path / "bad.h5", [("x", unscaled)]))
    assert any("without scaling by 255" in w for w in info["warnings"])
    grey = np.repeat(moving_shapes(6, 16, 16, seed=2)[..., :1], 3, axis=-1)
    info = h5videos.read_info(h5videos.write_videos(tmp_path / "grey.h5", [("g", grey)]))
    assert any("channels are equal" in w for w in info["warnings"])


def test_info_on_a_prepared_folder_lists_every_split(tmp_path):
    from typer.testing import CliRunner

    from vpkit.cli.data import app

    h5videos.write_videos(tmp_path / "train.h5", videos(lengths=(10, 20)))
    h5videos.write_videos(tmp_path / "test.h5", videos(lengths=(12,)))
    result = CliRunner().invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "train 2 videos, test 1 videos" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["info", str(empty)])
    assert result.exit_code != 0 and "holds no .h5 split file" in str(result.exception)


def test_prepare_compress_writes_lzf_splits_that_read_back_exactly(tmp_path):
    import h5py

    from vpkit.engine.prepared import PrepareOptions, write_split

    content = videos(lengths=(10, 7))
    for compression in (None, "lzf"):
        path, count = write_split(tmp_path / f"{compression}.h5", content, PrepareOptions(compression=compression))
        with h5py.File(path) as file:
            assert file["frames"].compression == compression and count == 2
        data = h5videos.H5Videos(path, 7, clips="first")
        for i, (_, frames) in enumerate(content):
            np.testing.assert_array_equal(data[i].permute(0, 2, 3, 1).numpy(), frames[:7])
