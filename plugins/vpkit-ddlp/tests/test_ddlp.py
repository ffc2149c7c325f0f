"""DLPv2 and DDLP: conformance, official parameter counts and state-dict layout, the official quirks behind their
options, the schedules, exact window padding of the PINT rollout, and (with VPKIT_DDLP_OFFICIAL pointing at an
official checkout) parity against the official code on the same weights and inputs."""

from __future__ import annotations

import math
import os
import sys
import types
from typing import ClassVar

import pytest
import torch
from vpkit_ddlp.config import DDLPConfig, DLPConfig
from vpkit_ddlp.ddlp import DDLP
from vpkit_ddlp.dlp import DLP
from vpkit_ddlp.losses import VGGDistance, dynamics_ramp
from vpkit_ddlp.objective import Phase
from vpkit_ddlp.pint import relative_bias

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.core.model import TorchBackend
from vpkit.testing import ModelConformance, make_train_context

TINY = {"patch_size": 16, "enc_channels": (8, 8, 8, 8), "prior_channels": (4, 4, 8), "n_kp_prior": 8, "n_kp_enc": 4,
        "learned_feature_dim": 4, "epoch_steps": 1}
TINY_DDLP = {**TINY, "timestep_horizon": 3, "n_context": 2, "n_future": 2, "num_static_frames": 2, "pint_dim": 16,
             "pint_heads": 2, "pint_layers": 1}


def tiny_ddlp(seed: int = 0, channels: int = 1, **overrides) -> DDLP:
    torch.manual_seed(seed)
    return DDLP(DDLPConfig(**{**TINY_DDLP, **overrides}), (channels, 64, 64))


# -- conformance ----------------------------------------------------------------------------------------------------


SMALL = {"enc_channels": (8, 8, 8), "n_kp_prior": 4, "n_kp_enc": 3}  # 32x32 frames: 4 patches, 8x8 glimpses


class TestDDLPConformance(ModelConformance):
    model_key = "ddlp"
    preset = "tiny"  # T = 3, deterministic rollouts (the official evaluation)
    frame_shape = (1, 32, 32)
    config_overrides: ClassVar[dict[str, object]] = SMALL


class TestDDLPStochasticConformance(ModelConformance):
    model_key = "ddlp"
    preset = "tiny"
    frame_shape = (3, 32, 32)
    n_context = 4  # longer than T = 3: the PINT window slides
    config_overrides: ClassVar[dict[str, object]] = {**SMALL, "sampling": "stochastic"}

    def test_onnx_export(self, harness) -> None:
        pytest.skip("ONNX export is covered by TestDDLPConformance and TestDLPConformance (keeps this file fast)")


class TestDLPConformance(ModelConformance):
    model_key = "dlp"
    preset = "tiny"
    frame_shape = (3, 32, 32)
    config_overrides: ClassVar[dict[str, object]] = SMALL

    def test_onnx_export(self, harness) -> None:
        pytest.skip("DLP's encode/decode graphs are those of DDLP's encode_first/decode, exported by "
                    "TestDDLPConformance (keeps this file fast)")


# -- official architecture ------------------------------------------------------------------------------------------

# Totals of the official classes built from each configs/*.json (reference section 7.1).
OFFICIAL_COUNTS = {("ddlp", "obj3d128"): 11_716_654, ("ddlp", "traffic"): 11_717_902, ("ddlp", "clevrer"): 11_717_614,
                   ("ddlp", "phyre"): 26_052_426, ("ddlp", "obj3d"): 9_678_144, ("ddlp", "balls"): 9_652_801,
                   ("dlp", "obj3d128"): 3_906_020, ("dlp", "traffic"): 4_228_564, ("dlp", "obj3d"): 4_581_684,
                   ("dlp", "shapes"): 2_989_238}
OFFICIAL_KEYS = {("ddlp", "obj3d128"): 310, ("dlp", "obj3d128"): 174}


@pytest.mark.parametrize(("model", "preset"), sorted(OFFICIAL_COUNTS))
def test_parameter_counts_match_official(ddlp_host, model, preset):
    spec = ddlp_host.models.get(model)
    recipe = spec.presets[preset]
    with torch.device("meta"):
        net = spec.build(build_config(spec.config_cls, recipe.model, what="test"), recipe.frame_shape)
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_COUNTS[(model, preset)]
    if (model, preset) in OFFICIAL_KEYS:
        assert len(net.state_dict()) == OFFICIAL_KEYS[(model, preset)]


def test_registration(ddlp_host):
    ddlp, dlp = ddlp_host.models.get("ddlp"), ddlp_host.models.get("dlp")
    # `vpkit train --plugin ddlp` trains DLPv2 on the generated Shapes: the one recipe that needs no download
    assert dlp.default and dlp.default_preset == "shapes" and ddlp.plugin == "ddlp" and not ddlp.default
    from vpkit.cli.train import resolve_model

    assert resolve_model(ddlp_host, "ddlp", None).name == "dlp"
    known = set(ddlp_host.datasets.names()) if hasattr(ddlp_host.datasets, "names") else None
    for spec in (ddlp, dlp):
        for name, recipe in spec.presets.items():
            if known is not None:
                assert recipe.dataset in known, (spec.name, name)
    assert {n: p.dataset for n, p in ddlp.presets.items()} == {
        "obj3d128": "obj3d", "obj3d": "obj3d", "traffic": "traffic", "phyre": "phyre", "clevrer": "clevrer",
        "balls": "balls", "tiny": "smmnist"}
    assert ddlp.presets["obj3d128"].data == {"image_size": 128} and ddlp.presets["obj3d128"].model["epoch_steps"] == 65_700
    assert dlp.presets["shapes"].dataset == "shapes" and dlp.presets["shapes"].model["filtering_heuristic"] == "none"


def test_state_dict_layout_is_official():
    model = DDLP(DDLPConfig(**{**TINY_DDLP, "timestep_horizon": 5, "n_context": 3, "n_future": 3}), (3, 64, 64))
    state = model.state_dict()
    keys = list(state)
    assert keys[:6] == ["logvar_kp", "mu_scale_prior", "logvar_scale_p", "logvar_offset_p", "obj_on_a_p", "obj_on_b_p"]
    assert state["mu_scale_prior"].dtype == torch.float64  # np.float64 in the official code
    assert "fg_module.prior.enc.main.in_block_1.main.conv_3_to_4.weight" in state
    assert "fg_module.prior.enc.main.in_block_1.main.grouupnorm_4.weight" in state  # official spelling
    assert state["fg_module.particle_attribute_enc.cnn.main.in_block_1.main.conv_4_to_4.weight"].shape[1] == 4
    # the glimpse decoder's conv stack is listed twice (main and decode), as separate tensors for safetensors
    main = [k for k in keys if k.startswith("fg_module.object_dec.main.")]
    assert main and all(k.replace(".main.", ".decode.", 1) in state for k in main)
    key = main[0]
    assert torch.equal(state[key], state[key.replace(".main.", ".decode.", 1)])
    assert state[key].data_ptr() != state[key.replace(".main.", ".decode.", 1)].data_ptr()
    # a repeated channel count drops a block (add_module replaces in place), as official: enc (8, 8, 8, 8)
    bg = [k for k in keys if k.startswith("bg_module.bg_cnn_enc.main.") and k.endswith(".weight") and "conv_" in k]
    assert sorted({k.split(".")[3] for k in bg}) == ["conv_in_16_0", "conv_in_32_0", "conv_in_64_0", "conv_in_8_1",
                                                      "in_block_1", "in_block_2"]
    assert "bg_module.dec.main.depth_up.main.conv_32_to_8.weight" in state
    assert not any(k.startswith("bg_module.dec.main.depth_up.main.grouupnorm") for k in keys)
    attn = "dyn_module.particle_transformer.blocks.0.attn."
    assert state[attn + "mask"].shape == (1, 1, 1, 5, 1, 5)
    assert state[attn + "rel_pos_bias.rel_pos_bias"].shape == (9, 2)
    assert state[attn + "rel_pos_bias.particle_rel_pos_bias"].shape == (9, 2)
    assert attn + "key.bias" not in state and "dyn_module.particle_transformer.head.bias" not in state
    # a state dict reloads strictly (both copies of the glimpse decoder)
    other = DDLP(DDLPConfig(**{**TINY_DDLP, "timestep_horizon": 5, "n_context": 3, "n_future": 3}), (3, 64, 64))
    other.load_state_dict(state)


def test_bad_geometry_is_explained():
    with pytest.raises(VpkitError, match="power of two"):
        DLP(DLPConfig(**{**TINY, "anchor_s": 0.2}), (3, 64, 64))
    with pytest.raises(VpkitError, match="square"):
        DLP(DLPConfig(**TINY), (3, 64, 48))
    with pytest.raises(VpkitError, match="n_kp_enc"):
        DLP(DLPConfig(**{**TINY, "n_kp_enc": 9}), (3, 64, 64))
    with pytest.raises(ValueError, match="timestep_horizon"):
        DDLPConfig(**{**TINY_DDLP, "n_future": 3})


# -- PINT ---------------------------------------------------------------------------------------------------------------


def test_relative_bias_reads_the_difference_row():
    table = torch.arange(9.0)[:, None].repeat(1, 2)  # max 5
    bias = relative_bias(table, 3)
    for i in range(3):
        for j in range(3):
            assert bias[i, j, 0] == 4 + j - i


def test_padded_window_is_exact():
    """The rollout pads a short PINT window at the end; causal attention and relative biases make that exact."""
    model = tiny_ddlp(timestep_horizon=5, n_context=3, n_future=3).double().eval()
    gen = torch.Generator().manual_seed(0)
    b, length, k, f = 2, 3, 4, 4
    inputs = [torch.randn(b, length, k, 2, generator=gen, dtype=torch.float64),
              torch.randn(b, length, k, 2, generator=gen, dtype=torch.float64),
              torch.rand(b, length, k, generator=gen, dtype=torch.float64),
              torch.randn(b, length, k, 1, generator=gen, dtype=torch.float64),
              torch.randn(b, length, k, f, generator=gen, dtype=torch.float64),
              torch.randn(b, length, f, generator=gen, dtype=torch.float64)]
    padded = [torch.cat([x, torch.zeros(b, 2, *x.shape[2:], dtype=x.dtype)], 1) for x in inputs]
    with torch.no_grad():
        short, full = model.dyn_module(*inputs), model.dyn_module(*padded)
    for name, value in short.items():
        torch.testing.assert_close(full[name][:, :length], value, rtol=0, atol=1e-12)


def test_depth_logvar_quirk_option():
    quirk, fixed = tiny_ddlp(), tiny_ddlp(pint_depth_logvar_from_mean=False)
    fixed.load_state_dict(quirk.state_dict())
    quirk.eval(), fixed.eval()
    video = torch.rand(2, 4, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = quirk.forward_video(video, deterministic=True)
        b = fixed.forward_video(video, deterministic=True)
    # official: the log-variance is the raw mean-depth delta (the mean is z_depth + delta)
    torch.testing.assert_close(a["dyn_logvar_depth"], a["dyn_mu_depth"] - a["z_depth"][:, :-1])
    assert not torch.allclose(a["dyn_logvar_depth"], b["dyn_logvar_depth"])
    torch.testing.assert_close(a["dyn_mu"], b["dyn_mu"])


def test_static_bg_kl_quirk_option():
    model = tiny_ddlp()
    model.eval()
    video = torch.rand(2, 4, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    phase = Phase(False, False, 5)
    with torch.no_grad():
        out = model.forward_video(video, deterministic=True, phase=phase)
        quirk = model.loss(video, out, phase, model.discount(10, video.device, video.dtype))
        object.__setattr__(model, "config", model.config.model_copy(update={"static_bg_kl_over_time": False}))
        plain = model.loss(video, out, phase, model.discount(10, video.device, video.dtype))
    mu, logvar = out["mu_bg"][:, :2], out["logvar_bg"][:, :2]
    kl = -0.5 * (1 + logvar - logvar.exp() - mu ** 2)
    diff = plain["kl_feat"] - quirk["kl_feat"]
    torch.testing.assert_close(diff, kl.sum((1, 2)).mean() - kl.sum(1).mean())


# -- schedules ------------------------------------------------------------------------------------------------------


def test_phases_ramp_and_lr():
    c = DDLPConfig(**{**TINY_DDLP, "epoch_steps": 10, "warmup_epoch": 2, "scheduler_gamma": 0.5, "lr": 1.0})
    assert [Phase.at(s, c) for s in (0, 19, 20, 29, 30)] == [
        Phase(True, True, 0), Phase(True, True, 1), Phase(False, True, 2), Phase(False, True, 2),
        Phase(False, False, 3)]
    # official: iters_warm = max(warmup, 1) * max(10000, iters/epoch); d_i = clamp(it / (iters_warm // T * (i+1)))
    assert dynamics_ramp(0, 10, 2, 4) == [0.0] * 4
    assert dynamics_ramp(2500, 10, 2, 4) == pytest.approx([0.5, 0.25, 1 / 6, 0.125])
    assert dynamics_ramp(50_000, 10, 2, 4) == [1.0] * 4
    model = DDLP(c, (1, 64, 64))
    assert model.discount(2500, torch.device("cpu"), torch.float64).tolist() == pytest.approx(
        [2500 / 6666, 2500 / 13332])  # T = 3: iters_warm // T = 6666; two frames after the burn-in of 2
    opt = model.configure_optimizers()
    (adam,), (schedule,) = opt.optimizers, opt.schedulers
    assert adam.defaults["eps"] == 1e-4 and adam.defaults["betas"] == (0.9, 0.999)
    rates = []
    for _ in range(25):
        rates.append(adam.param_groups[0]["lr"])
        adam.step()
        schedule.step()
    assert rates[:10] == [1.0] * 10 and rates[10:20] == [0.5] * 10 and rates[20] == 0.25  # StepLR once per epoch


def test_training_step_phases_and_logs():
    model = tiny_ddlp()
    video = torch.rand(2, 4, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    for step in (0, 1, 2):  # warm-up, noisy, normal (epoch_steps 1)
        out = model.training_step(video, make_train_context(step=step))
        assert torch.isfinite(out.loss)
        assert {"rec", "kl", "kl_dyn", "kl_kp", "psnr"} <= set(out.logs)
    with pytest.raises(VpkitError, match="timestep_horizon"):
        model.training_step(video[:, :3], make_train_context())


def test_stochastic_rollout_uses_its_noise():
    model = tiny_ddlp(sampling="stochastic").eval()
    context = torch.rand(2, 2, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    backend = TorchBackend(model.export_plan())
    noise = model.sample_noise(2, 2, 2, generator=torch.Generator().manual_seed(0))
    assert set(noise) == {"context_noise", "context_bg_noise", "dynamics_noise", "dynamics_bg_noise"}
    with torch.no_grad():
        base = model.rollout(backend, context, 2, noise)
        for name in noise:
            other = model.rollout(backend, context, 2, {**noise, name: torch.randn_like(noise[name])})
            assert (other - base).abs().max() > 0, name
        zero = model.rollout(backend, context, 2, {k: torch.zeros_like(v) for k, v in noise.items()})
        deterministic = tiny_ddlp(sampling="deterministic").eval()
        deterministic.load_state_dict(model.state_dict())
        torch.testing.assert_close(zero, deterministic.predict(context, 2)[:, 0], rtol=0, atol=1e-6)


def test_vgg_loss_needs_the_weights_file(tmp_path):
    with pytest.raises(VpkitError, match="vgg16-397923af.pth"):
        VGGDistance(tmp_path / "vgg16-397923af.pth")
    model = DLP(DLPConfig(**{**TINY, "recon_loss_type": "vgg", "vgg_weights": str(tmp_path / "missing.pth")}),
                (3, 64, 64))
    with pytest.raises(VpkitError, match="model.vgg_weights"):
        model.training_step(torch.rand(1, 1, 3, 64, 64), make_train_context())


def test_vgg_distance_layers(tmp_path):
    """The perceptual distance reads VGG16 `features` 2, 7, 12, 21, 30 on ImageNet-normalised inputs."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.vgg16(weights=None)
    torch.save(net.state_dict(), tmp_path / "vgg.pth")
    vgg = VGGDistance(tmp_path / "vgg.pth")
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = ((x - y) ** 2).flatten(1).sum(1)
    a, b = (x - mean) / std, (y - mean) / std
    kept = []
    for i, layer in enumerate(net.features[:31]):
        a, b = layer(a), layer(b)
        if i in (2, 7, 12, 21, 30):
            kept.append((a, b))
    for fa, fb in kept:  # read after the loop: the in-place ReLUs have turned the conv outputs post-ReLU (official)
        expected = expected + 0.12151 * ((fa - fb) ** 2).flatten(1).sum(1)
    assert (kept[0][0] >= 0).all()
    with torch.no_grad():
        torch.testing.assert_close(vgg(x, y), expected.detach())


# -- parity with the official code (needs an official checkout) -------------------------------------------------------

OFFICIAL = os.environ.get("VPKIT_DDLP_OFFICIAL")


@pytest.fixture(scope="module")
def official_models():
    if not OFFICIAL:
        pytest.skip("set VPKIT_DDLP_OFFICIAL to a checkout of github.com/taldatech/ddlp to compare with it")
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # imported by the official utils, unused by the models
    sys.path.insert(0, OFFICIAL)
    try:
        import models
    finally:
        sys.path.remove(OFFICIAL)
    return models


def _official_kwargs(c):
    names = ("enc_channels", "prior_channels", "patch_size", "n_kp_prior", "n_kp_enc", "learned_feature_dim",
             "anchor_s", "scale_std", "offset_std", "use_correlation_heatmaps", "filtering_heuristic")
    return {name: getattr(c, name) for name in names}


@pytest.mark.parametrize("phase", [Phase(True, True, 0), Phase(False, True, 1), Phase(False, False, 2)])
def test_ddlp_matches_official(official_models, phase):
    c = DDLPConfig(patch_size=8, enc_channels=(8, 16, 32), prior_channels=(4, 8, 16), n_kp_prior=12, n_kp_enc=6,
                   learned_feature_dim=3, timestep_horizon=5, n_context=4, n_future=2, num_static_frames=3,
                   pint_dim=32, pint_heads=4, pint_layers=2, beta_kl=0.1, beta_dyn=0.2, epoch_steps=7)
    ref = official_models.ObjectDynamicsDLP(cdim=3, image_size=64, timestep_horizon=5, pint_layers=2, pint_heads=4,
                                            pint_dim=32, **_official_kwargs(c))
    mine = DDLP(c, (3, 64, 64))
    mine.load_state_dict(ref.state_dict())
    video = torch.rand(2, 6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    discount = mine.discount(3, video.device, video.dtype)
    results = []
    for model in (ref, mine):
        model.train()  # dropout, sampling and the phase noise: the same draws in the same order
        torch.manual_seed(1)
        if model is ref:
            out = ref(video, x_prior=video, warmup=phase.warmup, noisy=phase.noisy, num_static_frames=3)
            loss = ref.calc_elbo(video, out, warmup=phase.warmup, beta_kl=0.1, beta_dyn=0.2, kl_balance=0.001,
                                 dynamic_discount=discount, beta_dyn_rec=1.0, num_static=3, noisy=phase.noisy)
            results.append((out["rec"], out["mu_dyn"], loss["loss"]))
        else:
            out = mine.forward_video(video, phase=phase)
            results.append((out["rec"], out["dyn_mu"], mine.loss(video, out, phase, discount)["loss"]))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    ref.eval(), mine.eval()
    clip = torch.rand(2, 7, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref.sample(clip, num_steps=3, deterministic=True, cond_steps=4)[:, 4:]
        got = mine.predict(clip[:, :4], 3)[:, 0]
    torch.testing.assert_close(got, expected.clamp(0, 1), rtol=1e-5, atol=1e-5)


def test_dlp_matches_official(official_models):
    c = DLPConfig(patch_size=8, enc_channels=(8, 8, 16, 16), prior_channels=(4, 8, 16), n_kp_prior=64, n_kp_enc=5,
                  learned_feature_dim=3, use_correlation_heatmaps=False, filtering_heuristic="none")
    ref = official_models.ObjectDLP(cdim=3, image_size=64, use_tracking=False, **_official_kwargs(c))
    mine = DLP(c, (3, 64, 64))
    mine.load_state_dict(ref.state_dict())
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    phase = Phase(False, False, 2)
    ref.train(), mine.train()
    torch.manual_seed(1)
    out = ref(x, x_prior=x)
    expected = ref.calc_elbo(x, out, beta_kl=0.1, kl_balance=0.001)["loss"]
    torch.manual_seed(1)
    got = mine.loss(x, mine.forward_images(x, phase=phase), phase)["loss"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(got))


@pytest.mark.slow
def test_cli_plugin_default_trains_on_generated_shapes(tmp_path):
    """The issue's done-when: `vpkit train --plugin ddlp` trains on the embedded (generated) Shapes, no download."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "VPKIT_LOAD_PLUGINS": "svg,ddlp"}
    proc = subprocess.run([sys.executable, "-m", "vpkit", "train", "--plugin", "ddlp", "--steps", "2",
                           "--batch-size", "4", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Training dlp (preset shapes" in proc.stdout + proc.stderr
    assert (tmp_path / "run" / "checkpoints" / "last" / "vpkit.json").is_file()
