"""SRVP: conformance, official parameter counts and state-dict layout, the loss by value against a step-by-step
computation written from the paper/official semantics, Euler sub-steps, test-time re-inference and the lr schedule."""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
import torch.distributions as D
from vpkit_srvp.config import SRVPConfig
from vpkit_srvp.model import SRVP, LinearDecayAfterBurnin

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.model import TorchBackend
from vpkit.testing import ModelConformance, make_train_context

TINY = {"nf": 4, "nhx": 8, "ny": 3, "nz": 2, "nt_inf": 2, "nh_inf": 8, "nh_res": 8, "n_context": 3, "n_future": 2}


def tiny_model(seed: int = 0, channels: int = 1, **overrides) -> SRVP:
    torch.manual_seed(seed)
    return SRVP(SRVPConfig(**{**TINY, **overrides}), (channels, 64, 64)).double()


# -- conformance ----------------------------------------------------------------------------------------------------


class TestSRVPConformance(ModelConformance):
    model_key = "srvp"
    preset = "tiny"  # dcgan, skips, 2 Euler sub-steps
    horizon = 4


class TestSRVPVGGConformance(ModelConformance):
    model_key = "srvp"
    preset = "tiny"
    n_context = 3
    config_overrides: ClassVar[dict[str, object]] = {"archi": "vgg", "skipco": False, "n_euler_steps": 1,
                                                     "sampling_batchnorm": "batch"}

    def test_onnx_export(self, harness) -> None:
        pytest.skip("ONNX export is covered by TestSRVPConformance (same graphs; keeps this file fast)")


# -- official architecture ------------------------------------------------------------------------------------------

# Totals of the official model built with each README command (reference section 7; human36m and mmnist computed
# from the official classes with the README options).
OFFICIAL_COUNTS = {"smmnist": 10_678_284, "mmnist": 10_678_284, "kth": 23_877_854, "human36m": 23_880_158,
                   "bair": 23_847_390}


@pytest.mark.parametrize("preset", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_match_official(srvp_host, preset):
    spec = srvp_host.models.get("srvp")
    recipe = spec.presets[preset]
    model = spec.build(build_config(spec.config_cls, recipe.model, what="test"), recipe.frame_shape)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_COUNTS[preset]


def test_registration(srvp_host):
    spec = srvp_host.models.get("srvp")
    assert spec.default and spec.plugin == "srvp"
    assert {name: p.dataset for name, p in spec.presets.items() if name != "tiny"} == {
        "smmnist": "smmnist", "mmnist": "mmnist", "kth": "kth", "human36m": "human36m", "bair": "bair"}
    kth = spec.presets["kth"]
    assert kth.model["n_euler_steps"] == 2 and kth.model["obs_scale"] == 0.2 and kth.train["steps"] == 200_000


def test_state_dict_keys_are_official():
    model = tiny_model(archi="dcgan", skipco=True)
    keys = set(model.state_dict())
    for key in ("encoder.conv.0.0.weight", "encoder.conv.1.1.running_mean", "encoder.last_conv.1.weight",
                "decoder.first_upconv.0.weight", "decoder.conv.3.weight", "w_proj.0.weight", "w_inf.0.bias",
                "q_y.module.0.0.weight", "q_y.module.2.1.bias", "inf_z.weight_ih_l0", "inf_z.bias_hh_l0",
                "q_z.weight", "p_z.module.3.1.weight", "dynamics.module.0.0.weight"):
        assert key in keys, key
    assert "encoder.conv.0.1.weight" not in keys  # the DCGAN's first encoder block has no BatchNorm
    convs = [m for net in (model.encoder, model.decoder) for m in net.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(m.bias is None for m in convs)  # bias-free convs
    vgg = set(tiny_model(archi="vgg").state_dict())
    assert {"encoder.conv.1.1.0.weight", "encoder.last_conv.1.0.weight", "decoder.first_upconv.0.0.weight",
            "decoder.conv.3.1.weight"} <= vgg


def test_nt_inf_cannot_exceed_context():
    with pytest.raises(ValueError, match="nt_inf"):
        SRVPConfig(nt_inf=4, n_context=3)


# -- loss by value ------------------------------------------------------------------------------------------------------


def hand_loss(model: SRVP, video, y0_noise, z_noise, w_frames, skip_frame):
    """The official objective computed frame by frame with torch.distributions, time-major, as `train.py` does."""
    c = model.config
    x = video.transpose(0, 1)  # [T, B, ...]
    T, B = x.shape[:2]
    h, skips = model.encoder(x.reshape(T * B, *x.shape[2:]))
    h = h.view(T, B, -1)
    skips = [s.view(T, B, *s.shape[1:]) for s in skips]

    def normal(params):
        loc, raw = params.chunk(2, -1)
        return D.Normal(loc, torch.nn.functional.softplus(raw) + 1e-8)

    w = model.w_inf(sum(model.w_proj(h[w_frames[:, k], torch.arange(B)]) for k in range(c.nt_inf)))
    q_y = normal(model.q_y(torch.cat([h[k] for k in range(c.nt_inf)], dim=1)))
    y = q_y.loc + q_y.scale * y0_noise
    lstm_out, _ = model.inf_z(h)
    dt = 1 / c.n_euler_steps
    states, kl_z, l2 = [y], 0.0, 0.0
    for t in range(1, T):
        q_z, p_z = normal(model.q_z(lstm_out[t])), normal(model.p_z(y))
        z = q_z.loc + q_z.scale * z_noise[:, t - 1]
        kl_z = kl_z + D.kl_divergence(q_z, p_z).sum()
        for _ in range(c.n_euler_steps):
            res = dt * model.dynamics(torch.cat([y, z], 1))
            l2 = l2 + res.norm(dim=1).sum()
            y = y + res
        states.append(y)
    nll = 0.0
    for t in range(T):
        skip = [s[skip_frame, torch.arange(B)] for s in skips] if c.skipco else None
        frame = torch.sigmoid(model.decoder(torch.cat([w, states[t]], 1), skip))
        nll = nll - D.Normal(frame, c.obs_scale).log_prob(x[t]).sum()
    kl_y0 = D.kl_divergence(q_y, D.Normal(0.0, 1.0)).sum()
    return (nll + c.beta_y * kl_y0 + c.beta_z * kl_z + c.l2_res * l2) / B, nll, kl_y0, kl_z, l2


@pytest.mark.parametrize(("archi", "skipco", "n_euler"), [("dcgan", True, 2), ("vgg", False, 1)])
def test_loss_terms_match_hand_computation(archi, skipco, n_euler):
    model = tiny_model(archi=archi, skipco=skipco, n_euler_steps=n_euler, obs_scale=0.2, beta_y=0.7, beta_z=2.0,
                       l2_res=1.5)
    model.eval()  # BatchNorm with running statistics: both computations see the same normalisation
    gen = torch.Generator().manual_seed(1)
    B, T = 3, 5
    video = torch.rand(B, T, 1, 64, 64, generator=gen, dtype=torch.float64)
    y0_noise = torch.randn(B, 3, generator=gen, dtype=torch.float64)
    z_noise = torch.randn(B, T - 1, 2, generator=gen, dtype=torch.float64)
    w_frames = torch.tensor([[4, 0], [1, 3], [2, 3]])
    skip_frame = torch.tensor([0, 4, 2])
    with torch.no_grad():
        terms = model.loss_terms(video, y0_noise, z_noise, w_frames, skip_frame)
        expected = hand_loss(model, video, y0_noise, z_noise, w_frames, skip_frame)
    for got, want in zip((terms.loss, terms.nll, terms.kl_y0, terms.kl_z, terms.l2_res), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # the Gaussian NLL has the fixed-sigma normaliser: a perfect reconstruction still costs log(sigma sqrt(2 pi))
    assert math.isclose(float(terms.nll), float(
        (0.5 * ((terms.frames - video) / 0.2) ** 2).sum() + video.numel() * math.log(0.2 * math.sqrt(2 * math.pi))))


def test_training_step_logs_and_random_choices():
    model = tiny_model(skipco=True, n_euler_steps=2)
    model.train()
    video = torch.rand(2, 5, 1, 64, 64, dtype=torch.float64)
    out = model.training_step(video, make_train_context())
    assert set(out.logs) == {"nll", "kl_y0", "kl_z", "l2_res"}
    parts = out.logs["nll"] + out.logs["kl_y0"] + 1.0 * out.logs["kl_z"] + out.logs["l2_res"]
    torch.testing.assert_close(out.loss.detach(), parts)


# -- Euler sub-steps ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_euler", [1, 2, 3])
def test_euler_substeps(n_euler):
    model = tiny_model(n_euler_steps=n_euler)
    model.eval()
    calls = []
    model.dynamics.register_forward_hook(lambda m, inp, out: calls.append(inp[0].detach().clone()))
    B, T = 2, 4
    video = torch.rand(B, T, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        terms = model.loss_terms(video, torch.randn(B, 3, dtype=torch.float64),
                                 torch.randn(B, T - 1, 2, dtype=torch.float64),
                                 torch.zeros(B, 2, dtype=torch.long), torch.zeros(B, dtype=torch.long))
    assert len(calls) == (T - 1) * n_euler
    assert terms.residuals.shape == (B, (T - 1) * n_euler, 3)  # every sub-step residual enters the L2 penalty
    torch.testing.assert_close(terms.l2_res, terms.residuals.norm(dim=2).sum())
    for interval in range(T - 1):  # one z per frame interval, reused by every sub-step
        zs = [calls[interval * n_euler + k][:, 3:] for k in range(n_euler)]
        assert all(torch.equal(zs[0], z) for z in zs)
    # the prior is evaluated once per interval, at the integer state
    prior_inputs = []
    model.p_z.register_forward_hook(lambda m, inp, out: prior_inputs.append(inp[0]))
    calls.clear()
    with torch.no_grad():
        model.predict(video[:, :3], 2, generator=torch.Generator().manual_seed(0))
    assert len(prior_inputs) == 2
    assert len(calls) == (3 - 1 + 2) * n_euler
    torch.testing.assert_close(prior_inputs[1], calls[(3 - 1 + 1) * n_euler - 1][:, :3]
                               + model.config.dt * model.dynamics(calls[(3 - 1 + 1) * n_euler - 1]))


# -- sampling ---------------------------------------------------------------------------------------------------------


def test_test_time_reinference_per_sample():
    """y_0 and the posterior z's are sampled anew for every sample: the same prior noise with other y_0 / posterior
    noise gives other predictions, and the z LSTM reads every context frame."""
    model = tiny_model(skipco=True, n_euler_steps=2)
    model.eval()
    backend = TorchBackend(model.export_plan())
    context = torch.rand(2, 3, 1, 64, 64, dtype=torch.float64)
    noise = {k: v.double() for k, v in model.sample_noise(2, 3, 2, generator=torch.Generator().manual_seed(0)).items()}
    with torch.no_grad():
        base = model.rollout(backend, context, 2, noise)
        for name in ("y0_noise", "posterior_noise"):
            other = model.rollout(backend, context, 2, {**noise, name: torch.randn_like(noise[name])})
            assert (other - base).abs().max() > 1e-9, name
        posterior_steps = []
        hook = model.q_z.register_forward_hook(lambda m, inp, out: posterior_steps.append(out))
        model.rollout(backend, context, 2, noise)
        hook.remove()
    assert len(posterior_steps) == 3  # the z LSTM reads every context frame (its output at frame 0 is unused)
    # predictions are samples: two draws for the same video differ
    samples = model.predict(context, 2, num_samples=2, generator=torch.Generator().manual_seed(1))
    assert (samples[:, 0] - samples[:, 1]).abs().max() > 1e-9


def test_posterior_step_graph_matches_lstm():
    model = tiny_model()
    plan = model.export_plan()
    h = torch.rand(3, 4, 8, dtype=torch.float64)
    expected, _ = model.inf_z(h)
    state = (torch.zeros(4, 8, dtype=torch.float64),) * 2
    for t in range(3):
        _, sh, sc = plan.graphs["posterior_step"].module(h[t], *state, torch.zeros(4, 2, dtype=torch.float64))
        state = (sh, sc)
        torch.testing.assert_close(sh, expected[t])


def test_rollout_needs_nt_inf_context_frames():
    model = tiny_model(nt_inf=2)
    context = torch.rand(1, 1, 1, 64, 64, dtype=torch.float64)
    with pytest.raises(VpkitError, match="nt_inf"):
        model.predict(context, 2)


def test_sampling_batchnorm_option():
    model = tiny_model(sampling_batchnorm="running")
    model.eval()
    context = torch.rand(2, 3, 1, 64, 64, dtype=torch.float64)
    gen = lambda: torch.Generator().manual_seed(0)
    running = model.predict(context, 2, generator=gen())
    batch_model = tiny_model(sampling_batchnorm="batch")
    batch_model.eval()
    stats = {k: v.clone() for k, v in batch_model.state_dict().items() if "running" in k}
    batch = batch_model.predict(context, 2, generator=gen())
    assert (running - batch).abs().max() > 1e-9
    assert all(torch.equal(batch_model.state_dict()[k], v) for k, v in stats.items())  # eval: no stat updates


# -- optimiser ----------------------------------------------------------------------------------------------------------


def test_lr_schedule_matches_official_burnin_then_decay():
    model = tiny_model(lr=1e-3, lr_scheduling_burnin=3, lr_scheduling_n_iter=4)
    opt = model.configure_optimizers()
    (adam,), (schedule,) = opt.optimizers, opt.schedulers
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.9, 0.999)
    # official train.py: LambdaLR(max(0, (n - i) / n)) stepped after an optimisation step only once itr >= burnin
    ref_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda i: max(0, (4 - i) / 4))
    ours, theirs = [], []
    for itr in range(10):
        ours.append(adam.param_groups[0]["lr"])
        theirs.append(ref_opt.param_groups[0]["lr"])
        adam.step()
        ref_opt.step()
        schedule.step()
        if itr >= 3:
            ref.step()
    assert ours == pytest.approx(theirs)
    assert ours[:4] == pytest.approx([1e-3] * 4) and ours[4] == pytest.approx(7.5e-4) and ours[-1] == 0
    assert LinearDecayAfterBurnin(3, 4)(5) == pytest.approx(0.5)


# -- official checkpoint import ---------------------------------------------------------------------------------------

# A KTH-like experiment at tiny widths, under the official `args.py` option names (config.json is written by hand).
OFFICIAL_CONFIG = {"nx": 64, "nc": 1, "nf": 4, "nhx": 8, "ny": 3, "nz": 2, "skipco": True, "nt_inf": 2, "nh_inf": 8,
                   "nlayers_inf": 3, "nh_res": 8, "nlayers_res": 4, "archi": "vgg", "n_euler_steps": 2,
                   "nt_cond": 3, "seq_len": 5, "seq_len_test": 7, "dataset": "kth", "obs_scale": 0.2, "res_gain": 1.2}


def official_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    """A state_dict under the official key names (those of `StochasticLatentResidualVideoPredictor`), random values."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in tiny_model(**{**TINY, "archi": "vgg", "skipco": True, "n_euler_steps": 2,
                                                    "n_context": 3}).state_dict().items()}
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.3
    return state


def test_import_official_experiment(srvp_host, tmp_path):
    import json

    from vpkit.core.checkpoint import load_model, plugin_section, save_checkpoint

    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    state = official_state_dict()
    assert "q_y.module.0.0.weight" in state and "encoder.conv.1.1.0.weight" in state and "inf_z.weight_hh_l0" in state
    torch.save(state, tmp_path / "model.pt")
    key, model, data = srvp_host.importers.get("srvp").load(tmp_path / "model.pt", {})
    assert key == "srvp" and not model.training
    assert data == {"name": "kth", "config": {}, "frame_shape": [1, 64, 64], "n_context": 3, "n_future": 4}
    c = model.config
    assert (c.archi, c.skipco, c.n_euler_steps, c.n_context, c.n_future, c.obs_scale) == ("vgg", True, 2, 3, 2, 0.2)
    for name, value in state.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    out = save_checkpoint(tmp_path / "ckpt", model, model_key=key, plugin=plugin_section("srvp"), data=data)
    loaded, _ = load_model(out)
    loaded.eval()
    context = torch.rand(2, 3, 1, 64, 64)
    torch.testing.assert_close(loaded.predict(context, 3, generator=torch.Generator().manual_seed(0)),
                               model.predict(context, 3, generator=torch.Generator().manual_seed(0)), rtol=0, atol=0)
    # the directory form, model_best.pt, and the deterministic MNIST dataset mapping
    torch.save(state, tmp_path / "model_best.pt")
    _, _, data = srvp_host.importers.get("srvp").load(tmp_path, {"model_name": "model_best.pt", "dataset": "bair"})
    assert data["name"] == "bair"


def test_import_errors(srvp_host, tmp_path):
    import json

    load = srvp_host.importers.get("srvp").load
    torch.save(official_state_dict(), tmp_path / "model.pt")
    with pytest.raises(VpkitError, match="config.json"):
        load(tmp_path / "model.pt", {})
    (tmp_path / "config.json").write_text(json.dumps({**OFFICIAL_CONFIG, "skipco": False}))
    with pytest.raises(VpkitError, match="do not fit"):
        load(tmp_path / "model.pt", {})
    (tmp_path / "config.json").write_text(json.dumps({**OFFICIAL_CONFIG, "dataset": "smmnist", "deterministic": True}))
    assert load(tmp_path / "model.pt", {})[2]["name"] == "mmnist"
    with pytest.raises(VpkitError, match="Unknown option"):
        load(tmp_path / "model.pt", {"z_dim": 3})
