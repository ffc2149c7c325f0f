"""LPIPS with the `lpips` package's v0.1 linear layers, inputs mapped to [-1, 1], grey frames repeated to three
channels, one distance per frame. `lpips_net` picks the trunk: "alex" (default; SRVP, SLAMP, OpenSTL) or "vgg"
(DDLP, through piqa's `LPIPS(network='vgg')`: piqa normalises [0, 1] inputs with ImageNet's mean and std, which is
lpips' ScalingLayer on [-1, 1] written another way, so the two give the same distance).

Weights come from two places and both are loaded strictly, so no layer can stay randomly initialised:
- the v0.1 linear layers ship inside the `lpips` package;
- the trunk is torchvision's ImageNet checkpoint (`alexnet-owt-7be5be79.pth` or `vgg16-397923af.pth`), read from
  torchvision's hub cache (`$TORCH_HOME/hub/checkpoints/`, downloaded there by torchvision when the network allows)
  or from an explicit file (`options["lpips_backbone"]`, CLI `--lpips-backbone PATH`). When neither works the metric
  raises a `VpkitError` naming the missing file and where to put it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import MetricSpec

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
BACKBONE_FILE = BACKBONE_FILES["alex"]
BACKBONE_URL = f"https://download.pytorch.org/models/{BACKBONE_FILE}"
LPIPS_VERSION = "0.1"
# Frames per AlexNet forward pass, as pixels: 1024 frames of 64×64, fewer for larger frames.
PIXELS_PER_CHUNK = 2**22


NETS = {"alex": "AlexNet", "vgg": "VGG16"}


def _check_net(net: str) -> str:
    if net not in NETS:
        raise VpkitError(f"Unknown lpips_net {net!r}; choose one of {', '.join(NETS)}.")
    return net


def backbone_url(net: str = "alex") -> str:
    return f"https://download.pytorch.org/models/{BACKBONE_FILES[_check_net(net)]}"


def cached_backbone_path(net: str = "alex") -> Path:
    """Where torchvision keeps (and looks for) the ImageNet weights of the `net` trunk."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[_check_net(net)]


def _missing_message(reason: str, net: str = "alex") -> str:
    return (
        f"LPIPS needs torchvision's ImageNet {NETS[net]} weights {BACKBONE_FILES[net]}, {reason}. Download "
        f"{backbone_url(net)} to {cached_backbone_path(net)} (torchvision's cache, under $TORCH_HOME), or pass "
        "--lpips-backbone PATH."
    )


def load_backbone_state(path: Path | str | None = None, net: str = "alex") -> dict[str, Tensor]:
    """The trunk's state dict: from `path` when given, otherwise through torchvision's cache."""
    _check_net(net)
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise VpkitError(_missing_message(f"but the --lpips-backbone file {path} does not exist", net))
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for truncated or foreign files
            raise VpkitError(f"{path} is not a readable {NETS[net]} state dict ({exc}); pass torchvision's "
                             f"{BACKBONE_FILES[net]}.") from None
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    weights = {"alex": AlexNet_Weights.IMAGENET1K_V1, "vgg": VGG16_Weights.IMAGENET1K_V1}[net]
    cached = cached_backbone_path(net)
    try:
        # torchvision's own loader reads its cache and only downloads when the file is absent.
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # no network (URLError), a refused download, or a corrupt cached file
        if cached.is_file():
            raise VpkitError(f"The cached LPIPS backbone {cached} is unreadable ({exc}); delete it and download "
                             f"{backbone_url(net)} again, or pass --lpips-backbone PATH.") from None
        raise VpkitError(_missing_message(f"which is not in torchvision's cache and could not be downloaded "
                                          f"({type(exc).__name__}: {exc})", net)) from None


def build_lpips_model(backbone_state: Mapping[str, Tensor], net: str = "alex") -> torch.nn.Module:
    """`lpips.LPIPS` (`net` trunk, v0.1) with every weight loaded strictly: the trunk from `backbone_state`, the
    linear layers from the copy shipped inside the `lpips` package."""
    import lpips

    _check_net(net)
    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=` argument; with pnet_rand=True it only builds the shape.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, version=LPIPS_VERSION, pnet_rand=True, verbose=False)

    # lpips slices torchvision's `features` and keeps each layer's index as its name: features.3 -> slice2.3.
    trunk: dict[str, Tensor] = {}
    for slice_name, block in model.net.named_children():
        for index, _ in block.named_children():
            for param in ("weight", "bias"):
                key = f"features.{index}.{param}"
                if key in backbone_state:
                    trunk[f"{slice_name}.{index}.{param}"] = backbone_state[key]
    try:
        model.net.load_state_dict(trunk, strict=True)
    except RuntimeError as exc:
        raise VpkitError(f"The LPIPS backbone is not torchvision's {NETS[net]} {BACKBONE_FILES[net]} "
                         f"({str(exc).splitlines()[0]}).") from None

    linear_file = Path(lpips.__file__).parent / "weights" / f"v{LPIPS_VERSION}" / f"{net}.pth"
    try:
        linear = torch.load(linear_file, map_location="cpu", weights_only=True)
        for i, layer in enumerate(model.lins):
            layer.load_state_dict({"model.1.weight": linear[f"lin{i}.model.1.weight"]}, strict=True)
    except (OSError, KeyError, RuntimeError) as exc:
        raise VpkitError(f"The lpips package's linear layers {linear_file} are missing or broken ({exc}); "
                         f"reinstall it with `pip install --force-reinstall lpips`.") from None
    return model.eval().requires_grad_(False)


class LPIPSMetric:
    """Callable `(pred, target) -> [N, T]` LPIPS distances, every frame of the batch through the trunk in chunks."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", backbone: str = "",
                 net: str = "alex") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.settings = {  # recorded on the eval card
            "net": net, "version": LPIPS_VERSION, "backbone": backbone, "input_range": [-1.0, 1.0],
            "grey": "repeated to 3 channels", "clamp": [0.0, 1.0],
        }

    @torch.no_grad()
    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
        n, t, c, h, w = pred.shape
        if c not in (1, 3):
            raise VpkitError(f"LPIPS needs grey or RGB frames, got {c} channels; drop lpips from --metrics.")
        x = pred.reshape(n * t, c, h, w)
        y = target.reshape(n * t, c, h, w)
        step = max(1, PIXELS_PER_CHUNK // (h * w))
        scores = []
        for i in range(0, n * t, step):
            xi = x[i: i + step].to(self.device, torch.float32).clamp(0, 1) * 2 - 1
            yi = y[i: i + step].to(self.device, torch.float32).clamp(0, 1) * 2 - 1
            if c == 1:
                xi, yi = xi.expand(-1, 3, -1, -1), yi.expand(-1, 3, -1, -1)
            scores.append(self.model(xi, yi).flatten())
        return torch.cat(scores).view(n, t).to(pred.device)


def build(options: Mapping[str, Any]) -> LPIPSMetric:
    """Options: `device` (where the trunk runs), `lpips_net` ("alex" or "vgg") and `lpips_backbone` (a path to
    torchvision's weights for that trunk)."""
    net = _check_net(options.get("lpips_net") or "alex")
    explicit = options.get("lpips_backbone")
    state = load_backbone_state(explicit, net)
    backbone = str(Path(explicit).expanduser() if explicit is not None else cached_backbone_path(net))
    return LPIPSMetric(build_lpips_model(state, net), options.get("device", "cpu"), backbone, net)


@vpkit.hookimpl
def register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(MetricSpec(
        name="lpips",
        build=build,
        higher_is_better=False,
        description="LPIPS per frame (v0.1 linear layers, inputs in [-1, 1]; AlexNet as SRVP, or VGG16 as DDLP)",
    ))
