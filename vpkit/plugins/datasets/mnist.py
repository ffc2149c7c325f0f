"""The full MNIST digit set for Moving MNIST: download (mirrors, checksums, resume, retries) and conversion.

`prepare_mnist(root)` fetches the four idx.gz files of LeCun, Cortes and Burges' MNIST into ROOT, checks them, and
writes `ROOT/mnist.npz` (`train_images` uint8 [60000, 28, 28], `train_labels`, `test_images` [10000, 28, 28],
`test_labels`), which `digits: mnist` reads. Files already in ROOT with the right checksum are used as they are, so an
offline machine only needs the four files copied there.

Downloads go through `vpkit.engine.download.fetch_file`: `NAME.part`, resumed with an HTTP Range request after an
interruption, checksummed, and only then renamed to NAME, so a final name never holds a partial or corrupt file.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vpkit.core.errors import VpkitError
from vpkit.engine.download import RemoteFile, fetch_file

# The mirror list and checksums torchvision uses for MNIST.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile("train-labels-idx1-ubyte.gz", "md5:d53e105ee54ea40749a09fcbcd1e9432"),
    RemoteFile("t10k-images-idx3-ubyte.gz", "md5:9fb629c4189551a2d022fa330f9573f3"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:ec29112dd5afa0611ce80d1b7f02629c"),
)
NPZ_NAME = "mnist.npz"


# ---------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------


def prepare_mnist(
    root: Path | str,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    files: Sequence[RemoteFile] = MNIST_FILES,
    force: bool = False,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    progress: bool = True,
) -> Path:
    """Make `ROOT/mnist.npz` exist, downloading whatever of the four idx.gz files ROOT lacks. Returns its path.

    `files` must be, in order, train images, train labels, test images, test labels. Each file is tried on every
    mirror in turn; on one mirror, network errors are retried `retries` times with exponential backoff
    (`backoff_s`, 2x, 4x, ...), resuming the `.part` file. `force` rebuilds the npz even when it exists.
    """
    root = Path(root).expanduser()
    npz_path = root / NPZ_NAME
    if npz_path.is_file() and not force:
        return npz_path
    if len(files) != 4:
        raise ValueError("files must list train images, train labels, test images, test labels")
    root.mkdir(parents=True, exist_ok=True)
    names = ", ".join(f.name for f in files)
    hint = f"put the files {names} in {root} and run `vpkit data prepare mnist --root {root}` again"
    for remote in files:
        fetch_file(remote, root, mirrors=mirrors, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                   progress=progress, offline_hint=hint)
    return convert_to_npz(root, files)


def load_mnist(root: Path | str) -> dict[str, np.ndarray]:
    """The arrays of `ROOT/mnist.npz`; a missing file is a VpkitError that names the command making it."""
    path = Path(root).expanduser() / NPZ_NAME
    if not path.is_file():
        raise VpkitError(f"{path} not found: run `vpkit data prepare mnist --root {Path(root).expanduser()}` first.")
    with np.load(path) as npz:
        return {key: npz[key] for key in ("train_images", "train_labels", "test_images", "test_labels")}


# ---------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file (MNIST's format: 2 zero bytes, type 0x08 = uint8, ndim, big-endian int32 sizes)."""
    with gzip.open(path, "rb") as source:
        raw = source.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise VpkitError(f"{path} is not an unsigned-byte idx file; delete it and run again.")
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise VpkitError(f"{path} holds {data.size} values, its header says {shape}; delete it and run again.")
    return data.reshape(shape)


def convert_to_npz(root: Path, files: Sequence[RemoteFile] = MNIST_FILES) -> Path:
    """Write `ROOT/mnist.npz` from the four idx.gz files (atomically: a temporary name, then a rename)."""
    train_images, train_labels, test_images, test_labels = (read_idx(root / f.name) for f in files)
    for images, labels, split in ((train_images, train_labels, "train"), (test_images, test_labels, "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise VpkitError(f"MNIST {split} files disagree: images {images.shape}, labels {labels.shape}.")
    path = root / NPZ_NAME
    tmp = root / (NPZ_NAME + ".tmp.npz")
    np.savez_compressed(tmp, train_images=train_images, train_labels=train_labels, test_images=test_images,
                        test_labels=test_labels)
    os.replace(tmp, path)
    return path
