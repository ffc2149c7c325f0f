"""Fidelity to the official SLAMP code: an imported checkpoint reproduces the official training loss, gradients and
samples on the same weights, clip and noise.

Needs a checkout of github.com/kaanakan/slamp, named by the environment variable VPKIT_SLAMP_OFFICIAL; skipped
without one (vpkit never ships the official code). The official networks are built by the official
`helpers.get_model_generic`, saved whole as `train.py` saves them, imported with `vpkit_slamp.importer.load_official`,
and then the official `helpers.train_step` and `helpers.eval_step` themselves run against our `loss_terms` and our
`rollout` (through the exportable graphs). Their `gaussian_lstm.reparameterize` draws are replaced by the same noise
ours take; `random.random` (scheduled sampling) is replaced by a fixed sequence; the official modules that only
serve data loading and metrics (`utils`, `data.base`, `metric_helpers`, which import libraries this environment
lacks) are replaced by inert stand-ins for the test's duration. Everything runs in float64, so only rounding is left.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from vpkit_slamp.importer import load_official

from vpkit.core.model import TorchBackend

OFFICIAL = os.environ.get("VPKIT_SLAMP_OFFICIAL", "")
pytestmark = pytest.mark.skipif(
    not (OFFICIAL and (Path(OFFICIAL) / "helpers.py").is_file()),
    reason="set VPKIT_SLAMP_OFFICIAL to a checkout of github.com/kaanakan/slamp to compare with the official code",
)

TOLERANCE = 1e-9  # float64; measured differences are ~1e-15


def _stub(name: str, **attributes: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


@pytest.fixture(scope="module")
def helpers() -> Iterator[types.ModuleType]:
    """The official `helpers` module, importable on a CPU-only machine without its data and metric libraries."""
    patch = pytest.MonkeyPatch()
    owned = ("models", "helpers", "flow_utils", "utils", "data", "metric_helpers")
    shadowed = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] in owned}
    patch.syspath_prepend(OFFICIAL)
    sys.modules.update({
        "utils": _stub("utils", init_weights=lambda module: None),
        "data": _stub("data"), "data.base": _stub("data.base"),
        "metric_helpers": _stub(
            "metric_helpers",
            _ssim_wrapper=lambda gen, gt: torch.zeros(gen.shape[:3]),
            _lpips_wrapper=lambda gen, gt, model: torch.zeros(gen.shape[1], gen.shape[0]),
        ),
    })
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the official warp builds its ones-mask in the default dtype
    try:
        yield importlib.import_module("helpers")
    finally:
        torch.set_default_dtype(previous)
        for name in [name for name in sys.modules if name.split(".")[0] in owned]:
            del sys.modules[name]
        sys.modules.update(shadowed)
        patch.undo()


def official_options(**changes: object) -> argparse.Namespace:
    """`args.py` defaults (the SM-MNIST recipe) with a small batch, as `train.py` saves them."""
    opt = argparse.Namespace(
        lr=3e-4, beta1=0.9, batch_size=3, log_dir="logs/lp", model_dir="", name="", data_root="data",
        optimizer=torch.optim.Adam, niter=300, seed=1, epoch_size=1000, image_width=64, channels=1,
        dataset="smmnist", n_past=3, n_future=3, n_eval=7, rnn_size=32, prior_rnn_layers=1, posterior_rnn_layers=1,
        predictor_rnn_layers=2, z_dim_app=4, g_dim_app=16, z_dim_motion=3, g_dim_motion=12, beta=1e-4,
        model="dcgan", data_threads=4, num_digits=2, last_frame_skip=True, device=False, running_avg=True,
        sch_sampling=0, two_lstm=False, motion_skip=False,
    )
    for key, value in changes.items():
        setattr(opt, key, value)
    return opt


def official_checkpoint(helpers: types.ModuleType, opt: argparse.Namespace, path: Path) -> dict[str, nn.Module]:
    """The official networks with random weights (non-trivial BatchNorm affine parameters), saved as train.py."""
    torch.manual_seed(0)
    models, _ = helpers.get_model_generic(opt, "cpu")
    with torch.no_grad():
        for module in models.values():
            for name, param in module.named_parameters():
                param.normal_(0.0, 0.5 if "weight" in name and param.dim() == 1 else 0.05)
                if param.dim() == 1 and name.endswith("weight"):
                    param.add_(1.0)
    torch.save({**models, "opt": opt, "epoch": 3}, path)
    return models


def queue_noise(module: nn.Module, draws: Iterator[Tensor]) -> None:
    """Make the official `reparameterize` of `module` take its standard-normal draws from `draws`."""
    module.reparameterize = lambda mu, logvar: mu + torch.exp(0.5 * logvar) * next(draws)


@pytest.mark.parametrize(("model", "sch_sampling"), [("dcgan", 0), ("vgg", 0), ("dcgan", 5)])
def test_training_loss_and_gradients_match_official(helpers, tmp_path, model, sch_sampling):
    opt = official_options(model=model, sch_sampling=sch_sampling, is_real_dataset=False, sc_prob=0.5)
    models = official_checkpoint(helpers, opt, tmp_path / "slamp.pth")
    ours = load_official(tmp_path / "slamp.pth", {})[1].double().train()

    length, batch = opt.n_past + opt.n_future, opt.batch_size
    gen = torch.Generator().manual_seed(1)
    video = torch.rand(batch, length, 1, 64, 64, generator=gen, dtype=torch.float64)
    noise = {"posterior_app": torch.randn(batch, length - 1, opt.z_dim_app, generator=gen, dtype=torch.float64),
             "posterior_motion": torch.randn(batch, length - 1, opt.z_dim_motion, generator=gen,
                                             dtype=torch.float64)}
    coins = [0.9, 0.1, 0.3, 0.7]  # random.random() draws of the steps i >= n_past
    use_truth = [True] * (opt.n_past - 1) + [coin < opt.sc_prob for coin in coins][: length - opt.n_past]

    for name in ("posterior_app", "posterior_motion"):
        queue_noise(models[name], iter(noise[name].unbind(1)))
    for name in ("prior_app", "prior_motion"):  # the priors' draws are unused in training
        queue_noise(models[name], itertools.repeat(torch.zeros(())))
    for module in models.values():
        module.double().train()
    optims = {name: types.SimpleNamespace(step=lambda: None) for name in models}  # keep the weights as they are
    draws = iter(coins)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(helpers.random, "random", lambda: next(draws))
        official = helpers.train_step(list(video.transpose(0, 1)), models, optims, opt, "cpu")

    terms = ours.loss_terms(video, noise, use_truth if sch_sampling else None)
    terms.loss.backward()
    for theirs, mine in zip(official, (terms.pixel_mse, terms.flow_mse, terms.mask_mse, terms.kld), strict=True):
        assert abs(float(theirs) - mine.item() / length) < TOLERANCE
    grads = dict(ours.named_parameters())
    for name, module in models.items():
        for key, param in module.named_parameters():
            torch.testing.assert_close(grads[f"{name}.{key}"].grad, param.grad, rtol=1e-7, atol=TOLERANCE)


@pytest.mark.parametrize("model", ["dcgan", "vgg"])
def test_samples_match_official_eval_step(helpers, tmp_path, model):
    opt = official_options(model=model, is_real_dataset=False, nsample=1)
    models = official_checkpoint(helpers, opt, tmp_path / "slamp.pth")
    ours = load_official(tmp_path / "slamp.pth", {})[1].double().eval()
    assert ours.config.sampling_batchnorm == "batch"  # the official evaluate.py mode

    n_context, horizon, batch = opt.n_past, opt.n_eval - opt.n_past, opt.batch_size
    gen = torch.Generator().manual_seed(2)
    context = torch.rand(batch, n_context, 1, 64, 64, generator=gen, dtype=torch.float64)
    noise = {name: torch.randn(shape, generator=gen, dtype=torch.float64)
             for name, shape in ours.noise_shapes(batch, n_context, horizon).items()}

    unused = [torch.zeros(())] * (n_context - 1)  # the priors are stepped on the context for their state only
    queue_noise(models["posterior_app"], iter(noise["posterior_app_noise"].unbind(1)))
    queue_noise(models["posterior_motion"], iter(noise["posterior_motion_noise"].unbind(1)))
    queue_noise(models["prior_app"], iter(unused + list(noise["prior_app_noise"].unbind(1))))
    queue_noise(models["prior_motion"], iter(unused + list(noise["prior_motion_noise"].unbind(1))))
    for name, module in models.items():  # as helpers.load_model_from_checkpoint: conv nets train(), LSTMs eval()
        module.double().train(not any(kind in name for kind in ("prior", "posterior", "predictor")))
    frames = torch.cat([context, torch.zeros(batch, horizon, 1, 64, 64, dtype=torch.float64)], dim=1)
    best, _ = helpers.eval_step(list(frames.transpose(0, 1)), models, opt, "cpu", None)
    official = best["psnr"].permute(0, 1, 4, 2, 3)  # [B, T, H, W, C] -> [B, T, C, H, W]

    with torch.no_grad():
        mine = ours.rollout(TorchBackend(ours.export_plan()), context, horizon, noise)
    torch.testing.assert_close(mine, official, rtol=0, atol=TOLERANCE)
