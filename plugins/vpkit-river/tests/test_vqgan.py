"""river-vqgan: conformance, the official parameter counts and state-dict keys of f8_small / f16, the two-phase GAN
step (which optimiser updates what, disc_start, the adaptive weight), the LPIPS plumbing, RIVER on a VQGAN, and
(with VPKIT_RIVER_TAMING) parity with taming-transformers' modules and loss."""

from __future__ import annotations

import contextlib
import os
import sys

import pytest
import torch
from vpkit_river.config import RiverConfig
from vpkit_river.model import River, build_river
from vpkit_river.plugin import RIVER_PRESETS
from vpkit_river.vqgan import FrozenVQGAN, NLayerDiscriminator
from vpkit_river.vqgan_config import VQGANConfig
from vpkit_river.vqgan_model import RiverVQGAN
from vpkit_river.vqgan_presets import F8_SMALL, F16, TINY_VQGAN

from vpkit.core.errors import VpkitError
from vpkit.core.model import TrainContext
from vpkit.testing import ModelConformance

FRAME = (1, 16, 16)  # 2x2 latents: keeps the convolutions cheap


def tiny_vqgan(seed: int = 0, frame=FRAME, **overrides) -> RiverVQGAN:
    torch.manual_seed(seed)
    return RiverVQGAN(VQGANConfig(**{**TINY_VQGAN, **overrides}), frame)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class TestRiverVQGANConformance(ModelConformance):
    model_key = "river-vqgan"
    preset = "tiny"
    frame_shape = FRAME

    def test_onnx_export(self, harness) -> None:
        pytest.skip("exported by the core registry conformance (tests/test_conformance_registry.py); keeps this "
                    "file fast")


# -- official architecture ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "arch", "size", "counts"), [
    # (autoencoder, encoder, decoder) from the official VQModelInterface(vq_*_ddconfig), discriminator: taming's
    # NLayerDiscriminator(3, ndf=64, n_layers=3)
    ("f8_small", F8_SMALL, 64, (63_777_455, 25_821_828, 37_890_051)),
    ("f16", F16, 256, (69_593_371, 28_155_144, 41_307_011)),
])
def test_parameter_counts_match_official(name, arch, size, counts):
    with torch.device("meta"):
        model = RiverVQGAN(VQGANConfig(**arch), (3, size, size))
    assert (_count(model) - _count(model.loss), _count(model.encoder), _count(model.decoder)) == counts
    assert _count(model.loss.discriminator) == 2_765_633
    assert _count(NLayerDiscriminator(3, 64, 2)) == 663_361  # LDM vq-f16's 2-layer discriminator
    scale = 8 if name == "f8_small" else 16
    assert model.latent_shape == (arch["embed_dim"], size // scale, size // scale)


def test_state_dict_keys_are_the_official_ones():
    with torch.device("meta"):
        model = RiverVQGAN(VQGANConfig(**F8_SMALL), (3, 64, 64))
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    auto = [k for k in state if not k.startswith("loss.")]
    assert len(auto) == 299  # official VQModelInterface(vq_f8_small_ddconfig).state_dict()
    expected = {
        "encoder.conv_in.weight": (128, 3, 3, 3), "encoder.down.0.block.1.norm2.weight": (128,),
        "encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.down.2.downsample.conv.weight": (256, 256, 3, 3), "encoder.down.3.block.0.conv1.weight": (512, 256, 3, 3),
        "encoder.down.2.attn.1.proj_out.weight": (256, 256, 1, 1), "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "encoder.mid.block_2.conv2.bias": (512,), "encoder.norm_out.weight": (512,), "encoder.conv_out.weight": (4, 512, 3, 3),
        "quant_conv.weight": (4, 4, 1, 1), "quantize.embedding.weight": (16384, 4), "post_quant_conv.bias": (4,),
        "decoder.conv_in.weight": (512, 4, 3, 3), "decoder.mid.block_1.norm1.bias": (512,),
        "decoder.up.3.block.2.conv2.weight": (512, 512, 3, 3), "decoder.up.2.attn.2.k.weight": (256, 256, 1, 1),
        "decoder.up.3.upsample.conv.weight": (512, 512, 3, 3), "decoder.up.2.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.up.0.block.2.conv1.weight": (128, 128, 3, 3), "decoder.conv_out.weight": (3, 128, 3, 3),
        "loss.discriminator.main.0.weight": (64, 3, 4, 4), "loss.discriminator.main.9.running_var": (512,),
        "loss.discriminator.main.11.weight": (1, 512, 4, 4),
    }
    for key, shape in expected.items():
        assert state[key] == shape, key
    attention = {k.split(".attn")[0] for k in state if ".attn." in k}  # nominal resolution 16 = level 2 only
    assert attention == {"encoder.down.2", "decoder.up.2"}
    assert "encoder.down.3.downsample.conv.weight" not in state and "decoder.up.0.upsample.conv.weight" not in state


# -- training -------------------------------------------------------------------------------------------------------


def _snapshot(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters() if k.startswith(prefix)}


def test_two_phase_step_updates_generator_then_discriminator():
    model = tiny_vqgan()
    model.train()
    opt_ae, opt_disc = model.configure_optimizers().optimizers
    assert {id(p) for g in opt_ae.param_groups for p in g["params"]} == {id(p) for p in model.autoencoder_parameters()}
    ae_before, disc_before = _snapshot(model, ("encoder", "decoder", "quant")), _snapshot(model, "loss.")
    seen = []

    def optimizer_step(opt):
        # at each step: which of the two groups holds gradients
        ae_grads = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.autoencoder_parameters())
        d_grads = any(p.grad is not None for p in model.loss.parameters())
        seen.append((opt, ae_grads, d_grads))
        opt.step()
        opt.zero_grad(set_to_none=True)

    ctx = TrainContext(step=0, device=torch.device("cpu"), autocast=contextlib.nullcontext,
                       backward=lambda loss: loss.backward(), optimizer_step=optimizer_step)
    video = torch.rand(2, 2, *FRAME, generator=torch.Generator().manual_seed(1))
    out = model.training_step(video, ctx)
    assert [s[0] for s in seen] == [opt_ae, opt_disc]
    assert seen[0][1:] == (True, False)  # generator phase: the discriminator took no gradient
    assert seen[1][1:] == (False, True)  # discriminator phase: the reconstruction was detached
    # every discriminator weight moved (the last bias has zero hinge gradient while all logits are in (-1, 1))
    assert all(not torch.equal(v, dict(model.named_parameters())[k]) for k, v in disc_before.items()
               if k.endswith("weight"))
    changed = [k for k, v in ae_before.items() if not torch.equal(v, dict(model.named_parameters())[k])]
    assert len(changed) == len(ae_before)
    assert out.logs["disc_factor"] == 1.0 and out.logs["d_weight"] > 0 and out.logs["disc_loss"] > 0
    assert torch.isfinite(out.loss)


def test_disc_start_switches_the_adversarial_terms_off_before_it():
    model = tiny_vqgan(disc_start=5)
    model.train()
    frames = torch.rand(4, *FRAME) * 2 - 1
    loss, logs = model.generator_loss(frames, step=4)
    recon, q_loss, _ = model.reconstruct(frames)
    nll = (frames - recon).abs().mean()
    torch.testing.assert_close(loss, nll + q_loss)  # codebook_weight 1, no GAN term
    assert logs["disc_factor"] == 0.0
    d_loss, _ = model.discriminator_loss(frames, step=4)
    assert d_loss == 0
    d_loss, _ = model.discriminator_loss(frames, step=5)
    assert d_loss > 0


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_decoder_layer():
    model = tiny_vqgan(disc_weight=0.5)
    model.train()
    frames = torch.rand(2, *FRAME) * 2 - 1
    torch.manual_seed(3)
    _, logs = model.generator_loss(frames, step=0)
    recon, _, _ = model.reconstruct(frames)
    nll = (frames - recon).abs().mean()
    g = -model.loss.discriminator(recon).mean()
    last = model.decoder.conv_out.weight
    expected = torch.autograd.grad(nll, last, retain_graph=True)[0].norm() / (
        torch.autograd.grad(g, last)[0].norm() + 1e-4) * 0.5
    torch.testing.assert_close(logs["d_weight"], expected.detach())


def test_learning_rate_scales_with_the_batch_as_taming():
    from vpkit.core.config import TrainConfig

    model = tiny_vqgan()
    opt = model.configure_optimizers(TrainConfig(batch_size=16)).optimizers[0]
    assert opt.param_groups[0]["lr"] == pytest.approx(4.5e-6 * 16) and opt.param_groups[0]["betas"] == (0.5, 0.9)


def test_perceptual_loss_needs_the_vgg_file(tmp_path):
    model = tiny_vqgan(perceptual_weight=1.0, lpips_backbone=str(tmp_path / "missing.pth"))
    with pytest.raises(VpkitError, match=r"vgg16-397923af\.pth.*perceptual_weight=0"):
        model.configure_optimizers()


def test_perceptual_loss_runs_through_vpkit_lpips(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    trunk = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}  # random VGG16 trunk
    torch.save(trunk, tmp_path / "vgg16.pth")
    model = tiny_vqgan(perceptual_weight=1.0, lpips_backbone=str(tmp_path / "vgg16.pth"))
    model.configure_optimizers()
    assert "lpips" not in "".join(model.state_dict())  # frozen, outside the state dict
    model.train()
    frames = torch.rand(2, *FRAME) * 2 - 1
    _, logs = model.generator_loss(frames, step=0)
    assert logs["p_loss"] > 0
    recon, _, _ = model.reconstruct(frames)
    torch.testing.assert_close(logs["nll"], (frames - recon).abs().mean() + logs["p_loss"])


# -- RIVER on a VQGAN -----------------------------------------------------------------------------------------------


def test_river_flows_in_a_vqgan_latent_space(tmp_path, river_host):
    from vpkit.core.checkpoint import load_model, plugin_section, save_checkpoint

    vqgan = tiny_vqgan()
    data = {"name": "smmnist", "frame_shape": list(FRAME), "n_context": 1, "n_future": 1}
    path = save_checkpoint(tmp_path / "vqgan", vqgan, model_key="river-vqgan", plugin=plugin_section("river"),
                           data=data)
    tiny = dict(RIVER_PRESETS["tiny"].model)
    model = build_river(RiverConfig(**tiny, autoencoder=str(path)), FRAME)
    assert model.config.vqgan == vqgan.config and model.config.autoencoder_source == str(path)
    assert isinstance(model.ae, FrozenVQGAN) and model.latent_shape == (4, 2, 2)
    state = model.state_dict()
    assert not [k for k in state if k.startswith(("ae.backbone.", "ae.loss."))]  # official ldm-vq keys: ae.*
    for key, value in vqgan.state_dict().items():
        if not key.startswith("loss."):
            assert torch.equal(state["ae." + key], value), key
    assert not any(p.requires_grad for p in model.ae.parameters())
    model.train()
    assert not model.ae.training
    video = torch.rand(2, 4, *FRAME)
    model.configure_optimizers()
    out = model.training_step(video, None)  # type: ignore[arg-type]
    assert torch.isfinite(out.loss)
    with torch.no_grad():
        torch.testing.assert_close(model.ae.encode(video[:, 0]), vqgan.encode(video[:, 0]))
    model.eval()
    pred = model.predict(video[:, :2], 2, generator=torch.Generator().manual_seed(0))
    assert pred.shape == (2, 1, 2, *FRAME) and pred.min() >= 0 and pred.max() <= 1
    # the RIVER checkpoint rebuilds alone (the VQGAN's directory gone)
    river = save_checkpoint(tmp_path / "river", model, model_key="river", plugin=plugin_section("river"),
                            data={**data, "n_context": 2, "n_future": 2})
    (path / "model.safetensors").unlink()
    loaded, _ = load_model(river)
    assert isinstance(loaded.ae, FrozenVQGAN)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_river_config_with_a_vqgan_builds_without_a_checkpoint():
    tiny = dict(RIVER_PRESETS["tiny"].model)
    model = River(RiverConfig(**tiny, vqgan=VQGANConfig(**TINY_VQGAN)), (1, 64, 64))
    assert model.latent_shape == (4, 8, 8) and "ae.quantize.embedding.weight" in model.state_dict()


# -- parity with taming-transformers ----------------------------------------------------------------------------------

TAMING = os.environ.get("VPKIT_RIVER_TAMING")


@pytest.mark.skipif(not TAMING, reason="set VPKIT_RIVER_TAMING to a taming-transformers checkout (with einops)")
def test_parity_with_taming():
    deviations = compare_with_taming(TAMING)
    assert max(deviations.values()) < 1e-10, deviations


def compare_with_taming(checkout: str) -> dict[str, float]:
    """Float64, same weights and batch: taming's Encoder/Decoder/VectorQuantizer2/VQLPIPSWithDiscriminator (LPIPS
    on a random VGG trunk) run as Lightning runs them (phase 0: loss, backward, Adam step; phase 1: a new forward,
    loss, backward, Adam step) against `RiverVQGAN.training_step`. Returns the max deviations."""
    import types

    from torchvision.models.vgg import cfgs, make_layers

    sys.path.insert(0, checkout)
    from taming.modules.diffusionmodules.model import Decoder, Encoder
    from taming.modules.losses import lpips as taming_lpips
    from taming.modules.losses.vqperceptual import VQLPIPSWithDiscriminator
    from taming.modules.vqvae.quantize import VectorQuantizer2

    torch.set_default_dtype(torch.float64)
    try:
        arch = {**TINY_VQGAN, "disc_num_layers": 3, "disc_start": 1, "perceptual_weight": 1.0, "disc_weight": 0.8}
        frame = (3, 32, 32)
        ddconfig = {"ch": arch["ch"], "out_ch": 3, "ch_mult": arch["ch_mult"], "num_res_blocks": arch["num_res_blocks"],
                    "attn_resolutions": arch["attn_resolutions"], "dropout": 0.0, "in_channels": 3,
                    "resolution": arch["resolution"], "z_channels": 4, "double_z": False}
        # taming hard-codes GroupNorm(32): widths 16/32 need the tiny preset's 8 groups -> patch Normalize
        import taming.modules.diffusionmodules.model as dm
        dm.Normalize = lambda c: torch.nn.GroupNorm(arch["norm_groups"], c, eps=1e-6, affine=True)
        taming_lpips.LPIPS.load_from_pretrained = lambda self, name="vgg_lpips": None
        # a random VGG16 trunk (no download): taming reads only `.features`
        taming_lpips.models = types.SimpleNamespace(
            vgg16=lambda pretrained=True: types.SimpleNamespace(features=make_layers(cfgs["D"])))
        torch.manual_seed(0)
        official = torch.nn.ModuleDict({
            "encoder": Encoder(**ddconfig), "decoder": Decoder(**ddconfig),
            "quantize": VectorQuantizer2(arch["n_embed"], 4, beta=0.25),
            "quant_conv": torch.nn.Conv2d(4, 4, 1), "post_quant_conv": torch.nn.Conv2d(4, 4, 1),
            "loss": VQLPIPSWithDiscriminator(disc_start=1, disc_weight=0.8, disc_ndf=arch["disc_ndf"],
                                             disc_num_layers=3),
        })
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            trunk = {f"features.{k.split('.', 1)[1]}": v for k, v in
                     official["loss"].perceptual_loss.net.state_dict().items()}
            torch.save(trunk, f"{tmp}/vgg.pth")
            ours = RiverVQGAN(VQGANConfig(**{**arch, "lpips_backbone": f"{tmp}/vgg.pth"}), frame)
            missing = ours.load_state_dict({k: v for k, v in official.state_dict().items()
                                            if not k.startswith("loss.perceptual_loss.")}, strict=True)
            assert not missing.missing_keys
            opts_ours = ours.configure_optimizers().optimizers
        lp = ours._held["lpips"]  # the same linear layers in both
        for i in range(5):
            getattr(official["loss"].perceptual_loss, f"lin{i}").load_state_dict(lp.lins[i].state_dict())
        official.train()
        official["loss"].perceptual_loss.eval()
        ae_params = [p for n, p in official.named_parameters() if not n.startswith("loss.")]
        opt_ae = torch.optim.Adam(ae_params, lr=4.5e-6, betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(official["loss"].discriminator.parameters(), lr=4.5e-6, betas=(0.5, 0.9))

        def forward(x):
            quant, qloss, _ = official["quantize"](official["quant_conv"](official["encoder"](x)))
            return official["decoder"](official["post_quant_conv"](quant)), qloss

        video = torch.rand(2, 2, *frame, generator=torch.Generator().manual_seed(5))
        x = video.flatten(0, 1) * 2 - 1
        deviations = {}
        step = 1
        xrec, qloss = forward(x)
        official["loss"].discriminator.requires_grad_(False)
        g_loss, _ = official["loss"](qloss, x, xrec, 0, step, last_layer=official["decoder"].conv_out.weight)
        g_loss.backward()
        official["loss"].discriminator.requires_grad_(True)
        opt_ae.step()
        xrec, qloss = forward(x)
        d_loss, _ = official["loss"](qloss, x, xrec, 1, step, last_layer=official["decoder"].conv_out.weight)
        d_loss.backward()
        opt_d.step()

        ours.train()
        ctx = TrainContext(step=step, device=torch.device("cpu"), autocast=contextlib.nullcontext,
                           backward=lambda loss: loss.backward(), optimizer_step=lambda o: o.step())
        out = ours.training_step(video, ctx)
        deviations["generator_loss"] = float((out.loss - g_loss.detach()).abs())
        deviations["disc_loss"] = float((out.logs["disc_loss"] - d_loss.detach()).abs())
        theirs = official.state_dict()
        deviations["weights_after_step"] = max(float((v.double() - theirs[k].double()).abs().max())
                                               for k, v in ours.state_dict().items())
        assert len(opts_ours) == 2
        return deviations
    finally:
        torch.set_default_dtype(torch.float32)
        sys.path.remove(checkout)
