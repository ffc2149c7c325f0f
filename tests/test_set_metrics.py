"""Set-level metrics (FVD's plumbing) inside `evaluate`: which clips are scored, features over the whole set, the
real-statistics cache, and what too short clips or too few videos say. The extractor here is a toy whose features
reveal exactly which clip it was given (per-frame mean intensity), so every choice can be checked by value."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from test_evaluator import (
    MAE,
    N_CONTEXT,
    PSNR,
    SIZE,
    NoiseModel,
    OffsetModel,
    StaticVideos,
    run,
)

from vpkit.core.errors import VpkitError
from vpkit.core.specs import MetricSpec
from vpkit.engine import evaluator, set_metrics
from vpkit.engine.frechet import FeatureStats


class FrameMeans:
    """Features of a clip `[T, C, H, W]`: its per-frame mean intensities (D = T), recorded call by call."""

    min_frames = 4
    identity = "toy-frame-means/1"
    settings: ClassVar[dict] = {"what": "per-frame mean intensity"}

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, videos: torch.Tensor) -> torch.Tensor:
        features = videos.double().mean(dim=(2, 3, 4))
        self.seen.append(features)
        return features


def toy_fvd(extractor: FrameMeans | None = None) -> evaluator.BuiltMetric:
    extractor = extractor or FrameMeans()
    spec = MetricSpec("fvd", lambda options: extractor, higher_is_better=False, level="set")
    return evaluator.BuiltMetric(spec, extractor)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VPKIT_CACHE_DIR", str(tmp_path / "cache"))


def stats_of(features: np.ndarray) -> FeatureStats:
    stats = FeatureStats(features.shape[1])
    stats.add(features)
    return stats


OFFSETS = [0.04, -0.01, 0.02, -0.03]


def real_features(dataset: StaticVideos, n: int, context: bool = True) -> np.ndarray:
    clips = torch.stack([v.float() / 255 for v in dataset.videos[:n]])
    return clips[:, (0 if context else N_CONTEXT):].double().mean(dim=(2, 3, 4)).numpy()


def test_perfect_predictions_score_zero_and_frame_metrics_do_not_change():
    class Truth(NoiseModel):
        def predict(self, context, horizon, *, num_samples=1, generator=None):
            return context[:, -1][:, None, None].expand(-1, num_samples, horizon, -1, -1, -1).clone()

    plain = run(Truth(), metrics=(PSNR,))
    with_fvd = run(Truth(), metrics=(PSNR, toy_fvd()))
    assert with_fvd.set_metrics["fvd"]["value"] == pytest.approx(0, abs=1e-8)
    assert with_fvd.summary == plain.summary  # the sample choice has its own generator


@pytest.mark.parametrize("rule", ["first", "random", "all", "best-mae"])
def test_each_sample_rule_scores_the_clips_it_names(rule):
    extractor = FrameMeans()
    dataset = StaticVideos(count=5)
    model = OffsetModel(OFFSETS)
    result = run(model, dataset, metrics=(MAE, toy_fvd(extractor)), fvd_sample=rule, seed=3, batch_size=2,
                 samples_per_call=3)
    entry = result.set_metrics["fvd"]
    real = real_features(dataset, 5)
    last = real[:, N_CONTEXT - 1: N_CONTEXT]
    steps = np.arange(1, 4)
    if rule == "all":
        offsets = np.repeat(np.array(OFFSETS)[None], 5, axis=0)  # every sample of every video
    elif rule == "best-mae":
        offsets = np.full((5, 1), -0.01)  # the smallest |offset|
    else:
        orders = torch.cat(model.orders).numpy()  # [videos, samples]: which offset each sample index got
        if rule == "first":
            chosen = np.zeros(5, int)
        else:
            gen = torch.Generator().manual_seed(3 + set_metrics.CHOICE_SEED_OFFSET)
            chosen = np.concatenate([torch.randint(4, (b,), generator=gen).numpy() for b in (2, 2, 1)])
        offsets = np.array(OFFSETS)[orders[np.arange(5), chosen]][:, None]
    futures = last[:, None, :] + offsets[:, :, None] * steps  # [videos, k, horizon]
    fake = np.concatenate([np.repeat(real[:, None, :N_CONTEXT], futures.shape[1], axis=1), futures], axis=2)
    fake = fake.reshape(-1, real.shape[1])
    assert entry["num_real"] == 5 and entry["num_fake"] == len(fake)
    assert entry["value"] == pytest.approx(stats_of(real).distance(stats_of(fake)), rel=1e-6, abs=1e-9)
    assert entry["sample"] == rule and entry["frames"] == real.shape[1] and entry["include_context"]


def test_random_choice_is_reproducible_and_seeded():
    values = [run(NoiseModel(), metrics=(PSNR, toy_fvd()), seed=s).set_metrics["fvd"]["value"] for s in (1, 1, 2)]
    assert values[0] == values[1] != values[2]


def test_conditioning_frames_can_be_left_out():
    dataset = StaticVideos(count=4, length=N_CONTEXT + 4)
    result = run(OffsetModel(OFFSETS), dataset, metrics=(MAE, toy_fvd()), horizon=4, fvd_context=False,
                 fvd_sample="best-mae")
    entry = result.set_metrics["fvd"]
    assert entry["frames"] == 4 and not entry["include_context"]
    real = real_features(dataset, 4, context=False)
    fake = real_features(dataset, 4)[:, N_CONTEXT - 1: N_CONTEXT] - 0.01 * np.arange(1, 5)
    assert entry["value"] == pytest.approx(stats_of(real).distance(stats_of(fake)), rel=1e-6)


def test_clips_shorter_than_the_extractor_needs_are_refused():
    with pytest.raises(VpkitError, match=r"FVD needs clips of at least 4 frames but scores 3 \(horizon 3\); raise "
                                         r"--horizon, or score the 2 conditioning frames too"):
        run(NoiseModel(), metrics=(PSNR, toy_fvd()), fvd_context=False)


def test_one_video_is_refused_and_few_videos_warn():
    with pytest.raises(VpkitError, match="needs at least 2 test videos"):
        run(NoiseModel(), metrics=(PSNR, toy_fvd()), num_videos=1)
    result = run(NoiseModel(), metrics=(PSNR, toy_fvd()), num_videos=3)
    assert any("3 predicted videos (fewer than 256)" in w for w in result.warnings)
    report = result.to_report()
    assert report["format"] == "vpkit-eval-card/2" and report["warnings"] == result.warnings
    assert report["set_metrics"]["fvd"]["num_fake"] == 3 and report["metrics"]["fvd"]["level"] == "set"


def test_unknown_or_unmatched_sample_rules_are_refused():
    with pytest.raises(VpkitError, match=r"Unknown --fvd-sample 'best'; choose one of random, first, all, best-psnr"):
        run(NoiseModel(), metrics=(PSNR, toy_fvd()), fvd_sample="best")
    with pytest.raises(VpkitError, match="--fvd-sample best-ssim needs ssim among the frame metrics"):
        run(NoiseModel(), metrics=(PSNR, toy_fvd()), fvd_sample="best-ssim")


def test_real_statistics_are_cached_per_dataset_frames_and_videos():
    key = {"dataset": "static", "split": "test", "config": {"count": 5}}
    first_extractor, second_extractor = FrameMeans(), FrameMeans()
    first = run(NoiseModel(), metrics=(PSNR, toy_fvd(first_extractor)), real_stats_key=key)
    second = run(NoiseModel(), metrics=(PSNR, toy_fvd(second_extractor)), real_stats_key=key)
    assert first.set_metrics["fvd"]["real_stats"]["source"] == "computed"
    assert second.set_metrics["fvd"]["real_stats"]["source"] == "cache"
    assert second.set_metrics["fvd"]["value"] == pytest.approx(first.set_metrics["fvd"]["value"], rel=1e-12)
    # The second run never ran the extractor on real clips: only the 5 predicted ones.
    assert sum(len(f) for f in first_extractor.seen) == 10 and sum(len(f) for f in second_extractor.seen) == 5
    path = second.set_metrics["fvd"]["real_stats"]["path"]
    assert "static-test-5f-1x32x32" in path
    fewer = run(NoiseModel(), metrics=(PSNR, toy_fvd()), real_stats_key=key, num_videos=4)
    assert fewer.set_metrics["fvd"]["real_stats"]["source"] == "computed"
    assert fewer.set_metrics["fvd"]["real_stats"]["path"] != path


def test_a_broken_cache_entry_is_recomputed():
    key = {"dataset": "static", "split": "test"}
    first = run(NoiseModel(), metrics=(PSNR, toy_fvd()), real_stats_key=key)
    path = first.set_metrics["fvd"]["real_stats"]["path"]
    with open(path, "wb") as file:
        file.write(b"not an npz")
    again = run(NoiseModel(), metrics=(PSNR, toy_fvd()), real_stats_key=key)
    assert again.set_metrics["fvd"]["real_stats"]["source"] == "computed"
    assert again.set_metrics["fvd"]["value"] == pytest.approx(first.set_metrics["fvd"]["value"], rel=1e-12)


def test_examples_keep_the_best_and_the_worst_sample():
    result = run(OffsetModel(OFFSETS), metrics=(MAE,), keep_examples=2)
    example = result.examples[0]
    last = example["context"][-1]
    steps = torch.arange(1, 4, dtype=torch.float32).view(3, 1, 1, 1)
    torch.testing.assert_close(example["best"]["mae"], last + (-0.01) * steps)
    torch.testing.assert_close(example["worst"]["mae"], last + 0.04 * steps)
    assert example["worst_score"]["mae"] > example["best_score"]["mae"]
    assert SIZE == example["best"]["mae"].shape[-1]
