"""SVG-LP / SVG-FP: conformance, official parameter counts and state-dict keys, and fidelity of the fast batched
training step and the exported sampling loop to the official frame-by-frame code (`vpkit_svg.reference`)."""

from __future__ import annotations

import copy
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from vpkit.engine.batchnorm import TimeBatchNorm2d, time_grouped, use_batch_stats_in_eval
from vpkit_svg.config import SVGConfig
from vpkit_svg.model import SVG, skip_sources
from vpkit_svg.networks import build_encoder_decoder, gather_frames
from vpkit_svg.reference import reference_generate, reference_loss_terms

from vpkit.core.config import TrainConfig, build_config
from vpkit.core.errors import VpkitError
from vpkit.core.model import TorchBackend
from vpkit.core.plugins import get_host
from vpkit.testing import ModelConformance, make_train_context

TINY = {"g_dim": 16, "z_dim": 4, "rnn_size": 16}


def tiny_model(*, learned_prior: bool = True, dtype: torch.dtype = torch.float64, seed: int = 0, **overrides) -> SVG:
    torch.manual_seed(seed)
    config = SVGConfig(**{**TINY, "n_context": 3, "n_future": 2, **overrides})
    return SVG(config, (1, config.frame_size, config.frame_size), learned_prior=learned_prior).to(dtype)


# -- conformance ----------------------------------------------------------------------------------------------------


class TestSVGLPConformance(ModelConformance):
    model_key = "svg-lp"
    preset = "tiny"
    horizon = 4  # longer than the preset's n_future: sampling must not depend on it


class TestSVGFPConformance(ModelConformance):
    model_key = "svg-fp"
    preset = "tiny"
    n_context = 3


class TestSVGLPBatchStatsConformance(ModelConformance):
    model_key = "svg-lp"
    preset = "tiny"
    config_overrides: ClassVar[dict[str, object]] = {"last_frame_skip": True, "sampling_batchnorm": "batch"}


# -- official architecture: parameter counts, state-dict keys, init ---------------------------------------------------

# Totals of the official modules (reference section 7), configs from the official README commands.
OFFICIAL_COUNTS = [
    ("svg-lp smmnist", {"architecture": "dcgan64", "z_dim": 10}, 1, True, 12_614_057),
    ("svg-lp bair", {"architecture": "vgg64", "z_dim": 64}, 3, True, 22_831_747),
    ("svg-lp kth64", {"architecture": "vgg64", "z_dim": 24}, 1, True, 22_778_081),
    ("svg-fp kth64", {"architecture": "vgg64", "z_dim": 24}, 1, False, 22_206_385),
    ("svg-lp kth128", {"architecture": "vgg128", "z_dim": 24}, 1, True, 39_302_369),
]


@pytest.mark.parametrize(("overrides", "channels", "learned_prior", "expected"),
                         [case[1:] for case in OFFICIAL_COUNTS], ids=[case[0] for case in OFFICIAL_COUNTS])
def test_parameter_counts_match_official(overrides, channels, learned_prior, expected):
    config = SVGConfig(**overrides)
    model = SVG(config, (channels, config.frame_size, config.frame_size), learned_prior=learned_prior)
    assert sum(p.numel() for p in model.parameters()) == expected


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def _conv(prefix: str) -> list[str]:
    return [f"{prefix}.weight", f"{prefix}.bias"]


def _block(prefix: str) -> list[str]:  # official dcgan_conv / dcgan_upconv / vgg_layer
    return _conv(f"{prefix}.main.0") + _bn(f"{prefix}.main.1")


def official_keys(architecture: str, learned_prior: bool, predictor_layers: int = 2) -> set[str]:
    """The state-dict keys the official modules have (reference section 3.1), written out independently."""
    keys: list[str] = []
    deep = architecture.endswith("128")
    if architecture.startswith("dcgan"):
        levels = 5 if deep else 4
        for k in range(1, levels + 1):
            keys += _block(f"encoder.c{k}")
        keys += _conv(f"encoder.c{levels + 1}.0") + _bn(f"encoder.c{levels + 1}.1")
        keys += _conv("decoder.upc1.0") + _bn("decoder.upc1.1")
        for k in range(2, levels + 1):
            keys += _block(f"decoder.upc{k}")
        keys += _conv(f"decoder.upc{levels + 1}.0")
    else:
        encoder = [2, 2, 3, 3] + ([3] if deep else [])
        for k, n in enumerate(encoder, start=1):
            keys += [key for j in range(n) for key in _block(f"encoder.c{k}.{j}")]
        keys += _conv(f"encoder.c{len(encoder) + 1}.0") + _bn(f"encoder.c{len(encoder) + 1}.1")
        keys += _conv("decoder.upc1.0") + _bn("decoder.upc1.1")
        decoder = ([3] if deep else []) + [3, 3, 2]
        for k, n in enumerate(decoder, start=2):
            keys += [key for j in range(n) for key in _block(f"decoder.upc{k}.{j}")]
        last = len(decoder) + 2
        keys += _block(f"decoder.upc{last}.0") + _conv(f"decoder.upc{last}.1")
    cell = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    keys += _conv("frame_predictor.embed") + _conv("frame_predictor.output.0")
    keys += [f"frame_predictor.lstm.{k}.{w}" for k in range(predictor_layers) for w in cell]
    for net in ["posterior", "prior"] if learned_prior else ["posterior"]:
        keys += _conv(f"{net}.embed") + _conv(f"{net}.mu_net") + _conv(f"{net}.logvar_net")
        keys += [f"{net}.lstm.0.{w}" for w in cell]
    return set(keys)


@pytest.mark.parametrize("architecture", ["dcgan64", "vgg64", "dcgan128", "vgg128"])
@pytest.mark.parametrize("learned_prior", [True, False], ids=["lp", "fp"])
def test_state_dict_keys_are_the_official_ones(architecture, learned_prior):
    config = SVGConfig(architecture=architecture, **TINY)
    model = SVG(config, (1, config.frame_size, config.frame_size), learned_prior=learned_prior)
    assert set(model.state_dict()) == official_keys(architecture, learned_prior)


def test_init_follows_official_init_weights():
    model = SVG(SVGConfig(), (1, 64, 64))
    conv = model.decoder.upc3.main[0]
    assert abs(conv.weight.std().item() - 0.02) < 2e-3 and conv.bias.abs().max() == 0
    bn = model.encoder.c3.main[1]
    assert abs(bn.weight.mean().item() - 1.0) < 5e-3 and bn.bias.abs().max() == 0
    assert abs(model.posterior.mu_net.weight.std().item() - 0.02) < 2e-3
    cell = model.frame_predictor.lstm[0]  # LSTM cells keep PyTorch's default U(-1/sqrt(H), 1/sqrt(H))
    bound = 1 / model.config.rnn_size ** 0.5
    assert cell.weight_hh.abs().max() <= bound and cell.weight_hh.std() > 0.5 * bound / 3 ** 0.5


# -- training fidelity ----------------------------------------------------------------------------------------------


def _assert_same_training(fast: SVG, official: SVG, *, rtol: float, atol_scale: float) -> None:
    grads = {n: p.grad for n, p in official.named_parameters()}
    scale = max(g.abs().max().item() for g in grads.values())
    for name, param in fast.named_parameters():
        assert param.grad is not None, name
        # Conv biases in front of BatchNorm have a zero true gradient; both sides hold rounding noise there.
        torch.testing.assert_close(param.grad, grads[name], rtol=rtol, atol=atol_scale * scale, msg=name)
    buffers = dict(official.named_buffers())
    for name, buffer in fast.named_buffers():
        if name.endswith("num_batches_tracked"):
            assert buffer.item() == buffers[name].item(), name
        else:
            torch.testing.assert_close(buffer, buffers[name], rtol=rtol, atol=rtol, msg=name)


FIDELITY_CASES = [
    pytest.param(True, False, "dcgan64", torch.float64, id="lp"),
    pytest.param(True, True, "dcgan64", torch.float64, id="lp-last_frame_skip"),
    pytest.param(False, False, "dcgan64", torch.float64, id="fp"),
    pytest.param(False, True, "dcgan64", torch.float64, id="fp-last_frame_skip"),
    pytest.param(True, False, "dcgan64", torch.float32, id="lp-float32"),
    pytest.param(True, False, "vgg64", torch.float32, id="lp-vgg64-float32"),  # float64 VGG convs are slow on CPU
]


@pytest.mark.parametrize(("learned_prior", "last_frame_skip", "architecture", "dtype"), FIDELITY_CASES)
def test_batched_training_step_is_the_official_loop(learned_prior, last_frame_skip, architecture, dtype):
    """`training_step` (one batched encode, fused LSTMs, one batched decode) against the official loop on the same
    weights, data and noise: same loss and logs, same gradient on every parameter, same BatchNorm statistics."""
    fast = tiny_model(learned_prior=learned_prior, last_frame_skip=last_frame_skip, architecture=architecture,
                      dtype=dtype)
    official = copy.deepcopy(fast)
    batch, length = 2, 5 if architecture == "dcgan64" else 4
    video = torch.rand(batch, length, 1, 64, 64, dtype=dtype)

    torch.manual_seed(7)
    out = fast.training_step(video, make_train_context())
    out.loss.backward()
    torch.manual_seed(7)  # training_step draws the posterior noise as one randn(B, T-1, z_dim)
    noise = torch.randn(batch, length - 1, fast.config.z_dim, dtype=dtype)
    ref = reference_loss_terms(official, video, noise)
    ref.loss.backward()

    # float64: agreement to rounding; float32: the ~1e-5 relative that summation order leaves.
    rtol, grad_rtol, atol_scale = (1e-10, 1e-9, 1e-12) if dtype == torch.float64 else (1e-5, 1e-4, 1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=rtol, atol=0)
    torch.testing.assert_close(out.logs["mse"], ref.mse.detach() / length, rtol=rtol, atol=0)
    torch.testing.assert_close(out.logs["kld"], ref.kld.detach() / length, rtol=rtol, atol=0)
    _assert_same_training(fast, official, rtol=grad_rtol, atol_scale=atol_scale)


def test_skip_sources_follow_the_official_rule():
    # n_past = 5: steps 1..4 take skips from frames 0..3, later steps keep frame 3 (= n_past - 2).
    assert skip_sources(8, 5, last_frame_skip=False) == [0, 1, 2, 3, 3, 3, 3]
    assert skip_sources(8, 5, last_frame_skip=True) == [0, 1, 2, 3, 4, 5, 6]


def test_gather_frames_is_index_selection():
    frames = torch.randn(2, 9, 3, 4)
    for sources in ([0, 1, 2, 3, 3, 3], [0, 1, 2, 3, 4], [0, 0, 0], [2, 5, 1, 1, 4], [3], [3, 2, 1]):
        assert torch.equal(gather_frames(frames, sources), frames[:, sources])


@pytest.mark.parametrize(("architecture", "dtype"), [("dcgan64", torch.float64), ("vgg64", torch.float64),
                                                     ("dcgan128", torch.float32), ("vgg128", torch.float32)])
def test_shared_skip_decoding_is_the_plain_decoder(architecture, dtype):
    """The decoder path that runs the skip half of each first conv once per distinct source frame."""
    torch.manual_seed(0)
    config = SVGConfig(architecture=architecture, g_dim=8)
    encoder, decoder = build_encoder_decoder(architecture, g_dim=8, channels=1)
    encoder, decoder = encoder.to(dtype), decoder.to(dtype).eval()  # eval: compare the convs, not batch statistics
    batch, length, sources = 2, 2, [0, 1, 1, 0]
    size = config.frame_size
    with torch.no_grad():
        _, skips = encoder(torch.rand(batch * length, 1, size, size, dtype=dtype))
        per_frame = [s.view(batch, length, *s.shape[1:]) for s in skips]
        code = torch.randn(batch * len(sources), 8, dtype=dtype)
        plain = decoder(code, [gather_frames(s, sources).flatten(0, 1) for s in per_frame])
        shared = decoder.forward_shared_skips(code, [s.flatten(0, 1) for s in per_frame], sources)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(shared, plain, rtol=tol, atol=tol)


def test_configure_optimizers_is_one_adam_per_official_module():
    model = tiny_model(lr=1e-3, beta1=0.5)
    opts = model.configure_optimizers(TrainConfig()).optimizers
    assert len(opts) == 5 and all(isinstance(o, torch.optim.Adam) for o in opts)
    assert all(o.defaults["lr"] == 1e-3 and o.defaults["betas"] == (0.5, 0.999) for o in opts)
    covered = [p for o in opts for g in o.param_groups for p in g["params"]]
    assert len(covered) == len(list(model.parameters())) == len({id(p) for p in covered})
    assert len(tiny_model(learned_prior=False).configure_optimizers(TrainConfig()).optimizers) == 4


# -- BatchNorm ------------------------------------------------------------------------------------------------------


def test_time_grouped_batchnorm_equals_per_slice_calls():
    torch.manual_seed(0)
    grouped = TimeBatchNorm2d(5).double()
    nn.init.normal_(grouped.weight, 1.0, 0.1)
    plain = nn.BatchNorm2d(5).double()
    plain.load_state_dict(grouped.state_dict())
    x = torch.randn(4, 3, 5, 6, 6, dtype=torch.float64)  # batch 4, time 3
    order = [0, 1, 1, 2, 0]
    with time_grouped(grouped, 3, order):
        out = grouped(x.reshape(12, 5, 6, 6)).view(4, 3, 5, 6, 6)
    expected = torch.stack([F.batch_norm(x[:, t], None, None, plain.weight, plain.bias, True, 0.0, plain.eps)
                            for t in range(3)], dim=1)
    for t in order:
        plain(x[:, t])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grouped.running_mean, plain.running_mean)
    torch.testing.assert_close(grouped.running_var, plain.running_var)
    assert grouped.num_batches_tracked.item() == plain.num_batches_tracked.item() == len(order)
    assert grouped.time_groups is None  # the block restores plain BatchNorm behaviour
    torch.testing.assert_close(grouped(x[:, 0]), plain(x[:, 0]))


def test_batch_stats_in_eval_normalises_each_call_without_updating():
    layer = TimeBatchNorm2d(4).double().eval()
    use_batch_stats_in_eval(layer, True)
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64) * 3 + 1
    out = layer(x)
    expected = F.batch_norm(x, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
    torch.testing.assert_close(out, expected)
    assert layer.running_mean.abs().max() == 0 and layer.num_batches_tracked.item() == 0


# -- sampling fidelity ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("learned_prior", "last_frame_skip", "n_context"), [
    pytest.param(True, False, 2, id="lp-context2"),
    pytest.param(True, False, 4, id="lp-context4"),
    pytest.param(True, True, 3, id="lp-last_frame_skip"),
    pytest.param(False, False, 4, id="fp-context4"),
    pytest.param(False, True, 2, id="fp-last_frame_skip"),
])
def test_rollout_is_the_official_sampling_loop(learned_prior, last_frame_skip, n_context):
    model = tiny_model(learned_prior=learned_prior, last_frame_skip=last_frame_skip)
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        model.loss_terms(torch.rand(2, 4, 1, 64, 64, dtype=torch.float64),
                         torch.randn(2, 3, 4, dtype=torch.float64))
    model.eval()
    context = torch.rand(2, n_context, 1, 64, 64, dtype=torch.float64)
    horizon = 4  # longer than n_future
    noise = model.sample_noise(2, n_context, horizon, generator=torch.Generator().manual_seed(2))
    rolled = model.rollout(TorchBackend(model.export_plan()), context, horizon, noise)
    torch.testing.assert_close(rolled, reference_generate(model, context, horizon, noise), rtol=1e-10, atol=1e-12)


def test_rollout_with_batch_statistics_is_the_official_train_mode_sampling():
    model = tiny_model(sampling_batchnorm="batch").eval()
    context = torch.rand(4, 3, 1, 64, 64, dtype=torch.float64)
    noise = model.sample_noise(4, 3, 3, generator=torch.Generator().manual_seed(0))
    rolled = model.rollout(TorchBackend(model.export_plan()), context, 3, noise)
    official = copy.deepcopy(model).train()  # generate_svg_lp.py leaves encoder and decoder in train mode
    torch.testing.assert_close(rolled, reference_generate(official, context, 3, noise), rtol=1e-10, atol=1e-12)


def test_noise_shapes():
    assert tiny_model().noise_shapes(2, 5, 7) == {"posterior_noise": (2, 4, 4), "prior_noise": (2, 7, 4)}
    assert tiny_model(learned_prior=False).noise_shapes(2, 5, 7) == {"prior_noise": (2, 7, 4)}


# -- configuration and registration ------------------------------------------------------------------------------------


def test_config_checks():
    with pytest.raises(VpkitError, match="n_context"):
        build_config(SVGConfig, {"n_context": 1})
    assert build_config(SVGConfig, {"n_context": 1, "last_frame_skip": True}).n_context == 1
    with pytest.raises(VpkitError, match="z_dim"):
        build_config(SVGConfig, {"z_dim": 0})
    with pytest.raises(VpkitError, match="Did you mean 'z_dim'"):
        build_config(SVGConfig, {"zdim": 4})
    with pytest.raises(VpkitError, match="resize"):
        SVG(SVGConfig(**TINY), (1, 128, 128))


def test_rollout_rejects_too_short_context():
    model = tiny_model().eval()
    context = torch.rand(1, 1, 1, 64, 64, dtype=torch.float64)
    with pytest.raises(VpkitError, match="at least 2 context frames"):
        model.predict(context, 2)


def test_registration_and_presets():
    host = get_host()
    lp, fp = host.models.get("svg-lp"), host.models.get("svg-fp")
    assert lp.default and not fp.default and lp.plugin == fp.plugin == "svg"
    assert {"smmnist", "bair", "kth64", "kth128", "tiny"} <= set(lp.presets)
    smmnist = lp.presets["smmnist"]
    assert smmnist.dataset == "smmnist" and smmnist.train["batch_size"] == 100
    config = build_config(SVGConfig, smmnist.model)
    assert (config.architecture, config.g_dim, config.z_dim, config.beta) == ("dcgan64", 128, 10, 1e-4)
    assert (config.n_context, config.n_future, config.last_frame_skip) == (5, 10, False)
    assert lp.presets["bair"].dataset == "bair" and lp.presets["kth128"].dataset == "kth"
    for spec in (lp, fp):
        for preset in spec.presets.values():
            build_config(spec.config_cls, preset.model)
    assert isinstance(lp.build(build_config(SVGConfig, lp.presets["tiny"].model), (1, 64, 64)), SVG)
    assert not hasattr(fp.build(build_config(SVGConfig, fp.presets["tiny"].model), (1, 64, 64)), "prior")
    assert "svg" in host.importers
