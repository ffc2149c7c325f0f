"""The Fréchet distance against independent references: scipy's sqrtm formula, closed forms for Gaussians."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from vpkit.engine.frechet import FeatureStats, frechet_distance


def scipy_reference(mu1, sigma1, mu2, sigma2) -> float:
    """The formula as pytorch-fid / common FVD code write it: sqrtm of the product, real part of its trace."""
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


def random_stats(rng, dim, n):
    features = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)
    return features.mean(0), np.atleast_2d(np.cov(features, rowvar=False))


@pytest.mark.parametrize("dim", [1, 8, 64])
def test_matches_the_scipy_sqrtm_formula(dim):
    rng = np.random.default_rng(dim)
    a, b = random_stats(rng, dim, 4 * dim + 10), random_stats(rng, dim, 4 * dim + 10)
    assert frechet_distance(*a, *b) == pytest.approx(scipy_reference(*a, *b), rel=1e-8, abs=1e-8)


def test_closed_forms_for_gaussians():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == (
        pytest.approx(9.0 + 1.0))
    # commuting (diagonal) covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # a rotation of both Gaussians changes nothing
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert rotated == pytest.approx(expected)


def test_identical_and_singular_statistics():
    rng = np.random.default_rng(1)
    mu, sigma = random_stats(rng, 16, 8)  # fewer samples than dimensions: a singular covariance
    scale = np.trace(sigma)  # square roots of round-off-sized eigenvalues: error ~ sqrt(eps) relative to the traces
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-7 * scale
    assert frechet_distance(mu, sigma, mu + 1, sigma) == pytest.approx(16.0, abs=1e-7 * scale)


def test_feature_stats_over_batches_equal_numpy_on_everything():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(1000, 12)) * 0.01 + 1e4  # large mean, small spread: cancellation-prone
    stats = FeatureStats(12)
    for chunk in np.array_split(features, [1, 7, 300, 301, 999]):
        stats.add(chunk)
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(features, rowvar=False), rtol=1e-6, atol=1e-12)


def test_feature_stats_save_load_and_distance(tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 5)), rng.normal(size=(300, 5)) + 0.5
    sx, sy = FeatureStats(5), FeatureStats(5)
    sx.add(x)
    sy.add(y)
    sx.save(tmp_path / "real.npz")
    loaded = FeatureStats.load(tmp_path / "real.npz")
    expected = scipy_reference(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert loaded.distance(sy) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="features must be"):
        sx.add(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        _ = FeatureStats(3).cov
