"""Data-parallel training with torch.distributed on CPU (gloo): two processes on half batches end with the weights
one process gets on the whole batch, every rank holds the same model, gradient accumulation splits a batch without
changing the step, and `vpkit train --devices 2` launches torchrun itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vpkit.core.errors import VpkitError
from vpkit.engine import distributed

CHILD = textwrap.dedent('''
    """Trains the toy model (toy options from argv) and saves this rank's final weights as OUT/rank-R.pt."""
    import json, os, sys
    from pathlib import Path
    import pluggy, torch
    from vpkit.core import hookspecs
    from vpkit.core.config import TrainConfig
    from vpkit.engine.trainer import Trainer
    from vpkit.testing.toys import BatchedToyVideos, ToyConfig, ToyPredictor, ToyVideosConfig

    out, toy, train = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
    torch.set_num_threads(1)
    pm = pluggy.PluginManager("vpkit")
    pm.add_hookspecs(hookspecs)
    torch.manual_seed(int(os.environ.get("RANK", 0)))  # ranks start different: rank 0's weights must win
    trainer = Trainer(
        ToyPredictor(ToyConfig(**toy), (1, 8, 8)), model_key="toy",
        plugin_meta={"name": "toy", "distribution": "vpkit-toy", "version": "0.0"},
        train_cfg=TrainConfig(**{"steps": 4, "batch_size": 8, "checkpoint_every": 2, "sample_every": 1000,
                                 "log_every": 1, **train}),
        train_set=BatchedToyVideos(ToyVideosConfig(), "train"), val_set=None,
        data_meta={"name": "toy-videos", "frame_shape": [1, 8, 8], "n_context": 2, "n_future": 2},
        out_dir=out, metrics=[], metric_options={}, device="cpu", hook=pm.hook, preset="tiny",
    )
    trainer.fit()
    torch.save(trainer.model.state_dict(), out / f"rank-{trainer.world.rank}.pt")
''')

ENV = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg", "OMP_NUM_THREADS": "1"}
for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(name, None)


def run(tmp_path: Path, name: str, processes: int, toy: str, train: str = "{}") -> dict[int, dict]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    out = tmp_path / name
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = (launcher if processes > 1 else [sys.executable]) + [str(script), str(out), toy, train]
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {r: torch.load(out / f"rank-{r}.pt", weights_only=True) for r in range(processes)}


@pytest.mark.slow
def test_two_ranks_on_half_batches_equal_one_process_on_the_whole_batch(tmp_path):
    toy = '{"batchnorm": false, "noise": false}'
    single = run(tmp_path, "one", 1, toy)[0]
    ranks = run(tmp_path, "two", 2, toy)
    for key in single:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # every rank holds the same model
        torch.testing.assert_close(ranks[0][key], single[key], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two" / "checkpoints" / "last" / "vpkit.json").is_file()  # rank 0 wrote the run


@pytest.mark.slow
def test_ranks_stay_identical_with_batchnorm_and_noise(tmp_path):
    ranks = run(tmp_path, "two", 2, "{}")
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # BatchNorm statistics broadcast from rank 0


@pytest.mark.slow
def test_gradient_accumulation_equals_the_whole_batch(tmp_path):
    toy = '{"batchnorm": false, "noise": false}'
    whole = run(tmp_path, "whole", 1, toy)[0]
    accumulated = run(tmp_path, "accumulated", 1, toy, '{"accumulate": 4}')[0]
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key], rtol=1e-5, atol=1e-6)


def test_batch_must_split_over_ranks_and_micro_batches():
    world = distributed.World(rank=0, size=2, local_rank=0)
    distributed.check_batch(8, 2, world)
    with pytest.raises(VpkitError, match="multiple of 6"):
        distributed.check_batch(8, 3, world)
    assert distributed.shard(torch.arange(8), distributed.World(1, 2, 1)).tolist() == [4, 5, 6, 7]


def test_launcher_arguments():
    args = distributed.launch_args(["--plugin", "svg"], devices=2, nnodes=1, node_rank=0, rdzv_endpoint=None)
    assert args == ["--nproc-per-node=2", "--nnodes=1", "--standalone", "-m", "vpkit", "train", "--plugin", "svg"]
    args = distributed.launch_args([], devices=4, nnodes=2, node_rank=1, rdzv_endpoint="host:29500")
    assert "--node-rank=1" in args and "--rdzv-endpoint=host:29500" in args
    with pytest.raises(VpkitError, match="rdzv-endpoint"):
        distributed.launch_args([], devices=1, nnodes=2, node_rank=0, rdzv_endpoint=None)
    with pytest.raises(VpkitError, match="node-rank"):
        distributed.launch_args([], devices=1, nnodes=2, node_rank=2, rdzv_endpoint="h:1")


@pytest.mark.slow
def test_cli_devices_launches_torchrun(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "vpkit", "train", "--plugin", "svg", "--preset", "tiny", "--devices",
                           "2", "--steps", "2", "--batch-size", "4", "--out", str(out), "--set", "train.val_videos=2"],
                          capture_output=True, text=True, env=ENV, timeout=600, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Launching 2 process(es)" in proc.stdout + proc.stderr
    assert (out / "checkpoints" / "last" / "vpkit.json").is_file()
