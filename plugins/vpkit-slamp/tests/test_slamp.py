"""SLAMP (64x64): conformance, official parameter counts and state-dict layout, the batched training path against the
official frame loop (loss, gradients, BatchNorm running statistics), scheduled sampling, warping, the importer of
official pickled checkpoints (and a hostile one refused), and `vpkit train --plugin slamp` on the embedded data."""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn
from vpkit_slamp.config import SLAMPConfig
from vpkit_slamp.importer import load_official
from vpkit_slamp.model import SLAMP, teacher_probability
from vpkit_slamp.networks import warp

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.model import TorchBackend
from vpkit.testing import ModelConformance

TINY = {"g_dim_app": 8, "g_dim_motion": 6, "z_dim_app": 3, "z_dim_motion": 2, "rnn_size": 8, "n_context": 2,
        "n_future": 3}


def tiny_model(seed: int = 0, channels: int = 1, **overrides) -> SLAMP:
    torch.manual_seed(seed)
    return SLAMP(SLAMPConfig(**{**TINY, **overrides}), (channels, 64, 64)).double()


def posterior_noise(model: SLAMP, batch: int, length: int, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    c = model.config
    return {"posterior_app": torch.randn(batch, length - 1, c.z_dim_app, generator=gen, dtype=torch.float64),
            "posterior_motion": torch.randn(batch, length - 1, c.z_dim_motion, generator=gen, dtype=torch.float64)}


# -- conformance ----------------------------------------------------------------------------------------------------


class TestSLAMPConformance(ModelConformance):
    model_key = "slamp"
    preset = "tiny"


class TestSLAMPVGGConformance(ModelConformance):
    model_key = "slamp"
    preset = "tiny"
    frame_shape = (3, 64, 64)
    config_overrides: ClassVar[dict[str, object]] = {"architecture": "vgg64", "sampling_batchnorm": "running"}

    def test_onnx_export(self, harness) -> None:
        pytest.skip("ONNX export is covered by TestSLAMPConformance (same graphs; keeps this file fast)")


# -- official architecture ------------------------------------------------------------------------------------------

OFFICIAL_COUNTS = {"smmnist": 25_366_628, "kth": 45_726_932, "bair": 45_769_798}  # reference section 7


@pytest.mark.parametrize("preset", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_match_official(slamp_host, preset):
    spec = slamp_host.models.get("slamp")
    recipe = spec.presets[preset]
    with torch.device("meta"):
        model = spec.build(build_config(spec.config_cls, recipe.model, what="test"), recipe.frame_shape)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_COUNTS[preset]


def test_state_dict_uses_the_official_keys():
    keys = set(tiny_model().state_dict())
    official = {  # a sample of the keys an official checkpoint's modules carry (reference section 3.3)
        "pixel_encoder.c1.main.0.weight", "pixel_encoder.c5.0.weight", "pixel_encoder.c5.1.running_var",
        "pixel_decoder.upc1.0.weight", "pixel_decoder.upc5.0.bias", "flow_decoder.upc5.0.weight",
        "mask_decoder.c1.0.main.0.weight", "mask_decoder.c1.2.fc.0.weight", "mask_decoder.c1.2.fc.2.weight",
        "mask_decoder.c3.0.bias", "static_frame_predictor.lstm.1.weight_hh", "static_frame_predictor.output.0.bias",
        "posterior_app.mu_net.weight", "prior_motion.logvar_net.bias", "dynamic_frame_predictor.embed.weight",
    }
    assert official <= keys
    # every conv is bias-free except the decoders' output (transposed) conv and the mask's last conv
    conv_biases = {k for k in keys if k.endswith(".bias") and ("main.0" in k or k.endswith("encoder.c5.0.bias"))}
    assert conv_biases == set()


def test_non_64_frames_are_refused():
    with pytest.raises(VpkitError, match="64x64"):
        SLAMP(SLAMPConfig(**TINY), (1, 128, 128))


# -- training -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["dcgan64", "vgg64"])
def test_batched_training_equals_the_official_frame_loop(architecture):
    # float64: with BatchNorm over 2 videos, float32 rounding alone moves some gradients by ~1% (measured)
    batched = tiny_model(architecture=architecture).train()
    loop = copy.deepcopy(batched)
    length = 3
    video = torch.rand(2, length, 1, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = posterior_noise(batched, 2, length)
    a, b = batched.batched_loss_terms(video, noise), loop.loop_loss_terms(video, noise)
    for name in ("loss", "pixel_mse", "flow_mse", "mask_mse", "kld"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(batched.named_parameters(), loop.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, x), y in zip(batched.state_dict().items(), loop.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12, msg=name)  # BN running stats and batch counts
    steps = length - 1

    def calls(net: nn.Module) -> int:  # BatchNorm calls counted by the first BatchNorm of a network
        return int(next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d)).num_batches_tracked)

    assert calls(batched.pixel_encoder) == 2 * steps  # each step encodes its input and its target
    assert calls(batched.motion_encoder) == steps + 1  # plus the "zero motion" of step 1
    assert calls(batched.pixel_decoder) == calls(batched.mask_decoder) == steps


def test_loss_by_value_against_the_formula():
    model = tiny_model().train()
    video = torch.rand(2, 3, 1, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    terms = model.loss_terms(video, posterior_noise(model, 2, 3))
    assert terms.loss.item() == pytest.approx(
        (terms.pixel_mse + terms.flow_mse + terms.mask_mse + model.config.beta * terms.kld).item(), rel=1e-14)
    assert terms.kld.item() > 0


def test_scheduled_sampling_feeds_the_prediction_back():
    model = tiny_model(n_context=2).train()
    model.float()
    video = torch.rand(2, 4, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    noise = {k: v.float() for k, v in posterior_noise(model, 2, 4).items()}
    truth = model.loss_terms(video, noise, [True, True, True]).loss
    assert truth.item() == pytest.approx(model.loop_loss_terms(video, noise).loss.item(), rel=1e-5)
    fed = model.loss_terms(video, noise, [True, False, True]).loss
    assert fed.item() != pytest.approx(truth.item(), rel=1e-4)
    # a coin drawn inside the context is ignored: the context is always the ground truth
    assert model.loss_terms(video, noise, [False, True, True]).loss.item() == pytest.approx(truth.item(), rel=1e-5)


def test_teacher_probability_is_the_official_inverse_sigmoid():
    assert teacher_probability(0, 100) == 1.0
    assert teacher_probability(25, 0) == pytest.approx(25 / 26)
    assert teacher_probability(25, 100) == pytest.approx(25 / (25 + torch.e ** 4))


def test_eleven_adams_with_the_official_betas():
    model = tiny_model(lr=1e-3, beta1=0.5)
    optimizers = model.configure_optimizers().optimizers
    assert len(optimizers) == 11
    assert all(o.defaults["betas"] == (0.5, 0.999) and o.defaults["lr"] == 1e-3 for o in optimizers)
    assert sum(len(g["params"]) for o in optimizers for g in o.param_groups) == len(list(model.parameters()))


# -- warping --------------------------------------------------------------------------------------------------------


def test_warp_is_backward_bilinear_with_a_validity_mask():
    frames = torch.arange(2 * 1 * 4 * 5, dtype=torch.float64).view(2, 1, 4, 5)
    flow = torch.zeros(2, 2, 4, 5, dtype=torch.float64)
    flow[:, 0] = 1.0  # sample one pixel to the right
    out = warp(frames, flow)
    torch.testing.assert_close(out[..., :4], frames[..., 1:])
    assert (out[..., 4] == 0).all()  # samples beyond the border are masked out, not zero-padded halves
    flow[:, 0], flow[:, 1] = 0.5, 0.0
    half = warp(frames, flow)
    torch.testing.assert_close(half[..., :4], (frames[..., :4] + frames[..., 1:]) / 2)
    flow[:, 0], flow[:, 1] = 0.0, -1.0  # one pixel up: the first row falls outside
    up = warp(frames, flow)
    assert (up[..., 0, :] == 0).all()
    torch.testing.assert_close(up[..., 1:, :], frames[..., :3, :])


# -- sampling -------------------------------------------------------------------------------------------------------


def test_rollout_needs_two_context_frames_and_the_declared_noise():
    model = tiny_model().eval()
    backend = TorchBackend(model.export_plan())
    context = torch.rand(2, 2, 1, 64, 64, dtype=torch.float64)
    noise = {k: torch.zeros(s, dtype=torch.float64) for k, s in model.noise_shapes(2, 2, 3).items()}
    assert model.rollout(backend, context, 3, noise).shape == (2, 3, 1, 64, 64)
    with pytest.raises(VpkitError, match="at least 2 context"):
        model.rollout(backend, context[:, :1], 3, noise)
    with pytest.raises(VpkitError, match="prior_app_noise"):
        model.rollout(backend, context, 3, {k: v for k, v in noise.items() if k != "prior_app_noise"})


# -- official checkpoints (fabricated with the official module names; the real ones need the official code) ------


def official_options(**changes: object) -> argparse.Namespace:
    opt = argparse.Namespace(lr=3e-4, beta1=0.9, batch_size=4, optimizer=torch.optim.Adam, niter=300, seed=1,
                             epoch_size=1000, image_width=64, channels=1, dataset="smmnist", n_past=2, n_future=3,
                             n_eval=6, rnn_size=8, prior_rnn_layers=1, posterior_rnn_layers=1, predictor_rnn_layers=2,
                             z_dim_app=3, g_dim_app=8, z_dim_motion=2, g_dim_motion=6, beta=1e-4, model="dcgan",
                             num_digits=2, last_frame_skip=True, device=False, running_avg=True, sch_sampling=0,
                             two_lstm=False, motion_skip=False)
    for key, value in changes.items():
        setattr(opt, key, value)
    return opt


def save_as_official(model: SLAMP, opt: argparse.Namespace, path: Path) -> None:
    """Pickle `model`'s networks whole, as `train.py` does, with every non-torch class renamed into a `models`
    package (the official classes' home) so the file names only what an official checkpoint names."""
    clone = copy.deepcopy(model).float()
    package = types.ModuleType("models")
    fakes: dict[type, type] = {}
    for module in clone.modules():
        cls = type(module)
        if isinstance(module, nn.BatchNorm2d):
            module.__class__ = nn.BatchNorm2d
        elif not cls.__module__.startswith("torch."):
            if cls not in fakes:
                fakes[cls] = type(cls.__name__.lower(), (cls,), {"__module__": "models.fake"})
                setattr(package, fakes[cls].__name__, fakes[cls])
            module.__class__ = fakes[cls]
    saved = dict(clone.official_modules()) | {"opt": opt, "epoch": 7}
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "models", types.ModuleType("models"))
        patch.setitem(sys.modules, "models.fake", package)
        torch.save(saved, path)


def test_import_round_trip_reproduces_the_model(tmp_path):
    model = tiny_model(architecture="dcgan64").float()
    path = tmp_path / "slamp_mnist.pth"
    save_as_official(model, official_options(), path)
    key, imported, data = load_official(path, {})
    assert key == "slamp"
    assert data == {"name": "smmnist", "config": {"num_digits": 2}, "frame_shape": [1, 64, 64], "n_context": 2,
                    "n_future": 4}
    assert imported.config.sampling_batchnorm == "batch"  # official evaluate.py samples with train-mode BN
    for (name, x), y in zip(imported.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert (imported.config.g_dim_app, imported.config.z_dim_motion, imported.config.n_future) == (8, 2, 3)


def test_import_options_and_layout_errors(tmp_path):
    path = tmp_path / "slamp.pth"
    save_as_official(tiny_model(architecture="vgg64", channels=3).float(),
                     official_options(model="vgg", channels=3, dataset="bair"), path)
    _, imported, data = load_official(path, {"n_future": 28, "sampling_batchnorm": "running"})
    assert imported.config.architecture == "vgg64" and data["name"] == "bair" and data["n_future"] == 28
    assert imported.config.sampling_batchnorm == "running"
    with pytest.raises(VpkitError, match="Unknown option 'horizon'"):
        load_official(path, {"horizon": 3})

    skip = tmp_path / "motion_skip.pth"
    save_as_official(tiny_model().float(), official_options(motion_skip=True), skip)
    with pytest.raises(VpkitError, match="motion_skip"):
        load_official(skip, {})

    wrong = tmp_path / "wrong.pth"  # the options disagree with the weights
    save_as_official(tiny_model().float(), official_options(g_dim_app=16), wrong)
    with pytest.raises(VpkitError, match="do not fit"):
        load_official(wrong, {})

    plain = tmp_path / "state.pth"
    torch.save(tiny_model().state_dict(), plain)
    with pytest.raises(VpkitError, match="not an official SLAMP checkpoint"):
        load_official(plain, {})


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "slamp_evil.pth"
    torch.save({"pixel_encoder": _Payload(marker), "opt": official_options()}, path)
    with pytest.raises(VpkitError, match="refused|names the global"):
        load_official(path, {})
    assert not marker.exists()
    raw = tmp_path / "raw.pth"  # a plain pickle, not a torch file, with the same payload
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(VpkitError):
        load_official(raw, {})
    assert not marker.exists()


def vpkit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg,slamp", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "vpkit", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


@pytest.mark.slow
def test_cli_import_then_train_on_embedded_data(tmp_path):
    path = tmp_path / "slamp.pth"
    save_as_official(tiny_model().float(), official_options(), path)
    proc = vpkit("import", "slamp", str(path), "--out", str(tmp_path / "imported"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "imported" / "vpkit.json").is_file()

    proc = vpkit("train", "--plugin", "slamp", "--preset", "tiny", "--steps", "2", "--batch-size", "2",
                 "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "run" / "checkpoints" / "last" / "vpkit.json").is_file()

    evil = tmp_path / "evil.pth"
    torch.save({"pixel_encoder": _Payload(tmp_path / "pwned")}, evil)
    proc = vpkit("import", "slamp", str(evil))
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "pwned").exists()
