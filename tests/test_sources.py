"""Video sources: real ffmpeg-encoded files, folders of frames and .npy arrays through `open_video`, and what each
kind of bad input says."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpkit.core.errors import VpkitError
from vpkit.engine.video_source import open_video
from vpkit.plugins.sources import array, frames, video
from vpkit.testing.videos import moving_shapes, write_test_video

SOURCE_PLUGINS = {"video": video, "frames": frames, "array": array}


@pytest.fixture
def host(fresh_host):
    """A host with the source plugins, whether or not this checkout lists them among its built-ins yet."""
    for name, module in SOURCE_PLUGINS.items():
        if not fresh_host.pm.is_registered(module):
            fresh_host.register_plugin(module, name=name, distribution="vpkit")
    return fresh_host


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """48 frames of 64x96 moving shapes, and their h264 encoding in an MP4."""
    content = moving_shapes(48, 64, 96, seed=1)
    return write_test_video(tmp_path_factory.mktemp("clip") / "clip.mp4", content, fps=25), content


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of two uint8 videos `[T, H, W, 3]`."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return 10 * np.log10(255**2 / np.maximum(mse, 1e-10))


def read_all(source, **kwargs) -> tuple[np.ndarray, list[int]]:
    """Every frame `chunks(**kwargs)` yields, and the length of each block."""
    blocks = list(source.chunks(**kwargs))
    for block in blocks:
        assert block.dtype == np.uint8 and block.shape[1:] == (*source.size, 3)
    empty = np.empty((0, *source.size, 3), np.uint8)
    return (np.concatenate(blocks) if blocks else empty), [len(b) for b in blocks]


# -- video files ------------------------------------------------------------------------------------------------------


def test_video_round_trip_keeps_the_content(host, clip):
    path, content = clip
    with open_video(str(path)) as source:
        assert isinstance(source, video.DecordVideo)
        assert (source.size, source.num_frames, source.fps) == ((64, 96), 48, 25.0)
        decoded, lengths = read_all(source, chunk=20)
    assert lengths == [20, 20, 8]
    assert decoded.shape == content.shape
    assert psnr(decoded, content).min() > 30


@pytest.mark.parametrize("start, stride, chunk", [(0, 1, 7), (5, 3, 4), (17, 2, 64), (45, 5, 3), (47, 1, 8),
                                                  (48, 1, 8), (100, 2, 8)])
def test_video_start_stride_and_chunks(host, clip, start, stride, chunk):
    path, _ = clip
    with open_video(str(path)) as source:
        every, _ = read_all(source)
        picked, lengths = read_all(source, start=start, stride=stride, chunk=chunk)
    # Seeking to `start` decodes the same pixels as reading from the beginning.
    np.testing.assert_array_equal(picked, every[start::stride])
    assert all(0 < n <= chunk for n in lengths)


def test_video_chunks_are_bounded_by_bytes_not_only_by_chunk(host, clip, monkeypatch):
    path, _ = clip
    monkeypatch.setattr(video, "BATCH_BYTES", 5 * 64 * 96 * 3)  # five frames' worth
    with open_video(str(path)) as source:
        _, lengths = read_all(source, chunk=64)
        frames_one_by_one = np.stack(list(source.frames(start=40)))
        every, _ = read_all(source)
    assert lengths == [5] * 9 + [3]
    np.testing.assert_array_equal(frames_one_by_one, every[40:])


def test_bad_start_or_stride_is_a_user_error(host, clip):
    with open_video(str(clip[0])) as source:
        with pytest.raises(VpkitError, match="stride must be 1 or more"):
            next(source.chunks(stride=0))
        with pytest.raises(VpkitError, match="start frame must be 0 or more"):
            next(source.chunks(start=-1))


@pytest.mark.parametrize("suffix, codec, min_psnr", [(".mkv", "libx264", 30), (".avi", "mpeg4", 28),
                                                     (".mov", "libx264", 30)])
def test_other_containers_and_codecs(host, tmp_path, suffix, codec, min_psnr):
    content = moving_shapes(12, 64, 64, seed=2)
    path = write_test_video(tmp_path / f"clip{suffix}", content, fps=10, codec=codec)
    with open_video(str(path)) as source:
        assert (source.num_frames, source.fps, source.size) == (12, 10.0, (64, 64))
        decoded, _ = read_all(source)
    assert psnr(decoded, content).min() > min_psnr


def test_video_without_a_known_suffix_is_recognised_by_its_bytes(host, clip, tmp_path):
    path = shutil.copy(clip[0], tmp_path / "recording")
    with open_video(str(path)) as source:
        assert isinstance(source, video.DecordVideo) and source.num_frames == 48


def damage_frame_data(data: bytes) -> bytes:
    """Zero an eighth of an MP4's `mdat` payload, halfway through it: the index stays intact."""
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4:at], "big")
    first = at + 4 + size // 2
    return data[:first] + bytes(size // 8) + data[first + size // 8:]


@pytest.mark.parametrize("name, make, needle", [
    ("empty.mp4", lambda clip: b"", r"empty\.mp4 is empty \(0 bytes\)"),
    ("notes.mp4", lambda clip: b"not a video at all\n" * 20, r"notes\.mp4 is not a video ffmpeg can read"),
    ("cut.mp4", lambda clip: clip[: len(clip) * 6 // 10],
     r"cut\.mp4 is truncated or corrupt \(ffmpeg cannot open this MP4/QuickTime file\)"),
])
def test_unreadable_video_files_fail_at_open(host, clip, tmp_path, capfd, name, make, needle):
    path = tmp_path / name
    path.write_bytes(make(clip[0].read_bytes()))
    capfd.readouterr()
    with pytest.raises(VpkitError, match=needle):
        open_video(str(path))
    assert capfd.readouterr().err == ""  # decord's own log lines do not reach the terminal


def test_damaged_frames_name_the_frame_while_decoding(host, clip, tmp_path, capfd):
    path = tmp_path / "damaged.mp4"
    path.write_bytes(damage_frame_data(clip[0].read_bytes()))
    capfd.readouterr()
    source = open_video(str(path))  # the index is intact: it opens
    assert source.num_frames == 48
    decoded = []
    with pytest.raises(VpkitError, match=r"damaged\.mp4 is truncated or corrupt \(could not decode frame (\d+)\)"
                       ) as error:
        decoded.extend(source.chunks(chunk=8))
    failed_at = int(error.value.args[0].rsplit(" ", 1)[1].rstrip(")"))
    assert 0 < failed_at < 48 and sum(map(len, decoded)) <= failed_at
    assert capfd.readouterr().err == ""


# -- folders of frames ----------------------------------------------------------------------------------------------


def test_frame_folder_in_natural_order(host, tmp_path):
    content = moving_shapes(12, 32, 48, seed=3)
    for i, frame in enumerate(content, start=1):
        Image.fromarray(frame).save(tmp_path / f"frame_{i}.png")  # frame_1 ... frame_12, not zero-padded
    (tmp_path / "notes.txt").write_text("not a frame")
    Image.new("RGB", (5, 5)).save(tmp_path / ".thumbnail.png")  # hidden: ignored despite its size
    with open_video(str(tmp_path)) as source:
        assert isinstance(source, frames.FrameFolder)
        assert (source.num_frames, source.fps, source.size) == (12, None, (32, 48))
        decoded, lengths = read_all(source, chunk=5)
        picked, picked_lengths = read_all(source, start=3, stride=4, chunk=2)
    np.testing.assert_array_equal(decoded, content)  # frame_2 before frame_10, PNG is lossless
    assert lengths == [5, 5, 2]
    np.testing.assert_array_equal(picked, content[3::4])
    assert picked_lengths == [2, 1]


def test_natural_key_orders_numbers_by_value():
    names = ["img10.jpg", "IMG2.jpg", "img1.jpg", "img2b.jpg", "a.jpg"]
    assert sorted(names, key=frames.natural_key) == ["a.jpg", "img1.jpg", "IMG2.jpg", "img2b.jpg", "img10.jpg"]


def test_grey_and_jpeg_frames_become_rgb(host, tmp_path):
    content = moving_shapes(4, 32, 32, seed=4)
    for i, frame in enumerate(content):
        Image.fromarray(frame[..., 1]).save(tmp_path / f"{i:03d}.jpg", quality=95)
    with open_video(str(tmp_path)) as source:
        decoded, _ = read_all(source)
    assert (decoded[..., 0] == decoded[..., 2]).all()
    assert psnr(decoded, np.repeat(content[..., 1:2], 3, axis=-1)).min() > 30


def test_bad_frame_folders(host, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(VpkitError, match=r"empty has no frame images \(\.png, \.jpg"):
        open_video(str(empty))

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in (1, 2, 10):
        Image.new("RGB", (48, 32)).save(mixed / f"f_{i}.png")
    Image.new("RGB", (48, 30)).save(mixed / "f_3.png")
    with pytest.raises(VpkitError, match=r"f_3\.png is 30x48 \(HxW\) but f_1\.png is 32x48"):
        open_video(str(mixed))

    broken = tmp_path / "broken"
    broken.mkdir()
    for i, frame in enumerate(moving_shapes(3, 32, 32, seed=7)):
        Image.fromarray(frame).save(broken / f"{i}.png")
    whole = (broken / "1.png").read_bytes()
    (broken / "1.png").write_bytes(whole[: len(whole) // 2])  # header intact, pixels cut off
    with (open_video(str(broken)) as source,
          pytest.raises(VpkitError, match=r"1\.png is truncated or corrupt \(could not decode frame 1\)")):
        read_all(source)

    (broken / "1.png").write_text("not a png")
    with pytest.raises(VpkitError, match=r"1\.png is not an image that can be read"):
        open_video(str(broken))


# -- .npy arrays ------------------------------------------------------------------------------------------------------


def test_grey_npy_is_memory_mapped_and_becomes_rgb(host, tmp_path):
    content = moving_shapes(10, 24, 40, seed=5)[..., 0]  # [T, H, W]
    np.save(tmp_path / "grey.npy", content)
    with open_video(str(tmp_path / "grey.npy")) as source:
        assert isinstance(source, array.NpyVideo) and isinstance(source._frames, np.memmap)
        assert (source.num_frames, source.fps, source.size) == (10, None, (24, 40))
        decoded, lengths = read_all(source, start=1, stride=2, chunk=3)
    np.testing.assert_array_equal(decoded, np.repeat(content[1::2, ..., None], 3, axis=-1))
    assert lengths == [3, 2]


@pytest.mark.parametrize("layout", ["THWC", "TCHW", "THW1", "T1HW"])
def test_float_npy_layouts(host, tmp_path, layout):
    content = moving_shapes(6, 16, 20, seed=6)
    if "1" in layout:  # one stored channel: the expected frames are grey
        content = np.repeat(content[..., :1], 3, axis=-1)
    stored = content.astype(np.float32) / 255
    stored = {"THWC": stored, "TCHW": stored.transpose(0, 3, 1, 2), "THW1": stored[..., :1],
              "T1HW": stored[..., :1].transpose(0, 3, 1, 2)}[layout]
    np.save(tmp_path / "video.npy", stored)
    with open_video(str(tmp_path / "video.npy")) as source:
        assert source.size == (16, 20)
        decoded, _ = read_all(source)
    np.testing.assert_array_equal(decoded, content)


@pytest.mark.parametrize("stored, needle", [
    (np.zeros((4, 8, 8, 5), np.uint8), r"has shape \[4, 8, 8, 5\]; a video array is \[T, H, W\]"),
    (np.zeros((8, 8), np.uint8), r"has shape \[8, 8\]"),
    (np.zeros((0, 8, 8), np.uint8), r"holds no frames"),
    (np.zeros((4, 8, 8), np.int64), r"holds int64 values; save frames as uint8 \(0-255\) or float \(0-1\)"),
    (np.array([None, 1], dtype=object), r"is not a valid \.npy file"),
])
def test_bad_npy_fails_at_open(host, tmp_path, stored, needle):
    np.save(tmp_path / "bad.npy", stored, allow_pickle=True)
    with pytest.raises(VpkitError, match=needle):
        open_video(str(tmp_path / "bad.npy"))


def test_npy_that_is_not_an_array_file(host, tmp_path):
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(VpkitError, match=r"text\.npy is not a valid \.npy file"):
        open_video(str(tmp_path / "text.npy"))


@pytest.mark.parametrize("bad_value", [255.0, np.nan])
def test_float_npy_outside_unit_range_names_the_frame(host, tmp_path, bad_value):
    stored = np.full((5, 8, 8, 3), 0.5, np.float32)
    stored[3, 2, 2, 1] = bad_value
    np.save(tmp_path / "video.npy", stored)
    with (open_video(str(tmp_path / "video.npy")) as source,
          pytest.raises(VpkitError, match=r"video\.npy frame 3 has values outside \[0, 1\]")):
        read_all(source, chunk=2)


# -- dispatch -------------------------------------------------------------------------------------------------------


def test_missing_and_unknown_inputs(host, tmp_path):
    with pytest.raises(VpkitError, match=r"^no such file or folder: .*nope\.mp4$"):
        open_video(str(tmp_path / "nope.mp4"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VpkitError, match=r"cannot read .*notes\.txt: give a video file ffmpeg reads .* a folder of "
                                         r"frame images .* or a \.npy array"):
        open_video(str(tmp_path / "notes.txt"))


def test_each_plugin_claims_only_its_own_kind(clip, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4), np.uint8))
    mp4, npy, folder = str(clip[0]), str(tmp_path / "a.npy"), str(tmp_path)
    assert video.open_source(npy) is None and video.open_source(folder) is None
    assert frames.open_source(mp4) is None and frames.open_source(npy) is None
    assert array.open_source(mp4) is None and array.open_source(folder) is None
