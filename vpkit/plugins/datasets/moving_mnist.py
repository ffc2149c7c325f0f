"""Moving MNIST with SRVP's semantics: stochastic (`smmnist`) and deterministic (`mmnist`).

Franceschi, Delasalles, Chen, Lamprier, Gallinari, "Stochastic Latent Residual Video Prediction", ICML 2020; the
generator follows github.com/edouardelasalles/srvp `data/mmnist.py` and its test-set script
`preprocessing/mmnist/make_test_set.py` (re-implemented here, not copied):

- raw 28x28 digits on a 64x64 canvas; a digit's top-left corner starts at integers in [0, 36], its velocity
  (d_row, d_col) is drawn uniformly from [-4, 4]^2 (0 included);
- positions stay real-valued and are rounded (half to even) when drawn; a step that crosses a border is reflected
  exactly: the motion is traced back to the wall, and the time left in the step is spent moving away from it;
- stochastic: at every bounce a new velocity is drawn from [-4, 4]^2, then its sign is forced away from the wall
  (it may be 0); deterministic: the component normal to the wall flips;
- digits are summed and clipped at 255 where they overlap;
- train videos use MNIST-train digits, minus SRVP's 5% validation split (seed-42 shuffle); test videos use
  MNIST-test digits: a seed-42 permutation pairs them, 5000 videos, 25 frames (stochastic) or 100 (deterministic).

With `digits: mnist` the test split equals SRVP's `smmnist_test_2digits_64.npz` / `mmnist_test_2digits_64.npz`
video for video: the trajectories replay SRVP's NumPy random stream (legacy `RandomState`, frozen across NumPy
versions). Only those trajectories are held (a few MB); frames are drawn per index on demand.

Training videos are generated on the fly, a whole batch at once, from a counter-based hash of
(seed, epoch, index, ...), so a video depends on its index only: any batch composition, worker count or resumed run
sees the same data.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch.utils.data import Dataset

import vpkit
from vpkit.core.config import BaseConfig
from vpkit.core.errors import VpkitError, did_you_mean
from vpkit.core.specs import DatasetSpec

SPLITS = ("train", "val", "test")
# SRVP's tolerance for "outside the canvas" in its bounce computation (`MovingMNIST.eps`).
EPS = 1e-8


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------


class MovingMNISTConfig(BaseConfig):
    """Moving MNIST settings; the defaults are SRVP's (2 digits, 64x64, speed 4, 5000 test videos, seed 42)."""

    num_digits: int = Field(2, ge=1, description="digits per video")
    frame_size: int = Field(64, gt=0, description="frames are frame_size x frame_size, one channel")
    digit_size: int = Field(28, gt=0, description="digit side in pixels (28 = raw MNIST, as SRVP; 32 = SVG)")
    max_speed: int = Field(4, ge=0, description="velocity components are drawn from [-max_speed, max_speed]")
    seq_len: int = Field(15, gt=0, description="frames per training video (SVG/SRVP SM-MNIST: 5 context + 10)")
    test_seq_len: int | None = Field(
        None, gt=0, description="frames per val/test video; default SRVP's: 25 (smmnist), 100 (mmnist)")
    test_videos: int = Field(5000, gt=0, description="videos in the fixed val and test sets (SRVP: 5000)")
    test_seed: int = Field(42, ge=0, description="seed of the fixed test set (SRVP: 42); val uses test_seed + 1")
    train_size: int = Field(500_000, gt=0, description="length of a virtual training epoch (SRVP: 500000)")
    seed: int = Field(0, description="seed of the on-the-fly training videos")
    digits: Literal["embedded", "mnist"] = Field(
        "embedded", description="embedded: 5000 digits shipped with vpkit; mnist: full MNIST from data_root")
    data_root: str | None = Field(None, description="folder holding mnist.npz (`vpkit data prepare mnist`)")

    @model_validator(mode="after")
    def _digits_fit(self) -> MovingMNISTConfig:
        # One reflection must bring a digit back inside, or the bounce loop could not end.
        if self.frame_size - self.digit_size < max(self.max_speed, 1):
            raise ValueError(f"frame_size ({self.frame_size}) must exceed digit_size ({self.digit_size}) by at "
                             f"least max_speed ({self.max_speed}) and at least 1")
        return self

    def eval_seq_len(self, stochastic: bool) -> int:
        """Frames per val/test video: `test_seq_len`, or SRVP's length for this variant."""
        if self.test_seq_len is not None:
            return self.test_seq_len
        return 25 if stochastic else 100


# ---------------------------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitSet:
    """Digit images (uint8 [N, S, S]) and labels for each split of Moving MNIST."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    source: str


def srvp_train_val_ids(n: int) -> tuple[np.ndarray, np.ndarray]:
    """SRVP's split of the training digits (`VideoDataset.get_fold`): a RandomState(42) shuffle, first 95% train,
    the rest validation; each part keeps the original order."""
    ids = list(range(n))
    np.random.RandomState(42).shuffle(ids)
    n_train = int(0.95 * n)
    return np.sort(np.asarray(ids[:n_train], dtype=np.int64)), np.sort(np.asarray(ids[n_train:], dtype=np.int64))


@functools.lru_cache(maxsize=4)
def load_digits(source: str, data_root: str | None = None, digit_size: int = 28) -> DigitSet:
    """The train/val/test digits of `source` (`embedded` or `mnist`), resized to `digit_size` if it is not 28."""
    if source == "embedded":
        with importlib.resources.files("vpkit").joinpath("data", "mnist_digits.npz").open("rb") as handle, \
                np.load(handle) as npz:
            images, labels, split = npz["images"], npz["labels"], npz["split"]
        train_images, train_labels = images[split == 0], labels[split == 0]
        test_images, test_labels = images[split == 1], labels[split == 1]
    elif source == "mnist":
        from vpkit.plugins.datasets.mnist import load_mnist

        if data_root is None:
            raise VpkitError("digits: mnist needs data.data_root=DIR, the folder where "
                             "`vpkit data prepare mnist --root DIR` wrote mnist.npz.")
        arrays = load_mnist(Path(data_root))
        train_images, train_labels = arrays["train_images"], arrays["train_labels"]
        test_images, test_labels = arrays["test_images"], arrays["test_labels"]
    else:
        raise VpkitError(f"Unknown digit source '{source}'.{did_you_mean(source, ['embedded', 'mnist'])}")
    train_ids, val_ids = srvp_train_val_ids(len(train_images))
    images = {"train": train_images[train_ids], "val": train_images[val_ids], "test": test_images}
    labels = {"train": train_labels[train_ids], "val": train_labels[val_ids], "test": test_labels}
    if digit_size != images["test"].shape[-1]:
        images = {split: _resize(digits, digit_size) for split, digits in images.items()}
    return DigitSet(images, labels, source)


def _resize(digits: np.ndarray, size: int) -> np.ndarray:
    # Bilinear through PIL, as SVG's `transforms.Scale(32)` did for its 32-pixel digits.
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(d).resize((size, size), Image.BILINEAR)) for d in digits])


# ---------------------------------------------------------------------------------------------------------------
# Physics: SRVP's exact-reflection bounces, vectorised over many digits, and the same rule for one digit
# ---------------------------------------------------------------------------------------------------------------

# redraw(t, k, rows) -> (d_row, d_col) for the digits `rows` bouncing at frame t, bounce k of that frame.
BatchRedraw = Callable[[int, int, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _resolve_bounces(pos: np.ndarray, vel: np.ndarray, limits: tuple[int, int], t: int,
                     redraw: BatchRedraw | None) -> None:
    """Bring every digit that a step moved past a border back inside, in place (SRVP `_process_collision`).

    pos: float64 [N, 2] (row, col) after the step; vel: int64 [N, 2] velocity of that step."""
    row_max, col_max = limits
    upper = np.array([row_max, col_max]) + EPS
    k = 0
    while True:
        low = pos < -EPS
        high = pos > upper
        hit = np.flatnonzero((low | high).any(axis=1))
        if hit.size == 0:
            return
        if k > 1000:
            raise RuntimeError("Moving MNIST bounce did not settle; frame_size - digit_size is too small")
        r, c = pos[hit, 0], pos[hit, 1]
        vr, vc = vel[hit, 0], vel[hit, 1]
        low_r, low_c, high_r, high_c = low[hit, 0], low[hit, 1], high[hit, 0], high[hit, 1]
        # The wall point (cr, cc) where the step's segment left the canvas.
        still_r, still_c = vr == 0, (vc == 0) & (vr != 0)
        slanted = ~still_r & ~still_c
        cr = np.where(still_r, r, np.where(low_r, 0.0, float(row_max)))
        cc = np.where(still_r, np.where(low_c, 0.0, float(col_max)), c)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = vc / vr
            offset = c - slope * r
            # Intersections of the motion line with each flagged wall; a wall whose intersection falls outside the
            # canvas was not the one crossed, so its flag drops (SRVP's `_get_intersection_x/_y`).
            for flag, wall, on_row_wall in ((low_r, 0, True), (high_r, row_max, True),
                                            (low_c, 0, False), (high_c, col_max, False)):
                if on_row_wall:
                    other = slope * wall + offset
                    inside = (other >= -EPS) & (other <= col_max + EPS)
                else:
                    other = (wall - offset) / slope
                    inside = (other >= -EPS) & (other <= row_max + EPS)
                flag[slanted] &= inside[slanted]
                take = slanted & flag
                cr = np.where(take, float(wall) if on_row_wall else other, cr)
                cc = np.where(take, other if on_row_wall else float(wall), cc)
            # Time left in the step after reaching the wall.
            left = np.where(vr != 0, (r - cr) / vr, (c - cc) / vc)
        if redraw is not None:
            vr, vc = redraw(t, k, hit)
            vr, vc = np.asarray(vr, dtype=np.int64), np.asarray(vc, dtype=np.int64)
        vr = np.where(low_r, np.abs(vr), vr)
        vr = np.where(high_r, -np.abs(vr), vr)
        vc = np.where(low_c, np.abs(vc), vc)
        vc = np.where(high_c, -np.abs(vc), vc)
        vel[hit, 0], vel[hit, 1] = vr, vc
        pos[hit, 0], pos[hit, 1] = cr + vr * left, cc + vc * left
        k += 1


def simulate(start: np.ndarray, velocity: np.ndarray, steps: int, limits: tuple[int, int],
             redraw: BatchRedraw | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Trajectories of N digits, vectorised (SRVP `_compute_trajectory` for all of them at once).

    start: [N, 2] integer top-left corners; velocity: [N, 2] integers; limits: largest (row, col) a corner may take.
    Returns positions int64 [N, steps, 2] (rounded, as drawn) and velocities int64 [N, steps, 2] (after the
    bounces of that frame, SRVP's `latents`)."""
    pos = np.asarray(start, dtype=np.float64).copy()
    vel = np.asarray(velocity, dtype=np.int64).copy()
    positions = np.empty((len(pos), steps, 2), dtype=np.int64)
    velocities = np.empty((len(pos), steps, 2), dtype=np.int64)
    for t in range(steps):
        _resolve_bounces(pos, vel, limits, t, redraw)
        positions[:, t] = np.rint(pos)
        velocities[:, t] = vel
        pos += vel
    return positions, velocities


def srvp_trajectory(start: tuple[int, int], velocity: tuple[int, int], steps: int, limits: tuple[int, int],
                    redraw: Callable[[int, int], tuple[int, int]] | None = None) -> list[tuple[int, int, int, int]]:
    """One digit's trajectory in plain Python scalars, drawing bounce velocities from `redraw(t, k)` in SRVP's
    order: the form the sequential SRVP test stream needs. Same rule as `simulate`; returns
    [(row, col, d_row, d_col)] per frame."""
    r, c = start
    vr, vc = velocity
    row_max, col_max = limits
    out = []
    for t in range(steps):
        low_r, low_c, high_r, high_c = r < -EPS, c < -EPS, r > row_max + EPS, c > col_max + EPS
        k = 0
        while low_r or low_c or high_r or high_c:
            if vr == 0:
                cr, cc = r, (0 if low_c else col_max)
            elif vc == 0:
                cr, cc = (0 if low_r else row_max), c
            else:
                slope = vc / vr
                offset = c - slope * r
                if low_r:
                    other = slope * 0 + offset
                    low_r = -EPS <= other <= col_max + EPS
                    if low_r:
                        cr, cc = 0, other
                if high_r:
                    other = slope * row_max + offset
                    high_r = -EPS <= other <= col_max + EPS
                    if high_r:
                        cr, cc = row_max, other
                if low_c:
                    other = (0 - offset) / slope
                    low_c = -EPS <= other <= row_max + EPS
                    if low_c:
                        cr, cc = other, 0
                if high_c:
                    other = (col_max - offset) / slope
                    high_c = -EPS <= other <= row_max + EPS
                    if high_c:
                        cr, cc = other, col_max
            left = (r - cr) / vr if vr != 0 else (c - cc) / vc
            if redraw is not None:
                vr, vc = redraw(t, k)
            if low_r:
                vr = abs(vr)
            if high_r:
                vr = -abs(vr)
            if low_c:
                vc = abs(vc)
            if high_c:
                vc = -abs(vc)
            r, c = cr + vr * left, cc + vc * left
            low_r, low_c, high_r, high_c = r < -EPS, c < -EPS, r > row_max + EPS, c > col_max + EPS
            k += 1
            if k > 1000:
                raise RuntimeError("Moving MNIST bounce did not settle; frame_size - digit_size is too small")
        out.append((round(r), round(c), vr, vc))  # Python's round: half to even, like SRVP's
        r, c = r + vr, c + vc
    return out


# ---------------------------------------------------------------------------------------------------------------
# Seeded draws: the SRVP test stream and the counter-based training stream
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trajectories:
    """What a batch of Moving MNIST videos is made of.

    digit_ids [B, D] index the split's digits; positions [B, D, T, 2] are the drawn top-left (row, col) corners;
    velocities [B, D, T, 2] are (d_row, d_col) after each frame's bounces (SRVP's `latents`)."""

    digit_ids: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray


@functools.lru_cache(maxsize=8)
def srvp_fixed_set(num_available: int, num_videos: int, num_digits: int, steps: int, limits: tuple[int, int],
                   max_speed: int, stochastic: bool, seed: int) -> Trajectories:
    """The fixed test set of SRVP's `make_test_set.py`, as trajectories (int16 positions, int8 velocities).

    RandomState(seed) permutes the digits, then draws each video's digits in turn: corner row, corner col, d_row,
    d_col, then two velocity components per stochastic bounce. Video i uses permuted digits [i*D, (i+1)*D). Sets
    larger than the digits allow (the embedded digits) continue with permutations from RandomState([seed, pass]),
    leaving SRVP's stream untouched."""
    rng = np.random.RandomState(seed)
    slots = num_videos * num_digits
    order = [rng.permutation(num_available)]
    for extra in range(1, -(-slots // num_available)):
        order.append(np.random.RandomState([seed, extra]).permutation(num_available))
    digit_ids = np.concatenate(order)[:slots].reshape(num_videos, num_digits)

    def redraw(t: int, k: int) -> tuple[int, int]:
        return rng.randint(-max_speed, max_speed + 1), rng.randint(-max_speed, max_speed + 1)

    positions = np.empty((num_videos, num_digits, steps, 2), dtype=np.int16)
    velocities = np.empty((num_videos, num_digits, steps, 2), dtype=np.int8)
    for video in range(num_videos):
        for slot in range(num_digits):
            start = (rng.randint(0, limits[0] + 1), rng.randint(0, limits[1] + 1))
            velocity = (rng.randint(-max_speed, max_speed + 1), rng.randint(-max_speed, max_speed + 1))
            path = np.asarray(srvp_trajectory(start, velocity, steps, limits, redraw if stochastic else None))
            positions[video, slot], velocities[video, slot] = path[:, :2], path[:, 2:]
    for array in (digit_ids, positions, velocities):
        array.setflags(write=False)
    return Trajectories(digit_ids, positions, velocities)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _hash(*words: np.ndarray | int) -> np.ndarray:
    """SplitMix64 chained over `words` (broadcast): a counter-based generator, one uniform uint64 per key."""
    h = np.zeros(1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for word in words:
            h = h ^ (np.atleast_1d(np.asarray(word)).astype(np.int64).astype(np.uint64) + _GOLDEN)
            h = (h ^ (h >> np.uint64(30))) * _MIX1
            h = (h ^ (h >> np.uint64(27))) * _MIX2
            h = h ^ (h >> np.uint64(31))
    return h


def _uniform_int(hashed: np.ndarray, low: int, high: int) -> np.ndarray:
    """Integers in [low, high] from uniform uint64 hashes (modulo bias below 1e-9 for these small ranges)."""
    return (hashed % np.uint64(high - low + 1)).astype(np.int64) + low


# Draw kinds mixed into the training keys.
_DIGIT, _START_ROW, _START_COL, _VEL_ROW, _VEL_COL, _BOUNCE = range(6)


# ---------------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------------


class MovingMNIST(Dataset):
    """Map-style Moving MNIST: items are uint8 [T, 1, H, W] tensors. `__getitems__` builds a batch at once."""

    def __init__(self, config: MovingMNISTConfig, *, split: str, stochastic: bool, seq_len: int) -> None:
        self.config = config
        self.split = split
        self.stochastic = stochastic
        self.seq_len = seq_len
        self.frame_shape = (1, config.frame_size, config.frame_size)
        self.limits = (config.frame_size - config.digit_size, config.frame_size - config.digit_size)
        digit_set = load_digits(config.digits, config.data_root, config.digit_size)
        self.digits = digit_set.images[split]
        self.labels = digit_set.labels[split]
        if len(self.digits) == 0:
            raise VpkitError(f"No {split} digits in the '{config.digits}' digit set.")

    def trajectories(self, indices: Sequence[int]) -> Trajectories:
        """Digits and motion of the videos `indices` (each subclass decides how they are drawn)."""
        raise NotImplementedError

    def __getitems__(self, indices: Sequence[int]) -> list[torch.Tensor]:
        videos = render(self.digits, self.trajectories(indices), self.config.frame_size)
        return list(torch.from_numpy(videos))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def _check(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"Moving MNIST {self.split} index out of range [0, {len(self)}): {indices}")
        return idx


class MovingMNISTTrain(MovingMNIST):
    """Training videos generated on the fly; video `i` is a pure function of (seed, epoch, i)."""

    def __init__(self, config: MovingMNISTConfig, *, stochastic: bool) -> None:
        super().__init__(config, split="train", stochastic=stochastic, seq_len=config.seq_len)
        self.epoch = 0

    def __len__(self) -> int:
        return self.config.train_size

    def set_epoch(self, epoch: int) -> None:
        """Give every index a fresh video for this epoch (like DistributedSampler.set_epoch); epoch 0 by default."""
        self.epoch = int(epoch)

    def trajectories(self, indices: Sequence[int]) -> Trajectories:
        idx = self._check(indices)
        num_digits, speed = self.config.num_digits, self.config.max_speed
        video = np.repeat(idx, num_digits)
        slot = np.tile(np.arange(num_digits), len(idx))
        base = _hash(self.config.seed, self.epoch, video, slot)
        digit_ids = _uniform_int(_hash(base, _DIGIT), 0, len(self.digits) - 1)
        start = np.stack([_uniform_int(_hash(base, _START_ROW), 0, self.limits[0]),
                          _uniform_int(_hash(base, _START_COL), 0, self.limits[1])], axis=1)
        velocity = np.stack([_uniform_int(_hash(base, _VEL_ROW), -speed, speed),
                             _uniform_int(_hash(base, _VEL_COL), -speed, speed)], axis=1)

        def redraw(t: int, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # One hash per bounce: its low and high 32 bits give the two velocity components.
            bounce = _hash(base[rows], _BOUNCE, t, k)
            return (_uniform_int(bounce & np.uint64(0xFFFFFFFF), -speed, speed),
                    _uniform_int(bounce >> np.uint64(32), -speed, speed))

        positions, velocities = simulate(start, velocity, self.seq_len, self.limits,
                                         redraw if self.stochastic else None)
        shape = (len(idx), num_digits)
        return Trajectories(digit_ids.reshape(shape), positions.reshape(*shape, self.seq_len, 2),
                            velocities.reshape(*shape, self.seq_len, 2))


class MovingMNISTFixed(MovingMNIST):
    """A fixed, seeded set (test, or val from the held-out training digits) in SRVP's `make_test_set` order.

    The trajectories of the whole set are computed once per process on first use (about a second) and cached;
    frames are drawn per index."""

    def __init__(self, config: MovingMNISTConfig, *, split: str, stochastic: bool) -> None:
        super().__init__(config, split=split, stochastic=stochastic, seq_len=config.eval_seq_len(stochastic))
        self.seed = config.test_seed + (1 if split == "val" else 0)

    def __len__(self) -> int:
        return self.config.test_videos

    def all_trajectories(self) -> Trajectories:
        """The whole set's trajectories (cached, read-only)."""
        c = self.config
        return srvp_fixed_set(len(self.digits), c.test_videos, c.num_digits, self.seq_len, self.limits,
                              c.max_speed, self.stochastic, self.seed)

    def trajectories(self, indices: Sequence[int]) -> Trajectories:
        idx = self._check(indices)
        full = self.all_trajectories()
        return Trajectories(full.digit_ids[idx], full.positions[idx].astype(np.int64),
                            full.velocities[idx].astype(np.int64))


def render(digits: np.ndarray, trajectories: Trajectories, frame_size: int) -> np.ndarray:
    """Draw videos: uint8 [B, T, 1, H, W], digits summed and clipped at 255 where they overlap (SRVP)."""
    ids, positions = trajectories.digit_ids, trajectories.positions
    batch, num_digits, steps = positions.shape[:3]
    size = digits.shape[-1]
    canvas = np.zeros(batch * steps * frame_size * frame_size, dtype=np.int16)
    # Flat offsets of a digit's pixels from its top-left corner, and of each (video, frame) canvas.
    pixel = (np.arange(size)[:, None] * frame_size + np.arange(size)[None, :]).astype(np.int64)
    frame = (np.arange(batch * steps, dtype=np.int64) * frame_size * frame_size).reshape(batch, steps)
    for slot in range(num_digits):
        corner = frame + positions[:, slot, :, 0] * frame_size + positions[:, slot, :, 1]
        # One digit per (video, frame): its pixels never repeat an index, so a fancy-indexed += is exact.
        canvas[corner[:, :, None, None] + pixel] += digits[ids[:, slot]][:, None]
    np.minimum(canvas, 255, out=canvas)
    return canvas.astype(np.uint8).reshape(batch, steps, 1, frame_size, frame_size)


def build_moving_mnist(config: MovingMNISTConfig, split: str, *, stochastic: bool) -> MovingMNIST:
    """The `split` ('train', 'val' or 'test') of (stochastic or deterministic) Moving MNIST."""
    if split == "train":
        return MovingMNISTTrain(config, stochastic=stochastic)
    if split in ("val", "test"):
        return MovingMNISTFixed(config, split=split, stochastic=stochastic)
    raise VpkitError(f"Moving MNIST has no split '{split}'.{did_you_mean(split, SPLITS)} Known: {', '.join(SPLITS)}.")


# ---------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------


MNIST_PROVENANCE = {
    "source": "generated from MNIST digits (5,000 embedded; full set: vpkit data prepare mnist)",
    "size": "none (embedded digits); 11 MB with the full MNIST",
    "licence": "MNIST by LeCun, Cortes and Burges, commonly distributed under CC BY-SA 3.0",
}


@vpkit.hookimpl
def register_datasets(register) -> None:
    register(DatasetSpec(
        name="smmnist",
        config_cls=MovingMNISTConfig,
        build=functools.partial(build_moving_mnist, stochastic=True),
        splits=SPLITS,
        description="Stochastic Moving MNIST (SRVP): digits draw a new velocity at each bounce; generated on the "
                    "fly; fixed seed-42 test set, 5000 videos x 25 frames.",
        **MNIST_PROVENANCE,
    ))
    register(DatasetSpec(
        name="mmnist",
        config_cls=MovingMNISTConfig,
        build=functools.partial(build_moving_mnist, stochastic=False),
        splits=SPLITS,
        description="Deterministic Moving MNIST (SRVP): digits reflect off the borders at constant speed; fixed "
                    "seed-42 test set, 5000 videos x 100 frames.",
        **MNIST_PROVENANCE,
    ))
