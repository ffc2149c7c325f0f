"""`vpkit doctor`: every check reports a status and a fix when not ok; providers count only when they run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from vpkit.engine import doctor


def test_cli_reports_every_library_as_json():
    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg"}
    proc = subprocess.run([sys.executable, "-m", "vpkit", "doctor", "--json"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    for name in ("python", "torch", "cuda", "cudnn", "torchvision", "lpips", "onnx", "onnxruntime", "tensorrt",
                 "decord", "ffmpeg"):
        assert name in checks
    assert checks["torch"]["status"] == "ok"
    for check in checks.values():
        assert check["status"] in ("ok", "missing", "broken")
        assert check["status"] == "ok" or check["fix"], check  # what is not ok says how to fix it


def test_onnxruntime_providers_are_exercised():
    check = doctor.onnxruntime_check()
    assert check.status == "ok"
    assert "CPU" in check.found.split("providers that run:")[1]


def test_missing_and_broken_libraries_come_with_fixes(tmp_path, monkeypatch):
    missing = doctor._library("nosuchlib", "vpkit_no_such_module", "a feature", "pip install nosuchlib")
    assert (missing.status, missing.fix) == ("missing", "pip install nosuchlib")
    (tmp_path / "vpkit_broken_module.py").write_text("raise RuntimeError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = doctor._library("broken", "vpkit_broken_module", "a feature", "reinstall it")
    assert broken.status == "broken" and "half installed" in broken.found
