"""Where vpkit keeps what it downloads or computes once: `$VPKIT_CACHE_DIR`, default `~/.cache/vpkit`."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VPKIT_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """`$VPKIT_CACHE_DIR/parts...` (default `~/.cache/vpkit/parts...`); not created here."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vpkit"
    return base.joinpath(*parts)
