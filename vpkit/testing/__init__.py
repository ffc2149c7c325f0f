"""Test helpers for model plugins: the conformance suite every model subclasses with a tiny config.

The conformance names load on first use, so importing another helper module (e.g. `vpkit.testing.toys`) does not
need pytest.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHECKS", "Harness", "ModelConformance", "make_train_context", "prepare"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vpkit.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(f"module 'vpkit.testing' has no attribute '{name}'")
