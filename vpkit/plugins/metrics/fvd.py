"""FVD: the Fréchet distance between I3D features of real and predicted clips, over the whole test set.

The network is the TorchScript port of TF-Hub's Kinetics-400 I3D that StyleGAN-V published (`i3d_torchscript.pt`),
which gives the TF FVD to ~1e-6 (universome/fvd-comparison); its call is `detector(x, rescale, resize,
return_features=True)` on `x` `[N, 3, T, H, W]` and returns the 400 logits before the softmax. Two conventions:

- "squash" (default; TF FVD, StyleGAN-V, SRVP): frames in [0, 255] with `rescale=True, resize=True`: the module maps
  them to [-1, 1] and resizes them bilinearly to 224×224 itself;
- "crop" (VideoGPT, common_metrics_on_video_quality): the short side resized to 224 (bilinear), a centre 224×224
  crop, [0, 1] mapped to [-1, 1] here, then `rescale=False, resize=False`.

Grey frames are repeated to 3 channels. I3D's temporal convolutions and pools need at least 10 frames
(common_metrics_on_video_quality skips shorter prefixes; PredBench pads them, which we refuse to do silently).

The file comes from `--i3d PATH` or from `$VPKIT_CACHE_DIR/i3d/`, downloaded there once. No official checksum of it
is published, so the first download is checked to load and answer a probe clip, and its SHA-256 is pinned next to
it (`.sha256`); every later load verifies it. `--i3d-sha256` pins a hash you trust. The hash goes on the eval card.
"""

from __future__ import annotations

import hashlib
import math
import os
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.paths import cache_dir
from vpkit.core.specs import MetricSpec

I3D_FILE = "i3d_torchscript.pt"
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
MIN_FRAMES = 10
RESOLUTION = 224
RESIZES = ("squash", "crop")
# Input values per I3D forward pass: 16 clips of 16×224×224×3; batches of larger clips are split.
VALUES_PER_CHUNK = 16 * 16 * RESOLUTION * RESOLUTION * 3


def cached_i3d_path() -> Path:
    return cache_dir("i3d", I3D_FILE)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _missing(reason: str) -> VpkitError:
    return VpkitError(f"FVD needs the I3D network {I3D_FILE}, {reason}. Download {I3D_URL} to {cached_i3d_path()} "
                      f"(or anywhere and pass --i3d PATH).")


def _download(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as file:  # noqa: S310
            while block := response.read(1 << 20):
                file.write(block)
    except OSError as exc:  # URLError, timeouts, refused connections, a full disk
        tmp.unlink(missing_ok=True)
        raise _missing(f"which is not in the cache and could not be downloaded ({type(exc).__name__}: {exc})") from None
    os.replace(tmp, target)


def _load_module(path: Path) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            # torch ≥ 2.9 deprecates TorchScript; the published I3D exists only as a TorchScript file.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError, ValueError... for files that are not TorchScript
        raise VpkitError(f"{path} is not a TorchScript I3D ({str(exc).splitlines()[0]}); pass StyleGAN-V's "
                         f"{I3D_FILE} from {I3D_URL}.") from None
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, MIN_FRAMES, 32, 32), rescale=True, resize=True, return_features=True)
    except Exception as exc:  # a TorchScript module with another signature
        raise VpkitError(f"{path} does not answer I3D's call detector(x, rescale, resize, return_features) "
                         f"({str(exc).splitlines()[0]}); pass StyleGAN-V's {I3D_FILE}.") from None
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != 1:
        raise VpkitError(f"{path} returned {getattr(out, 'shape', type(out).__name__)} for one clip, not "
                         f"features [1, D]; pass StyleGAN-V's {I3D_FILE}.")
    return module


def load_i3d(path: Path | str | None = None, expected_sha256: str | None = None,
             url: str | None = None) -> tuple[torch.jit.ScriptModule, Path, str]:
    """The I3D module, the file it came from and its SHA-256: `path`, or the cache (downloaded from `url` once)."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise _missing(f"but the --i3d file {path} does not exist")
        digest = sha256_of(path)
    else:
        path = cached_i3d_path()
        pin = path.with_name(path.name + ".sha256")
        if not path.is_file():
            _download(url or I3D_URL, path)
            digest = sha256_of(path)
            try:
                _load_module(path)
            except VpkitError as exc:
                path.unlink(missing_ok=True)
                raise VpkitError(f"The downloaded {I3D_FILE} is not the I3D network ({exc}); download it by hand "
                                 f"from {I3D_URL} to {path}.") from None
            pin.write_text(digest + "\n")
        else:
            digest = sha256_of(path)
            pinned = pin.read_text().strip() if pin.is_file() else None
            if pinned is not None and pinned != digest:
                raise VpkitError(f"The cached {path} changed since it was downloaded (SHA-256 {digest[:12]}… not "
                                 f"{pinned[:12]}…): it is truncated or corrupt. Delete it to download it again, or "
                                 f"put {I3D_URL} there by hand.")
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise VpkitError(f"{path} has SHA-256 {digest}, not the --i3d-sha256 {expected_sha256}.")
    return _load_module(path), path, digest


class I3DFeatures:
    """Callable `videos [N, T, C, H, W] in [0, 1] -> features [N, D]` (float64, CPU) through I3D in chunks."""

    min_frames = MIN_FRAMES

    def __init__(self, module: torch.jit.ScriptModule, *, path: Path | str = "", sha256: str = "",
                 resize: str = "squash", device: str | torch.device = "cpu") -> None:
        if resize not in RESIZES:
            raise VpkitError(f"Unknown fvd_resize {resize!r}; choose one of {', '.join(RESIZES)}.")
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.resize = resize
        self.identity = f"i3d:{sha256[:16]}:{resize}"
        squash = resize == "squash"
        self.settings = {
            "network": "I3D Kinetics-400 (StyleGAN-V TorchScript port of TF-Hub i3d-kinetics-400/1)",
            "file": str(path), "sha256": sha256, "url": I3D_URL,
            "call": {"rescale": squash, "resize": squash, "return_features": True},
            "resize": ("bilinear to 224x224 inside the module" if squash
                       else "short side to 224 (bilinear) + centre crop 224x224"),
            "value_range": "[0, 255] in, rescaled to [-1, 1] by the module" if squash else "[-1, 1]",
            "grey": "repeated to 3 channels", "min_frames": MIN_FRAMES,
        }

    def _prepare(self, clips: Tensor) -> Tensor:
        """`[n, T, C, H, W]` in [0, 1] -> the module's input `[n, 3, T, H', W']`."""
        clips = clips.to(self.device, torch.float32).clamp(0, 1)
        if clips.shape[2] == 1:
            clips = clips.expand(-1, -1, 3, -1, -1)
        n, t, c, h, w = clips.shape
        if self.resize == "squash":
            return (clips * 255).permute(0, 2, 1, 3, 4)
        scale = RESOLUTION / min(h, w)
        size = (RESOLUTION, math.ceil(w * scale)) if h <= w else (math.ceil(h * scale), RESOLUTION)
        frames = F.interpolate(clips.reshape(n * t, c, h, w), size=size, mode="bilinear", align_corners=False)
        top, left = (size[0] - RESOLUTION) // 2, (size[1] - RESOLUTION) // 2
        frames = frames[:, :, top:top + RESOLUTION, left:left + RESOLUTION]
        return (frames * 2 - 1).reshape(n, t, c, RESOLUTION, RESOLUTION).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def __call__(self, videos: Tensor) -> Tensor:
        if videos.ndim != 5:
            raise ValueError(f"videos must be [N, T, C, H, W]; got {tuple(videos.shape)}")
        n, t, c = videos.shape[:3]
        if c not in (1, 3):
            raise VpkitError(f"FVD needs grey or RGB frames, got {c} channels; drop fvd from --metrics.")
        if t < MIN_FRAMES:
            raise VpkitError(f"FVD needs clips of at least {MIN_FRAMES} frames (I3D's temporal pooling), got {t}; "
                             "raise --horizon or score the conditioning frames too.")
        per_clip = t * 3 * max(RESOLUTION, videos.shape[3]) * max(RESOLUTION, videos.shape[4])
        step = max(1, VALUES_PER_CHUNK // per_clip)
        squash = self.resize == "squash"
        features = [self.module(self._prepare(videos[i:i + step]), rescale=squash, resize=squash,
                                return_features=True).double().cpu() for i in range(0, n, step)]
        return torch.cat(features)


def build(options: Mapping[str, Any]) -> I3DFeatures:
    """Options: `i3d` (path), `i3d_sha256` (expected hash), `i3d_url` (download source), `fvd_resize` ("squash" or
    "crop") and `device`."""
    resize = options.get("fvd_resize") or "squash"
    if resize not in RESIZES:
        raise VpkitError(f"Unknown fvd_resize {resize!r}; choose one of {', '.join(RESIZES)}.")
    module, path, digest = load_i3d(options.get("i3d"), options.get("i3d_sha256"), options.get("i3d_url"))
    return I3DFeatures(module, path=path, sha256=digest, resize=resize, device=options.get("device", "cpu"))


@vpkit.hookimpl
def register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(MetricSpec(
        name="fvd",
        build=build,
        higher_is_better=False,
        level="set",
        description="Fréchet Video Distance (I3D Kinetics-400 features over the whole test set; TF/StyleGAN-V)",
    ))
