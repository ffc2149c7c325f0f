"""Shapes: DDLP's random_shapes images on cyan, drawn on the fly and seeded by (seed, split, index)."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest
import torch

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.plugins.datasets import shapes

skimage_draw = pytest.importorskip("skimage.draw")
CYAN = (0, 255, 255)


def spec_and_config(**values):
    spec = get_host().datasets.get("shapes")
    return spec, build_config(spec.config_cls, values)


def test_registered_as_generated_with_ddlps_split_sizes():
    spec, cfg = spec_and_config()
    assert spec.access == "generated" and spec.prepare is None and "data_root" not in spec.config_cls.model_fields
    train, val, test = (spec.build(cfg, split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (40_000, 2_000, 2_000)
    item = train[39_999]
    assert item.dtype == torch.uint8 and tuple(item.shape) == (1, 3, 64, 64) and train.frame_shape == (3, 64, 64)
    with pytest.raises(IndexError):
        train[40_000]
    with pytest.raises(VpkitError, match="splits"):
        spec.build(cfg, "valid")


def test_an_image_is_ddlps_random_shapes_call_recoloured_to_cyan():
    spec, cfg = spec_and_config(num_train=20)
    train = spec.build(cfg, "train")
    for index in (0, 7, 19):
        # DDLP's generate_shape_dataset_torch -> generate_shape_dataset, argument by argument
        image, labels = skimage_draw.random_shapes(
            (64, 64), min_shapes=2, max_shapes=5, intensity_range=((0, 200),), min_size=11, max_size=13,
            allow_overlap=False, num_trials=100, rng=shapes.image_seed(0, "train", index))
        white = (image == 255).all(axis=-1)
        expected = image.copy()
        expected[white] = CYAN
        got = train[index][0].permute(1, 2, 0).numpy()
        assert np.array_equal(got, expected)
        assert 2 <= len(labels) <= 5 and white.any() and (~white).any()
        assert (got[~white] <= 200).all() and (got[white] == CYAN).all() and not (got == 255).all(axis=-1).any()


def test_images_are_reproducible_and_differ_by_index_split_and_seed():
    spec, cfg = spec_and_config(num_train=50, num_val=50)
    train, val, test = (spec.build(cfg, split) for split in ("train", "val", "test"))
    again = spec.build(spec_and_config(num_train=50, num_val=50)[1], "train")
    other = spec.build(spec_and_config(num_train=50, num_val=50, seed=1)[1], "train")
    assert torch.equal(train[3], again[3]) and torch.equal(pickle.loads(pickle.dumps(train))[3], train[3])
    assert not torch.equal(train[3], train[4])
    assert not torch.equal(train[3], val[3]) and not torch.equal(val[3], test[3])
    assert not torch.equal(train[3], other[3])
    small = spec.build(spec_and_config(image_size=32)[1], "val")
    assert small.frame_shape == (3, 32, 32) and tuple(small[0].shape) == (1, 3, 32, 32)


def test_missing_scikit_image_says_what_to_install(monkeypatch):
    spec, cfg = spec_and_config()
    monkeypatch.setitem(sys.modules, "skimage.draw", None)
    with pytest.raises(VpkitError, match="pip install scikit-image"):
        spec.build(cfg, "train")


def test_cli_lists_it_and_has_nothing_to_prepare(tmp_path):
    from typer.testing import CliRunner

    from vpkit.cli import data as data_cli

    runner = CliRunner()
    result = runner.invoke(data_cli.app, ["prepare", "shapes", "--root", str(tmp_path)])
    assert isinstance(result.exception, VpkitError) and "needs no preparation" in str(result.exception)
    result = runner.invoke(data_cli.app, ["info", "shapes", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["splits"] == ["train", "val", "test"]
    assert {row["key"]: row["default"] for row in info["config"]} == {
        "num_train": 40_000, "num_val": 2_000, "image_size": 64, "seed": 0}
