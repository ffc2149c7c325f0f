"""User-facing errors: each one is printed by the CLI as a single line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VpkitError(Exception):
    """An error a user can act on; its message names the fix."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`" Did you mean 'x'?"` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""
