"""The particle autoencoder DLPv2 and DDLP share: foreground (`fg_module`, official `FgDLP`) and background
(`bg_module`, official `BgDLP`) modules, the constant-prior buffers, and the encode / composite / decode procedures.

A particle is [z_p (y, x) in [-1, 1], z_s (scale logits, h and w), z_d (depth), z_t (transparency), z_f (features)];
the background is one feature vector z_bg. Encoding (official `FgDLP.encode_all`): proposals from the patch prior give
anchors; the attribute encoder reads a glimpse at each anchor (twice at the first frame: the second pass from the
refined anchor), z_p = anchor + offset; the feature encoder reads a glimpse at z_p with scale sigmoid(z_s). Decoding:
each z_f -> RGBA glimpse, pasted with the inverse STN at (z_p, sigmoid(z_s)); composited with depth weights
sigmoid(-z_d) over the decoded background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from vpkit.core.errors import VpkitError
from vpkit_ddlp.config import ParticleConfig
from vpkit_ddlp.decoders import BackgroundCNNDecoder, FeaturesToMap, GlimpseDecoder
from vpkit_ddlp.encoders import (
    ParticleAttributeEncoder,
    ParticleFeaturesEncoder,
    ParticleFilterMixer,
    PatchPrior,
)
from vpkit_ddlp.layers import (
    KeyPointCNN,
    correlation_maps,
    glimpse_size,
    init_conv_gn,
    mlp,
    spatial_transform,
    square_masks,
)
from vpkit_ddlp.memory import active, chunked

BG_MAPS = 32  # the bg encoder's keymap has 32 channels whatever K (official BgDLP ignores its n_kp_enc)
COMPOSITE_EPS = 1e-5


def check_geometry(config: ParticleConfig, frame_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(channels, image side) of `frame_shape`, or a VpkitError naming what does not fit DLP's networks."""
    channels, height, width = frame_shape
    if height != width:
        raise VpkitError(f"DLP/DDLP take square frames; the data has {height}x{width}. Resize or crop it.")
    size = height
    downsample = 2 ** (len(config.enc_channels) - 1)
    if size % config.patch_size:
        raise VpkitError(f"patch_size {config.patch_size} must divide the image side {size}.")
    if size % downsample or (size // downsample) < 8 or (size // downsample) & (size // downsample - 1):
        raise VpkitError(f"enc_channels has {len(config.enc_channels)} entries, so the background map is "
                         f"{size}/{downsample}; it must be a power of two >= 8. Change enc_channels or the image side.")
    p = glimpse_size(config.anchor_s, size)
    if p < 8 or p & (p - 1):
        raise VpkitError(f"The glimpse side round(anchor_s * (H - 1)) = {p} (anchor_s {config.anchor_s}, H {size}) "
                         "must be a power of two >= 8 (the glimpse decoder upsamples from 8x8).")
    prior_down = 2 ** (len(config.prior_channels) - 1)
    if config.patch_size % prior_down or p % prior_down:
        raise VpkitError(f"prior_channels downsample by {prior_down}; patch_size {config.patch_size} and the glimpse "
                         f"side {p} must be multiples of it.")
    num_patches = (size // config.patch_size) ** 2
    if config.filtering_heuristic != "none" and config.n_kp_enc > min(num_patches, config.n_kp_prior):
        raise VpkitError(f"n_kp_enc ({config.n_kp_enc}) particles are anchored on the kept proposals, of which there "
                         f"are min(num_patches={num_patches}, n_kp_prior={config.n_kp_prior}); lower n_kp_enc.")
    return channels, size


@dataclass
class Particles:
    """Posterior particles of one frame batch `[N, K, *]` (obj_on, obj_on_a/b `[N, K]`), with their distribution
    parameters, the anchors (`mu`: refined, with gradients; `z_base`: as used) and the feature glimpses `crops`."""

    mu: Tensor
    z_base: Tensor
    z: Tensor
    mu_offset: Tensor
    logvar_offset: Tensor
    mu_scale: Tensor
    logvar_scale: Tensor
    z_scale: Tensor
    obj_on_a: Tensor
    obj_on_b: Tensor
    obj_on: Tensor
    mu_depth: Tensor
    logvar_depth: Tensor
    z_depth: Tensor
    mu_features: Tensor
    logvar_features: Tensor
    z_features: Tensor
    crops: Tensor


class Foreground(nn.Module):
    """Official `FgDLP`: `prior`, `particle_mixer`, `particle_attribute_enc`, `particle_features_enc`, `object_dec`."""

    def __init__(self, config: ParticleConfig, cdim: int, image_size: int) -> None:
        super().__init__()
        c = config
        self.image_size, self.n_kp_enc, self.anchor_s = image_size, c.n_kp_enc, c.anchor_s
        self.num_patches = (image_size // c.patch_size) ** 2
        self.n_kp_prior = min(self.num_patches, c.n_kp_prior)
        self.filtering_heuristic = c.filtering_heuristic
        self.glimpse = glimpse_size(c.anchor_s, image_size)
        self.prior = PatchPrior(cdim, c.prior_channels, image_size, c.patch_size, pad_mode=c.pad_mode)
        if c.filtering_heuristic == "none":
            self.particle_mixer: nn.Module = ParticleFilterMixer(cdim, c.prior_channels, image_size, c.anchor_s,
                                                                 self.num_patches, c.n_kp_enc)
        else:
            self.particle_mixer = nn.Identity()
        self.particle_attribute_enc = ParticleAttributeEncoder(
            cdim, c.prior_channels, image_size, c.anchor_s, use_correlation_heatmaps=c.use_correlation_heatmaps,
            kp_activation=c.kp_activation)
        self.particle_features_enc = ParticleFeaturesEncoder(cdim, c.prior_channels, image_size, c.anchor_s,
                                                             c.learned_feature_dim)
        self.object_dec = GlimpseDecoder(self.glimpse, c.learned_feature_dim, num_chans=1 + cdim)
        init_conv_gn(self)

    # -- proposals ------------------------------------------------------------------------------------------------
    def proposals(self, x: Tensor, heuristic: str | None = None) -> Tensor:
        """Prior keypoints [N, n_kp_prior, 2] of images x [N, C, H, W] (all of them for heuristic 'none'), sorted by
        the heuristic (lowest SSM variance first for 'variance')."""
        heuristic = heuristic or self.filtering_heuristic
        kp, var = self.prior(x)
        k = self.n_kp_prior
        if heuristic == "none":
            return kp
        if heuristic == "variance":
            idx = torch.topk(var.sum(-1), k=k, dim=-1, largest=False)[1]
        elif heuristic == "distance":
            idx = torch.topk(self.prior.distance_from_centres(kp), k=k, dim=-1, largest=True)[1]
        else:
            return kp[:, torch.randperm(kp.shape[1])[:k]]
        return kp[torch.arange(kp.shape[0], device=kp.device)[:, None], idx]

    def anchors(self, x: Tensor, proposals: Tensor) -> Tensor:
        """Initial anchors: the mixer's convex combinations (heuristic 'none'), else the proposals (the first K are
        used)."""
        if self.filtering_heuristic == "none":
            return self.particle_mixer(x, proposals)
        return proposals

    # -- encoding -------------------------------------------------------------------------------------------------
    def _attributes(self, x: Tensor, anchors: Tensor, scale_logits: Tensor | None, prev_crops: Tensor | None
                    ) -> dict[str, Tensor]:
        scale = (torch.full_like(anchors, self.glimpse / x.shape[-1]) if scale_logits is None
                 else torch.sigmoid(scale_logits))
        correlation = None
        if prev_crops is not None:
            previous = prev_crops.reshape(-1, *prev_crops.shape[2:])
            correlation = lambda crops: correlation_maps(crops, previous, self.glimpse)
        return self.particle_attribute_enc(x, anchors, scale, correlation)

    def encode(self, x: Tensor, anchors: Tensor, *, deterministic: bool, warmup: bool = False, noisy: bool = False,
               prev_crops: Tensor | None = None, prev_scale: Tensor | None = None, refine: bool = False,
               noise: dict[str, Tensor] | None = None) -> Particles:
        """Official `FgDLP.encode_all` for images x [N, C, H, W] from anchors [N, >=K, 2].

        Sampling draws from the global RNG in the official order, unless `noise` (standard normals under keys `pos`,
        `scale`, `depth`, `features`, shaped like the means) is given; then transparency takes its Beta mean."""
        mu = anchors[:, : self.n_kp_enc] if anchors.shape[1] > self.n_kp_enc else anchors
        z_base = mu
        frozen = noisy or warmup
        prev = None if frozen else prev_crops
        stats = self._attributes(x, z_base.detach(), None if frozen else prev_scale, prev)
        if refine:  # a second attribute pass from the refined anchor locks on better (official refinement_iter)
            mu = z_base + stats["mu_offset"]
            z_base = mu
            if prev_scale is None:
                prev_scale = None if frozen else stats["mu_scale"].detach()
            stats = self._attributes(x, z_base.detach(), prev_scale, prev)
        mu_offset, logvar_offset = stats["mu_offset"], stats["logvar_offset"]
        mu_scale, logvar_scale = stats["mu_scale"], stats["logvar_scale"]
        mu_depth, logvar_depth = stats["mu_depth"], stats["logvar_depth"]
        mu_tot = z_base + mu_offset
        obj_on_a = stats["log_a"].exp().clamp_min(1e-5)
        obj_on_b = stats["log_b"].exp().clamp_min(1e-5)
        beta_mean = obj_on_a / (obj_on_a + obj_on_b)
        if deterministic:
            z, z_scale, z_depth, z_obj_on = mu_tot, mu_scale, mu_depth, beta_mean
        elif noise is not None:
            z = mu_tot + torch.exp(0.5 * logvar_offset) * noise["pos"]
            z_scale = mu_scale + torch.exp(0.5 * logvar_scale) * noise["scale"]
            z_depth = mu_depth + torch.exp(0.5 * logvar_depth) * noise["depth"]
            z_obj_on = beta_mean
        else:  # training: the official draw order (the offset draw is unused, as official)
            z = mu_tot + torch.exp(0.5 * logvar_offset) * torch.randn_like(mu_tot)
            torch.randn_like(mu_offset)
            z_scale = mu_scale + torch.exp(0.5 * logvar_scale) * torch.randn_like(mu_scale)
            z_depth = mu_depth + torch.exp(0.5 * logvar_depth) * torch.randn_like(mu_depth)
            z_obj_on = torch.distributions.Beta(obj_on_a, obj_on_b).rsample()
        if noisy:  # scales pinned near the glimpse size during the warm-up and noisy epochs
            logit = float(np.log(self.anchor_s / (1 - self.anchor_s + 1e-5)))
            z_scale = 0.0 * z_scale + (logit + 0.1 * torch.randn_like(z_scale))
        if warmup:
            z_base, z, z_scale = z_base.detach(), z.detach(), z_scale.detach()
        mu_f, logvar_f, crops = self.particle_features_enc(x, z, torch.sigmoid(z_scale.detach()))
        if deterministic:
            z_f = mu_f
        else:
            eps = noise["features"] if noise is not None else torch.randn_like(mu_f)
            z_f = mu_f + torch.exp(0.5 * logvar_f) * eps
        return Particles(mu, z_base, z, mu_offset, logvar_offset, mu_scale, logvar_scale, z_scale, obj_on_a,
                         obj_on_b, z_obj_on, mu_depth, logvar_depth, z_depth, mu_f, logvar_f, z_f, crops)

    # -- decoding -------------------------------------------------------------------------------------------------
    def decode(self, z: Tensor, z_scale: Tensor, z_features: Tensor, obj_on: Tensor, z_depth: Tensor, *,
               noisy: bool = False, alpha_noise: Tensor | None = None) -> dict[str, Tensor]:
        """Glimpses [N, K, 1+C, P, P], the composited foreground [N, C, H, W], the background weight `bg_mask`
        [N, 1, H, W] and per-particle masks `alpha_masks` [N, K, 1, H, W] (official `FgDLP.decode_all`).
        `noisy` adds 0.1 x standard normals to the alpha canvases: `alpha_noise` [N, K, 1, H, W], else drawn here."""
        n, k = z.shape[:2]
        glimpses = self.object_dec(z_features).view(n, k, self.object_dec.num_chans, self.glimpse, self.glimpse)
        placed = spatial_transform(glimpses.reshape(n * k, *glimpses.shape[2:]), z.reshape(-1, 2),
                                   torch.sigmoid(z_scale).reshape(-1, 2), (self.image_size, self.image_size),
                                   inverse=True)
        placed = placed.view(n, k, *placed.shape[1:]).clamp(0.0, 1.0)  # the STN can leave [0, 1]
        alpha, rgb = placed[:, :, :1], placed[:, :, 1:]
        if noisy:
            alpha = (alpha + 0.1 * (torch.randn_like(alpha) if alpha_noise is None else alpha_noise)).clamp(0.0, 1.0)
        alpha = obj_on[:, :, None, None, None] * alpha
        weight = alpha * torch.sigmoid(-z_depth[:, :, :, None, None])
        weight = weight / (weight.sum(1, keepdim=True) + COMPOSITE_EPS)
        fg = (alpha * rgb * weight).sum(1)  # alpha enters twice (weight and premultiplied colour), as official
        return {"glimpses": glimpses, "fg": fg, "bg_mask": 1.0 - (weight * alpha).sum(1),
                "alpha_masks": weight * alpha}


class Background(nn.Module):
    """Official `BgDLP`: `bg_cnn_enc` (32 keymaps), `bg_enc` MLP -> (mu, logvar); `latent_to_feat_map` + `dec`."""

    def __init__(self, config: ParticleConfig, cdim: int, image_size: int) -> None:
        super().__init__()
        c = config
        map_size = image_size // 2 ** (len(c.enc_channels) - 1)
        self.bg_cnn_enc = KeyPointCNN(cdim, c.enc_channels, image_size, BG_MAPS, pad_mode=c.pad_mode)
        self.bg_enc = mlp(BG_MAPS * map_size ** 2, 256, 256, 2 * c.bg_features_dim)
        self.latent_to_feat_map = FeaturesToMap(map_size, c.bg_features_dim, pad_mode=c.pad_mode)
        self.dec = BackgroundCNNDecoder(cdim, c.enc_channels, pad_mode=c.pad_mode)
        init_conv_gn(self)

    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        _, maps = self.bg_cnn_enc(x * mask)
        return self.bg_enc(maps.reshape(x.shape[0], -1)).chunk(2, -1)

    def decode(self, z_bg: Tensor) -> Tensor:
        return self.dec(self.latent_to_feat_map(z_bg))


def _unshare(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: clone tensors already listed under another key (the official duplicate registrations), so
    the dict can be written to safetensors, which refuses shared memory."""
    seen: set[tuple[int, int]] = set()
    for key, value in state_dict.items():
        if isinstance(value, Tensor) and value.device.type != "meta":
            ident = (value.untyped_storage().data_ptr(), value.storage_offset())
            if ident in seen:
                state_dict[key] = value.clone()
            seen.add(ident)


class ParticleModel(nn.Module):
    """Root buffers (the constant priors) + `fg_module` + `bg_module`, and the procedures on particles."""

    def __init__(self, config: ParticleConfig, frame_shape: tuple[int, int, int]) -> None:
        super().__init__()
        cdim, size = check_geometry(config, frame_shape)
        self.cdim, self.image_size = cdim, size
        c = config
        self.register_buffer("logvar_kp", torch.log(torch.tensor(c.sigma ** 2)))
        logit = np.log(0.75 * c.anchor_s / (1 - 0.75 * c.anchor_s + 1e-5))
        self.register_buffer("mu_scale_prior", torch.tensor(logit))  # float64, as official (np.float64 scalar)
        self.register_buffer("logvar_scale_p", torch.log(torch.tensor(c.scale_std ** 2)))
        self.register_buffer("logvar_offset_p", torch.log(torch.tensor(c.offset_std ** 2)))
        self.register_buffer("obj_on_a_p", torch.tensor(c.obj_on_alpha))
        self.register_buffer("obj_on_b_p", torch.tensor(c.obj_on_beta))
        self.fg_module = Foreground(c, cdim, size)
        self.bg_module = Background(c, cdim, size)
        self.memory_chunk = c.memory_chunk
        self._register_state_dict_hook(_unshare)

    @property
    def glimpse(self) -> int:
        return self.fg_module.glimpse

    def bg_encoder_mask(self, z: Tensor, obj_on: Tensor) -> Tensor:
        """Official `get_bg_mask_from_particle_glimpses`: 1 - clamp(sum_k z_t,k * square_k), fixed-size squares of the
        glimpse side at the (detached) positions [N, K, 2]; obj_on [N, K] detached."""
        squares = square_masks(z.detach(), self.glimpse, self.image_size).clamp(0.0, 1.0)
        squares = squares * obj_on[:, :, None, None, None].detach()
        return 1 - squares.squeeze(2).sum(1, keepdim=True).clamp(0.0, 1.0)

    def encode_background(self, x: Tensor, z: Tensor, obj_on: Tensor, *, deterministic: bool,
                          noise: Tensor | None = None, chunk: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(mu_bg, logvar_bg, z_bg) of images x [N, C, H, W] masked around the particles (the CNN `chunk` images at
        a time under recomputation when `chunk` > 0 and autograd records)."""
        mu_bg, logvar_bg = chunked(self.bg_module.encode, chunk, x, self.bg_encoder_mask(z, obj_on))
        if deterministic:
            return mu_bg, logvar_bg, mu_bg
        eps = noise if noise is not None else torch.randn_like(mu_bg)
        return mu_bg, logvar_bg, mu_bg + torch.exp(0.5 * logvar_bg) * eps

    def decode_foreground(self, z: Tensor, z_scale: Tensor, z_features: Tensor, obj_on: Tensor, z_depth: Tensor, *,
                          noisy: bool) -> dict[str, Tensor]:
        """`Foreground.decode` of particles [N, K, *] for training. With `memory_chunk` > 0 (and autograd on) it runs
        that many images at a time under recomputation, the noisy phase's alpha noise drawn up front exactly as the
        whole-batch decode draws it, and leaves out `alpha_masks` (the per-particle full-resolution canvases)."""
        chunk = self.memory_chunk
        if not active(chunk):
            return self.fg_module.decode(z, z_scale, z_features, obj_on, z_depth, noisy=noisy)
        noise = None
        if noisy:
            side = self.image_size
            noise = torch.randn(*z.shape[:2], 1, side, side, dtype=z.dtype, device=z.device)

        def foreground(z, z_scale, z_features, obj_on, z_depth, noise):
            out = self.fg_module.decode(z, z_scale, z_features, obj_on, z_depth, noisy=noisy, alpha_noise=noise)
            del out["alpha_masks"]
            return out

        return chunked(foreground, chunk, z, z_scale, z_features, obj_on, z_depth, noise)

    def decode_background(self, z_bg: Tensor) -> Tensor:
        """Backgrounds [N, C, H, W] of z_bg [N, F_bg] (`memory_chunk` images at a time when set, for training)."""
        return chunked(self.bg_module.decode, self.memory_chunk, z_bg)

    def decode_frames(self, z: Tensor, z_scale: Tensor, z_features: Tensor, obj_on: Tensor, z_depth: Tensor,
                      z_bg: Tensor, *, noisy: bool = False) -> dict[str, Tensor]:
        """Frames `rec` [N, C, H, W] from particles [N, K, *] and z_bg [N, F_bg] (rec = bg_mask * bg + fg), with the
        decoder's intermediate outputs."""
        out = self.fg_module.decode(z, z_scale, z_features, obj_on, z_depth, noisy=noisy)
        bg = self.bg_module.decode(z_bg)
        out["bg"] = bg
        out["rec"] = out["bg_mask"] * bg + out["fg"]
        return out


def warmup_logvar() -> float:
    """log(0.1^2) as the official float32 tensor holds it: the offset/scale prior log-variance of the warm-up and
    noisy epochs."""
    return float(torch.log(torch.tensor(0.1 ** 2)))
