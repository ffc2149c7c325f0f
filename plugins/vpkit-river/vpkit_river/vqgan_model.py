"""`river-vqgan`: the taming/LDM VQGAN as a vpkit model, trained as taming-transformers trains it (`VQModel` +
`VQLPIPSWithDiscriminator`) through the trainer's manual-optimisation path.

One training step = taming's two optimiser passes on the same batch (every frame of the clip, in [-1, 1]):
1. generator: x_rec = decoder(post_quant_conv(quantise(quant_conv(encoder(x))))); nll = mean(|x - x_rec| +
   perceptual_weight LPIPS(x, x_rec)); g = -mean(D(x_rec)); the adaptive weight
   lambda = disc_weight clamp(|grad nll| / (|grad g| + 1e-4), 0, 1e4) from the gradients at the decoder's last
   layer (`decoder.conv_out.weight`); loss = nll + lambda factor g + codebook_weight q_loss, factor = disc_factor
   from step `disc_start` on (0 before). Adam on the autoencoder; the discriminator takes no gradient (Lightning's
   toggle_optimizer).
2. discriminator: the clip is reconstructed again with the updated autoencoder (Lightning calls training_step once
   per optimiser), loss = factor hinge(D(x), D(x_rec)) (or the softplus "vanilla" loss). Adam on D.
Both Adams use lr = base_lr x batch size (taming main.py) and betas (0.5, 0.9).

LPIPS (VGG16 trunk, v0.1 linear layers) comes from vpkit's LPIPS metric plumbing: torchvision's
vgg16-397923af.pth from `lpips_backbone` or torchvision's cache, the linear layers from the `lpips` package. It is
frozen and kept out of the state dict (taming stores it under `loss.perceptual_loss.*`; those keys are not trained
and are dropped on import). Without the file, `perceptual_weight > 0` fails when training starts with the file's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vpkit.core.errors import VpkitError
from vpkit.core.model import (
    Backend,
    ExportPlan,
    Optimization,
    StepOutput,
    TrainContext,
    VideoPredictor,
)
from vpkit_river.vqgan import (
    AUTOENCODER_PARTS,
    NLayerDiscriminator,
    VQGANCodec,
    add_autoencoder,
)
from vpkit_river.vqgan_config import VQGANConfig
from vpkit_river.vqvae import autoencoder_graphs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vpkit.core.config import TrainConfig


def hinge_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


DISC_LOSSES = {"hinge": hinge_loss, "vanilla": vanilla_loss}


class VQGANLoss(nn.Module):
    """Holds the trained part of taming's `VQLPIPSWithDiscriminator` (`discriminator`, keys
    `loss.discriminator.main.*`); the frozen LPIPS network is held outside the module tree."""

    def __init__(self, config: VQGANConfig, channels: int) -> None:
        super().__init__()
        self.discriminator = NLayerDiscriminator(channels, config.disc_ndf, config.disc_num_layers)


def load_lpips(config: VQGANConfig) -> nn.Module:
    """The frozen LPIPS VGG network (errors name the missing torchvision file)."""
    from vpkit.plugins.metrics.lpips import build_lpips_model, load_backbone_state

    try:
        state = load_backbone_state(config.lpips_backbone, "vgg")
    except VpkitError as exc:
        raise VpkitError(f"river-vqgan's perceptual loss (perceptual_weight={config.perceptual_weight}): {exc} "
                         "Set it with --set model.lpips_backbone=PATH, or train without it: "
                         "--set model.perceptual_weight=0.") from None
    return build_lpips_model(state, "vgg")


class RiverVQGAN(VQGANCodec, VideoPredictor):
    """The VQGAN (`encoder`, `decoder`, `quantize`, `quant_conv`, `post_quant_conv`) and its discriminator
    (`loss.discriminator`), keys as taming's Lightning checkpoints. As a "predictor" it repeats the reconstruction
    of the last context frame, so the trainer's samples and validation show the reconstruction quality."""

    def __init__(self, config: VQGANConfig, frame_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = frame_shape
        f = config.down_factor
        if height % f or width % f:
            raise VpkitError(f"river-vqgan down-samples by {f} (ch_mult {list(config.ch_mult)}); frames of "
                             f"{height}x{width} are not divisible by it. Resize the data or change ch_mult.")
        self.config = config
        self.frame_shape = (channels, height, width)
        add_autoencoder(self, config, channels)
        self.loss = VQGANLoss(config, channels)
        self._held: dict[str, Any] = {"optimizers": None, "lpips": None}  # not submodules: kept out of the state

    # -- parts ------------------------------------------------------------------------------------------------------
    def autoencoder_parameters(self) -> list[nn.Parameter]:
        """The generator's parameters (taming's opt_ae: encoder, decoder, quantize, quant_conv, post_quant_conv)."""
        return [p for name, p in self.named_parameters() if name.startswith(AUTOENCODER_PARTS)]

    def perceptual(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS(x, y) per frame `[N, 1, 1, 1]` for frames in [-1, 1] (grey repeated to three channels)."""
        if self._held["lpips"] is None:
            self._held["lpips"] = load_lpips(self.config)
        lpips = self._held["lpips"].to(x.device)
        lpips.lins.train(self.config.lpips_dropout and self.training)  # taming quirk, off by default
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return lpips(x, y)

    # -- training ---------------------------------------------------------------------------------------------------
    def adaptive_weight(self, nll: Tensor, g_loss: Tensor) -> Tensor:
        """disc_weight x |grad nll| / (|grad g| + 1e-4), clamped to [0, 1e4], at `decoder.conv_out.weight`."""
        last = self.decoder.conv_out.weight
        nll_grad = torch.autograd.grad(nll, last, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        weight = torch.norm(nll_grad) / (torch.norm(g_grad) + 1e-4)
        return torch.clamp(weight, 0.0, 1e4).detach() * self.config.disc_weight

    def generator_loss(self, frames: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 1 (taming optimizer_idx 0) on frames in [-1, 1]: the loss and its parts."""
        c = self.config
        recon, q_loss, codes = self.reconstruct(frames)
        full = torch.promote_types(recon.dtype, torch.float32)  # float32 under autocast, float64 stays
        recon, target = recon.to(full), frames.to(full)
        l1 = (target - recon).abs()
        p_loss = self.perceptual(target, recon).to(full) if c.perceptual_weight > 0 else recon.new_zeros(())
        nll = (l1 + c.perceptual_weight * p_loss).mean()
        self.loss.discriminator.requires_grad_(False)  # Lightning's toggle_optimizer
        try:
            g_loss = -self.loss.discriminator(recon).to(full).mean()
        finally:
            self.loss.discriminator.requires_grad_(True)
        factor = c.disc_factor if step >= c.disc_start else 0.0
        d_weight = self.adaptive_weight(nll, g_loss) if self.training and torch.is_grad_enabled() \
            else torch.zeros((), device=nll.device)
        loss = nll + d_weight * factor * g_loss + c.codebook_weight * q_loss.to(full).mean()
        usage = codes.unique().numel() / c.n_embed
        return loss, {"nll": nll.detach(), "rec": l1.mean().detach(), "p_loss": p_loss.detach().mean(),
                      "quant": q_loss.detach(), "d_weight": d_weight.detach(), "disc_factor": torch.tensor(factor),
                      "g_loss": g_loss.detach(), "codebook_usage": torch.tensor(usage)}

    def discriminator_loss(self, frames: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Phase 2 (taming optimizer_idx 1): the frames reconstructed again (no gradient reaches the autoencoder)
        against the real ones."""
        c = self.config
        with torch.no_grad():
            recon, _, _ = self.reconstruct(frames)
        logits_real = self.loss.discriminator(frames.detach())
        logits_fake = self.loss.discriminator(recon.detach())
        full = torch.promote_types(logits_real.dtype, torch.float32)
        factor = c.disc_factor if step >= c.disc_start else 0.0
        loss = factor * DISC_LOSSES[c.disc_loss](logits_real.to(full), logits_fake.to(full))
        return loss, {"disc_loss": loss.detach(), "logits_real": logits_real.detach().mean(),
                      "logits_fake": logits_fake.detach().mean()}

    def training_step(self, video: Tensor, ctx: TrainContext) -> StepOutput:
        """Both phases on every frame of `video`, each back-propagated with `ctx.backward` and stepped with
        `ctx.optimizer_step` (when `configure_optimizers` ran; otherwise only the gradients are left, e.g. for
        the conformance checks; under no_grad both phases only run forward). Returns the generator loss; logs both
        phases."""
        frames = video.flatten(0, 1) * 2 - 1
        optimizers = self._held["optimizers"]
        learn = torch.is_grad_enabled()  # under no_grad (e.g. statistics-only passes) both phases only forward
        g_loss, logs = self.generator_loss(frames, ctx.step)
        if learn:
            ctx.backward(g_loss)
            if optimizers is not None:
                ctx.optimizer_step(optimizers[0])
        d_loss, d_logs = self.discriminator_loss(frames, ctx.step)
        if learn:
            ctx.backward(d_loss)
            if optimizers is not None:
                ctx.optimizer_step(optimizers[1])
        return StepOutput(g_loss.detach(), {**logs, **d_logs})

    def configure_optimizers(self, train: TrainConfig | None = None) -> Optimization:
        """Adam for the autoencoder and Adam for the discriminator (taming: lr = base_lr x batch, betas (0.5, 0.9)),
        stepped by hand. Loads LPIPS now when `perceptual_weight > 0`, so a missing file fails before training."""
        c = self.config
        if c.perceptual_weight > 0 and self._held["lpips"] is None:
            self._held["lpips"] = load_lpips(c)
        batch = train.batch_size if (train is not None and c.scale_lr) else 1
        lr = c.base_lr * batch
        optimizers = [torch.optim.Adam(self.autoencoder_parameters(), lr=lr, betas=c.betas),
                      torch.optim.Adam(self.loss.discriminator.parameters(), lr=lr, betas=c.betas)]
        self._held["optimizers"] = optimizers
        return Optimization(optimizers, manual=True)

    # -- sampling ---------------------------------------------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        return False

    def noise_shapes(self, batch: int, n_context: int, horizon: int) -> dict[str, tuple[int, ...]]:
        return {}

    def export_plan(self) -> ExportPlan:
        """Graphs `encode` (frames -> pre-quantisation latents) and `decode` (latents -> quantised -> frames)."""
        param = next(self.parameters())
        gen = torch.Generator().manual_seed(0)
        frames = torch.rand((2, *self.frame_shape), generator=gen).to(param.device, param.dtype)
        latents = torch.randn((2, *self.latent_shape), generator=gen).to(param.device, param.dtype)
        return ExportPlan(autoencoder_graphs(self, frames, latents))  # type: ignore[arg-type]

    def rollout(self, backend: Backend, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
        """The reconstruction of the last context frame, repeated `horizon` times."""
        if horizon < 1:
            raise VpkitError(f"horizon must be at least 1; got {horizon}.")
        latents = backend.run("encode", {"frames": context[:, -1]})["latents"]
        frames = backend.run("decode", {"latents": latents})["frames"]
        return frames.unsqueeze(1).expand(-1, horizon, *frames.shape[1:]).contiguous()
