"""The Rich consoles every command prints through (results to stdout, messages to stderr)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Machine-readable output for `--json` flags: plain JSON on stdout, no colour."""
    print(json.dumps(data, indent=2, default=str))
