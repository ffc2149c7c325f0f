"""Core tests see only vpkit's built-ins and the in-repo plugins they ask for, never other installed plugins."""

from __future__ import annotations

import os

# Installed third-party plugins must not leak into core tests; the in-repo SVG plugin is part of this checkout.
os.environ.setdefault("VPKIT_LOAD_PLUGINS", "svg")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: one thread each, no oversubscription


@pytest.fixture
def fresh_host():
    """A host rebuilt from scratch, restored afterwards (for tests that register plugins)."""
    from vpkit.core import plugins

    saved = plugins._HOST
    host = plugins.reset_host()
    yield host
    plugins._HOST = saved
