"""SVG's official training step and sampling loop, written the official way (tests and benchmarks only).

This mirrors `train()` of the official `train_svg_lp.py` / `train_svg_fp.py` and the sampling loop of
`generate_svg_lp.py` / `generate_svg_fp.py` (github.com/edenton/svg): time-major, one frame per call, the encoder
called on x_{t-1} and again on x_t at every SVG-LP step, every LSTM stepped cell by cell with its hidden state kept
between calls. It runs on an `SVG` model's own modules (its BatchNorms behave as plain `nn.BatchNorm2d` outside
`time_grouped`), so the fast batched `SVG.loss_terms` and `SVG.rollout` can be checked against it on the same
weights, data and noise. Nothing in vpkit trains or samples with it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from vpkit_svg.lstm import GaussianLSTM, PredictorLSTM
from vpkit_svg.model import SVG, LossTerms, kl_gaussians, kl_standard_normal


class _Recurrence:
    """An official `lstm` / `gaussian_lstm` forward: embed, then each LSTMCell in turn, `hidden` kept between
    calls (the official modules keep it as an attribute, reset by `init_hidden()` at the start of a sequence)."""

    def __init__(self, net: PredictorLSTM | GaussianLSTM, batch: int, like: Tensor) -> None:
        self.net = net
        zeros = like.new_zeros(batch, net.hidden_size)
        self.hidden = [(zeros, zeros) for _ in range(net.n_layers)]

    def _top(self, input: Tensor) -> Tensor:
        h_in = self.net.embed(input.view(-1, self.net.input_size))
        for layer, cell in enumerate(self.net.lstm):
            self.hidden[layer] = cell(h_in, self.hidden[layer])
            h_in = self.hidden[layer][0]
        return h_in

    def predict(self, input: Tensor) -> Tensor:
        """Official `lstm.forward`."""
        return self.net.output(self._top(input))

    def gaussian(self, input: Tensor, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Official `gaussian_lstm.forward` with its `normal_()` draw replaced by `noise`."""
        top = self._top(input)
        mu, logvar = self.net.mu_net(top), self.net.logvar_net(top)
        return noise * logvar.mul(0.5).exp() + mu, mu, logvar


def reference_loss_terms(model: SVG, video: Tensor, posterior_noise: Tensor) -> LossTerms:
    """Official `train(x)` loss on `video` `[B, T, C, H, W]` with posterior noise `[B, T-1, z_dim]`."""
    cfg = model.config
    x = video.transpose(0, 1).contiguous()  # official batches are time-major, one contiguous tensor per frame
    batch, length = video.shape[:2]
    predictor = _Recurrence(model.frame_predictor, batch, video)
    posterior = _Recurrence(model.posterior, batch, video)
    prior = _Recurrence(model.prior, batch, video) if model.learned_prior else None
    h_seq = None if model.learned_prior else [model.encoder(x[t]) for t in range(length)]
    mse: Tensor | float = 0.0
    kld: Tensor | float = 0.0
    skip = None
    for t in range(1, length):
        if model.learned_prior:
            h = model.encoder(x[t - 1])
            h_target = model.encoder(x[t])[0]
        else:
            h = h_seq[t - 1]
            h_target = h_seq[t][0]
        if cfg.last_frame_skip or t < cfg.n_context:
            h, skip = h
        else:
            h = h[0]
        z, mu, logvar = posterior.gaussian(h_target, posterior_noise[:, t - 1])
        if prior is not None:
            _, mu_p, logvar_p = prior.gaussian(h, torch.zeros_like(mu))
            kld = kld + kl_gaussians(mu, logvar, mu_p, logvar_p).sum() / batch
        else:
            kld = kld + kl_standard_normal(mu, logvar).sum() / batch
        h_pred = predictor.predict(torch.cat([h, z], 1))
        x_pred = model.decoder(h_pred, skip)
        mse = mse + F.mse_loss(x_pred, x[t])
    return LossTerms(loss=mse + kld * cfg.beta, mse=mse, kld=kld)


@torch.no_grad()
def reference_generate(model: SVG, context: Tensor, horizon: int, noise: Mapping[str, Tensor]) -> Tensor:
    """Official sampling loop (`make_gifs` of generate_svg_lp.py, or of generate_svg_fp.py for SVG-FP) with its
    random draws replaced by `noise` (named as in `SVG.noise_shapes`). Returns `[B, horizon, C, H, W]`."""
    cfg = model.config
    x = context.transpose(0, 1).contiguous()
    batch, n_past = context.shape[:2]
    predictor = _Recurrence(model.frame_predictor, batch, context)
    posterior = _Recurrence(model.posterior, batch, context)
    prior = _Recurrence(model.prior, batch, context) if model.learned_prior else None
    zeros = context.new_zeros(batch, cfg.z_dim)
    frames = []
    skip = None
    x_in = x[0]
    for t in range(1, n_past + horizon):
        h = model.encoder(x_in)
        if cfg.last_frame_skip or t < n_past:
            h, skip = h
        else:
            h, _ = h
        if t < n_past:
            h_target = model.encoder(x[t])[0]
            if prior is not None:
                z, _, _ = posterior.gaussian(h_target, noise["posterior_noise"][:, t - 1])
                prior.gaussian(h, zeros)
            else:
                _, z, _ = posterior.gaussian(h_target, zeros)  # SVG-FP conditions on the posterior mean
            predictor.predict(torch.cat([h, z], 1))
            x_in = x[t]
        else:
            eps = noise["prior_noise"][:, t - n_past]
            z = prior.gaussian(h, eps)[0] if prior is not None else eps
            h = predictor.predict(torch.cat([h, z], 1))
            x_in = model.decoder(h, skip)
            frames.append(x_in)
    return torch.stack(frames, dim=1)
