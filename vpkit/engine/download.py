"""Downloads that never leave a partial file under its final name: mirrors, checksums, resume, retries.

`fetch_file(remote, root, mirrors=...)` puts `root/remote.name` in place: an existing copy with the right checksum is
kept; otherwise each mirror is tried in turn, the transfer goes to `NAME.part`, resumes with an HTTP Range request
after an interruption, is retried with exponential backoff, is checksummed, and only then renamed to NAME. When every
mirror fails, the error lists each failure and says which files to put where to work offline (`offline_hint`).

Many datasets publish no checksum (KTH, BAIR, CLEVRER). For those `RemoteFile.checksum` is empty: the file must pass
its `verify` check (a zip's CRCs, a tar's headers), and its SHA-256 is then pinned in `NAME.sha256` next to it, so a
later run (or a copy brought in by hand, checked the same way the first time) is verified against that pin.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vpkit.core.errors import VpkitError

_CHUNK = 1 << 16
_USER_AGENT = "vpkit (https://pypi.org/project/vpkit)"


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: its name on every mirror and its checksum, `"md5:<hex>"` or `"sha256:<hex>"`, or `""` when
    none is published; then `verify(path)` (raising `VpkitError` when the file is damaged) checks it instead and
    its SHA-256 is pinned on first use. `size` (bytes), when known, is shown in messages."""

    name: str
    checksum: str = ""
    verify: Callable[[Path], None] | None = None
    size: int | None = None


PIN_SUFFIX = ".sha256"


class _Interrupted(Exception):
    """The connection ended before the whole file arrived (the `.part` file keeps what did)."""


def fetch_file(
    remote: RemoteFile,
    root: Path,
    *,
    mirrors: Sequence[str],
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    progress: bool = True,
    offline_hint: str = "",
) -> Path:
    """Put `remote` at `root/remote.name`, checksummed; keeps an existing good copy. Returns the final path."""
    final = root / remote.name
    if final.is_file():
        checksum = remote.checksum or _pinned(final)
        if checksum:
            if _checksum_ok(final, checksum):
                return final
            raise VpkitError(f"{final} does not match its checksum ({checksum}); delete it and run again.")
        _verify(remote, final)  # brought in by hand: check it once, then pin it
        return final
    root.mkdir(parents=True, exist_ok=True)
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
        if remote.checksum and not _checksum_ok(part, remote.checksum):
            part.unlink(missing_ok=True)
            failures.append(f"{url}: wrong checksum ({remote.checksum} expected), file rejected")
            continue
        if not remote.checksum:
            try:
                _verify(remote, part, pin_as=final)
            except VpkitError as exc:
                part.unlink(missing_ok=True)
                failures.append(f"{url}: {exc}, file rejected")
                continue
        os.replace(part, final)
        return final
    raise VpkitError(f"Could not download {remote.name} ({'; '.join(failures)}). Check the network"
                     + (f", or {offline_hint}" if offline_hint else "") + ".")


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


def _pinned(final: Path) -> str:
    pin = final.with_name(final.name + PIN_SUFFIX)
    return f"sha256:{pin.read_text().split()[0]}" if pin.is_file() and pin.read_text().strip() else ""


def _verify(remote: RemoteFile, path: Path, *, pin_as: Path | None = None) -> None:
    """Check a file that has no published checksum with `remote.verify`, then pin its SHA-256 next to it."""
    if remote.verify is not None:
        remote.verify(path)
    final = pin_as or path
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    final.with_name(final.name + PIN_SUFFIX).write_text(f"{digest.hexdigest()}  {final.name}\n")


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
