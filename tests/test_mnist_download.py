"""MNIST download against a local HTTP server (mirrors, checksums, resume, retries) and the `vpkit data` commands."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vpkit.cli import data as data_cli
from vpkit.core.errors import VpkitError
from vpkit.plugins.datasets import mnist
from vpkit.plugins.datasets.mnist import RemoteFile, load_mnist, prepare_mnist, read_idx
from vpkit.testing.http import MirrorServer

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture(scope="module")
def fake_mnist():
    """Small stand-ins for the four MNIST files: (arrays, {name: bytes}, RemoteFile list with md5 and sha256)."""
    rng = np.random.RandomState(0)
    arrays = {"train_images": rng.randint(0, 256, (30, 28, 28)), "train_labels": rng.randint(0, 10, 30),
              "test_images": rng.randint(0, 256, (12, 28, 28)), "test_labels": rng.randint(0, 10, 12)}
    blobs = dict(zip(NAMES, (idx_gz(arrays[k]) for k in arrays)))
    files = [RemoteFile(name, f"md5:{hashlib.md5(blob).hexdigest()}") for name, blob in blobs.items()]
    files[0] = RemoteFile(NAMES[0], f"sha256:{hashlib.sha256(blobs[NAMES[0]]).hexdigest()}")
    return arrays, blobs, files


@pytest.fixture
def server(fake_mnist):
    with MirrorServer(fake_mnist[1]) as srv:
        yield srv


def fetch(root: Path, files, mirrors, **kwargs) -> Path:
    return prepare_mnist(root, mirrors=mirrors, files=files, backoff_s=0, progress=False, **kwargs)


def assert_converted(root: Path, arrays) -> None:
    got = load_mnist(root)
    for key, value in arrays.items():
        assert np.array_equal(got[key], value) and got[key].dtype == np.uint8
    assert not list(root.glob("*.part")) and not list(root.glob("*.tmp*"))


def test_downloads_from_the_first_mirror_that_has_the_files(tmp_path, server, fake_mnist):
    arrays, _, files = fake_mnist
    path = fetch(tmp_path, files, [server.mirror("missing"), server.mirror("good")])
    assert path == tmp_path / "mnist.npz"
    assert_converted(tmp_path, arrays)
    assert [p for p, _ in server.log] == [f"/{m}/{n}" for n in NAMES for m in ("missing", "good")]
    # A second call finds the npz and touches no network.
    fetch(tmp_path, files, [server.mirror("good")])
    assert len(server.log) == 8


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path, server, fake_mnist):
    arrays, blobs, files = fake_mnist
    fetch(tmp_path, files, [server.mirror("flaky")], retries=2)
    assert_converted(tmp_path, arrays)
    first = [(p, r) for p, r in server.log if p.endswith(NAMES[0])]
    assert first == [(f"/flaky/{NAMES[0]}", None), (f"/flaky/{NAMES[0]}", f"bytes={len(blobs[NAMES[0]]) // 2}-")]


def test_a_part_file_left_by_an_earlier_run_is_resumed(tmp_path, server, fake_mnist):
    arrays, blobs, files = fake_mnist
    (tmp_path / (NAMES[2] + ".part")).write_bytes(blobs[NAMES[2]][:100])
    fetch(tmp_path, files, [server.mirror("good")])
    assert_converted(tmp_path, arrays)
    assert (f"/good/{NAMES[2]}", "bytes=100-") in server.log


def test_a_server_that_ignores_range_restarts_the_file(tmp_path, server, fake_mnist):
    arrays, _, files = fake_mnist
    (tmp_path / (NAMES[1] + ".part")).write_bytes(b"stale bytes from somewhere else")
    fetch(tmp_path, files, [server.mirror("norange")])
    assert_converted(tmp_path, arrays)


def test_a_checksum_mismatch_is_rejected(tmp_path, server, fake_mnist):
    arrays, _, files = fake_mnist
    with pytest.raises(VpkitError, match=r"/bad/train-images-idx3-ubyte.gz: wrong checksum"):
        fetch(tmp_path, files, [server.mirror("bad")])
    assert not (tmp_path / NAMES[0]).exists() and not list(tmp_path.iterdir())
    # With a good mirror after the bad one, the corrupt copy is discarded and the good one kept.
    fetch(tmp_path, files, [server.mirror("bad"), server.mirror("good")])
    assert_converted(tmp_path, arrays)


def test_offline_failure_is_one_line_naming_the_url_and_the_fix(tmp_path, fake_mnist):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mirror = f"http://127.0.0.1:{port}/mnist/"
    with pytest.raises(VpkitError) as info:
        fetch(tmp_path, fake_mnist[2], [mirror], retries=1)
    message = str(info.value)
    assert "\n" not in message and f"{mirror}{NAMES[0]}" in message
    assert f"put the files {', '.join(NAMES)} in {tmp_path}" in message
    assert not (tmp_path / NAMES[0]).exists()


def test_files_already_in_root_are_checked_and_used_without_network(tmp_path, fake_mnist):
    arrays, blobs, files = fake_mnist
    for name, blob in blobs.items():
        (tmp_path / name).write_bytes(blob)
    fetch(tmp_path, files, [])
    assert_converted(tmp_path, arrays)
    (tmp_path / NAMES[3]).write_bytes(blobs[NAMES[1]])
    with pytest.raises(VpkitError, match="does not match its checksum.*delete it"):
        fetch(tmp_path, files, [], force=True)


def test_idx_reader_rejects_other_files(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + struct.pack(">i", 2) + b"\0" * 8))
    with pytest.raises(VpkitError, match="not an unsigned-byte idx file"):
        read_idx(tmp_path / "x.gz")
    (tmp_path / "y.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">i", 5) + b"\0" * 3))
    with pytest.raises(VpkitError, match="header says"):
        read_idx(tmp_path / "y.gz")


def test_missing_npz_names_the_prepare_command(tmp_path):
    with pytest.raises(VpkitError, match=f"vpkit data prepare mnist --root {tmp_path}"):
        load_mnist(tmp_path)


def test_default_mirrors_and_checksums_are_torchvisions():
    assert mnist.MNIST_MIRRORS[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert [f.name for f in mnist.MNIST_FILES] == list(NAMES)
    assert mnist.MNIST_FILES[0].checksum == "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"


# -- vpkit data ------------------------------------------------------------------------------------------------------

runner = CliRunner()


def test_data_list_json_names_the_moving_mnist_datasets():
    result = runner.invoke(data_cli.app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["smmnist"]["plugin"] == "moving_mnist" and rows["mmnist"]["splits"] == ["train", "val", "test"]


def test_data_info_json_lists_config_defaults():
    result = runner.invoke(data_cli.app, ["info", "smmnist", "--json"])
    assert result.exit_code == 0, result.output
    config = {row["key"]: row["default"] for row in json.loads(result.stdout)["config"]}
    assert config["num_digits"] == 2 and config["test_seed"] == 42 and config["digits"] == "embedded"


def test_data_prepare_unknown_name_suggests_the_closest(tmp_path):
    result = runner.invoke(data_cli.app, ["prepare", "mnsit", "--root", str(tmp_path)])
    assert isinstance(result.exception, VpkitError) and "Did you mean 'mnist'" in str(result.exception)


def test_data_prepare_mnist_end_to_end(tmp_path, server, fake_mnist, monkeypatch):
    arrays, _, files = fake_mnist
    monkeypatch.setattr(mnist, "prepare_mnist", functools.partial(
        prepare_mnist, mirrors=[server.mirror("good")], files=files, backoff_s=0))
    result = runner.invoke(data_cli.app, ["prepare", "mnist", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "MNIST ready" in result.stdout and "30 train, 12 test digits" in result.stdout
    assert_converted(tmp_path, arrays)
