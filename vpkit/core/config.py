"""Typed configs that forbid unknown keys, layered: defaults < preset < YAML file < `--set key=value`."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vpkit.core.errors import VpkitError, did_you_mean

C = TypeVar("C", bound="BaseConfig")

Precision = Literal["32", "bf16-mixed", "16-mixed"]


class BaseConfig(BaseModel):
    """Every model, dataset and trainer config derives from this: unknown keys are errors, values are checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class TrainConfig(BaseConfig):
    """Trainer settings shared by every model (optimiser hyper-parameters belong to the model's config)."""

    steps: int = Field(2000, gt=0, description="optimisation steps")
    batch_size: int = Field(16, gt=0, description="videos per optimisation step, over all processes together")
    accumulate: int = Field(1, gt=0, description="split each step's batch into this many micro-batches, one "
                            "backward each, gradients summed (for batches that do not fit in memory)")
    precision: Precision = "32"
    check_amp: bool = Field(True, description="before a mixed-precision run, compare one step's loss in fp32 and "
                            "mixed precision on the first batch; fall back to fp32 with a warning if they disagree")
    grad_clip: float | None = Field(None, gt=0, description="clip the global grad norm to this value")
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, gt=0)
    val_every: int = Field(500, gt=0, description="validate (and update 'best') every N steps")
    val_videos: int = Field(64, gt=0, description="test videos scored at each validation")
    val_samples: int = Field(1, gt=0, description="samples per video at validation (best-of-N)")
    val_metric: str = Field("ssim", description="metric that picks the 'best' checkpoint")
    sample_every: int = Field(500, gt=0, description="write a PNG grid and a GIF of samples every N steps")
    checkpoint_every: int = Field(500, gt=0, description="write 'last' every N steps")
    keep_step_checkpoints: bool = False


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["train.steps=10", "model.z_dim=16"]` -> nested dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise VpkitError(f"--set expects key=value (e.g. train.steps=100), got '{item}'.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string; users mean a number
            try:
                value = float(value)
            except ValueError:
                pass
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise VpkitError(f"--set '{item}' conflicts with an earlier value for '{part}'.")
        node[parts[-1]] = value
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file (top-level keys: model, data, train, and optionally plugin/model_name/dataset)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise VpkitError(f"Config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise VpkitError(f"Config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VpkitError(f"Config file {path} must hold a mapping at the top level.")
    return data


def deep_merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge mappings left to right; later layers win, nested mappings merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = deep_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def build_config(cls: type[C], *layers: Mapping[str, Any] | None, what: str = "config") -> C:
    """Validate the merged layers against `cls`; errors become one readable VpkitError."""
    merged = deep_merge(*layers)
    try:
        return cls.model_validate(merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(str(err["loc"][-1]), cls.model_fields)
                problems.append(f"unknown key '{loc}'.{hint}")
            else:
                problems.append(f"'{loc}': {err['msg']} (got {err.get('input')!r})")
        raise VpkitError(f"Invalid {what}: " + "; ".join(problems)) from None


def describe_fields(cls: type[BaseConfig]) -> dict[str, Any]:
    """{field: default} for `--help`-style listings."""
    return {name: f.default for name, f in cls.model_fields.items()}
