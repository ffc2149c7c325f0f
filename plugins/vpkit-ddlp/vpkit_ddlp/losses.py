"""DLP/DDLP loss terms: Gaussian and Beta KLs, the Chamfer-KL between posterior anchors and prior proposals, the
per-image reconstruction losses (MSE sum, and the VGG perceptual distance) and the dynamics ramp-up.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit.core.errors import VpkitError

VGG_LAYERS = (2, 7, 12, 21, 30)  # VGG16 `features` indices (post-ReLU conv1_2, conv2_2, conv3_2, conv4_3; pool5)
VGG_COEFF = 0.12151
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def kl_normal(mu: Tensor, logvar: Tensor, mu_p: Tensor | float = 0.0, logvar_p: Tensor | float = 0.0) -> Tensor:
    """KL(N(mu, e^logvar) || N(mu_p, e^logvar_p)) summed over the last axis (official `calc_kl`, balance 0.5)."""
    mu_p = torch.as_tensor(mu_p, device=mu.device)
    logvar_p = torch.as_tensor(logvar_p, device=mu.device)
    return -0.5 * (1 + logvar - logvar_p - logvar.exp() / logvar_p.exp() - (mu - mu_p).pow(2) / logvar_p.exp()).sum(-1)


def _log_beta(a: Tensor, b: Tensor, eps: float = 1e-5) -> Tensor:
    return torch.lgamma(a + eps) + torch.lgamma(b + eps) - torch.lgamma(a + b + eps)


def kl_beta(a: Tensor, b: Tensor, a_p: Tensor | float, b_p: Tensor | float, eps: float = 1e-5) -> Tensor:
    """Elementwise KL(Beta(a, b) || Beta(a_p, b_p)) through lgamma/digamma with the official eps 1e-5."""
    a_p, b_p = torch.as_tensor(a_p, device=a.device), torch.as_tensor(b_p, device=a.device)
    return (_log_beta(a_p, b_p) - _log_beta(a, b) + (a - a_p) * torch.digamma(a + eps)
            + (b - b_p) * torch.digamma(b + eps) + (a_p - a + b_p - b) * torch.digamma(a + b + eps))


def chamfer_kl(mu_post: Tensor, logvar_post: Tensor, mu_prior: Tensor, logvar_prior: Tensor) -> Tensor:
    """Official `ChamferLossKL`: pairwise KL [B, n_post, n_prior]; sum over priors of the min over posteriors plus sum
    over posteriors of the min over priors -> [B]."""
    lv_a, lv_b = logvar_post.unsqueeze(2), logvar_prior.unsqueeze(1)
    mu_a, mu_b = mu_post.unsqueeze(2), mu_prior.unsqueeze(1)
    pairwise = -0.5 * (1 + lv_a - lv_b - lv_a.exp() / lv_b.exp() - (mu_a - mu_b) ** 2 / lv_b.exp()).sum(-1)
    return pairwise.min(1)[0].sum(1) + pairwise.min(2)[0].sum(1)


def mse_sum(x: Tensor, rec: Tensor) -> Tensor:
    """Per-image sum of squared errors `[N]` (official `calc_reconstruction_loss(reduction='none')`)."""
    return F.mse_loss(rec.reshape(rec.shape[0], -1), x.reshape(x.shape[0], -1), reduction="none").sum(1)


class VGGDistance(nn.Module):
    """Official `VGGDistance`: per image, the raw-pixel squared-error sum plus 0.12151 x the squared feature
    differences of a frozen ImageNet VGG16 at `features` indices 2, 7, 12, 21, 30 on ImageNet-normalised inputs.
    torchvision's in-place ReLUs make the first four post-ReLU activations, as in the official code.

    The ImageNet weights are read from `weights` (torchvision's `vgg16-397923af.pth`); they are never downloaded and
    never replaced by random ones: a missing file is an error."""

    def __init__(self, weights: str | Path | None) -> None:
        super().__init__()
        try:
            from torchvision.models import vgg16
        except ImportError:
            raise VpkitError("The VGG reconstruction loss (recon_loss_type='vgg') needs torchvision: "
                             "pip install torchvision") from None
        path = self.resolve(weights)
        net = vgg16(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise VpkitError(f"{path} is not torchvision's VGG16 state dict ({str(exc).splitlines()[0]}).") from None
        self.features = net.features[: VGG_LAYERS[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def resolve(weights: str | Path | None) -> Path:
        """The VGG16 weights file: `weights`, else torchvision's cache (`$TORCH_HOME/hub/checkpoints`)."""
        candidates = [Path(weights).expanduser()] if weights else []
        if not weights:
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            candidates.append(hub / "vgg16-397923af.pth")
        for path in candidates:
            if path.is_file():
                return path
        raise VpkitError(
            f"The VGG perceptual loss needs torchvision's ImageNet VGG16 weights, and {candidates[0]} does not exist. "
            "Download https://download.pytorch.org/models/vgg16-397923af.pth and pass it as "
            "model.vgg_weights=PATH (or put it in that folder), or train with model.recon_loss_type=mse.")

    def train(self, mode: bool = True) -> VGGDistance:
        super().train(mode)
        self.features.eval()  # frozen, as official (no dropout/batchnorm in `features`, but keep it explicit)
        return self

    def _features(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG_LAYERS:
                out.append(x)
        return out

    def forward(self, x: Tensor, rec: Tensor) -> Tensor:
        """Per-image distance `[N]` between targets `x` and reconstructions `rec` [N, C, H, W] in [0, 1]."""
        loss = ((x - rec) ** 2).reshape(x.shape[0], -1).sum(1)
        x_n, rec_n = (x - self.mean) / self.std, (rec - self.mean) / self.std  # grey broadcasts to 3 channels
        for fx, fr in zip(self._features(x_n), self._features(rec_n), strict=True):
            loss = loss + VGG_COEFF * ((fr - fx) ** 2).reshape(x.shape[0], -1).sum(1)
        return loss


def dynamics_ramp(step: int, epoch_steps: int, warmup_epoch: int, horizon: int) -> list[float]:
    """Official per-step ramp d_i (train_ddlp.py): `iters_warm = max(warmup_epoch, 1) * max(10000, epoch_steps)`;
    d_i = clamp(step / ((iters_warm // T) * (i + 1)), 0, 1) for i in [0, T)."""
    iters_warm = max(warmup_epoch, 1) * max(10_000, epoch_steps)
    per_step = iters_warm // horizon
    return [min(max(step / (per_step * (i + 1)), 0.0), 1.0) for i in range(horizon)]
