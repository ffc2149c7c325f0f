"""The full MNIST digit set for Moving MNIST: download (mirrors, checksums, resume, retries) and conversion.

`prepare_mnist(root)` fetches the four idx.gz files of LeCun, Cortes and Burges' MNIST into ROOT, checks them, and
writes `ROOT/mnist.npz` (`train_images` uint8 [60000, 28, 28], `train_labels`, `test_images` [10000, 28, 28],
`test_labels`), which `digits: mnist` reads. Files already in ROOT with the right checksum are used as they are, so an
offline machine only needs the four files copied there.

Downloads go to `NAME.part`, resume with an HTTP Range request after an interruption, are checksummed, and only then
renamed to NAME: a final name never holds a partial or corrupt file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpkit.core.errors import VpkitError


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: its name on every mirror and its checksum, `"md5:<hex>"` or `"sha256:<hex>"`."""

    name: str
    checksum: str


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

_CHUNK = 1 << 16
_USER_AGENT = "vpkit (https://pypi.org/project/vpkit)"


class _Interrupted(Exception):
    """The connection ended before the whole file arrived (the `.part` file keeps what did)."""


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
    for remote in files:
        fetch_file(remote, root, mirrors=mirrors, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                   progress=progress, all_files=files)
    return convert_to_npz(root, files)


def load_mnist(root: Path | str) -> dict[str, np.ndarray]:
    """The arrays of `ROOT/mnist.npz`; a missing file is a VpkitError that names the command making it."""
    path = Path(root).expanduser() / NPZ_NAME
    if not path.is_file():
        raise VpkitError(f"{path} not found: run `vpkit data prepare mnist --root {Path(root).expanduser()}` first.")
    with np.load(path) as npz:
        return {key: npz[key] for key in ("train_images", "train_labels", "test_images", "test_labels")}


# ---------------------------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------------------------


def fetch_file(
    remote: RemoteFile,
    root: Path,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    progress: bool = True,
    all_files: Sequence[RemoteFile] = MNIST_FILES,
) -> Path:
    """Put `remote` at `root/remote.name`, checksummed; keeps an existing good copy. Returns the final path."""
    final = root / remote.name
    if final.is_file():
        if _checksum_ok(final, remote.checksum):
            return final
        raise VpkitError(f"{final} does not match its checksum ({remote.checksum}); delete it and run again.")
    part = root / (remote.name + ".part")
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + remote.name
        try:
            _download_with_retries(url, part, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                                   progress=progress)
        except (OSError, http.client.HTTPException, _Interrupted) as exc:
            failures.append(f"{url}: {_reason(exc)}")
            continue
        if not _checksum_ok(part, remote.checksum):
            part.unlink(missing_ok=True)
            failures.append(f"{url}: wrong checksum ({remote.checksum} expected), file rejected")
            continue
        os.replace(part, final)
        return final
    names = ", ".join(f.name for f in all_files)
    raise VpkitError(
        f"Could not download {remote.name} ({'; '.join(failures)}). Check the network, or put the files "
        f"{names} in {root} and run `vpkit data prepare mnist --root {root}` again."
    )


def _download_with_retries(url: str, part: Path, *, retries: int, backoff_s: float, timeout_s: float,
                           progress: bool) -> None:
    """Fetch `url` into `part`, resuming what is there; transient failures are retried with backoff."""
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, timeout_s=timeout_s, progress=progress)
            return
        except urllib.error.HTTPError as exc:
            # A missing file or a forbidden URL will not heal by waiting: go to the next mirror.
            if exc.code < 500 and exc.code not in (408, 429):
                raise
            error: Exception = exc
        except urllib.error.URLError as exc:
            # An unknown host name (offline, no DNS) will not heal either; fail fast rather than wait.
            if isinstance(exc.reason, socket.gaierror):
                raise
            error = exc
        except (OSError, http.client.HTTPException, _Interrupted) as exc:
            error = exc
        if attempt == retries:
            raise error
        delay = backoff_s * 2**attempt
        if progress:
            _notice(f"{url}: {_reason(error)}; retrying in {delay:g} s ({attempt + 1}/{retries})")
        time.sleep(delay)


def _download_once(url: str, part: Path, *, timeout_s: float, progress: bool) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Range not satisfiable: the .part file already holds the whole file (or garbage past its end);
            # the checksum decides which.
            return
        raise
    with response:
        if offset and response.status == 206:
            mode = "ab"
            _check_content_range(response.headers.get("Content-Range"), offset)
        else:  # the server ignored the Range header: start over
            mode, offset = "wb", 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        received = offset
        with _progress_bar(part.name.removesuffix(".part"), expected, offset, enabled=progress) as advance, \
                open(part, mode) as sink:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                sink.write(chunk)
                received += len(chunk)
                advance(len(chunk))
    if expected is not None and received < expected:
        raise _Interrupted(f"connection closed after {received} of {expected} bytes")


def _check_content_range(header: str | None, offset: int) -> None:
    # "bytes START-END/TOTAL": a server that resumes from elsewhere would silently corrupt the file.
    if header is None or not header.startswith("bytes "):
        raise _Interrupted(f"resume answered without a usable Content-Range ({header!r})")
    start = int(header[len("bytes "):].split("-", 1)[0])
    if start != offset:
        raise _Interrupted(f"resume asked for byte {offset} but the server sent from {start}")


class _progress_bar:
    """A Rich download bar on stderr; a no-op when disabled. Entering gives an `advance(n_bytes)` function."""

    def __init__(self, name: str, total: int | None, completed: int, *, enabled: bool) -> None:
        self.name, self.total, self.completed, self.enabled = name, total, completed, enabled
        self._progress = None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
        self._progress.start()
        task = self._progress.add_task(self.name, total=self.total, completed=self.completed)
        return lambda n: self._progress.update(task, advance=n)

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()


def _notice(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]{message}[/]", highlight=False)


def _checksum_ok(path: Path, checksum: str) -> bool:
    algorithm, _, expected = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not expected:
        raise ValueError(f"checksum must be 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == expected.lower()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


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
