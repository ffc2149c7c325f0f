"""The SRVP tests run against a plugin host that loads this plugin (besides the in-repo SVG one)."""

from __future__ import annotations

import pytest

from vpkit.testing.hosts import plugin_host


@pytest.fixture(autouse=True, scope="module")
def srvp_host():
    with plugin_host("svg,srvp") as host:
        yield host
