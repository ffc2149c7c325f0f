"""Placeholder: being written (issue 5)."""

from __future__ import annotations

from collections.abc import Callable

import vpkit
from vpkit.core.specs import DatasetSpec


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    return None
