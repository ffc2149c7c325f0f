"""A plugin host limited to chosen plugins for the duration of a block: what each plugin's test suite runs under."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from vpkit.core import plugins


@contextmanager
def plugin_host(load: str) -> Iterator[plugins.Host]:
    """A fresh host that loads only the entry points named in `load` (e.g. "svg,slamp"); the environment variable
    and the previous host are restored afterwards, so tests collected in the same session keep their own set."""
    saved_env = os.environ.get(plugins.LOAD_ENV)
    saved_host = plugins._HOST
    os.environ[plugins.LOAD_ENV] = load
    try:
        yield plugins.reset_host()
    finally:
        if saved_env is None:
            os.environ.pop(plugins.LOAD_ENV, None)
        else:
            os.environ[plugins.LOAD_ENV] = saved_env
        plugins._HOST = saved_host
