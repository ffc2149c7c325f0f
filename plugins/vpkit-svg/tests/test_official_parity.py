"""Fidelity to the official SVG code: an imported checkpoint reproduces the official loops on the same weights.

Needs a checkout of github.com/edenton/svg, named by the environment variable VPKIT_SVG_OFFICIAL; skipped without
one (vpkit never ships the official code). The official networks (`models/*.py`) are built with random weights and
saved whole as `train_svg_{lp,fp}.py` save them, imported with `vpkit_svg.importer.load_official`, and then:

- generation: the official sampling loop of `generate_svg_{lp,fp}.py`, driven through the official modules with
  their `reparameterize` draws replaced by the same noise our `predict` draws (it drives `rollout` over the
  exportable graphs), against our outputs, with BatchNorm in the official mode and in the other one;
- training: the official `train(x)` loss (and its gradients and BatchNorm running statistics) against our
  `loss_terms` on the same clip and posterior noise, in float32 and in float64 (where only rounding is left).

The official modules hard-code `.cuda()` in `init_hidden`; the fixture makes `.cuda()` a no-op for the test's
duration instead of editing their files. The loops below restate the official scripts' control flow in our words.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from vpkit_svg.importer import load_official

OFFICIAL = os.environ.get("VPKIT_SVG_OFFICIAL", "")
pytestmark = pytest.mark.skipif(
    not (OFFICIAL and (Path(OFFICIAL) / "models" / "lstm.py").is_file()),
    reason="set VPKIT_SVG_OFFICIAL to a checkout of github.com/edenton/svg to compare with the official code",
)

# float32 with a different op order (fused LSTM, batched BatchNorm): measured differences are at most ~2e-5 (a
# gradient), ~1e-16 when the same comparison runs in float64.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def official() -> Iterator[types.SimpleNamespace]:
    """The official `models.lstm`, `models.dcgan_64` and `models.vgg_64`, importable on a CPU-only machine."""
    patch = pytest.MonkeyPatch()
    patch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    shadowed = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "models"}
    patch.syspath_prepend(OFFICIAL)
    try:
        yield types.SimpleNamespace(**{name: importlib.import_module(f"models.{name}")
                                       for name in ("lstm", "dcgan_64", "vgg_64")})
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "models"]:
            del sys.modules[name]
        sys.modules.update(shadowed)
        patch.undo()


# -- official checkpoints -------------------------------------------------------------------------------------------


def official_options(**changes: object) -> argparse.Namespace:
    """`train_svg_lp.py`'s parsed options at their defaults (the SM-MNIST recipe), as the script saves them."""
    opt = argparse.Namespace(
        lr=0.002, beta1=0.9, batch_size=100, log_dir="logs/lp/smmnist-2/model", model_dir="", name="",
        data_root="data", optimizer=torch.optim.Adam, niter=300, seed=1, epoch_size=600, image_width=64, channels=1,
        dataset="smmnist", n_past=5, n_future=10, n_eval=30, rnn_size=256, prior_rnn_layers=1,
        posterior_rnn_layers=1, predictor_rnn_layers=2, z_dim=10, g_dim=128, beta=0.0001, model="dcgan",
        data_threads=5, num_digits=2, last_frame_skip=False,
    )
    for key, value in changes.items():
        setattr(opt, key, value)
    return opt


def build_official(official: types.SimpleNamespace, opt: argparse.Namespace, learned_prior: bool) -> dict:
    """The official networks with random weights and non-trivial BatchNorm statistics, keyed as saved."""
    torch.manual_seed(0)
    net = {"dcgan": official.dcgan_64, "vgg": official.vgg_64}[opt.model]
    lstm = official.lstm
    saved = {
        "encoder": net.encoder(opt.g_dim, opt.channels),
        "decoder": net.decoder(opt.g_dim, opt.channels),
        "frame_predictor": lstm.lstm(opt.g_dim + opt.z_dim, opt.g_dim, opt.rnn_size, opt.predictor_rnn_layers,
                                     opt.batch_size),
        "posterior": lstm.gaussian_lstm(opt.g_dim, opt.z_dim, opt.rnn_size, opt.posterior_rnn_layers,
                                        opt.batch_size),
    }
    if learned_prior:
        saved["prior"] = lstm.gaussian_lstm(opt.g_dim, opt.z_dim, opt.rnn_size, opt.prior_rnn_layers,
                                            opt.batch_size)
    with torch.no_grad():
        for module in (m for network in saved.values() for m in network.modules()):
            if isinstance(module, nn.BatchNorm2d):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return saved | {"opt": opt}


def inject_noise(module: nn.Module, draws: list[Tensor]) -> None:
    """Make the official `gaussian_lstm.reparameterize` take its standard-normal draws from `draws`, in order."""

    def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
        return draws.pop(0).mul(logvar.mul(0.5).exp()).add_(mu)

    module.reparameterize = reparameterize


def save_official(tmp_path: Path, saved: dict) -> Path:
    """Save as train_svg_{lp,fp}.py does; the released files were written by PyTorch 0.3, in the pre-zip format."""
    file = tmp_path / "model.pth"
    torch.save(saved, file, _use_new_zipfile_serialization=False)
    return file


# -- the official loops ---------------------------------------------------------------------------------------------


def official_generate(saved: dict, x: Tensor, horizon: int, noise: dict[str, Tensor]) -> Tensor:
    """`make_gifs`' sampling loop of generate_svg_lp.py (or _fp.py without a prior) on time-major context `x`."""
    opt, encoder, decoder = saved["opt"], saved["encoder"], saved["decoder"]
    predictor, posterior, prior = saved["frame_predictor"], saved["posterior"], saved.get("prior")
    n_past, batch = x.shape[:2]
    for network in (predictor, posterior, prior):
        if network is not None:
            network.batch_size = batch
            network.hidden = network.init_hidden()
    zeros = torch.zeros(batch, opt.z_dim)
    if prior is not None:
        inject_noise(posterior, list(noise["posterior_noise"].unbind(1)))
        inject_noise(prior, [zeros] * (n_past - 1) + list(noise["prior_noise"].unbind(1)))
    else:
        inject_noise(posterior, [zeros] * (n_past - 1))  # its sample is unused: FP conditions on the mean
    frames = []
    x_in = x[0]
    for i in range(1, n_past + horizon):
        h = encoder(x_in)
        if opt.last_frame_skip or i < n_past:
            h, skip = h
        else:
            h, _ = h
        if i < n_past:
            h_target = encoder(x[i])[0]
            if prior is not None:
                z_t, _, _ = posterior(h_target)
                prior(h)
            else:
                _, z_t, _ = posterior(h_target)
            predictor(torch.cat([h, z_t], 1))
            x_in = x[i]
        else:
            if prior is not None:
                z_t, _, _ = prior(h)
            else:
                z_t = noise["prior_noise"][:, i - n_past]
            h = predictor(torch.cat([h, z_t], 1))
            x_in = decoder([h, skip])
            frames.append(x_in)
    return torch.stack(frames, dim=1)


def official_loss(saved: dict, x: Tensor, posterior_noise: Tensor) -> Tensor:
    """`train(x)`'s loss in train_svg_lp.py (or _fp.py without a prior) on time-major `x`."""
    opt, encoder, decoder = saved["opt"], saved["encoder"], saved["decoder"]
    predictor, posterior, prior = saved["frame_predictor"], saved["posterior"], saved.get("prior")
    length, batch = x.shape[:2]
    for network in (predictor, posterior, prior):
        if network is not None:
            network.batch_size = batch
            network.hidden = network.init_hidden()
    inject_noise(posterior, list(posterior_noise.unbind(1)))
    if prior is not None:
        inject_noise(prior, [torch.zeros(batch, opt.z_dim)] * (length - 1))  # prior samples are unused
    h_seq = None if prior is not None else [encoder(x[i]) for i in range(length)]
    mse = kld = 0
    for i in range(1, length):
        if prior is not None:
            h = encoder(x[i - 1])
            h_target = encoder(x[i])[0]
        else:
            h, h_target = h_seq[i - 1], h_seq[i][0]
        if opt.last_frame_skip or i < opt.n_past:
            h, skip = h
        else:
            h = h[0]
        z_t, mu, logvar = posterior(h_target)
        if prior is not None:
            _, mu_p, logvar_p = prior(h)
            sigma1, sigma2 = logvar.mul(0.5).exp(), logvar_p.mul(0.5).exp()
            kl = torch.log(sigma2 / sigma1) + (torch.exp(logvar) + (mu - mu_p) ** 2) / (2 * torch.exp(logvar_p)) - 0.5
        else:
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
        x_pred = decoder([predictor(torch.cat([h, z_t], 1)), skip])
        mse = mse + nn.MSELoss()(x_pred, x[i])
        kld = kld + kl.sum() / batch
    return mse + kld * opt.beta


# -- checks ----------------------------------------------------------------------------------------------------------

CASES = {
    # name: (changes to the official options, learned prior, batch, horizon); clips kept short for CPU time
    "lp-dcgan64-smmnist": ({"n_future": 3}, True, 3, 4),
    "lp-vgg64-bair": ({"model": "vgg", "channels": 3, "z_dim": 64, "n_past": 2, "n_future": 3,
                       "dataset": "bair"}, True, 3, 3),
    "fp-dcgan64-smmnist": ({"n_future": 3}, False, 3, 4),
    "lp-dcgan64-last-frame-skip": ({"last_frame_skip": True, "n_past": 3, "n_future": 2}, True, 3, 3),
}


def _video(batch: int, length: int, channels: int, seed: int) -> Tensor:
    return torch.rand(batch, length, channels, 64, 64, generator=torch.Generator().manual_seed(seed))


def _report(name: str, what: str, diff: float) -> None:
    print(f"[svg parity] {name} {what}: max abs diff {diff:.3g}")


@pytest.mark.parametrize("case", list(CASES))
def test_generation_matches_official(official, tmp_path: Path, case: str) -> None:
    changes, learned_prior, batch, horizon = CASES[case]
    original = build_official(official, official_options(**changes), learned_prior)
    opt = original["opt"]
    context = _video(batch, opt.n_past, opt.channels, seed=1)
    file = save_official(tmp_path, original)
    # generate_svg_lp.py leaves the encoder and decoder in training mode; generate_svg_fp.py calls eval().
    modes = [("batch", True), ("running", False)] if learned_prior else [("running", False)]
    for sampling_batchnorm, official_train_mode in modes:
        model_key, model, _ = load_official(file, {"sampling_batchnorm": sampling_batchnorm})
        assert model_key == ("svg-lp" if learned_prior else "svg-fp")
        # A fresh copy each time: in training mode the official networks update their running statistics.
        saved = copy.deepcopy(original)
        for network in saved.values():
            if isinstance(network, nn.Module):
                network.eval()
        saved["encoder"].train(official_train_mode)
        saved["decoder"].train(official_train_mode)

        seed = 7
        noise = model.sample_noise(batch, opt.n_past, horizon, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = official_generate(saved, context.transpose(0, 1), horizon, noise)
            # predict draws the same noise from a generator seeded alike, then drives the exportable graphs.
            predicted = model.predict(context, horizon, generator=torch.Generator().manual_seed(seed))[:, 0]
        diff = (predicted - expected).abs().max().item()
        _report(case, f"predict ({sampling_batchnorm} BN)", diff)
        assert diff < TOLERANCE
        assert expected.std() > 1e-3  # the comparison is not between two constant images


@pytest.fixture(params=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> Iterator[torch.dtype]:
    """Run the whole comparison in this default dtype; float64 shows what is left once rounding is out of the way
    (the official `init_hidden` and our model both follow the default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, request.param))
    try:
        yield torch.get_default_dtype()
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("case", list(CASES))
def test_training_loss_matches_official(official, tmp_path: Path, case: str, dtype: torch.dtype) -> None:
    changes, learned_prior, batch, _ = CASES[case]
    saved = build_official(official, official_options(**changes), learned_prior)
    opt = saved["opt"]
    _, model, _ = load_official(save_official(tmp_path, saved), {})
    assert next(model.parameters()).dtype == dtype
    tolerance = TOLERANCE if dtype == torch.float32 else 1e-10
    length = opt.n_past + opt.n_future
    video = _video(batch, length, opt.channels, seed=2)
    noise = torch.randn(batch, length - 1, opt.z_dim, generator=torch.Generator().manual_seed(3))

    networks = {name: network for name, network in saved.items() if isinstance(network, nn.Module)}
    for network in networks.values():
        network.train()
        network.zero_grad()
    expected = official_loss(saved, video.transpose(0, 1), noise)
    expected.backward()
    model.train()
    model.zero_grad()
    terms = model.loss_terms(video, noise)
    terms.loss.backward()

    label = f"{case} {str(dtype).removeprefix('torch.')}"
    diff_loss = abs(terms.loss.item() - expected.item())
    _report(label, f"training loss ({expected.item():.4g})", diff_loss)
    assert diff_loss < tolerance * max(1.0, abs(expected.item()))

    ours = dict(model.named_parameters())
    grad_diff = max((ours[f"{name}.{key}"].grad - param.grad).abs().max().item()
                    for name, network in networks.items() for key, param in network.named_parameters())
    grad_scale = max(param.grad.abs().max().item() for network in networks.values() for param in network.parameters())
    _report(label, f"gradients (largest |grad| {grad_scale:.3g})", grad_diff)
    assert grad_diff < tolerance

    buffers = dict(model.named_buffers())
    stats_diff = max((buffers[f"{name}.{key}"].double() - value.double()).abs().max().item()
                     for name, network in networks.items() for key, value in network.named_buffers())
    _report(label, "BatchNorm running statistics after the step", stats_diff)
    assert stats_diff < tolerance
