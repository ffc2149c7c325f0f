"""Self-describing checkpoints: round trip, atomic replacement, and clear errors on broken directories."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import vpkit
from vpkit.core.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    load_model,
    load_train_state,
    read_checkpoint,
    save_checkpoint,
)
from vpkit.core.config import BaseConfig
from vpkit.core.errors import VpkitError
from vpkit.core.model import VideoPredictor
from vpkit.core.specs import ModelSpec, Preset


class LinCfg(BaseConfig):
    width: int = 4


class Lin(VideoPredictor):
    def __init__(self, config: LinCfg, frame_shape):
        super().__init__()
        self.config, self.frame_shape = config, tuple(frame_shape)
        self.net = nn.Linear(config.width, config.width)
        self.bn = nn.BatchNorm1d(config.width)


class LinPlugin:
    @staticmethod
    @vpkit.hookimpl
    def register_models(register):
        register(ModelSpec("lin", LinCfg, build=lambda c, s: Lin(c, s), presets={"p": Preset()}, default_preset="p"))


@pytest.fixture
def host(fresh_host):
    fresh_host.register_plugin(LinPlugin, name="lin-plugin", distribution="vpkit-lin", version="1.2.3")
    return fresh_host


def _save(path, model, **kw):
    return save_checkpoint(path, model, model_key="lin",
                           plugin={"name": "lin-plugin", "distribution": "vpkit-lin", "version": "1.2.3"},
                           data={"name": "toy", "frame_shape": [1, 8, 8], "n_context": 2, "n_future": 3}, **kw)


def test_round_trip_rebuilds_from_the_path_alone(tmp_path, host):
    model = Lin(LinCfg(width=6), (1, 8, 8))
    _save(tmp_path / "ck", model, train_state={"step": 7, "rng": torch.get_rng_state()})
    loaded, ckpt = load_model(tmp_path / "ck")
    assert ckpt.model_key == "lin" and ckpt.frame_shape == (1, 8, 8) and loaded.config.width == 6
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert load_train_state(tmp_path / "ck")["step"] == 7
    meta = json.loads((tmp_path / "ck" / META_FILE).read_text())
    assert meta["plugin"]["distribution"] == "vpkit-lin" and meta["model"]["config"] == {"width": 6}


def test_replacing_leaves_no_temporary_directories(tmp_path, host):
    _save(tmp_path / "ck", Lin(LinCfg(), (1, 8, 8)))
    _save(tmp_path / "ck", Lin(LinCfg(width=5), (1, 8, 8)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert read_checkpoint(tmp_path / "ck").meta["model"]["config"]["width"] == 5


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, host, monkeypatch):
    _save(tmp_path / "ck", Lin(LinCfg(width=4), (1, 8, 8)))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("vpkit.core.checkpoint.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "ck", Lin(LinCfg(width=9), (1, 8, 8)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert read_checkpoint(tmp_path / "ck").meta["model"]["config"]["width"] == 4


@pytest.mark.parametrize("damage, message", [
    ("missing-dir", "not found"),
    ("no-meta", "vpkit.json is missing"),
    ("bad-json", "corrupt"),
    ("truncated-weights", "corrupt or truncated"),
    ("zero-weights", "corrupt or truncated"),
    ("no-weights", "model.safetensors is missing"),
    ("wrong-shapes", "do not match"),
])
def test_broken_checkpoints_give_clear_errors(tmp_path, host, damage, message):
    path = tmp_path / "ck"
    _save(path, Lin(LinCfg(), (1, 8, 8)))
    if damage == "missing-dir":
        path = tmp_path / "nope"
    elif damage == "no-meta":
        (path / META_FILE).unlink()
    elif damage == "bad-json":
        (path / META_FILE).write_text("{not json")
    elif damage == "truncated-weights":
        data = (path / WEIGHTS_FILE).read_bytes()
        (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    elif damage == "zero-weights":
        (path / WEIGHTS_FILE).write_bytes(b"")
    elif damage == "no-weights":
        (path / WEIGHTS_FILE).unlink()
    elif damage == "wrong-shapes":
        meta = json.loads((path / META_FILE).read_text())
        meta["model"]["config"]["width"] = 3
        (path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(VpkitError, match=message):
        load_model(path)


def test_missing_plugin_names_the_install_command(tmp_path, host):
    _save(tmp_path / "ck", Lin(LinCfg(), (1, 8, 8)))
    meta = json.loads((tmp_path / "ck" / META_FILE).read_text())
    meta["model"]["key"] = "ddlp"
    meta["plugin"] = {"name": "ddlp", "distribution": "vpkit-ddlp", "version": "0.3.0"}
    (tmp_path / "ck" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(VpkitError, match=r"pip install 'vpkit-ddlp==0\.3\.0'"):
        load_model(tmp_path / "ck")
