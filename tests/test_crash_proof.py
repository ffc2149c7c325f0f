"""Crash-proof training: a run killed with SIGKILL again and again (between steps, while a checkpoint's files are
being written, and between the two renames that put a checkpoint in place), resumed each time, ends with weights
identical to an uninterrupted run; a full disk or an unwritable folder is refused before training starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vpkit.core.checkpoint import read_checkpoint, recover_dir, save_checkpoint
from vpkit.core.errors import VpkitError

STEPS = 10

CHILD = textwrap.dedent('''
    """Trains the toy model for STEPS steps (checkpoint every step), resuming from OUT/checkpoints/last if it exists.
    Writes marker files so the test can kill it at chosen moments: markers/step-N after step N, markers/save-K just
    before a checkpoint's weights are written, markers/swap-K between the two renames that put it in place."""
    import itertools, os, sys, time
    from pathlib import Path
    import pluggy, torch
    import vpkit
    from vpkit.core import checkpoint, hookspecs
    from vpkit.core.config import TrainConfig
    from vpkit.engine.trainer import Trainer
    from vpkit.testing.toys import BatchedToyVideos, ToyConfig, ToyPredictor, ToyVideosConfig

    out, steps, pause = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    markers = out.parent / "markers"
    markers.mkdir(exist_ok=True)
    counter = itertools.count()

    def mark(kind):
        (markers / f"{kind}-{os.getpid()}-{next(counter)}").touch()
        time.sleep(pause)

    real_save, real_replace = checkpoint.save_file, os.replace
    def slow_save(*args, **kwargs):
        mark("save")
        return real_save(*args, **kwargs)
    def slow_replace_dir(src, dst):
        old = None
        if dst.exists():
            old = dst.parent / f".{dst.name}.old-{os.getpid()}{next(counter)}"
            real_replace(dst, old)
        mark("swap")
        real_replace(src, dst)
        if old is not None:
            import shutil
            shutil.rmtree(old, ignore_errors=True)
    checkpoint.save_file, checkpoint._replace_dir = slow_save, slow_replace_dir

    class Steps:
        @vpkit.hookimpl
        def on_step_end(self, trainer, step, logs):
            mark(f"step{step}")

    pm = pluggy.PluginManager("vpkit")
    pm.add_hookspecs(hookspecs)
    pm.register(Steps())
    torch.manual_seed(0)
    last = out / "checkpoints" / "last"
    resume = last if (last.exists() or any(last.parent.glob(".last.old-*"))) else None
    trainer = Trainer(
        ToyPredictor(ToyConfig(), (1, 8, 8)), model_key="toy",
        plugin_meta={"name": "toy", "distribution": "vpkit-toy", "version": "0.0"},
        train_cfg=TrainConfig(steps=steps, batch_size=4, checkpoint_every=1, sample_every=1000, log_every=1),
        train_set=BatchedToyVideos(ToyVideosConfig(), "train"), val_set=None,
        data_meta={"name": "toy-videos", "frame_shape": [1, 8, 8], "n_context": 2, "n_future": 2},
        out_dir=out, metrics=[], metric_options={}, device="cpu", resume_from=resume, hook=pm.hook, preset="tiny",
    )
    trainer.fit()
''')


def start(script: Path, out: Path, pause: float) -> subprocess.Popen:
    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(out), str(STEPS), str(pause)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(markers: Path, prefix: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Block until the child `proc` writes a marker starting with `prefix`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.name.startswith(f"{prefix}-{proc.pid}-") for p in markers.glob(f"{prefix}-*")):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before '{prefix}': {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.01)
    raise AssertionError(f"no '{prefix}' marker within {timeout} s")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*recovered the previous checkpoint")
def test_sigkill_at_many_points_then_resume_gives_identical_weights(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    straight = tmp_path / "straight" / "run"
    straight.parent.mkdir()
    proc = start(script, straight, 0.0)
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""

    run = tmp_path / "killed" / "run"
    run.parent.mkdir()
    markers = run.parent / "markers"
    # where each kill lands: after a step, while a checkpoint's weights are being written, between the renames
    plan = ["step2", "save", "swap", "step5", "save", "swap", "step8", "swap"]
    kills = 0
    for moment in plan:
        proc = start(script, run, 0.3)
        wait_for(markers, moment if moment in ("save", "swap") else f"{moment}", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        kills += 1
        # never a half-written checkpoint: `last` is complete (or recoverable) after every kill
        if (run / "checkpoints").exists():
            ckpt = read_checkpoint(run / "checkpoints" / "last")
            assert (ckpt.path / "model.safetensors").is_file() and (ckpt.path / "train_state.pt").is_file()
    proc = start(script, run, 0.0)
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    assert kills == len(plan)

    final = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    reference = load_file(str(straight / "checkpoints" / "last" / "model.safetensors"))
    assert final.keys() == reference.keys()
    for key in final:
        assert torch.equal(final[key], reference[key]), key
    assert read_checkpoint(run / "checkpoints" / "last").meta["train"]["step"] == STEPS
    assert not list((run / "checkpoints").glob(".*"))  # no leftover temporary or old folders


def test_recover_dir_restores_the_previous_checkpoint(tmp_path):
    from vpkit.testing.toys import ToyConfig, ToyPredictor

    model = ToyPredictor(ToyConfig(), (1, 8, 8))
    last = tmp_path / "checkpoints" / "last"
    meta = {"name": "toy", "frame_shape": [1, 8, 8], "n_context": 2, "n_future": 2}
    save_checkpoint(last, model, model_key="toy", plugin={"name": "toy"}, data=meta)
    os.replace(last, tmp_path / "checkpoints" / ".last.old-1234")  # killed between the two renames
    (tmp_path / "checkpoints" / ".last.tmp-5678").mkdir()  # and a save cut short
    with pytest.warns(UserWarning, match="recovered"):
        assert read_checkpoint(last).path == last
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last"]
    assert recover_dir(last) is False


def test_unwritable_or_full_output_folder_is_refused_before_training(tmp_path, monkeypatch):
    import shutil

    from vpkit.core.config import TrainConfig
    from vpkit.engine.trainer import Trainer
    from vpkit.testing.toys import (
        BatchedToyVideos,
        ToyConfig,
        ToyPredictor,
        ToyVideosConfig,
    )

    def trainer(out: Path) -> Trainer:
        return Trainer(
            ToyPredictor(ToyConfig(), (1, 8, 8)), model_key="toy",
            plugin_meta={"name": "toy", "distribution": "vpkit-toy", "version": "0.0"},
            train_cfg=TrainConfig(steps=2, batch_size=2), train_set=BatchedToyVideos(ToyVideosConfig(), "train"),
            val_set=None, data_meta={"name": "toy", "frame_shape": [1, 8, 8], "n_context": 2, "n_future": 2},
            out_dir=out, metrics=[], metric_options={}, device="cpu", preset="tiny",
        )

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(VpkitError, match="Cannot write to the output directory"):
        trainer(blocker / "run")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1024))
    with pytest.raises(VpkitError, match="MiB free"):
        trainer(tmp_path / "run")
    assert not list((tmp_path / "run").rglob("*.safetensors"))
