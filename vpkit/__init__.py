"""vpkit: a plugin-based toolkit for stochastic and object-centric video prediction."""

from __future__ import annotations

import importlib.metadata as _md

import pluggy

try:
    __version__ = _md.version("vpkit")
except _md.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

hookimpl = pluggy.HookimplMarker("vpkit")
"""Marker for plugin hook implementations: ``@vpkit.hookimpl``."""

__all__ = ["__version__", "hookimpl"]
