"""KITTI / Cityscapes SLAMP (`SpatialSLAMP`): conformance, the official parameter count and state-dict layout, the
exportable adaptive max-pool, frame-shape errors, and the spatial latents of training and sampling. Fidelity to the
official loops by value is in test_slamp_spatial_parity.py (needs the official checkout)."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from vpkit_slamp.config import SLAMPConfig
from vpkit_slamp.spatial import SpatialSLAMP
from vpkit_slamp.spatial_networks import adaptive_max_pool

from vpkit.core.config import build_config
from vpkit.core.errors import VpkitError
from vpkit.testing import ModelConformance, make_train_context

TINY = {"g_dim_app": 8, "g_dim_motion": 8, "z_dim_app": 3, "z_dim_motion": 2, "rnn_size": 8, "n_context": 2,
        "n_future": 1}
SMALL_FRAME = (1, 32, 64)  # 'cityscapes' runs at any multiple of 32: a 1x2 latent map keeps tests fast


def tiny(architecture: str = "cityscapes", frame_shape=SMALL_FRAME, seed: int = 0, **overrides) -> SpatialSLAMP:
    torch.manual_seed(seed)
    return SpatialSLAMP(SLAMPConfig(architecture=architecture, **{**TINY, **overrides}), frame_shape)


# -- conformance ----------------------------------------------------------------------------------------------------


class TestSpatialSLAMPConformance(ModelConformance):
    model_key = "slamp"
    preset = "tiny"
    config_overrides: ClassVar[dict[str, object]] = {"architecture": "cityscapes", "n_future": 1}
    frame_shape = SMALL_FRAME
    horizon = 2

    def test_onnx_export(self, harness) -> None:
        pytest.skip("nine dynamo exports take minutes on 2 CPU cores; the KITTI encoder (adaptive pools) is exported "
                    "by test_kitti_encoder_exports_to_onnx, the LSTM-step and decode graphs by the 64x64 SLAMP's")


# -- official architecture ------------------------------------------------------------------------------------------

OFFICIAL_TOTAL = 50_221_382  # reference section 7; g 64, z 32, rnn 256, 3 channels (same for both, size-free shapes)

# Parameters (not buffers) per official module, from the official classes built by helpers.get_model_real.
OFFICIAL_MODULE_COUNTS = {
    "static_frame_predictor": 9_808_192, "dynamic_frame_predictor": 9_808_192, "posterior_app": 3_245_376,
    "prior_app": 3_245_376, "posterior_motion": 3_245_376, "prior_motion": 3_245_376, "img_encoder": 3_536_064,
    "pixel_encoder": 1_892_352, "motion_encoder": 2_187_264, "pixel_decoder": 4_946_115, "flow_decoder": 4_945_538,
    "mask_decoder": 116_161,
}


@pytest.mark.parametrize("preset", ["kitti", "cityscapes"])
def test_parameter_counts_match_official(slamp_host, preset):
    spec = slamp_host.models.get("slamp")
    recipe = spec.presets[preset]
    with torch.device("meta"):
        model = spec.build(build_config(spec.config_cls, recipe.model, what="test"), recipe.frame_shape)
    assert isinstance(model, SpatialSLAMP)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_TOTAL
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.official_modules().items()}
    assert counts == OFFICIAL_MODULE_COUNTS
    # the unused `embed` convs of the four Gaussian ConvLSTMs: counted, frozen
    embeds = [model.get_submodule(f"{name}.embed") for name in ("posterior_app", "prior_app", "posterior_motion",
                                                                  "prior_motion")]
    assert sum(p.numel() for m in embeds for p in m.parameters()) == 4 * (64 * 256 * 9 + 256)
    assert not any(p.requires_grad for m in embeds for p in m.parameters())


# A few keys of each official module's state dict (official `models/conv_lstms.py`, `kitti_models.py`,
# `mask_predictor.py`) and each module's number of state-dict entries.
OFFICIAL_KEYS = (
    "static_frame_predictor.embed.weight", "static_frame_predictor.lstm.1.conv.bias",
    "static_frame_predictor.output.0.weight", "dynamic_frame_predictor.lstm.0.conv.weight",
    "posterior_app.embed.bias", "posterior_app.lstm.0.conv.weight", "posterior_app.mu_net.weight",
    "prior_motion.logvar_net.bias", "img_encoder.c1.0.layers.0.weight", "img_encoder.c1.0.layers.1.running_var",
    "img_encoder.c5.2.layers.1.num_batches_tracked", "img_encoder.c6.1.layers.1.bias",
    "pixel_encoder.c1.2.fc.0.weight", "pixel_encoder.c2.2.fc.2.weight", "motion_encoder.c3.1.layers.0.weight",
    "pixel_decoder.upc1.0.layers.0.weight", "pixel_decoder.upc7.0.layers.1.weight", "pixel_decoder.upc7.1.bias",
    "flow_decoder.upc6.1.layers.1.running_mean", "mask_decoder.c1.0.main.0.weight", "mask_decoder.c2.2.fc.2.weight",
    "mask_decoder.c3.0.bias",
)
OFFICIAL_ENTRIES = {"static_frame_predictor": 8, "dynamic_frame_predictor": 8, "posterior_app": 8, "prior_app": 8,
                    "posterior_motion": 8, "prior_motion": 8, "img_encoder": 90, "pixel_encoder": 40,
                    "motion_encoder": 40, "pixel_decoder": 92, "flow_decoder": 92, "mask_decoder": 30}


def test_state_dict_layout_is_official():
    model = tiny()
    keys = model.state_dict()
    for key in OFFICIAL_KEYS:
        assert key in keys, key
    assert {name: len(m.state_dict()) for name, m in model.official_modules().items()} == OFFICIAL_ENTRIES
    assert list(model.official_modules()) == list(OFFICIAL_ENTRIES)  # helpers.get_model_real's dict order
    assert keys["pixel_decoder.upc7.1.weight"].shape == (64, 1, 3, 3)  # ConvT 3x3 to the frame's channels
    assert keys["flow_decoder.upc7.1.weight"].shape == (64, 2, 3, 3)  # flow: 2 channels, no sigmoid
    assert keys["motion_encoder.c1.0.layers.0.weight"].shape == (256, 4 * 8, 3, 3)  # two 2g-channel code maps
    assert "img_encoder.c1.0.layers.0.bias" not in keys  # bias-free convs before BatchNorm
    assert len(model.configure_optimizers().optimizers) == 12  # one Adam per official module


def test_conv_lstms_keep_default_init():
    """Official `get_model_real` applies `init_weights` to the conv networks only."""
    model = tiny(rnn_size=64)
    bn = model.img_encoder.c1[0].layers[1]
    assert bn.bias.abs().max() == 0 and 0.9 < bn.weight.mean() < 1.1
    assert model.img_encoder.c2[0].layers[0].weight.std() < 0.03  # N(0, 0.02)
    assert model.static_frame_predictor.lstm[0].conv.weight.std() > 0.01  # PyTorch default: U(+-1/sqrt(fan_in))
    assert model.static_frame_predictor.lstm[0].conv.bias.abs().max() > 0


# -- geometry and errors --------------------------------------------------------------------------------------------


def test_kitti_geometry_and_rollout():
    model = tiny("kitti", (3, 92, 310)).eval()
    assert model.geometry.latent == (4, 4)
    assert [tuple(s) for s in model.geometry.skips] == [(46, 156), (24, 80), (12, 40), (6, 20), (4, 4)]
    context = torch.rand(1, 2, 3, 92, 310)
    out = model.predict(context, 1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 1, 3, 92, 310)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_cityscapes_official_geometry():
    with torch.device("meta"):
        model = SpatialSLAMP(SLAMPConfig(architecture="cityscapes", **TINY), (3, 128, 256))
    assert model.geometry.latent == (4, 8)
    assert model.pixel_decoder.sizes == ((8, 16), (16, 32), (32, 64), (64, 128), (128, 256))
    shapes = model.noise_shapes(batch=2, n_context=10, horizon=20)
    assert shapes["posterior_app_noise"] == (2, 9, 3, 4, 8)
    assert shapes["prior_motion_noise"] == (2, 20, 2, 4, 8)


@pytest.mark.parametrize(("shape", "size"), [((2, 3, 46, 155), (46, 156)), ((1, 2, 23, 78), (24, 80)),
                                             ((2, 2, 6, 20), (4, 4)), ((1, 1, 7, 9), (3, 5))])
def test_adaptive_max_pool_equals_pytorch(shape, size):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    ours, reference = adaptive_max_pool(x, size), F.adaptive_max_pool2d(x, size)
    assert torch.equal(ours, reference)
    assert torch.equal(torch.autograd.grad(ours.sum(), x)[0], torch.autograd.grad(reference.sum(), x)[0])


@pytest.mark.parametrize(("architecture", "shape", "match"), [
    ("kitti", (3, 64, 64), "92x310"),
    ("kitti", (3, 128, 256), "92x310"),
    ("cityscapes", (3, 100, 200), "divisible by 32"),
    ("cityscapes", (3, 92, 310), "divisible by 32"),
])
def test_bad_frame_shape_is_a_clear_error(architecture, shape, match):
    with pytest.raises(VpkitError, match=match):
        SpatialSLAMP(SLAMPConfig(architecture=architecture, **TINY), shape)


def test_config_errors():
    with pytest.raises(VpkitError, match="g_dim_app == g_dim_motion"):
        tiny(g_dim_motion=16)
    with pytest.raises(VpkitError, match="code size equals rnn_size"):
        tiny(posterior_rnn_layers=2, rnn_size=16)
    tiny(posterior_rnn_layers=2, rnn_size=8)  # runs where the official layers' widths agree


def test_wrong_inputs_are_clear_errors():
    model = tiny().eval()
    context = torch.rand(1, 2, 3, 32, 64)  # 3 channels for a 1-channel model
    with pytest.raises(VpkitError, match="built for frames"):
        model.predict(context, 1)
    with pytest.raises(VpkitError, match="noise 'prior_app_noise'"):
        noise = model.sample_noise(1, 2, 1)
        noise["prior_app_noise"] = torch.zeros(1, 1, 3)  # not a latent map
        model.rollout(model_backend(model), torch.rand(1, 2, *SMALL_FRAME), 1, noise)
    with pytest.raises(VpkitError, match="built for frames"):
        model.train().training_step(torch.rand(1, 3, 1, 64, 32), make_train_context())


def model_backend(model):
    from vpkit.core.model import TorchBackend

    return TorchBackend(model.export_plan())


# -- training -------------------------------------------------------------------------------------------------------


def test_training_step_kitti_reaches_every_trainable_parameter():
    model = tiny("kitti", (3, 92, 310)).train()
    out = model.training_step(torch.rand(1, 2, 3, 92, 310), make_train_context())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert name.endswith(("embed.weight", "embed.bias")) and p.grad is None, name
    assert set(out.logs) == {"pixel_mse", "flow_mse", "mask_mse", "kld", "teacher_p"}


def test_kl_sums_over_the_latent_maps():
    """The KL is summed over channels and positions of the spatial latents and divided by the batch, as official."""
    model = tiny().double().train()
    video = torch.rand(2, 2, *SMALL_FRAME, dtype=torch.float64)
    noise = {"posterior_app": torch.randn(2, 1, 3, 1, 2, dtype=torch.float64),
             "posterior_motion": torch.randn(2, 1, 2, 1, 2, dtype=torch.float64)}
    terms = model.loss_terms(video, noise)
    code, _ = model.img_encoder(video[:, 0])
    target = model.img_encoder(video[:, 1])[0]
    h, h_target = model.pixel_encoder(code), model.pixel_encoder(target)
    h_motion = model.motion_encoder(torch.cat([code, target], 1))
    zero_motion = model.motion_encoder(torch.cat([code, code], 1))
    expected = 0.0
    for post, prior, now, before, eps in (("posterior_app", "prior_app", h_target, h, noise["posterior_app"]),
                                          ("posterior_motion", "prior_motion", h_motion, zero_motion,
                                           noise["posterior_motion"])):
        net_q, net_p = getattr(model, post), getattr(model, prior)
        _, mu, logvar, _ = net_q.step(now, net_q.init_state(2, dtype=torch.float64), eps[:, 0])
        _, mu_p, logvar_p, _ = net_p.step(before, net_p.init_state(2, dtype=torch.float64), torch.zeros_like(eps[:, 0]))
        q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        p = torch.distributions.Normal(mu_p, torch.exp(0.5 * logvar_p))
        expected = expected + torch.distributions.kl_divergence(q, p).sum() / 2
    torch.testing.assert_close(terms.kld, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("architecture", ["cityscapes"])  # KITTI differs only in its pools (tested alone above)
def test_batched_training_equals_the_frame_loop(architecture):
    """The batched path (conv networks once per clip, BatchNorm per time slice) against the official-order frame
    loop: loss terms, gradients and BatchNorm running statistics, in float64."""
    frame = SMALL_FRAME if architecture == "cityscapes" else (3, 92, 310)
    batch, length = (2, 4) if architecture == "cityscapes" else (2, 3)
    looped = tiny(architecture, frame).double().train()
    batched = tiny(architecture, frame).double().train()
    gen = torch.Generator().manual_seed(4)
    video = torch.rand(batch, length, *frame, generator=gen, dtype=torch.float64)
    latent = looped.geometry.latent
    noise = {"posterior_app": torch.randn(batch, length - 1, 3, *latent, generator=gen, dtype=torch.float64),
             "posterior_motion": torch.randn(batch, length - 1, 2, *latent, generator=gen, dtype=torch.float64)}
    expected = looped.loop_loss_terms(video, noise)
    got = batched.loss_terms(video, noise)  # every input the truth: the batched path
    for name in ("loss", "pixel_mse", "flow_mse", "mask_mse", "kld"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=1e-12, atol=1e-12)
    expected.loss.backward()
    got.loss.backward()
    reference = dict(looped.named_parameters())
    for name, p in batched.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, reference[name].grad, rtol=1e-9, atol=1e-12, msg=name)
    reference_buffers = dict(looped.named_buffers())
    for name, b in batched.named_buffers():
        torch.testing.assert_close(b, reference_buffers[name], rtol=1e-12, atol=1e-12, msg=name)


def test_scheduled_sampling_feeds_the_detached_prediction():
    model = tiny().train()
    gen = torch.Generator().manual_seed(3)
    video = torch.rand(2, 4, *SMALL_FRAME, generator=gen)
    noise = {"posterior_app": torch.randn(2, 3, 3, 1, 2, generator=gen),
             "posterior_motion": torch.randn(2, 3, 2, 1, 2, generator=gen)}
    with torch.no_grad():
        truth = model.loss_terms(video, noise).loss
        assert model.loss_terms(video, noise, [False, True, True]).loss == truth  # i < n_context: always the truth
        assert model.loss_terms(video, noise, [True, False, True]).loss != truth


@pytest.mark.slow
def test_kitti_encoder_exports_to_onnx(tmp_path):
    """The KITTI image encoder's adaptive max-pools (92x310 -> 46x156 ...) export to ONNX and run in ONNX Runtime."""
    from vpkit.plugins.exporters.onnx import available

    if available():
        pytest.skip(available())
    import onnxruntime

    model = tiny("kitti", (3, 92, 310)).eval()
    graph = model.export_plan().graphs["encode"]
    program = torch.onnx.export(graph.module, graph.example_inputs, dynamo=True, input_names=list(graph.input_names),
                                output_names=list(graph.output_names))
    program.save(str(tmp_path / "encode.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "encode.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"frames": graph.example_inputs[0].numpy()})
    with torch.no_grad():
        expected = graph.module(*graph.example_inputs)
    for a, b in zip(got, expected, strict=True):
        assert abs(torch.from_numpy(a) - b).max() < 1e-4
