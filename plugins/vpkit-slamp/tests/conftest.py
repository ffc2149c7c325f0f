"""The SLAMP tests run against a plugin host that loads this plugin (besides the in-repo SVG one)."""

from __future__ import annotations

import pytest

from vpkit.testing.hosts import plugin_host


@pytest.fixture(autouse=True, scope="module")
def slamp_host():
    with plugin_host("svg,slamp") as host:
        yield host
