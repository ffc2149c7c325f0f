"""Opening what the user gave `vpkit predict` as a video: the first `open_source` plugin that claims it wins.

Built-in plugins read video files ffmpeg decodes, folders of frame images and `.npy` arrays
(`vpkit.plugins.sources`); third-party plugins can add more (URLs, HDF5, cameras, ...).
"""

from __future__ import annotations

from pathlib import Path

from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.core.source import VideoSource

ACCEPTED = ("a video file ffmpeg reads (.mp4, .mkv, .avi, .mov, .webm, ...), a folder of frame images "
            "(.png, .jpg, ...), or a .npy array [T, H, W(, C)]")


def open_video(uri: str) -> VideoSource:
    """A `VideoSource` for `uri`, or a `VpkitError` saying why none can be opened.

    Local paths must exist; `scheme://...` addresses go straight to the plugins, which may know them.
    """
    if "://" not in uri and not Path(uri).exists():
        raise VpkitError(f"no such file or folder: {uri}")
    source = get_host().pm.hook.open_source(uri=uri)
    if source is None:
        raise VpkitError(f"cannot read {uri}: give {ACCEPTED}")
    return source
