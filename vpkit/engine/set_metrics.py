"""Set-level metrics (FVD) inside the best-of-N evaluation: which clips are scored, and features over the whole set.

A set metric's extractor maps clips to features; the evaluator feeds it the real clips of every test video and one
predicted clip per video (or every sample), and the Fréchet distance between the two feature Gaussians is the
score. Nothing is averaged per batch: `FeatureStats` accumulates over the whole test set. The real statistics depend
only on the data, the frames and the extractor, so they are cached per (dataset, split, videos, frames,
resolution, extractor) under `$VPKIT_CACHE_DIR/fvd-stats/`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vpkit.core.errors import VpkitError
from vpkit.core.paths import cache_dir
from vpkit.engine.frechet import FeatureStats

# Below this many videos FVD is biased upward and its square root unstable (peers.md §5a: the VP convention is 256).
RECOMMENDED_VIDEOS = 256
SAMPLE_RULES = ("random", "first", "all")  # plus "best-<frame metric>" (SLAMP's protocol), only when asked
# Offset of the sample-choice generator's seed from the sampling seed: choosing which sample FVD scores must not
# consume the model's random stream, so adding FVD to a run leaves every other number unchanged.
CHOICE_SEED_OFFSET = 1_000_003


def describe_sample_rule(rule: str) -> str:
    if rule == "random":
        return "one random sample per video (uniform over the N drawn, own seeded generator)"
    if rule == "first":
        return "the first sample drawn for each video (SRVP's random_1)"
    if rule == "all":
        return "every sample of every video"
    return f"the best sample per video by {rule.removeprefix('best-')} (SLAMP's protocol; favours the selection)"


def check_sample_rule(rule: str, frame_metrics: Mapping[str, bool]) -> None:
    """`rule` is one of `SAMPLE_RULES` or `best-<metric>` for a frame metric being evaluated."""
    if rule in SAMPLE_RULES:
        return
    if rule.startswith("best-"):
        name = rule.removeprefix("best-")
        if name in frame_metrics:
            return
        raise VpkitError(f"--fvd-sample {rule} needs {name} among the frame metrics being evaluated "
                         f"({', '.join(frame_metrics) or 'none'}).")
    choices = ", ".join([*SAMPLE_RULES, *(f"best-{m}" for m in frame_metrics)])
    raise VpkitError(f"Unknown --fvd-sample {rule!r}; choose one of {choices}.")


def real_stats_path(key: Mapping[str, Any]) -> Path:
    """The cache file of the real statistics for `key` (dataset, split, videos, frames, resolution, extractor)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = "-".join(str(key.get(k, "")) for k in ("dataset", "split")) + f"-{key['frames']}f-{key['resolution']}"
    return cache_dir("fvd-stats", f"{name}-{digest}.npz")


class SetScoring:
    """One set metric's state during `evaluate`: the clips it takes from every batch and its two feature sets."""

    def __init__(self, metric: Any, *, n_context: int, horizon: int, drawn: int, include_context: bool,
                 sample: str, seed: int, num_videos: int, frame_shape: tuple[int, ...],
                 real_key: Mapping[str, Any] | None, higher_is_better: Mapping[str, bool]) -> None:
        self.metric = metric
        self.name = metric.name
        self.extract = metric.score
        self.include_context = include_context
        self.n_context = n_context
        self.sample = sample if drawn > 1 else "first"
        self.drawn = drawn
        self.frames = horizon + (n_context if include_context else 0)
        min_frames = int(getattr(self.extract, "min_frames", 1))
        if self.frames < min_frames:
            context_hint = ("" if include_context else
                            f", or score the {n_context} conditioning frames too (drop --fvd-no-context)")
            raise VpkitError(f"{self.name.upper()} needs clips of at least {min_frames} frames but scores "
                             f"{self.frames} ({'context + ' if include_context else ''}horizon {horizon}); "
                             f"raise --horizon{context_hint}.")
        if num_videos < 2:
            raise VpkitError(f"{self.name.upper()} compares two sets of videos and needs at least 2 test videos "
                             f"(got {num_videos}); raise --videos (the convention is {RECOMMENDED_VIDEOS}).")
        check_sample_rule(sample, higher_is_better)
        self.num_fake = num_videos * (drawn if self.sample == "all" else 1)
        self._best_by = sample.removeprefix("best-") if sample.startswith("best-") else None
        self._higher = higher_is_better.get(self._best_by, True) if self._best_by else True
        self._choices = torch.Generator().manual_seed(seed + CHOICE_SEED_OFFSET)
        self.identity = str(getattr(self.extract, "identity", self.name))
        self.real_key = None if real_key is None else {
            **real_key, "videos": num_videos, "frames": self.frames, "include_context": include_context,
            "resolution": "x".join(str(s) for s in frame_shape), "extractor": self.identity}
        self.cache_path = real_stats_path(self.real_key) if self.real_key is not None else None
        self.real: FeatureStats | None = None
        self.real_source = "computed"
        if self.cache_path is not None and self.cache_path.is_file():
            try:
                self.real = FeatureStats.load(self.cache_path)
                self.real_source = "cache"
            except (OSError, ValueError, KeyError):
                self.real = None  # an unreadable cache entry is recomputed and rewritten
            if self.real is not None and self.real.count != num_videos:
                self.real, self.real_source = None, "computed"
        self._compute_real = self.real is None
        self.fake: FeatureStats | None = None

    # -- per batch -------------------------------------------------------------------------------------------------
    def begin_batch(self, context: Tensor, truth: Tensor) -> None:
        """Add the real clips of this batch of videos; choose which sample of each video is scored."""
        self._context = context
        batch = context.shape[0]
        if self._compute_real:
            self.real = self._add(self.real, self._clips(context, truth))
        if self.sample == "random":
            self._chosen = torch.randint(self.drawn, (batch,), generator=self._choices)
        else:
            self._chosen = torch.zeros(batch, dtype=torch.long)
        self._picked: list[Tensor | None] = [None] * batch
        self._best_value: Tensor | None = None

    def add_samples(self, first: int, pred: Tensor, scores: Mapping[str, Tensor]) -> None:
        """Take what this metric scores from samples `first..first+S` of the batch (`pred` `[B, S, horizon, ...]`,
        `scores[metric]` the frame-averaged frame-metric scores `[B, S]`)."""
        count = pred.shape[1]
        if self.sample == "all":
            context = self._context.repeat_interleave(count, dim=0)
            self.fake = self._add(self.fake, self._clips(context, pred.flatten(0, 1)))
            return
        if self._best_by is not None:
            value, index = (scores[self._best_by].max(dim=1) if self._higher
                            else scores[self._best_by].min(dim=1))
            for i in range(pred.shape[0]):
                current = None if self._best_value is None else self._best_value[i]
                # strictly better replaces, as SRVP/SLAMP keep the earliest of equal samples
                if current is None or (value[i] > current if self._higher else value[i] < current):
                    self._picked[i] = pred[i, int(index[i])].detach()
            self._best_value = value.clone() if self._best_value is None else (
                torch.maximum(self._best_value, value) if self._higher else torch.minimum(self._best_value, value))
            return
        for i, j in enumerate(self._chosen.tolist()):
            if first <= j < first + count:
                self._picked[i] = pred[i, j - first].detach()

    def end_batch(self) -> None:
        if self.sample == "all":
            return
        picked = torch.stack([p for p in self._picked if p is not None])
        self.fake = self._add(self.fake, self._clips(self._context, picked))

    # -- result ----------------------------------------------------------------------------------------------------
    def result(self) -> tuple[dict[str, Any], list[str]]:
        """The score and its card entry, and the warnings to show; writes the real statistics to the cache."""
        assert self.real is not None and self.fake is not None
        if self._compute_real and self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_name(f".{self.cache_path.stem}.{os.getpid()}.npz")
            self.real.save(tmp)
            os.replace(tmp, self.cache_path)
        value = self.real.distance(self.fake)
        warnings = []
        if self.fake.count < RECOMMENDED_VIDEOS:
            warnings.append(f"{self.name.upper()} on {self.fake.count} predicted videos (fewer than "
                            f"{RECOMMENDED_VIDEOS}) is biased upward and unstable; compare it only with runs on the "
                            "same number of videos.")
        if self._best_by is not None:
            warnings.append(f"{self.name.upper()} scores best-by-{self._best_by} samples (SLAMP's protocol): not "
                            "comparable with FVD on random samples.")
        entry = {
            "value": value,
            "num_real": self.real.count,
            "num_fake": self.fake.count,
            "frames": self.frames,
            "include_context": self.include_context,
            "sample": self.sample,
            "sample_rule": describe_sample_rule(self.sample),
            "real_stats": {"source": self.real_source,
                           "path": str(self.cache_path) if self.cache_path is not None else None},
            "identity": self.identity,
            "feature_dim": self.real.dim,
        }
        return entry, warnings

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _clips(self, context: Tensor, future: Tensor) -> Tensor:
        if not self.include_context:
            return future
        return torch.cat([context.to(future.dtype), future], dim=1)

    def _add(self, stats: FeatureStats | None, clips: Tensor) -> FeatureStats:
        features = np.asarray(torch.as_tensor(self.extract(clips)).double().cpu().numpy())
        if stats is None:
            stats = FeatureStats(features.shape[1])
        stats.add(features)
        return stats
