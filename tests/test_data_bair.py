"""BAIR from a miniature copy of its real archive (softmotion30_44k TFRecords of tf.train.Examples with the real keys
and raw 64x64x3 frames), and the TFRecord/Example reader it is read with, checked against hand-computed bytes."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import google_crc32c
import h5py
import numpy as np
import pytest

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.engine.prepared import PrepareOptions
from vpkit.engine.tfrecord import (
    encode_example,
    encode_record,
    masked_crc,
    parse_example,
    read_records,
    write_records,
)
from vpkit.plugins.datasets import bair
from vpkit.testing.http import MirrorServer

# --- the TFRecord framing and the Example wire format ---------------------------------------------------------------


def bitwise_crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli, reflected polynomial 0x82F63B78) bit by bit: independent of google_crc32c."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_check_values_and_the_tfrecord_mask():
    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value
    # RFC 3720 (iSCSI) B.4 test vectors, for the bitwise reference
    assert bitwise_crc32c(b"123456789") == 0xE3069283
    assert bitwise_crc32c(bytes(32)) == 0x8A9136AA and bitwise_crc32c(b"\xff" * 32) == 0x62A8AB43
    assert bitwise_crc32c(bytes(range(32))) == 0x46DD794E
    assert masked_crc(b"") == 0xA282EAD8  # crc 0: the mask is the delta alone
    crc = bitwise_crc32c(b"123456789")
    assert masked_crc(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


# Example{features: Features{feature: {"a": Feature{int64_list: Int64List{value: [1]}}}}}, encoded by hand:
#   Int64List  0a 01 01              (field 1, packed, 1 byte: varint 1)
#   Feature    1a 03 <Int64List>     (field 3)
#   map entry  0a 01 61 12 05 <Feature>   (key "a", value)
#   Features   0a 0a <entry>;  Example 0a 0c <Features>
EXAMPLE_A1 = bytes.fromhex("0a0c" "0a0a" "0a0161" "1205" "1a03" "0a0101")
# its TFRecord: uint64 length 14, masked CRC32C of those 8 bytes, the data, masked CRC32C of the data
RECORD_A1 = bytes.fromhex("0e00000000000000" "c5e5693f") + EXAMPLE_A1 + bytes.fromhex("39e87850")


def test_a_record_and_an_example_match_hand_checked_bytes(tmp_path):
    def mask(crc: int) -> int:
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32

    length = struct.pack("<Q", 14)
    assert RECORD_A1[8:12] == struct.pack("<I", mask(bitwise_crc32c(length)))
    assert RECORD_A1[-4:] == struct.pack("<I", mask(bitwise_crc32c(EXAMPLE_A1)))
    assert encode_example({"a": [1]}) == EXAMPLE_A1
    assert encode_record(EXAMPLE_A1) == RECORD_A1
    assert encode_record(b"") == bytes(8) + bytes.fromhex("29039807") + bytes.fromhex("d8ea82a2")
    parsed = parse_example(EXAMPLE_A1)
    assert list(parsed) == ["a"] and parsed["a"].dtype == np.int64 and parsed["a"].tolist() == [1]
    path = tmp_path / "two.tfrecords"
    path.write_bytes(RECORD_A1 + encode_record(b""))
    assert list(read_records(path)) == [EXAMPLE_A1, b""]


def test_examples_round_trip_and_unpacked_numbers_parse():
    features = {
        "image": [b"\x00\x01\x02", b""],
        "one": b"x" * 300,  # a 2-byte varint length
        "text": ["caf\u00e9"],
        "floats": np.array([1.5, -2.0, 3.25e-7], np.float32),
        "ints": np.array([-1, 0, 300, 2**63 - 1, -(2**63)]),
        "empty": [],
    }
    parsed = parse_example(encode_example(features))
    assert parsed["image"] == [b"\x00\x01\x02", b""] and parsed["one"] == [b"x" * 300]
    assert parsed["text"] == ["caf\u00e9".encode()] and parsed["empty"] == []
    assert parsed["floats"].dtype == np.float32 and np.array_equal(parsed["floats"], features["floats"])
    assert parsed["ints"].tolist() == [-1, 0, 300, 2**63 - 1, -(2**63)]
    assert set(parse_example(encode_example(features), keys={"one"})) == {"one"}
    # unpacked: FloatList{value: 1.5, value: -2} as fixed32 fields (tag 0x0d); Int64List{7, -1} as varints (tag 0x08)
    floats = bytes([0x0D]) + struct.pack("<f", 1.5) + bytes([0x0D]) + struct.pack("<f", -2.0)
    ints = bytes([0x08, 0x07, 0x08]) + b"\xff" * 9 + b"\x01"
    feature_f = bytes([0x12, len(floats)]) + floats
    feature_i = bytes([0x1A, len(ints)]) + ints
    entries = b"".join(bytes([0x0A, 3 + 2 + len(f), 0x0A, 1]) + key + bytes([0x12, len(f)]) + f
                       for key, f in ((b"f", feature_f), (b"i", feature_i)))
    parsed = parse_example(bytes([0x0A, len(entries)]) + entries)  # Example{1: Features{entries}}
    assert parsed["f"].tolist() == [1.5, -2.0] and parsed["i"].tolist() == [7, -1]
    for bad in (b"\x0a\x05\x0a", b"\x0a\x02\x0b\x00", b"\x0a"):  # cut short, a group wire type, a bare tag
        with pytest.raises(VpkitError, match="malformed tf.train.Example"):
            parse_example(bad)


def protobuf_example_class(syntax: str):
    """tf.train.Example built from descriptors by the protobuf library (proto3: packed numbers, as TensorFlow's
    feature.proto; proto2: unpacked)."""
    pb = pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    del pb
    field = descriptor_pb2.FieldDescriptorProto
    package = f"tf{syntax}"
    proto = descriptor_pb2.FileDescriptorProto(name=f"example_{syntax}.proto", package=package, syntax=syntax)
    for name, kind in (("BytesList", field.TYPE_BYTES), ("FloatList", field.TYPE_FLOAT),
                       ("Int64List", field.TYPE_INT64)):
        proto.message_type.add(name=name).field.add(name="value", number=1, type=kind, label=field.LABEL_REPEATED)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in enumerate(("bytes_list", "float_list", "int64_list"), 1):
        feature.field.add(name=name, number=number, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                          type_name=f".{package}.{name.title().replace('_', '')}", oneof_index=0)
    features = proto.message_type.add(name="Features")
    features.field.add(name="feature", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                       type_name=f".{package}.Features.FeatureEntry")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                    type_name=f".{package}.Feature")
    proto.message_type.add(name="Example").field.add(name="features", number=1, type=field.TYPE_MESSAGE,
                                                      label=field.LABEL_OPTIONAL, type_name=f".{package}.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Example"))


@pytest.mark.parametrize("syntax", ["proto3", "proto2"])
def test_examples_agree_with_the_protobuf_library(syntax):
    example_class = protobuf_example_class(syntax)
    message = example_class()
    feature = message.features.feature
    feature["0/image_aux1/encoded"].bytes_list.value.append(bytes(range(256)) * 48)
    feature["0/action"].float_list.value.extend([0.5, -1.25, 3.0, 1e-3])
    feature["ids"].int64_list.value.extend([5, -7, 2**40])
    parsed = parse_example(message.SerializeToString())
    assert parsed["0/image_aux1/encoded"] == [bytes(range(256)) * 48]
    assert np.array_equal(parsed["0/action"], np.array([0.5, -1.25, 3.0, 1e-3], np.float32))
    assert parsed["ids"].tolist() == [5, -7, 2**40]
    ours = example_class.FromString(encode_example(parsed))
    assert ours == message


def test_damaged_records_name_the_file_and_the_record(tmp_path):
    path = tmp_path / "x.tfrecords"
    records = [b"first", b"second record", b"third"]
    assert write_records(path, records) == 3
    blob = path.read_bytes()
    second = len(encode_record(b"first"))
    cases = {
        "fails its length CRC": blob[:second + 3] + b"\x7f" + blob[second + 4:],
        "fails its data CRC": blob[:second + 14] + b"S" + blob[second + 15:],
        "is truncated": blob[:second + 20],
    }
    for reason, damaged in cases.items():
        path.write_bytes(damaged)
        with pytest.raises(VpkitError, match=f"x.tfrecords: record 1 {reason}"):
            list(read_records(path))
    path.write_bytes(blob[:second + 5])
    with pytest.raises(VpkitError, match="record 1 is truncated \\(5 of its 12 header bytes"):
        list(read_records(path))
    assert list(read_records(io.BytesIO(blob), name="stream")) == records


# --- a miniature BAIR ---------------------------------------------------------------------------------------------

SHARDS = {("train", "traj_0_to_3"): (0, 1, 2, 3), ("train", "traj_4_to_7"): (4, 5, 6, 7),
          ("test", "traj_0_to_1"): (100, 101)}


def video(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)


def example(frames: np.ndarray, aux: bool = True) -> bytes:
    """An Example with softmotion30_44k's keys: raw frame bytes for both cameras, end-effector position, action."""
    features: dict[str, object] = {}
    for t, frame in enumerate(frames):
        if aux:
            features[f"{t}/image_aux1/encoded"] = frame.tobytes()
        features[f"{t}/image_main/encoded"] = (255 - frame[::-1]).tobytes()
        features[f"{t}/endeffector_pos"] = np.array([0.1 * t, 0.2, 0.3], np.float32)
        features[f"{t}/action"] = np.array([t, 0.5, -0.5, 1.0], np.float32)
    return encode_example(features)


def write_folder(raw: Path, shards: dict[tuple[str, str], list[bytes]]) -> Path:
    for (split, stem), records in shards.items():
        folder = raw / "softmotion30_44k" / split
        folder.mkdir(parents=True, exist_ok=True)
        write_records(folder / f"{stem}.tfrecords", records)
    return raw


def real_records() -> dict[tuple[str, str], list[bytes]]:
    return {key: [example(video(seed)) for seed in seeds] for key, seeds in SHARDS.items()}


@pytest.fixture(scope="module")
def tar_blob(tmp_path_factory) -> bytes:
    """The archive, its members in reverse name order (traj_4_to_7 before traj_0_to_3), with directory entries."""
    folder = write_folder(tmp_path_factory.mktemp("bair_src"), real_records())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for path in sorted(folder.rglob("*"), reverse=True):
            archive.add(path, str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def options(warnings: list[str] | None = None, download: bool = True) -> PrepareOptions:
    return PrepareOptions(progress=False, download=download, warn=(warnings if warnings is not None else []).append)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tar_blob) -> tuple[Path, list[str], list]:
    root = tmp_path_factory.mktemp("bair")
    warnings: list[str] = []
    with MirrorServer({bair.TAR: tar_blob}) as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr(bair, "MIRRORS", (server.mirror("missing"), server.mirror("flaky")))
        line = bair.prepare(root, options(warnings))
        log = list(server.log)
    assert "train 7, val 1, test 2 videos" in line
    return root, warnings, log


def read_split(path: Path) -> tuple[list[str], list[np.ndarray]]:
    with h5py.File(path, "r") as file:
        names = [n.decode() for n in file["names"][:]]
        frames = file["frames"][:]
        videos = [frames[s:s + n] for s, n in zip(file["starts"][:], file["lengths"][:], strict=True)]
    return names, videos


def test_download_is_checked_pinned_and_kept(prepared):
    root, warnings, log = prepared
    raw = root / "raw"
    assert (raw / bair.TAR).is_file() and (raw / f"{bair.TAR}.sha256").is_file()
    assert not list(raw.glob("*.part")) and not (raw / "softmotion30_44k").exists()  # streamed, not extracted
    assert any(path.startswith("/missing/") for path, _ in log) and any(rng for _, rng in log)  # resumed once
    assert any("test split holds 2 videos, not BAIR's 256" in w for w in warnings)


def test_splits_hold_every_video_by_value_in_sorted_file_then_record_order(prepared):
    root, _, _ = prepared
    names, videos = read_split(root / "train.h5")
    assert names == [f"traj_0_to_3/{i}" for i in range(4)] + [f"traj_4_to_7/{i}" for i in range(4)]
    for got, seed in zip(videos, range(8), strict=True):
        assert got.dtype == np.uint8 and got.shape == (30, 64, 64, 3)
        assert np.array_equal(got, video(seed))  # image_aux1, not image_main
    names, videos = read_split(root / "test.h5")
    assert names == ["traj_0_to_1/0", "traj_0_to_1/1"]
    assert np.array_equal(videos[0], video(100)) and np.array_equal(videos[1], video(101))


def test_loads_through_the_registry_with_srvps_holdout(prepared):
    root, _, _ = prepared
    spec = get_host().datasets.get("bair")
    assert spec.splits == ("train", "val", "test") and spec.access == "download"
    cfg = build_config(spec.config_cls, {"data_root": str(root)})
    assert (cfg.seq_len, cfg.test_seq_len) == (12, 30)
    train, val, test = (spec.build(cfg, split) for split in ("train", "val", "test"))
    # SRVP's data/base.py get_fold, literally: shuffle range(8) with RandomState(42), first int(0.95 * 8) train
    order = list(range(8))
    np.random.RandomState(42).shuffle(order)
    expected_train, expected_val = sorted(order[:7]), sorted(order[7:])
    assert len(train) == 7 and len(val) == 1
    assert train.frame_shape == val.frame_shape == test.frame_shape == (3, 64, 64)
    val_clip = val[0].permute(0, 2, 3, 1).numpy()
    assert val_clip.shape == (30, 64, 64, 3) and np.array_equal(val_clip, video(expected_val[0]))
    for index, seed in enumerate(expected_train):
        clip = train[index].permute(0, 2, 3, 1).numpy()
        starts = [s for s in range(30 - 12 + 1) if np.array_equal(clip, video(seed)[s:s + 12])]
        assert clip.shape == (12, 64, 64, 3) and len(starts) == 1
    assert len(test) == 2
    for index, seed in enumerate((100, 101)):
        assert np.array_equal(test[index].permute(0, 2, 3, 1).numpy(), video(seed))


def test_the_extracted_folder_through_the_cli_gives_the_same_files(prepared, tmp_path):
    root, _, _ = prepared
    write_folder(tmp_path / "raw", real_records())
    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}
    proc = subprocess.run([sys.executable, "-m", "vpkit", "data", "prepare", "bair", "--root", str(tmp_path),
                           "--no-download"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "train 7, val 1, test 2 videos" in proc.stdout
    for split in ("train", "test"):
        names, videos = read_split(tmp_path / f"{split}.h5")
        expected_names, expected = read_split(root / f"{split}.h5")
        assert names == expected_names and all(np.array_equal(a, b) for a, b in zip(videos, expected, strict=True))
    assert not (tmp_path / "raw" / bair.TAR).exists()
    assert "train 7, val 1, test 2" in bair.prepare(tmp_path, options(download=False))  # kept: nothing redone


def test_no_download_and_nothing_there_names_the_tar(tmp_path):
    with pytest.raises(VpkitError) as error:
        bair.prepare(tmp_path, options(download=False))
    message = str(error.value)
    assert bair.TAR in message and "rail.eecs.berkeley.edu" in message and "softmotion30_44k" in message


def test_a_truncated_tar_is_refused(tmp_path, tar_blob):
    member_cut = tar_blob[: len(tar_blob) // 2]
    with MirrorServer({bair.TAR: member_cut}) as server, pytest.MonkeyPatch.context() as patch:
        patch.setattr(bair, "MIRRORS", (server.mirror("good"),))
        with pytest.raises(VpkitError, match=f"{bair.TAR}.*truncated"):
            bair.prepare(tmp_path / "a", options())
    assert not (tmp_path / "a" / "raw" / bair.TAR).exists() and not list((tmp_path / "a").glob("*.h5"))
    # cut exactly after the last member's data: every member is whole, the end-of-archive block is missing
    with tarfile.open(fileobj=io.BytesIO(tar_blob)) as archive:
        last = archive.getmembers()[-1]
    boundary = tar_blob[: last.offset_data + -(-last.size // 512) * 512]
    raw = tmp_path / "b" / "raw"
    raw.mkdir(parents=True)
    (raw / bair.TAR).write_bytes(boundary)
    with pytest.raises(VpkitError, match="no end-of-archive block"):
        bair.prepare(tmp_path / "b", options(download=False))
    assert not list((tmp_path / "b").glob("*.h5")) and not (raw / f"{bair.TAR}.sha256").exists()


def test_a_corrupt_record_stops_with_its_file_and_record_and_leaves_no_split(tmp_path):
    records = real_records()
    write_folder(tmp_path / "raw", records)
    path = tmp_path / "raw" / "softmotion30_44k" / "train" / "traj_4_to_7.tfrecords"
    blob = bytearray(path.read_bytes())
    offset = sum(len(encode_record(r)) for r in records[("train", "traj_4_to_7")][:2]) + 12 + 5000
    blob[offset] ^= 0xFF  # inside record 2's data
    path.write_bytes(bytes(blob))
    with pytest.raises(VpkitError, match="traj_4_to_7.tfrecords: record 2 fails its data CRC"):
        bair.prepare(tmp_path, options(download=False))
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*.tmp"))  # test.h5 was written, then removed


def test_an_example_without_image_aux1_is_refused(tmp_path):
    records = real_records()
    records[("test", "traj_0_to_1")][1] = example(video(101), aux=False)
    write_folder(tmp_path / "raw", records)
    with pytest.raises(VpkitError, match="traj_0_to_1.tfrecords: record 1: it has no '0/image_aux1/encoded'"):
        bair.prepare(tmp_path, options(download=False))
    assert not list(tmp_path.glob("*.h5"))


def test_an_empty_test_split_is_refused(tmp_path, tar_blob):
    records = real_records()
    records[("test", "traj_0_to_1")] = []  # a test file without a record
    write_folder(tmp_path / "raw", records)
    with pytest.raises(VpkitError, match="softmotion30_44k/test holds no video: the test split is empty"):
        bair.prepare(tmp_path, options(download=False))
    (tmp_path / "raw" / "softmotion30_44k" / "test" / "traj_0_to_1.tfrecords").unlink()  # no test file at all
    with pytest.raises(VpkitError, match="no softmotion30_44k/test/\\*.tfrecords: the test split is empty"):
        bair.prepare(tmp_path, options(download=False))
    assert not list(tmp_path.glob("*.h5"))
    # an archive without test files is not BAIR's
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar_blob)) as source, tarfile.open(fileobj=buffer, mode="w") as out:
        for member in source.getmembers():
            if "/test" not in member.name:
                out.addfile(member, source.extractfile(member) if member.isfile() else None)
    raw = tmp_path / "t" / "raw"
    raw.mkdir(parents=True)
    (raw / bair.TAR).write_bytes(buffer.getvalue())
    with pytest.raises(VpkitError, match="holds no softmotion30_44k/test/\\*.tfrecords: it is not the BAIR archive"):
        bair.prepare(tmp_path / "t", options(download=False))
