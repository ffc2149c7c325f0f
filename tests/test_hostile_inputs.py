"""Hostile and broken inputs through the CLI, one case each: every one gives one clear `error:` line and a non-zero
exit, runs nothing from the file, and leaves no partial output behind.

The cases are counted by `HOSTILE_CASES` (reported in the closing note of the robustness issue); each names the
damage, the command and a fragment the error line must contain."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

ENV = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg", "PYTHONUNBUFFERED": "1"}


def vpkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vpkit", *args], capture_output=True, text=True, cwd=cwd, env=ENV,
                          timeout=600, check=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained svg-lp of the `tiny` preset (2 context -> 2 predicted frames, 64x64 grey)."""
    from vpkit.core.checkpoint import plugin_section, save_checkpoint
    from vpkit.core.config import build_config
    from vpkit.core.plugins import get_host

    spec = get_host().models.get("svg-lp")
    preset = spec.presets["tiny"]
    torch.manual_seed(0)
    model = spec.build(build_config(spec.config_cls, preset.model), preset.frame_shape)
    data = {"name": "smmnist", "config": {}, "frame_shape": list(preset.frame_shape), "n_context": 2, "n_future": 2}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model.eval(), model_key="svg-lp",
                           plugin=plugin_section(spec.plugin), data=data)


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def damaged_checkpoint(checkpoint: Path, work: Path, damage: str) -> Path:
    target = work / "ckpt"
    shutil.copytree(checkpoint, target)
    weights, meta = target / "model.safetensors", target / "vpkit.json"
    if damage == "wrong-shapes":
        state = load_file(str(weights))
        key = next(iter(state))
        state[key] = torch.zeros(3, 3)
        save_file(state, str(weights))
    elif damage == "wrong-dtypes":
        save_file({k: v.double() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()},
                  str(weights))
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "zero-bytes":
        weights.write_bytes(b"")
    elif damage == "missing-plugin":
        data = json.loads(meta.read_text())
        data["model"]["key"] = "ddlp"
        data["plugin"] = {"name": "ddlp", "distribution": "vpkit-ddlp", "version": "0.3.0"}
        meta.write_text(json.dumps(data))
    elif damage == "newer-format":
        data = json.loads(meta.read_text())
        data["format_version"] = 99
        meta.write_text(json.dumps(data))
    return target


def video_file(work: Path, kind: str) -> Path:
    path = work / f"{kind}.npy"
    if kind == "no-frames":
        np.save(path, np.zeros((0, 64, 64), np.uint8))
    elif kind == "nan":
        frames = np.random.default_rng(0).random((6, 64, 64)).astype(np.float32)
        frames[3, 10, 10] = np.nan
        np.save(path, frames)
    elif kind == "inf":
        frames = np.zeros((6, 64, 64), np.float32)
        frames[2, 0, 0] = np.inf
        np.save(path, frames)
    elif kind == "wrong-channels":
        np.save(path, np.zeros((6, 64, 64, 5), np.uint8))
    elif kind == "not-an-array":
        path.write_bytes(pickle.dumps(RunsCode(work / "pwned")))
    return path


# (case id, how to build the command, fragment of the error line)
HOSTILE_CASES = [
    ("pickle-runs-code", "import", "refused|names the global"),
    ("safetensors-wrong-shapes", "wrong-shapes", "do not match"),
    ("safetensors-wrong-dtypes", "wrong-dtypes", "float64 vs torch.float32"),
    ("checkpoint-truncated", "truncated", "corrupt or truncated"),
    ("checkpoint-zero-bytes", "zero-bytes", "corrupt or truncated"),
    ("plugin-not-installed", "missing-plugin", r"pip install .vpkit-ddlp==0\.3\.0."),
    ("checkpoint-from-newer-vpkit", "newer-format", "newer vpkit"),
    ("video-with-no-frames", "no-frames", "holds no frames"),
    ("video-with-nan", "nan", r"outside \[0, 1\]"),
    ("video-with-inf", "inf", r"outside \[0, 1\]"),
    ("video-wrong-channels", "wrong-channels", "a video array is"),
    ("npy-that-is-a-pickle", "not-an-array", "not a valid .npy"),
    ("negative-steps", ["train", "--plugin", "svg", "--steps", "-5"], "steps"),
    ("zero-batch", ["train", "--plugin", "svg", "--batch-size", "0"], "batch_size"),
    ("absurd-frame-size", ["train", "--plugin", "svg", "--preset", "tiny", "--set", "data.image_size=-64"],
     "image_size"),
    ("negative-samples", ["eval", "CKPT", "--samples", "-3"], "samples"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "how", "needle"), HOSTILE_CASES, ids=[c[0] for c in HOSTILE_CASES])
def test_hostile_input_is_one_clear_line_and_leaves_nothing(checkpoint, tmp_path, case, how, needle):
    import re

    if how == "import":
        evil = tmp_path / "evil.pth"
        torch.save({"encoder": RunsCode(tmp_path / "pwned")}, evil)
        args = ["import", "svg", str(evil), "--out", str(tmp_path / "imported")]
    elif isinstance(how, list):
        args = [str(checkpoint) if a == "CKPT" else a for a in how]
        args += ["--out", str(tmp_path / "out")] if args[0] == "train" else []
    elif how in ("no-frames", "nan", "inf", "wrong-channels", "not-an-array"):
        args = ["predict", str(video_file(tmp_path, how)), "--model", str(checkpoint), "--out",
                str(tmp_path / "prediction.mp4")]
    else:
        damaged = damaged_checkpoint(checkpoint, tmp_path, how)
        np.save(tmp_path / "clip.npy", np.zeros((6, 64, 64), np.uint8))
        args = ["predict", str(tmp_path / "clip.npy"), "--model", str(damaged), "--out",
                str(tmp_path / "prediction.mp4")]
    before = set(tmp_path.rglob("*"))
    proc = vpkit(*args, cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), proc.stderr
    assert re.search(needle, " ".join(lines)), proc.stderr
    assert not (tmp_path / "pwned").exists()  # nothing from a file ever ran
    new = {p for p in set(tmp_path.rglob("*")) - before if p.is_file()}
    assert not new, f"partial output left behind: {sorted(map(str, new))}"
