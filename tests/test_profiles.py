"""Metric profiles and the metric variants they select, golden-tested on real photographs (scikit-image's camera,
astronaut and coffee) against independent implementations: scikit-image's SSIM with its default (uniform) window,
hand-computed PSNR, and the `lpips` package's VGG LPIPS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from skimage.metrics import structural_similarity

from vpkit.core.errors import VpkitError
from vpkit.engine import profiles
from vpkit.plugins.metrics import lpips as lpips_metric
from vpkit.plugins.metrics import psnr as psnr_metric
from vpkit.plugins.metrics import ssim as ssim_metric


def photo(name: str, size: int = 64) -> np.ndarray:
    """A real photograph, area-downscaled to `size`², float64 in [0, 1], `[H, W, C]`."""
    image = torch.from_numpy(getattr(data, name)()).double() / 255
    image = image[..., None] if image.ndim == 2 else image
    return F.interpolate(image.permute(2, 0, 1)[None], size=(size, size), mode="area")[0].permute(1, 2, 0).numpy()


def perturbed(image: np.ndarray, seed: int) -> list[np.ndarray]:
    """Realistic degradations: noise, blur, a shift, a contrast change (clipped to [0, 1])."""
    rng = np.random.default_rng(seed)
    t = torch.from_numpy(image).permute(2, 0, 1)[None]
    blur = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0].permute(1, 2, 0).numpy()
    return [np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1), blur, np.roll(image, 2, axis=1),
            np.clip(0.7 * image + 0.2, 0, 1)]


def as_video(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)[None].double()  # [1, T, C, H, W]


@pytest.mark.parametrize("name", ["camera", "astronaut", "coffee"])
@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_uniform_ssim_matches_skimage_defaults(name, data_range):
    image = photo(name)
    frames = perturbed(image, seed=1)
    metric = ssim_metric.build({"ssim_window": "uniform", "ssim_data_range": data_range})
    ours = metric(as_video(frames), as_video([image] * len(frames)))[0].numpy()
    # What SVG's eval_seq (per channel, averaged) and OpenSTL (channel_axis) get from scikit-image's defaults.
    expected = [np.mean([structural_similarity(image[..., c], f[..., c], data_range=data_range)
                         for c in range(image.shape[-1])]) for f in frames]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10)
    if image.shape[-1] == 3:
        joint = [structural_similarity(image, f, data_range=data_range, channel_axis=-1) for f in frames]
        np.testing.assert_allclose(ours, joint, rtol=0, atol=1e-10)


def test_range_two_inflates_ssim_as_srvp_issue_6_reports():
    image = photo("camera")
    frames = perturbed(image, seed=2)
    one = ssim_metric.build({"ssim_window": "uniform", "ssim_data_range": 1.0})(as_video(frames), as_video([image] * 4))
    two = ssim_metric.build({"ssim_window": "uniform", "ssim_data_range": 2.0})(as_video(frames), as_video([image] * 4))
    assert (two > one).all()


def test_frame_psnr_is_the_psnr_of_the_whole_frame_mse():
    image = photo("astronaut")
    frames = perturbed(image, seed=3)
    frame = psnr_metric.build({"psnr_reduction": "frame"})(as_video(frames), as_video([image] * 4))[0].numpy()
    channel = psnr_metric.build({})(as_video(frames), as_video([image] * 4))[0].numpy()
    by_hand = [10 * np.log10(1 / np.mean((f - image) ** 2)) for f in frames]
    per_channel = [np.mean([10 * np.log10(1 / np.mean((f[..., c] - image[..., c]) ** 2)) for c in range(3)])
                   for f in frames]
    np.testing.assert_allclose(frame, by_hand, atol=1e-9)
    np.testing.assert_allclose(channel, per_channel, atol=1e-9)
    # Jensen (−log is convex): the mean of per-channel dB is at least the dB of the mean MSE.
    assert (channel >= frame - 1e-12).all() and (channel - frame).max() > 1e-3


def test_bad_metric_options_name_the_choices():
    with pytest.raises(VpkitError, match="Unknown psnr_reduction 'mean'; choose one of channel-mean, frame"):
        psnr_metric.build({"psnr_reduction": "mean"})
    with pytest.raises(VpkitError, match="Unknown ssim_window 'box'; choose one of gaussian, uniform"):
        ssim_metric.build({"ssim_window": "box"})
    with pytest.raises(VpkitError, match="ssim_data_range must be 1"):
        ssim_metric.build({"ssim_data_range": 255})
    with pytest.raises(VpkitError, match="Unknown lpips_net 'squeeze'; choose one of alex, vgg"):
        lpips_metric.build({"lpips_net": "squeeze"})


@pytest.fixture(scope="module")
def random_vgg_file(tmp_path_factory):
    """torchvision's VGG16 layout with random weights (features only: all LPIPS reads), as a state-dict file."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features.state_dict()
    path = tmp_path_factory.mktemp("vgg") / lpips_metric.BACKBONE_FILES["vgg"]
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    return path


def test_vgg_lpips_matches_the_lpips_package(random_vgg_file):
    import lpips
    import lpips.pretrained_networks as pn

    state = torch.load(random_vgg_file, weights_only=True)
    original = pn.tv.vgg16

    def vgg_from_file(pretrained: bool = True, **kwargs):
        net = original(weights=None)
        net.load_state_dict(state, strict=False)  # the classifier is not in the file and LPIPS never uses it
        return net

    pn.tv.vgg16 = vgg_from_file
    try:
        reference = lpips.LPIPS(net="vgg", version="0.1", verbose=False).eval()
    finally:
        pn.tv.vgg16 = original
    metric = lpips_metric.build({"lpips_net": "vgg", "lpips_backbone": str(random_vgg_file)})
    assert metric.settings["net"] == "vgg"
    image = photo("coffee")
    frames = perturbed(image, seed=4)
    pred, truth = as_video(frames).float(), as_video([image] * 4).float()
    ours = metric(pred, truth)[0]
    with torch.no_grad():
        expected = reference(pred[0] * 2 - 1, truth[0] * 2 - 1).flatten()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert (ours > 0).all()


def test_vgg_trunk_loads_strictly(random_vgg_file, tmp_path):
    state = torch.load(random_vgg_file, weights_only=True)
    model = lpips_metric.build_lpips_model(state, "vgg")
    torch.testing.assert_close(getattr(model.net.slice5, "28").weight, state["features.28.weight"])
    del state["features.28.weight"]
    broken = tmp_path / "vgg16-broken.pth"
    torch.save(state, broken)
    with pytest.raises(VpkitError, match="not torchvision's VGG16 vgg16-397923af.pth"):
        lpips_metric.build({"lpips_net": "vgg", "lpips_backbone": str(broken)})


def test_missing_vgg_weights_name_the_vgg_file(tmp_path):
    with pytest.raises(VpkitError, match=r"ImageNet VGG16 weights vgg16-397923af\.pth.*--lpips-backbone"):
        lpips_metric.build({"lpips_net": "vgg", "lpips_backbone": str(tmp_path / "none.pth")})


# -- profiles --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(profiles.PROFILES))
def test_every_profile_builds_its_metrics_and_says_so(name):
    profile = profiles.get_profile(name)
    psnr = psnr_metric.build(profile.options)
    ssim = ssim_metric.build(profile.options)
    assert psnr.settings["reduction"] == profile.options["psnr_reduction"]
    assert ssim.settings["data_range"] == profile.options["ssim_data_range"]
    assert profile.options["lpips_net"] in ("alex", "vgg") and profile.options["fvd_resize"] in ("squash", "crop")
    card = profile.card()
    assert card["name"] == name and card["reference"] and card["spread"] in ("ci95", "std", None)


def test_profiles_give_the_documented_different_numbers():
    image = photo("astronaut")
    frames = perturbed(image, seed=5)
    pred, truth = as_video(frames), as_video([image] * 4)
    scores = {}
    for name in ("vpkit", "svg", "ddlp", "openstl"):
        options = profiles.get_profile(name).options
        scores[name] = (psnr_metric.build(options)(pred, truth), ssim_metric.build(options)(pred, truth))
    torch.testing.assert_close(scores["vpkit"][1], scores["ddlp"][1])  # both Gaussian SSIM, range 1
    torch.testing.assert_close(scores["svg"][1], scores["openstl"][1])  # both skimage defaults, range 2
    torch.testing.assert_close(scores["ddlp"][0], scores["openstl"][0])  # both frame PSNR
    assert not torch.allclose(scores["vpkit"][0], scores["ddlp"][0])
    assert not torch.allclose(scores["vpkit"][1], scores["svg"][1])
    assert profiles.get_profile("srvp").fvd_sample == "first" and profiles.get_profile("vpkit").fvd_sample == "random"
    assert profiles.get_profile("ddlp").num_samples == 1 and profiles.get_profile("ddlp").spread == "std"


def test_unknown_profile_lists_the_choices():
    with pytest.raises(VpkitError, match="Unknown metric profile 'fvd'; choose one of vpkit, srvp, svg, ddlp, "
                                         "openstl"):
        profiles.get_profile("fvd")
