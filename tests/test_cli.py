"""The `vpkit` command end to end, through a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg", "PYTHONUNBUFFERED": "1"}


def vpkit(*args: str, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "vpkit", *args], capture_output=True, text=True, cwd=cwd, env=ENV,
                          timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith("error:"), proc.stderr


def test_help_on_every_command():
    for args in ([], ["train"], ["eval"], ["export"], ["predict"], ["benchmark"], ["models"], ["plugins"], ["import"],
                 ["data"], ["data", "prepare"]):
        proc = vpkit(*args, "--help")
        assert "Usage" in proc.stdout


def test_models_lists_official_parameter_counts():
    rows = json.loads(vpkit("models", "--plugin", "svg", "--json").stdout)
    counts = {(r["name"], p["name"]): p["parameters"] for r in rows for p in r["presets"]}
    assert counts[("svg-lp", "smmnist")] == 12_614_057
    assert counts[("svg-lp", "bair")] == 22_831_747
    assert counts[("svg-lp", "kth64")] == 22_778_081
    assert counts[("svg-fp", "kth64")] == 22_206_385
    assert counts[("svg-lp", "kth128")] == 39_302_369


def test_plugins_json_lists_what_each_plugin_registers():
    infos = {i["name"]: i for i in json.loads(vpkit("plugins", "--json").stdout)}
    assert infos["svg"]["distribution"] == "vpkit-svg"
    assert set(infos["svg"]["registered"]["models"]) == {"svg-lp", "svg-fp"}
    assert infos["moving_mnist"]["builtin"] and "smmnist" in infos["moving_mnist"]["registered"]["datasets"]


@pytest.mark.parametrize("args, needle", [
    (["train", "--plugin", "svgg"], "Did you mean 'svg'"),
    (["train", "--model", "svg-pl"], "Did you mean 'svg-lp'"),
    (["train", "--plugin", "svg", "--dataset", "mnsit"], "Unknown dataset 'mnsit'"),
    (["train", "--plugin", "svg", "--set", "model.z_dimm=3"], "unknown key 'z_dimm'"),
    (["train", "--plugin", "svg", "--set", "model.z_dim=abc"], "'z_dim'"),
    (["train", "--plugin", "svg", "--set", "train.steps=-1"], "'steps'"),
    (["train", "--plugin", "svg", "--preset", "smnist"], "Did you mean 'smmnist'"),
    (["train", "--plugin", "svg", "--metrics", "psnr,ssim,fvdd"], "Unknown metric 'fvdd'"),
    (["eval", "no/such/checkpoint"], "Checkpoint not found"),
    (["import", "svg", "no/such/file.pth"], "not found"),
    (["import", "svgg", "x.pth"], "Did you mean 'svg'"),
])
def test_bad_input_gives_one_clear_line(tmp_path, args, needle):
    proc = vpkit(*args, cwd=tmp_path, ok=False)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("vpkit.json"))


def test_corrupt_checkpoint_is_reported(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "vpkit.json").write_text("{broken")
    assert_one_line_error(vpkit("eval", str(ck), ok=False), "corrupt")


@pytest.mark.slow
def test_train_then_eval_end_to_end(tmp_path):
    run = tmp_path / "run"
    vpkit("train", "--plugin", "svg", "--preset", "tiny", "--steps", "4", "--batch-size", "4", "--out", str(run),
          "--set", "train.val_every=2", "--set", "train.val_videos=4", "--set", "train.sample_every=2",
          "--set", "train.checkpoint_every=2", "--device", "cpu")
    for name in ("last", "best"):
        assert (run / "checkpoints" / name / "vpkit.json").is_file()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(line.get("split") == "val" for line in lines)
    assert list((run / "samples").glob("*.gif"))
    # an existing run is not overwritten by accident
    assert_one_line_error(vpkit("train", "--plugin", "svg", "--preset", "tiny", "--steps", "1", "--out", str(run),
                                ok=False), "already holds a run")
    out = tmp_path / "eval"
    vpkit("eval", str(run / "checkpoints" / "best"), "--samples", "3", "--videos", "4", "--metrics", "psnr,ssim",
          "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["num_samples"] == 3
    assert {"psnr", "ssim"} <= set(report["metrics"])
    assert (out / "samples.gif").is_file() and (out / "psnr.png").is_file()
    # resume continues the same run to more steps
    vpkit("train", "--resume", str(run / "checkpoints" / "last"), "--steps", "6")
    meta = json.loads((run / "checkpoints" / "last" / "vpkit.json").read_text())
    assert meta["train"]["step"] == 6


def test_same_seed_gives_the_same_run(tmp_path):
    from safetensors.torch import load_file

    weights = []
    for name in ("a", "b"):
        vpkit("train", "--plugin", "svg", "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--seed", "3",
              "--out", str(tmp_path / name), "--metrics", "psnr", "--set", "train.val_metric=psnr",
              "--set", "train.val_videos=2", "--device", "cpu")
        weights.append(load_file(str(tmp_path / name / "checkpoints" / "last" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])


def test_a_bare_set_key_is_a_model_field():
    from vpkit.cli.train import plan_run
    from vpkit.core.errors import VpkitError
    from vpkit.core.plugins import get_host

    host = get_host()
    spec = host.models.get("svg-lp")
    plan = plan_run(host, spec, preset="tiny", dataset=None, config_file=None, overrides=["z_dim=7"], train_args={})
    assert plan.model_cfg.z_dim == 7
    with pytest.raises(VpkitError, match="Unknown section 'zz_dim'"):
        plan_run(host, spec, preset="tiny", dataset=None, config_file=None, overrides=["zz_dim=7"], train_args={})
