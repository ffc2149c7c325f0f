"""TFRecord files and `tf.train.Example` messages, read and written without TensorFlow.

A TFRecord file is a sequence of records, each framed as

    uint64 length | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data

(all little-endian), where a CRC32C (Castagnoli) is masked as `((crc >> 15) | (crc << 17)) + 0xa282ead8` modulo
2^32. `read_records` checks both CRCs (with `google_crc32c`, a C implementation) and raises `VpkitError` naming the
file and the record on a bad CRC or a truncated record.

A `tf.train.Example` is decoded from the protobuf wire format by hand (`parse_example`):

    Example  { 1: Features }                   Features { 1: map<string, Feature> }
    Feature  { oneof: 1: BytesList, 2: FloatList, 3: Int64List }
    BytesList{ 1: repeated bytes }  FloatList{ 1: repeated float }  Int64List{ 1: repeated int64 }

(repeated numbers packed or not) into `{key: list[bytes] | float32 array | int64 array}`. `encode_example` and
`write_records` write the same format (packed numbers, as TensorFlow does), for tests and for users' own files.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import google_crc32c
import numpy as np

from vpkit.core.errors import VpkitError

MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")

Feature = list[bytes] | np.ndarray


def masked_crc(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C of `data`."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & _U32


def read_records(source: str | Path | BinaryIO, *, name: str | None = None) -> Iterator[bytes]:
    """The records of a TFRecord file (a path, or a binary stream such as a tar member), CRCs checked. `name` is
    what errors call the file (default: the path)."""
    if isinstance(source, str | Path):
        with open(source, "rb") as stream:
            yield from read_records(stream, name=name or str(source))
        return
    name = name or getattr(source, "name", None) or "<stream>"
    index = 0
    while True:
        header = source.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise VpkitError(f"{name}: record {index} is truncated ({len(header)} of its {_HEADER.size} header bytes).")
        length, length_crc = _HEADER.unpack(header)
        if masked_crc(header[:8]) != length_crc:
            raise VpkitError(f"{name}: record {index} fails its length CRC (the file is damaged).")
        data = source.read(length)
        footer = source.read(_FOOTER.size)
        if len(data) < length or len(footer) < _FOOTER.size:
            raise VpkitError(f"{name}: record {index} is truncated ({len(data)} of its {length} data bytes).")
        if masked_crc(data) != _FOOTER.unpack(footer)[0]:
            raise VpkitError(f"{name}: record {index} fails its data CRC (the file is damaged).")
        yield data
        index += 1


def encode_record(data: bytes) -> bytes:
    """One record framed for a TFRecord file."""
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(masked_crc(length)) + data + _FOOTER.pack(masked_crc(data))


def write_records(target: str | Path | BinaryIO, records: Iterable[bytes]) -> int:
    """Write `records` as a TFRecord file (a path or a binary stream); returns how many were written."""
    if isinstance(target, str | Path):
        with open(target, "wb") as stream:
            return write_records(stream, records)
    count = 0
    for record in records:
        target.write(encode_record(record))
        count += 1
    return count


# --- protobuf wire format -------------------------------------------------------------------------------------------

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _bad(what: str) -> VpkitError:
    return VpkitError(f"malformed tf.train.Example: {what}")


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _bad("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise _bad("varint longer than 10 bytes")


def _fields(buf: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, a, b) of each field in buf[pos:end]: for a varint, a is its value; otherwise the
    field's payload is buf[a:b]."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _bad("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
            continue
        if wire == _LEN:
            size, pos = _varint(buf, pos, end)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
        else:
            raise _bad(f"unsupported wire type {wire} (field {number})")
        if pos + size > end:
            raise _bad(f"field {number} runs past the end of its message")
        yield number, wire, pos, pos + size
        pos += size


def _check_wire(number: int, wire: int, allowed: tuple[int, ...], message: str) -> None:
    if wire not in allowed:
        raise _bad(f"{message} field {number} has wire type {wire}")


def _bytes_list(buf: memoryview, pos: int, end: int) -> list[bytes]:
    values = []
    for number, wire, a, b in _fields(buf, pos, end):
        if number == 1:
            _check_wire(number, wire, (_LEN,), "BytesList")
            values.append(bytes(buf[a:b]))
    return values


def _float_list(buf: memoryview, pos: int, end: int) -> list[np.ndarray]:
    pieces = []
    for number, wire, a, b in _fields(buf, pos, end):
        if number == 1:
            _check_wire(number, wire, (_LEN, _FIXED32), "FloatList")
            if (b - a) % 4:
                raise _bad("packed FloatList length is not a multiple of 4")
            pieces.append(np.frombuffer(buf[a:b], "<f4"))
    return pieces


def _int64_list(buf: memoryview, pos: int, end: int) -> list[int]:
    values = []
    for number, wire, a, b in _fields(buf, pos, end):
        if number != 1:
            continue
        _check_wire(number, wire, (_LEN, _VARINT), "Int64List")
        if wire == _VARINT:
            values.append(a)
            continue
        while a < b:
            value, a = _varint(buf, a, b)
            values.append(value)
    return [v - (1 << 64) if v >> 63 else v for v in values]


def _feature(buf: memoryview, pos: int, end: int) -> Feature:
    kind, pieces = 0, []
    for number, wire, a, b in _fields(buf, pos, end):
        if number not in (1, 2, 3):
            continue
        _check_wire(number, wire, (_LEN,), "Feature")
        if number != kind:  # a oneof: a later member replaces an earlier one; the same one merges (values append)
            kind, pieces = number, []
        pieces.extend((_bytes_list, _float_list, _int64_list)[number - 1](buf, a, b))
    if kind == 2:
        return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    if kind == 3:
        return np.asarray(pieces, dtype=np.int64)
    return pieces  # BytesList, or a Feature with no kind set: an empty list


def parse_example(data: bytes, keys: Collection[str] | None = None) -> dict[str, Feature]:
    """The features of a serialized `tf.train.Example`: `{key: list[bytes] | float32 array | int64 array}`. With
    `keys`, only those features' values are decoded (the others are skipped). Malformed input: `VpkitError`."""
    buf = memoryview(data)
    features: dict[str, Feature] = {}
    for number, wire, a, b in _fields(buf, 0, len(buf)):
        if number != 1:
            continue
        _check_wire(number, wire, (_LEN,), "Example")
        for entry_number, entry_wire, c, d in _fields(buf, a, b):  # Features: its map entries
            if entry_number != 1:
                continue
            _check_wire(entry_number, entry_wire, (_LEN,), "Features")
            key, value = "", (0, 0)
            for field, field_wire, e, f in _fields(buf, c, d):
                if field in (1, 2):
                    _check_wire(field, field_wire, (_LEN,), "map entry")
                    if field == 1:
                        try:
                            key = str(buf[e:f], "utf-8")
                        except UnicodeDecodeError:
                            raise _bad("a feature name is not UTF-8") from None
                    else:
                        value = (e, f)
            if keys is None or key in keys:
                features[key] = _feature(buf, *value)
    return features


def _varint_bytes(value: int) -> bytes:
    value &= _U64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint_bytes(number << 3 | _LEN) + _varint_bytes(len(payload)) + payload


def _encode_feature(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview | str):
        value = [value]
    if isinstance(value, list | tuple) and all(isinstance(v, bytes | bytearray | memoryview | str) for v in value):
        items = (v.encode() if isinstance(v, str) else bytes(v) for v in value)
        return _len_field(1, b"".join(_len_field(1, item) for item in items))
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return _len_field(2, _len_field(1, array.astype("<f4").ravel().tobytes()))
    if array.dtype.kind in "iub":
        return _len_field(3, _len_field(1, b"".join(_varint_bytes(int(v)) for v in array.ravel())))
    raise TypeError(f"cannot store a feature of dtype {array.dtype} in a tf.train.Example")


def encode_example(features: Mapping[str, object]) -> bytes:
    """Serialize `{key: bytes | list of bytes | floats | ints}` as a `tf.train.Example` (numbers packed; a float
    array becomes a FloatList, an integer or bool array an Int64List, an empty list an empty BytesList)."""
    entries = b"".join(_len_field(1, _len_field(1, key.encode()) + _len_field(2, _encode_feature(value)))
                       for key, value in features.items())
    return _len_field(1, entries)
