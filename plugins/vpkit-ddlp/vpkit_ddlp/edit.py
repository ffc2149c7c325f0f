"""What-if editing of DDLP particles (reference §8, the official notebook and GUI): encode the conditioning frames to
particles, edit some particles in every conditioning frame, roll PINT forward from the edited particles, decode.

Edits (each on particle k of every conditioning frame):
- move by (dy, dx) in the particles' coordinates ((y, x) in [-1, 1] across the frame, so 0.15 is 7.5% of the side);
- scale by a factor, as the official GUI's multiplier: the scale logits are divided by it, so a factor > 1 enlarges a
  particle whose glimpse is under half the frame (all of them, in practice);
- hide: transparency z_t = 0;
- shift its depth (z_d; lower is in front: the compositing weight is sigmoid(-z_d));
- swap the visual features z_f of two particles (change an object's appearance into another's).

Everything is deterministic, as the official `sample` and GUI: posterior and PINT means, transparency its Beta mean
(a model configured for stochastic sampling gets zero noise, which is the same). The DDLP docs warn that only small,
in-distribution edits roll out sensibly.

Also here: `encode_video` for DLPv2 and DDLP checkpoints and `draw_particles`, which numbers the particles and draws
their glimpse windows on the frames so a user can pick what to edit (`vpkit ddlp particles`).
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from vpkit.core.errors import VpkitError
from vpkit.core.model import Backend, TorchBackend
from vpkit_ddlp.dlp import PARTICLE_NAMES


@dataclass(frozen=True)
class ParticleEdit:
    """Edits of particle `particle` (move / scale / hide / depth) and/or a feature swap between two particles.
    Applied in this order: features swapped, then moved, scaled, depth-shifted, hidden."""

    particle: int | None = None
    move: tuple[float, float] | None = None
    scale: float | None = None
    hide: bool = False
    depth: float | None = None
    swap_features: tuple[int, int] | None = None

    def check(self, num_particles: int) -> None:
        """A VpkitError naming what is wrong for a model of `num_particles` particles."""
        targets = self.move is not None or self.scale is not None or self.hide or self.depth is not None
        if targets and self.particle is None:
            raise VpkitError("--move, --scale, --hide and --depth edit one particle: choose it with --particle K "
                             "(`vpkit ddlp particles CKPT VIDEO` draws their numbers).")
        if not targets and self.swap_features is None:
            raise VpkitError("Nothing to edit: give --move DY,DX, --scale F, --hide, --depth D or "
                             "--swap-features A:B.")
        for index in ([self.particle] if targets else []) + list(self.swap_features or ()):
            if not 0 <= index < num_particles:
                raise VpkitError(f"Particle {index} does not exist: the model has {num_particles} particles, "
                                 f"numbered 0 to {num_particles - 1} (`vpkit ddlp particles CKPT VIDEO` draws them).")
        if self.scale is not None and not self.scale > 0:
            raise VpkitError(f"--scale must be a positive factor (1 keeps the size); got {self.scale}.")
        if self.swap_features is not None and self.swap_features[0] == self.swap_features[1]:
            raise VpkitError(f"--swap-features needs two different particles; got {self.swap_features[0]} twice.")


def parse_move(text: str) -> tuple[float, float]:
    """'DY,DX' -> (dy, dx)."""
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        dy, dx = float(parts[0]), float(parts[1])
    except ValueError:
        raise VpkitError(f"--move takes DY,DX: two numbers in the particles' coordinates ((y, x) in [-1, 1] across "
                         f"the frame), e.g. --move 0.15,0 moves down by 7.5% of the frame; got {text!r}.") from None
    if not (np.isfinite(dy) and np.isfinite(dx)):
        raise VpkitError(f"--move needs finite numbers; got {text!r}.")
    return dy, dx


def parse_swap(text: str) -> tuple[int, int]:
    """'A:B' -> (a, b)."""
    parts = text.replace(" ", "").split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise VpkitError(f"--swap-features takes A:B, two particle numbers, e.g. --swap-features 3:7; "
                         f"got {text!r}.") from None


def apply_edits(particles: Mapping[str, Tensor], edits: Sequence[ParticleEdit]) -> dict[str, Tensor]:
    """Edited copies of `particles` `{name: [B, T0, K, ...]}` (z_bg `[B, T0, F_bg]`): every frame gets each edit."""
    out = {name: value.clone() for name, value in particles.items()}
    num = out["z"].shape[2]
    for edit in edits:
        edit.check(num)
        if edit.swap_features is not None:
            a, b = edit.swap_features
            feats = out["z_features"]
            feats[:, :, [a, b]] = feats[:, :, [b, a]].clone()
        k = edit.particle
        if edit.move is not None:
            out["z"][:, :, k] += out["z"].new_tensor(edit.move)
        if edit.scale is not None:
            out["z_scale"][:, :, k] /= edit.scale  # official GUI: logit / multiplier
        if edit.depth is not None:
            out["z_depth"][:, :, k] += edit.depth
        if edit.hide:
            out["obj_on"][:, :, k] = 0.0
    return out


# -- running the model ------------------------------------------------------------------------------------------------


def particle_backend(model) -> Backend:
    """The model's graphs, eagerly, in eval mode."""
    plan = model.export_plan()
    for graph in plan.graphs.values():
        graph.module.eval()
    return TorchBackend(plan)


def _zero_noise(model, batch: int, n_context: int, horizon: int, like: Tensor) -> dict[str, Tensor]:
    return {name: like.new_zeros(shape) for name, shape in model.noise_shapes(batch, n_context, horizon).items()}


def _require_ddlp(model) -> None:
    from vpkit_ddlp.ddlp import DDLP

    if not isinstance(model, DDLP):
        raise VpkitError(f"What-if editing rolls particles out with DDLP's dynamics; this is a "
                         f"{type(model).__name__} model (DLPv2 has none). Use a `ddlp` checkpoint.")


@torch.no_grad()
def encode_video(model, frames: Tensor, backend: Backend | None = None) -> dict[str, Tensor]:
    """Deterministic particles of `frames` [B, T, C, H, W]: `{name: [B, T, ...]}` for `PARTICLE_NAMES`. DDLP tracks
    the particles from frame to frame (its sampling path); DLPv2 encodes each frame alone."""
    from vpkit_ddlp.ddlp import DDLP

    backend = backend or particle_backend(model)
    batch, length = frames.shape[:2]
    if isinstance(model, DDLP):
        return model.encode_context(backend, frames, _zero_noise(model, batch, length, 1, frames))
    out = backend.run("encode", {"frame": frames.flatten(0, 1)})
    return {name: out[name].view(batch, length, *out[name].shape[1:]) for name in PARTICLE_NAMES}


@dataclass
class WhatIf:
    """One what-if rollout: conditioning particles before/after the edits, their reconstructions
    `[B, T0, C, H, W]` and the predicted futures `[B, horizon, C, H, W]` from each."""

    particles: dict[str, Tensor]
    edited_particles: dict[str, Tensor]
    context: Tensor
    edited_context: Tensor
    original: Tensor
    edited: Tensor
    edits: list[ParticleEdit] = field(default_factory=list)


@torch.no_grad()
def what_if(model, context: Tensor, edits: Sequence[ParticleEdit], horizon: int,
            backend: Backend | None = None) -> WhatIf:
    """Encode `context` [B, T0, C, H, W], apply `edits` to every conditioning frame, and roll both the original and
    the edited particles `horizon` PINT steps forward (in one batch)."""
    _require_ddlp(model)
    if horizon < 1:
        raise VpkitError(f"--horizon must be at least 1; got {horizon}.")
    num = model.config.n_kp_enc
    for edit in edits:
        edit.check(num)
    backend = backend or particle_backend(model)
    batch, n_context = context.shape[:2]
    particles = encode_video(model, context, backend)
    edited = apply_edits(particles, edits)
    both = {name: torch.cat([particles[name], edited[name]]) for name in PARTICLE_NAMES}
    noise = _zero_noise(model, 2 * batch, n_context, horizon, context)
    future = model.roll_particles(backend, both, horizon, noise)
    frames = model.decode_particles(backend, {name: torch.cat([both[name], future[name]], 1)
                                              for name in PARTICLE_NAMES})
    recon, predicted = frames[:, :n_context], frames[:, n_context:]
    return WhatIf(particles, edited, recon[:batch], recon[batch:], predicted[:batch], predicted[batch:], list(edits))


# -- drawing ----------------------------------------------------------------------------------------------------------


def particle_colours(num: int) -> list[tuple[int, int, int]]:
    """`num` well-separated colours (golden-ratio hues), one per particle index."""
    colours = []
    for k in range(num):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.85, 1.0)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours


def particle_boxes(z: Tensor, z_scale: Tensor, height: int, width: int) -> np.ndarray:
    """Glimpse windows `[..., 4]` (left, top, right, bottom in pixels) of particles at z (y, x) in [-1, 1] with scale
    logits z_scale: the window is centred at z and spans sigmoid(z_scale) of the frame per axis (half-width in
    normalised units), as the decoder pastes the glimpse (align_corners=True)."""
    half = torch.sigmoid(z_scale.float())
    y, x, hy, hx = z[..., 0].float(), z[..., 1].float(), half[..., 0], half[..., 1]

    def px(v: Tensor, side: int) -> Tensor:
        return (v + 1) / 2 * (side - 1)

    return torch.stack([px(x - hx, width), px(y - hy, height), px(x + hx, width), px(y + hy, height)], -1).numpy()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw_particles(frames: np.ndarray, particles: Mapping[str, Tensor], *, upscale: int = 1,
                   min_transparency: float = 0.0) -> np.ndarray:
    """uint8 frames `[T, H, W, 3]` with each particle's number, centre and glimpse window drawn, enlarged `upscale`
    times (nearest) so the labels are legible. `particles` are one video's `{name: [T, K, ...]}`. Boxes fade with
    the transparency z_t; particles under `min_transparency` are left out."""
    from PIL import Image, ImageDraw

    length, height, width = frames.shape[:3]
    big = np.repeat(np.repeat(frames, upscale, axis=1), upscale, axis=2)
    num = particles["z"].shape[1]
    boxes = particle_boxes(particles["z"].cpu(), particles["z_scale"].cpu(), height * upscale, width * upscale)
    alpha = particles["obj_on"].float().clamp(0, 1).cpu().numpy()
    colours = particle_colours(num)
    font = _font(max(10, 4 * upscale + 6))
    out = []
    for t in range(length):
        image = Image.fromarray(big[t]).convert("RGBA")
        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for k in range(num):
            if alpha[t, k] < min_transparency:
                continue
            opacity = round(80 + 175 * float(alpha[t, k]))
            colour = (*colours[k], opacity)
            left, top, right, bottom = (float(v) for v in boxes[t, k])
            draw.rectangle([left, top, right, bottom], outline=colour, width=max(1, upscale // 2))
            cx, cy = (left + right) / 2, (top + bottom) / 2
            r = max(1.5, upscale * 0.75)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            label = str(k)
            x0, y0, x1, y1 = draw.textbbox((cx + r + 1, cy - r - 1), label, font=font)
            draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], fill=(0, 0, 0, min(opacity, 170)))
            draw.text((cx + r + 1, cy - r - 1), label, fill=(*colours[k], 255), font=font)
        out.append(np.asarray(Image.alpha_composite(image, layer).convert("RGB")))
    return np.stack(out)


def upscale_factor(side: int, target: int = 256) -> int:
    """The integer enlargement that brings a frame side to about `target` pixels (at least 1)."""
    return max(1, round(target / max(side, 1)))
