"""The plugin manager and the host's registries.

Built-in plugins load by module name, exactly like third-party ones, then entry points of group ``vpkit``.
``VPKIT_LOAD_PLUGINS`` limits autoloading: unset loads every installed plugin, an empty string loads none, and
``"svg,srvp"`` loads only those entry points (built-ins always load).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pluggy

from vpkit.core import hookspecs
from vpkit.core.registry import Registry
from vpkit.core.specs import (
    DatasetSpec,
    ExporterSpec,
    ImporterSpec,
    MetricSpec,
    ModelSpec,
)

ENTRY_POINT_GROUP = "vpkit"
LOAD_ENV = "VPKIT_LOAD_PLUGINS"

BUILTIN_PLUGINS: tuple[str, ...] = (
    "vpkit.plugins.datasets.moving_mnist",
    "vpkit.plugins.datasets.h5",
    "vpkit.plugins.datasets.kth",
    "vpkit.plugins.datasets.bair",
    "vpkit.plugins.datasets.human36m",
    "vpkit.plugins.datasets.kitti",
    "vpkit.plugins.datasets.cityscapes",
    "vpkit.plugins.datasets.obj3d",
    "vpkit.plugins.datasets.clevrer",
    "vpkit.plugins.datasets.phyre",
    "vpkit.plugins.datasets.traffic",
    "vpkit.plugins.datasets.balls",
    "vpkit.plugins.datasets.shapes",
    "vpkit.plugins.metrics.psnr",
    "vpkit.plugins.metrics.ssim",
    "vpkit.plugins.metrics.lpips",
    "vpkit.plugins.metrics.fvd",
    "vpkit.plugins.exporters.onnx",
    "vpkit.plugins.exporters.tensorrt",
    "vpkit.plugins.sources.video",
    "vpkit.plugins.sources.frames",
    "vpkit.plugins.sources.array",
)

_REGISTRATION_HOOKS = {
    "models": "register_models",
    "datasets": "register_datasets",
    "metrics": "register_metrics",
    "exporters": "register_exporters",
    "importers": "register_importers",
}


@dataclass
class PluginInfo:
    """One loaded plugin: where it comes from and what it registered."""

    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)


class Host:
    """Owns the plugin manager and the registries plugins fill."""

    def __init__(self, load_entry_points: bool | None = None) -> None:
        self.pm = pluggy.PluginManager("vpkit")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        for module_name in BUILTIN_PLUGINS:
            module = importlib.import_module(module_name)
            name = module_name.rsplit(".", 1)[-1]
            self.pm.register(module, name=name)
            self.infos[name] = PluginInfo(name, "vpkit", _version("vpkit"), builtin=True)
        self._load_entry_points(load_entry_points)
        self.pm.check_pending()
        self.models: Registry[ModelSpec] = Registry("model")
        self.datasets: Registry[DatasetSpec] = Registry("dataset")
        self.metrics: Registry[MetricSpec] = Registry("metric")
        self.exporters: Registry[ExporterSpec] = Registry("export format")
        self.importers: Registry[ImporterSpec] = Registry("importer")
        for kind, hook_name in _REGISTRATION_HOOKS.items():
            self._collect(kind, hook_name)
        for name, info in self.infos.items():
            plugin = self.pm.get_plugin(name)
            info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])

    def _load_entry_points(self, load: bool | None) -> None:
        wanted_env = os.environ.get(LOAD_ENV)
        if load is False:
            return
        wanted = None if wanted_env is None else {w.strip() for w in wanted_env.split(",") if w.strip()}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and ep.name not in wanted:
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue
            module = ep.load()
            self.pm.register(module, name=ep.name)
            dist = ep.dist.name if ep.dist is not None else ep.value.split(".")[0]
            version = ep.dist.version if ep.dist is not None else "unknown"
            self.infos[ep.name] = PluginInfo(ep.name, dist, version, builtin=False)

    def register_plugin(self, plugin: Any, name: str, distribution: str = "local", version: str = "0") -> None:
        """Register an extra plugin object at run time (tests, notebooks) and refresh the registries."""
        self.pm.register(plugin, name=name)
        self.infos[name] = PluginInfo(name, distribution, version, builtin=False)
        for kind, hook_name in _REGISTRATION_HOOKS.items():
            self._collect(kind, hook_name, only=name)
        self.infos[name].hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])

    def _collect(self, kind: str, hook_name: str, only: str | None = None) -> None:
        registry: Registry[Any] = getattr(self, kind)
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if only is not None and impl.plugin_name != only:
                continue
            impl.function(register=partial(self._stamp, registry, kind, impl.plugin_name))

    def _stamp(self, registry: Registry[Any], kind: str, plugin_name: str, spec: Any) -> None:
        spec = replace(spec, plugin=plugin_name)
        registry.register(spec)
        self.infos[plugin_name].registered.setdefault(kind, []).append(spec.name)

    def plugin_info(self, name: str) -> PluginInfo:
        return self.infos[name]

    def models_of(self, plugin: str) -> list[ModelSpec]:
        return [spec for spec in self.models if spec.plugin == plugin]


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "0+unknown"


_HOST: Host | None = None


def get_host() -> Host:
    """The process-wide host, built on first use."""
    global _HOST
    if _HOST is None:
        _HOST = Host()
    return _HOST


def reset_host(factory: Callable[[], Host] | None = None) -> Host:
    """Rebuild the host (tests use this after changing VPKIT_LOAD_PLUGINS)."""
    global _HOST
    _HOST = (factory or Host)()
    return _HOST
