"""The RIVER tests run against a plugin host that loads this plugin (besides the in-repo SVG one); the host and the
environment are restored afterwards, so core tests collected in the same session keep their own plugin set."""

from __future__ import annotations

import os

import pytest

LOAD = "svg,river"


@pytest.fixture(autouse=True, scope="module")
def river_host():
    from vpkit.core import plugins

    saved_env = os.environ.get(plugins.LOAD_ENV)
    saved_host = plugins._HOST
    os.environ[plugins.LOAD_ENV] = LOAD
    host = plugins.reset_host()
    yield host
    if saved_env is None:
        os.environ.pop(plugins.LOAD_ENV, None)
    else:
        os.environ[plugins.LOAD_ENV] = saved_env
    plugins._HOST = saved_host
