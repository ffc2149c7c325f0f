"""`memory_chunk`: training with chunked, recomputed stages gives the whole-batch loss, outputs and gradients (the
same random draws included) in every phase, for DDLP and DLPv2."""

from __future__ import annotations

import pytest
import torch
from vpkit_ddlp.config import DDLPConfig, DLPConfig
from vpkit_ddlp.ddlp import DDLP
from vpkit_ddlp.dlp import DLP
from vpkit_ddlp.objective import Phase

SMALL = {"patch_size": 16, "enc_channels": (8, 8, 8), "prior_channels": (4, 4, 8), "n_kp_prior": 4, "n_kp_enc": 3,
         "learned_feature_dim": 4}
SMALL_DDLP = {**SMALL, "timestep_horizon": 3, "n_context": 3, "n_future": 1, "num_static_frames": 2,
              "pint_dim": 16, "pint_heads": 2, "pint_layers": 1, "pint_dropout": 0.1}
PHASES = [Phase(True, True, 0), Phase(False, True, 1), Phase(False, False, 2)]


def _run(model, video, phase):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # sampling, alpha noise and dropout draw from the global generator
    if isinstance(model, DDLP):
        out = model.forward_video(video, phase=phase)
        loss = model.loss(video, out, phase, model.discount(5, video.device, video.dtype))["loss"]
    else:
        x = video.flatten(0, 1)
        out = model.forward_images(x, phase=phase)
        loss = model.loss(x, out, phase)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), out["rec"].detach(), out["z"].detach(), grads


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("kind", ["ddlp", "dlp"])
def test_chunked_training_equals_whole(kind, phase):
    video = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    results = []
    for chunk in (0, 3):
        torch.manual_seed(0)
        if kind == "ddlp":
            model = DDLP(DDLPConfig(**SMALL_DDLP, memory_chunk=chunk), (3, 32, 32))
        else:
            model = DLP(DLPConfig(**SMALL, memory_chunk=chunk), (3, 32, 32))
        results.append(_run(model, video, phase))
    (loss0, rec0, z0, g0), (loss1, rec1, z1, g1) = results
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rec1, rec0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z1, z0, rtol=1e-6, atol=1e-6)
    assert g1.keys() == g0.keys()
    for name in g0:  # float summation order over chunks: within 1e-5 of each tensor's largest entry
        assert (g1[name] - g0[name]).abs().max() <= 1e-5 * g0[name].abs().max() + 1e-7, name


def test_chunking_is_off_without_gradients():
    torch.manual_seed(0)
    model = DDLP(DDLPConfig(**SMALL_DDLP, memory_chunk=1), (3, 32, 32)).eval()
    video = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.forward_video(video, deterministic=True)
    assert "alpha_masks" in out  # the whole-batch decode ran
