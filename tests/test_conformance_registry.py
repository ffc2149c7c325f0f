"""The conformance checks over every registered model, each built from its `tiny` preset (on the preset's
`frame_shape`, 1x64x64 if it names none).

A model without a `tiny` preset is skipped with that reason; a plugin's own tests run the same checks through
`vpkit.testing.ModelConformance` with whatever tiny config suits it.
"""

from __future__ import annotations

import pytest

from vpkit.core.plugins import get_host
from vpkit.testing import CHECKS, prepare


def _model_keys() -> list[str]:
    return get_host().models.names()


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("model_key", _model_keys())
def test_registered_model_conforms(model_key: str, check: str, tmp_path) -> None:
    spec = get_host().models.get(model_key)
    if "tiny" not in spec.presets:
        pytest.skip(f"model '{model_key}' has no 'tiny' preset to build a small instance from")
    frame_shape = spec.presets["tiny"].frame_shape or (1, 64, 64)
    CHECKS[check](prepare(spec, preset="tiny", frame_shape=tuple(frame_shape), tmp_path=tmp_path))
