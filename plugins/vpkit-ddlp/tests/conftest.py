"""The DDLP tests run against a plugin host that loads this plugin (besides the in-repo SVG one)."""

from __future__ import annotations

import pytest

from vpkit.testing.hosts import plugin_host


@pytest.fixture(autouse=True, scope="module")
def ddlp_host():
    with plugin_host("svg,ddlp") as host:
        yield host
