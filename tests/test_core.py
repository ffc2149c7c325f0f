"""Registries, typed configs, overrides and the plugin host."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import Field

import vpkit
from vpkit.core.config import BaseConfig, TrainConfig, build_config, deep_merge, parse_overrides
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import Host
from vpkit.core.registry import Registry


@dataclass(frozen=True)
class _Spec:
    name: str
    plugin: str = ""


def test_registry_rejects_duplicates_and_suggests_names():
    reg: Registry[_Spec] = Registry("model")
    reg.register(_Spec("svg-lp", "svg"))
    with pytest.raises(VpkitError, match="registered twice"):
        reg.register(_Spec("svg-lp", "other"))
    with pytest.raises(VpkitError, match="Did you mean 'svg-lp'"):
        reg.get("svg-pl")
    assert reg.names() == ["svg-lp"] and "svg-lp" in reg


class _Cfg(BaseConfig):
    z_dim: int = Field(10, gt=0)
    beta: float = 1e-4
    architecture: str = "dcgan64"


def test_config_layers_later_wins_and_unknown_keys_fail():
    cfg = build_config(_Cfg, {"z_dim": 64}, {"beta": 0.5}, {"z_dim": 24})
    assert (cfg.z_dim, cfg.beta, cfg.architecture) == (24, 0.5, "dcgan64")
    with pytest.raises(VpkitError, match="unknown key 'z_dmi'.*Did you mean 'z_dim'"):
        build_config(_Cfg, {"z_dmi": 3})
    with pytest.raises(VpkitError, match="'z_dim'"):
        build_config(_Cfg, {"z_dim": -1})
    with pytest.raises(VpkitError, match="'z_dim'"):
        build_config(_Cfg, {"z_dim": "many"})


def test_overrides_parse_nested_yaml_values():
    out = parse_overrides(["train.steps=100", "model.beta=1e-6", "data.num_digits=1", "train.grad_clip=null"])
    assert out == {"train": {"steps": 100, "grad_clip": None}, "model": {"beta": 1e-6}, "data": {"num_digits": 1}}
    with pytest.raises(VpkitError, match="key=value"):
        parse_overrides(["train.steps"])
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_train_config_rejects_nonsense():
    with pytest.raises(VpkitError, match="steps"):
        build_config(TrainConfig, {"steps": -5})
    with pytest.raises(VpkitError, match="batch_size"):
        build_config(TrainConfig, {"batch_size": 0})
    with pytest.raises(VpkitError, match="precision"):
        build_config(TrainConfig, {"precision": "64"})


def test_builtins_load_without_entry_points(monkeypatch):
    monkeypatch.setenv("VPKIT_LOAD_PLUGINS", "")
    host = Host()
    assert {"moving_mnist", "psnr", "ssim", "lpips"} <= set(host.infos)
    assert all(info.builtin for info in host.infos.values())
    assert {"psnr", "ssim", "lpips"} <= set(host.metrics.names())
    host.pm.check_pending()


def test_entry_point_plugins_load_and_are_stamped(monkeypatch):
    monkeypatch.setenv("VPKIT_LOAD_PLUGINS", "svg")
    host = Host()
    info = host.plugin_info("svg")
    assert info.distribution == "vpkit-svg" and not info.builtin
    assert "svg-lp" in info.registered["models"]
    assert host.models.get("svg-lp").plugin == "svg"


def test_runtime_plugin_registration_stamps_owner(monkeypatch):
    from vpkit.core.specs import MetricSpec

    monkeypatch.setenv("VPKIT_LOAD_PLUGINS", "")
    host = Host()

    class EchoMetric:
        @staticmethod
        @vpkit.hookimpl
        def register_metrics(register):
            register(MetricSpec("echo", build=lambda opts: (lambda p, t: (p - t).mean((2, 3, 4))),
                                higher_is_better=False))

    host.register_plugin(EchoMetric, name="echo-plugin")
    assert host.metrics.get("echo").plugin == "echo-plugin"
    assert host.plugin_info("echo-plugin").registered == {"metrics": ["echo"]}
    with pytest.raises(VpkitError, match="registered twice"):
        host.register_plugin(type("Again", (), {"register_metrics": EchoMetric.register_metrics}), name="again")
