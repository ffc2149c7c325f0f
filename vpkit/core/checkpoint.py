"""Self-describing checkpoints: a directory with `vpkit.json`, `model.safetensors` and (for resuming) `train_state.pt`.

Written into a temporary sibling directory and renamed into place, so a crash never leaves a half checkpoint.
`load_model(path)` needs nothing but the path: the plugin, model key and config are in `vpkit.json`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vpkit.core.errors import VpkitError

FORMAT_VERSION = 1
META_FILE = "vpkit.json"
WEIGHTS_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.pt"


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]

    @property
    def model_key(self) -> str:
        return self.meta["model"]["key"]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["data"]["frame_shape"])  # type: ignore[return-value]


def plugin_section(plugin_name: str) -> dict[str, str]:
    """`{name, distribution, version}` of a loaded plugin, for `vpkit.json`."""
    from vpkit.core.plugins import get_host

    info = get_host().plugin_info(plugin_name)
    return {"name": info.name, "distribution": info.distribution, "version": info.version}


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    *,
    model_key: str,
    plugin: dict[str, str],
    data: dict[str, Any],
    train: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically. Returns the final path."""
    from vpkit import __version__

    directory = Path(directory)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "vpkit_version": __version__,
        "plugin": plugin,
        "model": {"key": model_key, "config": model.config.model_dump(mode="json")},  # type: ignore[attr-defined]
        "data": data,
        "train": train or {},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        meta.update(extra)
    with atomic_dir(directory) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


@contextmanager
def atomic_dir(directory: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `directory` to fill; on success it replaces `directory` (fsynced, renamed), on
    any error it is deleted, so `directory` is always either the old complete one or the new complete one."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_dir(tmp)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(src: Path, dst: Path) -> None:
    # Two renames: a process killed between them leaves no `dst` but the complete previous one as `.dst.old-*`,
    # which `recover_dir` renames back.
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    for child in path.rglob("*"):
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())


def recover_dir(directory: Path) -> bool:
    """Undo what a process killed inside `atomic_dir` left behind: when `directory` is missing because the kill
    fell between the two renames of `_replace_dir`, rename its complete previous version (`.NAME.old-*`) back.
    Returns whether it did. Leftover `.NAME.tmp-*` folders (a save cut short) are removed."""
    directory = Path(directory)
    parent = directory.parent
    if not parent.is_dir():
        return False
    for tmp in parent.glob(f".{directory.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    olds = sorted(parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime)
    recovered = False
    if not directory.exists() and olds:
        os.replace(olds.pop(), directory)
        recovered = True
    for old in olds if directory.exists() else ():
        shutil.rmtree(old, ignore_errors=True)
    return recovered


def read_checkpoint(path: Path | str) -> Checkpoint:
    """Read and check `vpkit.json`; errors name what is wrong with the directory. A checkpoint whose save was
    killed between its two renames is recovered first (`recover_dir`)."""
    path = Path(path)
    if not path.exists() and recover_dir(path):
        warnings.warn(f"{path}: recovered the previous checkpoint, left by a save that was killed", stacklevel=2)
    if not path.exists():
        raise VpkitError(f"Checkpoint not found: {path}")
    if not path.is_dir():
        raise VpkitError(f"{path} is not a vpkit checkpoint directory (expected a folder holding {META_FILE}).")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise VpkitError(f"{path} is not a vpkit checkpoint: {META_FILE} is missing.")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VpkitError(f"{meta_path} is corrupt: {exc}") from None
    for key in ("format_version", "plugin", "model", "data"):
        if key not in meta:
            raise VpkitError(f"{meta_path} is corrupt: the '{key}' section is missing.")
    if meta["format_version"] > FORMAT_VERSION:
        raise VpkitError(
            f"{path} was written by a newer vpkit (format {meta['format_version']}); upgrade with "
            f"`pip install -U vpkit`."
        )
    return Checkpoint(path, meta)


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise VpkitError(f"{path} is incomplete: {WEIGHTS_FILE} is missing.")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise VpkitError(f"{weights} is corrupt or truncated: {exc}") from None


def build_model(ckpt: Checkpoint) -> torch.nn.Module:
    """The model `ckpt` describes, freshly initialised (weights not loaded). The plugin must be installed."""
    from vpkit.core.config import build_config
    from vpkit.core.plugins import get_host

    host = get_host()
    plugin = ckpt.meta["plugin"]
    key = ckpt.model_key
    if key not in host.models:
        dist, version = plugin.get("distribution", plugin.get("name")), plugin.get("version")
        pin = f"=={version}" if version and "unknown" not in version else ""
        raise VpkitError(
            f"{ckpt.path} needs model '{key}' from plugin '{plugin.get('name')}', which is not installed. "
            f"Install it with: pip install '{dist}{pin}'"
        )
    spec = host.models.get(key)
    config = build_config(spec.config_cls, ckpt.meta["model"]["config"], what=f"model config in {ckpt.path}")
    return spec.build(config, ckpt.frame_shape)


def load_model(path: Path | str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Checkpoint]:
    """Rebuild the model a checkpoint describes and load its weights. The plugin must be installed."""
    ckpt = read_checkpoint(path)
    if "export" in ckpt.meta:
        raise VpkitError(f"{path} is an export directory ({ckpt.meta['export'].get('format')}), not a checkpoint; "
                         f"pass the checkpoint it was exported from.")
    model = build_model(ckpt)
    state = load_state_dict(path)
    expected = model.state_dict()
    problems = [k for k in expected if k not in state][:3] + [k for k in state if k not in expected][:3]
    problems += [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape][:3]
    problems += [f"{k} {state[k].dtype} vs {expected[k].dtype}"
                 for k in expected if k in state and state[k].dtype != expected[k].dtype][:3]
    if problems:
        raise VpkitError(f"{path}: weights do not match model '{ckpt.model_key}' "
                         f"(first mismatches: {', '.join(problems)}).")
    model.load_state_dict(state)
    return model.to(device), ckpt


def load_train_state(path: Path | str) -> dict[str, Any]:
    """The resume state (optimisers, schedules, RNG, data position). Loaded with `weights_only=True`."""
    file = Path(path) / TRAIN_STATE_FILE
    if not file.is_file():
        raise VpkitError(f"{path} cannot be resumed from: {TRAIN_STATE_FILE} is missing.")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise VpkitError(f"{file} is corrupt or truncated: {exc}") from None
