"""The Fréchet distance between two Gaussians fitted to feature sets (the math under FVD and FID).

    d² = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½

computed in float64. The trace of the matrix square root is taken from the eigenvalues of the symmetric PSD matrix
`Σ₁^½ Σ₂ Σ₁^½` (same trace as `sqrtm(Σ₁ Σ₂)`), so there is no complex round-off to discard and no need for the
`eps·I` retry that `scipy.linalg.sqrtm`-based code uses. `FeatureStats` accumulates mean and covariance over any
number of batches (the whole test set, never per batch) without keeping the features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues clipped to 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape}")
    root = _psd_sqrt(sigma1)
    inner = root @ sigma2 @ root
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    # The distance is ≥ 0; equal near-singular sets can land a few ulps below after the square roots.
    return max(0.0, float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt))


@dataclass
class FeatureStats:
    """Mean and unbiased covariance (as `np.cov`) of every feature vector `[n, d]` added, in float64.

    Batches are merged with Chan et al.'s pairwise update of (count, mean, centred scatter), so large feature means
    do not cancel the covariance out as the textbook `E[xxᵀ] − μμᵀ` does."""

    dim: int
    count: int = 0
    mean: np.ndarray = field(init=False)
    scatter: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.dim, np.float64)
        self.scatter = np.zeros((self.dim, self.dim), np.float64)

    def add(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be [n, {self.dim}]; got {features.shape}")
        n = features.shape[0]
        if n == 0:
            return
        batch_mean = features.mean(axis=0)
        centred = features - batch_mean
        delta = batch_mean - self.mean
        total = self.count + n
        self.scatter += centred.T @ centred + np.outer(delta, delta) * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors; have {self.count}")
        return self.scatter / (self.count - 1)

    def distance(self, other: FeatureStats) -> float:
        """Fréchet distance between the Gaussians fitted to `self` and `other`."""
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)

    def save(self, path: Path) -> None:
        """Write the statistics to an `.npz` (e.g. a cache of real-data statistics)."""
        np.savez(path, dim=self.dim, count=self.count, mean=self.mean, scatter=self.scatter)

    @classmethod
    def load(cls, path: Path) -> FeatureStats:
        with np.load(path) as data:
            stats = cls(int(data["dim"]), int(data["count"]))
            stats.mean, stats.scatter = data["mean"].astype(np.float64), data["scatter"].astype(np.float64)
        return stats
