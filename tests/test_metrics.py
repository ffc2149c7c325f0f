"""Golden tests of the metric plugins on real images against independent implementations.

SSIM against scikit-image, PSNR against hand-computed values, LPIPS against the `lpips` package called directly with
the same weights. The real ImageNet AlexNet cannot be downloaded here, so the LPIPS tests build an AlexNet with
random weights and hand it to both sides as a backbone file; only the tests use random weights.
"""

from __future__ import annotations

import math
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data, filters
from skimage.metrics import structural_similarity

from vpkit.core.errors import VpkitError
from vpkit.core.specs import MetricSpec
from vpkit.plugins.metrics import lpips as lpips_metric
from vpkit.plugins.metrics import psnr as psnr_metric
from vpkit.plugins.metrics import ssim as ssim_metric

SKIMAGE_SSIM = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 1.0}


def spec_of(module) -> MetricSpec:
    specs: list[MetricSpec] = []
    module.register_metrics(register=specs.append)
    (spec,) = specs
    return spec


def camera(size: tuple[int, int] = (64, 80)) -> np.ndarray:
    """The scikit-image cameraman, area-resized to `size`, float64 in [0, 1]."""
    image = torch.from_numpy(data.camera()).double()[None, None] / 255
    return F.interpolate(image, size=size, mode="area")[0, 0].numpy()


def astronaut(size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """The scikit-image astronaut, area-resized, float64 `[H, W, 3]` in [0, 1]."""
    image = torch.from_numpy(data.astronaut()).double().permute(2, 0, 1)[None] / 255
    return F.interpolate(image, size=size, mode="area")[0].permute(1, 2, 0).numpy()


def perturbations(image: np.ndarray, channel_axis: int | None = None) -> list[np.ndarray]:
    """Noisy, blurred, shifted and contrast-changed versions of `image`, all clipped to [0, 1]."""
    rng = np.random.default_rng(0)
    return [
        np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1),
        np.clip(image + rng.normal(0, 0.15, image.shape), 0, 1),
        filters.gaussian(image, sigma=1.0, channel_axis=channel_axis),
        filters.gaussian(image, sigma=2.5, channel_axis=channel_axis),
        np.clip(image + 0.08, 0, 1),
        0.5 + 0.6 * (image - 0.5),
    ]


def as_video(frames: list[np.ndarray], channel_axis: int | None = None) -> torch.Tensor:
    """Frames `[H, W]` or `[H, W, C]` -> `[1, T, C, H, W]`."""
    stacked = torch.from_numpy(np.stack(frames))
    stacked = stacked[:, None] if channel_axis is None else stacked.permute(0, 3, 1, 2)
    return stacked[None].contiguous()


# -- registration ------------------------------------------------------------------------------------------------

def test_metrics_are_registered_with_their_direction():
    from vpkit.core.plugins import Host

    host = Host(load_entry_points=False)  # built-ins load like any plugin
    assert {"psnr", "ssim", "lpips"} <= set(host.metrics.names())
    assert host.metrics.get("psnr").higher_is_better and host.metrics.get("ssim").higher_is_better
    assert not host.metrics.get("lpips").higher_is_better
    assert host.metrics.get("lpips").plugin == "lpips"


# -- SSIM ----------------------------------------------------------------------------------------------------------

def test_window_is_srvp_softmax_gaussian():
    # SRVP: the 2-D window is softmax(-(dx² + dy²) / 2σ²) over the 11×11 grid.
    coords = torch.arange(11, dtype=torch.float64) - 5
    grid = -(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 1.5**2)
    srvp_window = grid.flatten().softmax(0).view(11, 11)
    window = ssim_metric.gaussian_window(dtype=torch.float64)
    assert torch.allclose(window[:, None] * window[None, :], srvp_window, atol=1e-15, rtol=0)


def test_ssim_matches_skimage_on_grey_perturbations():
    image = camera()  # 64×80: not square, so a swapped H/W would show
    frames = perturbations(image)
    expected = [structural_similarity(f, image, **SKIMAGE_SSIM) for f in frames]
    ours = ssim_metric.ssim(as_video(frames), as_video([image] * len(frames)))
    assert ours.shape == (1, len(frames)) and ours.dtype == torch.float64
    # skimage pads and then averages only the interior, i.e. exactly SRVP's 'valid' region: the same number.
    assert np.abs(ours[0].numpy() - np.array(expected)).max() < 1e-12
    # the perturbations span a useful range, not only values near 1
    assert min(expected) < 0.5 < max(expected) < 1.0


def test_ssim_matches_skimage_per_channel_on_rgb_in_float32():
    image = astronaut()
    frames = perturbations(image, channel_axis=-1)
    expected = np.array([structural_similarity(f, image, channel_axis=-1, **SKIMAGE_SSIM) for f in frames])
    pred = as_video(frames, channel_axis=-1)
    target = as_video([image] * len(frames), channel_axis=-1)
    assert np.abs(ssim_metric.ssim(pred, target)[0].numpy() - expected).max() < 1e-12
    assert np.abs(ssim_metric.ssim(pred.float(), target.float())[0].double().numpy() - expected).max() < 2e-6


def test_ssim_matches_pytorch_msssim_on_grey_and_rgb():
    """A second, independent SSIM (pytorch-msssim: separable normalised Gaussian 11/1.5, valid convolution)."""
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    for image, axis in ((camera(), None), (astronaut(), -1)):
        frames = perturbations(image, channel_axis=axis)
        pred, target = as_video(frames, channel_axis=axis), as_video([image] * len(frames), channel_axis=axis)
        expected = pytorch_msssim.ssim(pred[0], target[0], data_range=1.0, size_average=False, win_size=11,
                                       win_sigma=1.5, K=(0.01, 0.03))
        ours = ssim_metric.ssim(pred, target)[0]
        # pytorch-msssim builds its Gaussian window in float32 whatever the input dtype: agreement to ~1e-6.
        assert (ours - expected.double()).abs().max() < 1e-5


def test_ssim_keeps_videos_and_frames_apart():
    image = camera()
    frames = perturbations(image)
    pred = as_video(frames).view(2, 3, 1, *image.shape)  # two videos of three frames
    target = as_video([image] * 6).view(2, 3, 1, *image.shape)
    expected = np.array([structural_similarity(f, image, **SKIMAGE_SSIM) for f in frames]).reshape(2, 3)
    assert np.abs(ssim_metric.ssim(pred, target).numpy() - expected).max() < 1e-12


def test_ssim_clamps_and_is_one_on_identity():
    image = as_video([camera()])
    assert ssim_metric.ssim(image, image).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim_metric.ssim(image * 3 - 1, image.clamp(0, 1)).item() == ssim_metric.ssim(
        (image * 3 - 1).clamp(0, 1), image).item()


def test_ssim_rejects_frames_smaller_than_its_window():
    tiny = torch.rand(1, 2, 1, 8, 8)
    with pytest.raises(VpkitError, match="at least 11"):
        ssim_metric.ssim(tiny, tiny)


# -- PSNR ----------------------------------------------------------------------------------------------------------

def test_psnr_of_constant_errors_is_exact():
    image = torch.from_numpy(camera()).clamp(0.2, 0.8)[None, None, None]
    assert psnr_metric.psnr(image + 0.1, image).item() == pytest.approx(20.0, abs=1e-9)
    assert psnr_metric.psnr(image - 0.01, image).item() == pytest.approx(40.0, abs=1e-9)


def test_psnr_averages_channels_as_srvp():
    rgb = torch.from_numpy(astronaut()).permute(2, 0, 1).clamp(0.2, 0.8)[None, None]
    offsets = torch.tensor([0.1, 0.01, 0.001], dtype=torch.float64).view(1, 1, 3, 1, 1)
    # per channel 20, 40 and 60 dB -> 40 dB; the PSNR of the mean MSE would be 24.73 dB
    assert psnr_metric.psnr(rgb + offsets, rgb).item() == pytest.approx(40.0, abs=1e-9)


def test_psnr_on_real_noise_matches_the_formula():
    image = astronaut()
    frames = perturbations(image, channel_axis=-1)
    expected = [np.mean([10 * math.log10(1 / np.mean((f[..., c] - image[..., c]) ** 2)) for c in range(3)])
                for f in frames]
    ours = psnr_metric.psnr(as_video(frames, channel_axis=-1), as_video([image] * 6, channel_axis=-1))
    assert np.abs(ours[0].numpy() - np.array(expected)).max() < 1e-10


def test_psnr_clamps_predictions_and_caps_exact_matches():
    truth = torch.ones(1, 1, 1, 16, 16)
    assert psnr_metric.psnr(truth * 1.7, truth).item() == pytest.approx(100.0)  # clamped to 1: exact, capped
    assert psnr_metric.psnr(torch.full_like(truth, -0.5), torch.full_like(truth, 0.1)).item() == pytest.approx(
        -10 * math.log10(0.01), abs=1e-6)


# -- LPIPS ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_alexnet_file(tmp_path_factory):
    """torchvision's AlexNet layout with random weights (features only: all LPIPS reads), as a state-dict file."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    path = tmp_path_factory.mktemp("backbone") / lpips_metric.BACKBONE_FILE
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    return path


@pytest.fixture(scope="module")
def reference_lpips(random_alexnet_file):
    """The `lpips` package's own LPIPS(net='alex', version='0.1'), its trunk loaded from the same file through the
    package's own construction path (torchvision's alexnet swapped for one that reads the file)."""
    import lpips
    import lpips.pretrained_networks as pn

    original = pn.tv.alexnet
    state = torch.load(random_alexnet_file, weights_only=True)

    def alexnet_from_file(pretrained: bool = True, **kwargs):
        net = original(weights=None)
        net.load_state_dict(state, strict=False)  # the classifier is not in the file and LPIPS never uses it
        return net

    pn.tv.alexnet = alexnet_from_file
    try:
        model = lpips.LPIPS(net="alex", version="0.1", verbose=False)
    finally:
        pn.tv.alexnet = original
    return model.eval()


def test_lpips_matches_the_lpips_package_on_rgb_and_grey(random_alexnet_file, reference_lpips):
    metric = lpips_metric.build({"lpips_backbone": str(random_alexnet_file), "device": "cpu"})
    image = astronaut()
    frames = perturbations(image, channel_axis=-1)
    pred = as_video(frames, channel_axis=-1).float().view(2, 3, 3, 64, 64)
    target = as_video([image] * 6, channel_axis=-1).float().view(2, 3, 3, 64, 64)
    ours = metric(pred, target)
    with torch.no_grad():
        expected = reference_lpips(pred.flatten(0, 1) * 2 - 1, target.flatten(0, 1) * 2 - 1).view(2, 3)
    assert ours.shape == (2, 3)
    assert (ours - expected).abs().max().item() < 1e-6
    assert ours.min().item() > 1e-4  # perturbed frames are at a real distance

    grey = as_video(perturbations(camera()))[:, :4].float()
    grey_truth = as_video([camera()] * 4).float()
    with torch.no_grad():
        grey_expected = reference_lpips(grey[0].repeat(1, 3, 1, 1) * 2 - 1, grey_truth[0].repeat(1, 3, 1, 1) * 2 - 1)
    assert (metric(grey, grey_truth)[0] - grey_expected.flatten()).abs().max().item() < 1e-6


def test_lpips_loads_every_trunk_weight_from_the_file(random_alexnet_file):
    metric = lpips_metric.build({"lpips_backbone": random_alexnet_file})
    state = torch.load(random_alexnet_file, weights_only=True)
    convs = [m for m in metric.model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    for conv, index in zip(convs, (0, 3, 6, 8, 10), strict=True):  # AlexNet's conv layers in `features`
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, state[f"features.{index}.bias"])
    assert metric.settings["backbone"] == str(random_alexnet_file)


def test_lpips_reads_torchvisions_cache_without_downloading(random_alexnet_file, tmp_path, monkeypatch):
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / lpips_metric.BACKBONE_FILE).write_bytes(random_alexnet_file.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    metric = lpips_metric.build({})
    explicit = lpips_metric.build({"lpips_backbone": random_alexnet_file})
    frames = torch.rand(1, 2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(metric(frames, frames.flip(-1)), explicit(frames, frames.flip(-1)))
    assert metric.settings["backbone"] == str(cache / lpips_metric.BACKBONE_FILE)


def test_missing_backbone_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    tried = []

    def offline(url, *args, **kwargs):  # what torchvision's download does without a network
        tried.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(VpkitError) as info:
        lpips_metric.build({})
    message = str(info.value)
    assert tried == [lpips_metric.BACKBONE_URL]  # torchvision's own cache-then-download path was used
    assert lpips_metric.BACKBONE_FILE in message
    assert str(tmp_path / "hub" / "checkpoints" / lpips_metric.BACKBONE_FILE) in message
    assert "--lpips-backbone" in message and "\n" not in message


def test_explicit_backbone_errors(tmp_path):
    with pytest.raises(VpkitError, match="does not exist"):
        lpips_metric.build({"lpips_backbone": tmp_path / "nowhere.pth"})
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(VpkitError, match="not torchvision's AlexNet"):
        lpips_metric.build({"lpips_backbone": wrong})
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(VpkitError, match="not a readable AlexNet"):
        lpips_metric.build({"lpips_backbone": garbage})
