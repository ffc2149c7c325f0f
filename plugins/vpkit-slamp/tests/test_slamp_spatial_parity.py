"""Fidelity of the KITTI / Cityscapes SLAMP to the official code: the official modules' weights, loaded into ours,
give the official training loss and gradients and the official samples.

Needs a checkout of github.com/kaanakan/slamp, named by the environment variable VPKIT_SLAMP_OFFICIAL; skipped without
one (vpkit never ships the official code). The official networks (`models/{conv_lstms,kitti_models,cityscapes_models,
mask_predictor}.py`) are built as `helpers.get_model_real` builds them, with random BatchNorm statistics; their state
dicts load strictly into `SpatialSLAMP`. The loops below restate the `is_real_dataset` branches of the official
`helpers.train_step` and `helpers.eval_step` in our words, with the official `reparameterize` draws replaced by
given noise. The comparison runs in float64 (only rounding is left), at the official frame sizes (the official
decoders hard-code them), with small latent and LSTM sizes (the conv widths are fixed) to keep it short.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vpkit_slamp.config import SLAMPConfig
from vpkit_slamp.spatial import SpatialSLAMP

OFFICIAL = os.environ.get("VPKIT_SLAMP_OFFICIAL", "")
pytestmark = pytest.mark.skipif(
    not (OFFICIAL and (Path(OFFICIAL) / "models" / "conv_lstms.py").is_file()),
    reason="set VPKIT_SLAMP_OFFICIAL to a checkout of github.com/kaanakan/slamp to compare with the official code",
)

TOLERANCE = 1e-10  # float64
# Sampling with batch statistics in eval mode goes through `TimeBatchNorm2d`'s plain tensor ops (exportable), which
# round differently from PyTorch's batch_norm kernel (~3e-14 per layer at 128x256); over the loop that grows to ~2e-9.
BATCH_STATS_TOLERANCE = 1e-8
SIZES = {"g": 8, "z_app": 3, "z_motion": 2, "rnn": 8}
FRAMES = {"kitti": (3, 92, 310), "cityscapes": (3, 128, 256)}
LSTMS = ("static_frame_predictor", "dynamic_frame_predictor", "posterior_app", "prior_app", "posterior_motion",
         "prior_motion")


@pytest.fixture(scope="module")
def official() -> Iterator[types.SimpleNamespace]:
    """The official network modules and `flow_utils.warp`, imported from the checkout (other `models` packages
    shadowed meanwhile)."""
    patch = pytest.MonkeyPatch()
    shadowed = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "models"}
    patch.syspath_prepend(OFFICIAL)
    shadowed_flow = sys.modules.pop("flow_utils", None)
    names = ("conv_lstms", "kitti_models", "cityscapes_models", "mask_predictor")
    try:
        modules = {name: importlib.import_module(f"models.{name}") for name in names}
        yield types.SimpleNamespace(**modules, warp=importlib.import_module("flow_utils").warp)
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] in ("models", "flow_utils")]:
            del sys.modules[name]
        sys.modules.update(shadowed)
        if shadowed_flow is not None:
            sys.modules["flow_utils"] = shadowed_flow
        patch.undo()


@pytest.fixture(autouse=True)
def float64() -> Iterator[None]:
    """The official `init_hidden` follows the default dtype, so the whole comparison runs with float64 default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_official(official: types.SimpleNamespace, dataset: str, batch: int) -> dict[str, nn.Module]:
    """`helpers.get_model_real`'s modules (same dict order), random weights and BatchNorm statistics."""
    torch.manual_seed(0)
    lstm, net = official.conv_lstms, getattr(official, f"{dataset}_models")
    g, za, zm, r = SIZES["g"], SIZES["z_app"], SIZES["z_motion"], SIZES["rnn"]
    size = (4, 4) if dataset == "kitti" else (4, 8)
    nc = FRAMES[dataset][0]
    models = {
        "static_frame_predictor": lstm.conv_lstm(g + za, g, r, 2, batch, size),
        "dynamic_frame_predictor": lstm.conv_lstm(g + zm, g, r, 2, batch, size),
        "posterior_app": lstm.gaussian_conv_lstm(g, za, r, 1, batch, size),
        "prior_app": lstm.gaussian_conv_lstm(g, za, r, 1, batch, size),
        "posterior_motion": lstm.gaussian_conv_lstm(g, zm, r, 1, batch, size),
        "prior_motion": lstm.gaussian_conv_lstm(g, zm, r, 1, batch, size),
        "img_encoder": net.encoder(2 * g, nc),
        "pixel_encoder": net.spatial_encoder(g, 2 * g),
        "motion_encoder": net.spatial_encoder(g, 4 * g),
        "pixel_decoder": net.decoder(g, nc),
        "flow_decoder": net.decoder(g, 2, act=None),
        "mask_decoder": official.mask_predictor.mask_predictor(2 * nc),
    }
    with torch.no_grad():
        for module in (m for network in models.values() for m in network.modules()):
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.weight.dim() == 4:
                # Larger than the official init so that flows, masks and latents vary visibly.
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, 1.0 / fan_in ** 0.5)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        models["flow_decoder"].upc7[1].weight.mul_(20.0)  # flows of a few pixels: the warp and its mask matter
    return models


def ours_from(models: dict[str, nn.Module], dataset: str, n_past: int, sampling_batchnorm: str = "batch",
              ) -> SpatialSLAMP:
    config = SLAMPConfig(architecture=dataset, g_dim_app=SIZES["g"], g_dim_motion=SIZES["g"],
                         z_dim_app=SIZES["z_app"], z_dim_motion=SIZES["z_motion"], rnn_size=SIZES["rnn"],
                         n_context=n_past, n_future=1, sampling_batchnorm=sampling_batchnorm)
    model = SpatialSLAMP(config, FRAMES[dataset]).double()
    model.load_state_dict({f"{name}.{key}": value for name, network in models.items()
                           for key, value in network.state_dict().items()}, strict=True)
    return model


def inject_noise(module: nn.Module, draws: list[Tensor]) -> None:
    """Make the official `gaussian_conv_lstm.reparameterize` take its standard-normal draws from `draws`, in order."""

    def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
        return draws.pop(0).mul(logvar.mul(0.5).exp()).add_(mu)

    module.reparameterize = reparameterize


def reset(models: dict[str, nn.Module], batch: int) -> None:
    for name in LSTMS:
        models[name].batch_size = batch
        models[name].hidden = models[name].init_hidden()


def kl(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor, batch: int) -> Tensor:
    sigma1, sigma2 = logvar1.mul(0.5).exp(), logvar2.mul(0.5).exp()
    value = torch.log(sigma2 / sigma1) + (torch.exp(logvar1) + (mu1 - mu2) ** 2) / (2 * torch.exp(logvar2)) - 1 / 2
    return value.sum() / batch


# -- the official loops (is_real_dataset branches), restated ---------------------------------------------------------


def official_loss(m: dict[str, nn.Module], warp, x: Tensor, noise: dict[str, Tensor], n_past: int, beta: float,
                  use_truth: list[bool]) -> tuple[Tensor, ...]:
    """`helpers.train_step` up to `loss.backward()` on time-major `x` (`warp`: official `flow_utils.warp`);
    `use_truth` replaces `random() < sc_prob`."""
    length, batch = x.shape[:2]
    reset(m, batch)
    zeros = {key: torch.zeros_like(value[:, 0]) for key, value in noise.items()}
    inject_noise(m["posterior_app"], list(noise["posterior_app"].unbind(1)))
    inject_noise(m["posterior_motion"], list(noise["posterior_motion"].unbind(1)))
    inject_noise(m["prior_app"], [zeros["posterior_app"]] * (length - 1))
    inject_noise(m["prior_motion"], [zeros["posterior_motion"]] * (length - 1))
    pixel_mse = flow_mse = mask_mse = kld = 0
    x_in = x[0]
    for i in range(1, length):
        encoded_current, skip = m["img_encoder"](x_in)
        encoded_target, _ = m["img_encoder"](x[i])
        h = m["pixel_encoder"](encoded_current)
        h_target = m["pixel_encoder"](encoded_target)
        h_motion = m["motion_encoder"](torch.cat([encoded_current, encoded_target], dim=1))
        if i == 1:
            last_motion = m["motion_encoder"](torch.cat([encoded_current, encoded_current], dim=1))
            skips = skip
        else:
            for idx in range(len(skips)):
                skips[idx] = (skips[idx] * (i - 1) + skip[idx]) / i
        z_t, mu, logvar = m["posterior_app"](h_target)
        _, mu_p, logvar_p = m["prior_app"](h)
        z_t_motion, mu_post_m, logvar_post_m = m["posterior_motion"](h_motion)
        _, mu_prior_m, logvar_prior_m = m["prior_motion"](last_motion)
        h_pred_static = m["static_frame_predictor"](torch.cat([h, z_t], dim=1))
        h_pred_dynamic = m["dynamic_frame_predictor"](torch.cat([last_motion, z_t_motion], dim=1))
        x_pred = m["pixel_decoder"]([h_pred_static, skips])
        flow_pred = m["flow_decoder"]([h_pred_dynamic, skips])
        warped = torch.clamp(warp(x_in, flow_pred), min=0, max=1)
        mask = m["mask_decoder"](torch.cat([x_pred, warped], dim=1))
        pred_x = mask * x_pred + (1 - mask) * warped
        last_motion = h_motion
        pixel_mse += F.mse_loss(x_pred, x[i])
        flow_mse += F.mse_loss(warped, x[i])
        mask_mse += F.mse_loss(pred_x, x[i])
        kld += kl(mu, logvar, mu_p, logvar_p, batch)
        kld += kl(mu_post_m, logvar_post_m, mu_prior_m, logvar_prior_m, batch)
        x_in = x[i] if i < n_past or use_truth[i - 1] else pred_x.clone().detach()
    return pixel_mse + flow_mse + mask_mse + kld * beta, pixel_mse, flow_mse, mask_mse, kld


def official_generate(m: dict[str, nn.Module], warp, x: Tensor, horizon: int, noise: dict[str, Tensor]) -> Tensor:
    """`helpers.eval_step`'s sampling loop for one sample on time-major context `x` (n_past = its length)."""
    n_past, batch = x.shape[:2]
    reset(m, batch)
    zeros_app = torch.zeros_like(noise["prior_app_noise"][:, 0])
    zeros_mot = torch.zeros_like(noise["prior_motion_noise"][:, 0])
    inject_noise(m["posterior_app"], list(noise["posterior_app_noise"].unbind(1)))
    inject_noise(m["posterior_motion"], list(noise["posterior_motion_noise"].unbind(1)))
    inject_noise(m["prior_app"], [zeros_app] * (n_past - 1) + list(noise["prior_app_noise"].unbind(1)))
    inject_noise(m["prior_motion"], [zeros_mot] * (n_past - 1) + list(noise["prior_motion_noise"].unbind(1)))
    frames: list[Tensor] = []
    skips: list[Tensor] = []
    x_in = x[0]
    for i in range(1, n_past + horizon):
        encoded_current, skip = m["img_encoder"](x_in)
        h = m["pixel_encoder"](encoded_current)
        skips = skip if i == 1 else [(skips[k] * (i - 1) + skip[k]) / i for k in range(len(skips))]
        if i < n_past:
            encoded_target, _ = m["img_encoder"](x[i])
            h_target = m["pixel_encoder"](encoded_target)
            h_motion = m["motion_encoder"](torch.cat([encoded_current, encoded_target], dim=1))
            if i == 1:
                last_motion = m["motion_encoder"](torch.cat([encoded_current, encoded_current], dim=1))
            z_t, _, _ = m["posterior_app"](h_target)
            m["prior_app"](h)
            z_t_motion, _, _ = m["posterior_motion"](h_motion)
            m["prior_motion"](last_motion)
            m["static_frame_predictor"](torch.cat([h, z_t], dim=1))
            m["dynamic_frame_predictor"](torch.cat([last_motion, z_t_motion], dim=1))
            x_in = x[i]
            last_motion = h_motion
        else:
            z_t, _, _ = m["prior_app"](h)
            z_t_motion, _, _ = m["prior_motion"](last_motion)
            h_pred_static = m["static_frame_predictor"](torch.cat([h, z_t], dim=1))
            h_pred_dynamic = m["dynamic_frame_predictor"](torch.cat([last_motion, z_t_motion], dim=1))
            x_pred = m["pixel_decoder"]([h_pred_static, skips])
            warped = torch.clamp(warp(x_in, m["flow_decoder"]([h_pred_dynamic, skips])), min=0, max=1)
            mask = m["mask_decoder"](torch.cat([x_pred, warped], dim=1))
            x_in = mask * x_pred + (1 - mask) * warped
            encoded_target, _ = m["img_encoder"](x_in)
            last_motion = m["motion_encoder"](torch.cat([encoded_current, encoded_target], dim=1))
            frames.append(x_in)
    return torch.stack(frames, dim=1)


# -- checks ----------------------------------------------------------------------------------------------------------


def _report(name: str, what: str, diff: float) -> None:
    print(f"[slamp spatial parity] {name} {what}: max abs diff {diff:.3g}")


@pytest.mark.parametrize("schedule", ["teacher", "scheduled"])
@pytest.mark.parametrize("dataset", list(FRAMES))
def test_training_loss_matches_official(official, dataset: str, schedule: str) -> None:
    """'teacher': every input the ground truth (our batched path); 'scheduled': the last input is the detached
    prediction (scheduled sampling; our frame loop)."""
    batch, length, n_past = 2, 4, 2
    models = build_official(official, dataset, batch)
    model = ours_from(models, dataset, n_past)
    gen = torch.Generator().manual_seed(2)
    video = torch.rand(batch, length, *FRAMES[dataset], generator=gen)
    latent = model.geometry.latent
    noise = {"posterior_app": torch.randn(batch, length - 1, SIZES["z_app"], *latent, generator=gen),
             "posterior_motion": torch.randn(batch, length - 1, SIZES["z_motion"], *latent, generator=gen)}
    use_truth = [True, True, schedule == "teacher"]

    for network in models.values():
        network.train()
        network.zero_grad()
    expected = official_loss(models, official.warp, video.transpose(0, 1), noise, n_past, model.config.beta, use_truth)
    expected[0].backward()
    model.train()
    model.zero_grad()
    terms = model.loss_terms(video, noise, None if schedule == "teacher" else use_truth)
    terms.loss.backward()

    got = (terms.loss, terms.pixel_mse, terms.flow_mse, terms.mask_mse, terms.kld)
    for what, a, b in zip(("loss", "pixel_mse", "flow_mse", "mask_mse", "kld"), got, expected, strict=True):
        diff = abs(a.item() - b.item())
        _report(f"{dataset} {schedule}", f"{what} ({b.item():.6g})", diff)
        assert diff < TOLERANCE * max(1.0, abs(b.item()))
    assert expected[2].item() != expected[1].item()  # the warp is not a copy of the pixel branch

    ours = dict(model.named_parameters())
    grad_diff = max((ours[f"{name}.{key}"].grad - param.grad).abs().max().item()
                    for name, network in models.items() for key, param in network.named_parameters()
                    if param.grad is not None)
    _report(f"{dataset} {schedule}", "gradients", grad_diff)
    assert grad_diff < TOLERANCE
    unused = sorted(f"{name}.{key}" for name, network in models.items() for key, param in network.named_parameters()
                    if param.grad is None)
    assert unused == sorted(f"{name}.embed.{p}" for name in LSTMS[2:] for p in ("weight", "bias"))

    buffers = dict(model.named_buffers())
    stats_diff = max((buffers[f"{name}.{key}"].double() - value.double()).abs().max().item()
                     for name, network in models.items() for key, value in network.named_buffers())
    _report(f"{dataset} {schedule}", "BatchNorm running statistics after the step", stats_diff)
    assert stats_diff < TOLERANCE


@pytest.mark.parametrize("dataset", list(FRAMES))
def test_generation_matches_official(official, dataset: str) -> None:
    batch, n_past, horizon = 2, 2, 2
    original = build_official(official, dataset, batch)
    context = torch.rand(batch, n_past, *FRAMES[dataset], generator=torch.Generator().manual_seed(1))
    # evaluate.py keeps the conv networks in training mode (batch statistics); also compare standard eval mode.
    for sampling_batchnorm, official_train_mode, tolerance in (("batch", True, BATCH_STATS_TOLERANCE),
                                                              ("running", False, TOLERANCE)):
        model = ours_from(original, dataset, n_past, sampling_batchnorm).eval()
        models = copy.deepcopy(original)  # in training mode the official networks update their running statistics
        for name, network in models.items():
            network.train(official_train_mode and name not in LSTMS)
        seed = 7
        noise = model.sample_noise(batch, n_past, horizon, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = official_generate(models, official.warp, context.transpose(0, 1), horizon,
                                         {k: v.double() for k, v in noise.items()})
            predicted = model.predict(context, horizon, generator=torch.Generator().manual_seed(seed))[:, 0]
        diff = (predicted - expected).abs().max().item()
        _report(dataset, f"predict ({sampling_batchnorm} BN)", diff)
        assert diff < tolerance
        assert expected.std() > 1e-3  # the comparison is not between two constant images


@pytest.mark.parametrize("dataset", list(FRAMES))
def test_official_checkpoint_imports(official, tmp_path: Path, dataset: str) -> None:
    """A checkpoint saved as the official `train.py` saves it (whole pickled modules, `opt` a plain dict in the
    KITTI / Cityscapes runs) imports into a `SpatialSLAMP` with every weight and statistic in place."""
    from vpkit_slamp.importer import load_official

    models = build_official(official, dataset, batch=2)
    opt = {"dataset": dataset, "channels": 3, "g_dim_app": SIZES["g"], "g_dim_motion": SIZES["g"],
           "z_dim_app": SIZES["z_app"], "z_dim_motion": SIZES["z_motion"], "rnn_size": SIZES["rnn"],
           "predictor_rnn_layers": 2, "posterior_rnn_layers": 1, "prior_rnn_layers": 1, "n_past": 10,
           "n_future": 10, "n_eval": 30, "last_frame_skip": True, "running_avg": True, "motion_skip": False,
           "beta": 1e-4, "lr": 3e-4, "beta1": 0.9, "sch_sampling": 0, "epoch_size": 1000, "batch_size": 2}
    file = tmp_path / f"slamp_{dataset}.pth"
    torch.save({**models, "opt": opt, "epoch": 150}, file)
    key, model, data = load_official(file, {})
    assert key == "slamp" and isinstance(model, SpatialSLAMP)
    assert model.frame_shape == FRAMES[dataset] and data["n_context"] == 10 and data["n_future"] == 20
    state = model.state_dict()
    for name, network in models.items():
        for k, value in network.state_dict().items():
            assert torch.equal(state[f"{name}.{k}"].double(), value.double()), f"{name}.{k}"
