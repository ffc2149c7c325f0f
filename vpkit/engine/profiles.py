"""Metric profiles: the conventions each paper's own evaluation code uses, so `vpkit eval --profile P` reproduces
that paper's numbers. A profile sets the metric options (`psnr_reduction`, `ssim_window`, `ssim_data_range`,
`lpips_net`, `fvd_resize`), the FVD clip choice, how the table states the spread, and the default sample count.

`vpkit` is the default and the convention of vpkit's own tables: SRVP's frame metrics (the protocol most stochastic
video prediction papers since 2020 compare against) and FVD on one random sample per video with the conditioning
frames, through the TF-equivalent I3D (StyleGAN-V's TorchScript port, frames squashed to 224×224).
See peers.md §5 for how the implementations differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vpkit.core.errors import VpkitError

SRVP_FRAME_METRICS = {"psnr_reduction": "channel-mean", "ssim_window": "gaussian", "ssim_data_range": 1.0,
                      "lpips_net": "alex"}
TF_FVD = {"fvd_resize": "squash"}


@dataclass(frozen=True)
class Profile:
    """One evaluation convention. `spread` is what the table prints after each mean: "ci95" (1.96·σ/√n over
    videos), "std" (std over every (video, frame) score) or None (the mean alone). `num_samples` is the default
    for `--samples` (None: vpkit's 100)."""

    name: str
    description: str
    reference: str
    options: dict[str, Any] = field(default_factory=dict)
    fvd_context: bool = True
    fvd_sample: str = "random"
    spread: str | None = "ci95"
    num_samples: int | None = None

    def card(self) -> dict[str, Any]:
        """What the eval card records about the profile."""
        return asdict(self)


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        name="vpkit",
        description="vpkit's own tables: SRVP's frame metrics, FVD on one random sample per video with the "
                    "conditioning frames",
        reference="vpkit (SRVP test.py frame metrics; StyleGAN-V/TF FVD)",
        options={**SRVP_FRAME_METRICS, **TF_FVD},
    ),
    Profile(
        name="srvp",
        description="SRVP and SLAMP: best of N per video and metric, per-channel PSNR, Gaussian SSIM, LPIPS alex; "
                    "FVD on the first sample with the conditioning frames",
        reference="edouardelasalles/srvp test.py, metrics/ssim.py, metrics/fvd",
        options={**SRVP_FRAME_METRICS, **TF_FVD},
        fvd_sample="first",  # srvp test.py scores samples['random_1'], the first sample drawn
    ),
    Profile(
        name="svg",
        description="SVG's eval_seq: skimage PSNR per channel (range 1) and skimage's default SSIM (uniform 7×7, "
                    "range 2); LPIPS and FVD as SRVP, since SVG reports neither",
        reference="edenton/svg utils.py eval_seq (skimage.measure.compare_ssim / compare_psnr)",
        # compare_ssim on float frames without data_range: skimage took the float dtype range [-1, 1], i.e. 2
        options={**SRVP_FRAME_METRICS, "ssim_window": "uniform", "ssim_data_range": 2.0, **TF_FVD},
        fvd_sample="first",
    ),
    Profile(
        name="ddlp",
        description="DDLP's eval_gen_metrics.py: deterministic rollouts, piqa PSNR over the frame, Gaussian SSIM, "
                    "LPIPS VGG; mean ± std over every (video, frame); FVD as vpkit (DDLP reports none)",
        reference="taldatech/ddlp eval/eval_gen_metrics.py (piqa SSIM, PSNR, LPIPS(network='vgg'))",
        options={**SRVP_FRAME_METRICS, "psnr_reduction": "frame", "lpips_net": "vgg", **TF_FVD},
        spread="std",
        num_samples=1,
    ),
    Profile(
        name="openstl",
        description="OpenSTL's metrics.py: deterministic, PSNR over the frame, skimage's default SSIM "
                    "(range 2), LPIPS alex, plain means; FVD as vpkit (OpenSTL reports none)",
        reference="chengtan9907/OpenSTL openstl/core/metrics.py",
        # structural_similarity(..., multichannel=True) on float frames without data_range: skimage assumed 2
        options={**SRVP_FRAME_METRICS, "psnr_reduction": "frame", "ssim_window": "uniform",
                 "ssim_data_range": 2.0, **TF_FVD},
        spread=None,
        num_samples=1,
    ),
)}
DEFAULT_PROFILE = "vpkit"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise VpkitError(f"Unknown metric profile {name!r}; choose one of {', '.join(PROFILES)} "
                         f"(default {DEFAULT_PROFILE}).") from None
