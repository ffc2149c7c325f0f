"""DiffuseDDLP (`diffuse-ddlp`): the denoiser's size and state-dict layout (official `GaussianDiffusionPINT` and EMA
keys), latent statistics written once and read back, training steps that reach only the denoiser, the EMA, generation
shapes and seeding, the `generate` command, and (with VPKIT_DDLP_OFFICIAL naming a checkout of taldatech/ddlp)
parity with the official code in float64."""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch
from typer.testing import CliRunner
from vpkit_ddlp.config import DDLPConfig
from vpkit_ddlp.ddlp import DDLP
from vpkit_ddlp.diffuse import (
    DIFFUSE_DDLP_SPEC,
    STATS_FILE,
    STATS_KEYS,
    DiffuseDDLP,
    DiffuseDDLPConfig,
    ensure_latent_stats,
    generate,
    load_latent_stats,
    load_official_state,
    official_state,
)
from vpkit_ddlp.diffuse_denoiser import EMA, GaussianDiffusion, PINTDenoiser

import vpkit
from vpkit.core.checkpoint import save_checkpoint
from vpkit.core.errors import VpkitError
from vpkit.testing import make_train_context

TINY_DDLP = {"patch_size": 16, "enc_channels": (8, 8, 8, 8), "prior_channels": (4, 4, 8), "n_kp_prior": 8,
             "n_kp_enc": 4, "learned_feature_dim": 4, "timestep_horizon": 3, "n_context": 2, "n_future": 2,
             "num_static_frames": 2, "pint_dim": 16, "pint_heads": 2, "pint_layers": 1, "epoch_steps": 1}
FRAME = (1, 64, 64)
PLUGIN = {"name": "ddlp", "distribution": "vpkit-ddlp", "version": "0"}


def clips(count: int, length: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (length, *FRAME), generator=g, dtype=torch.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def ddlp_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    ddlp = DDLP(DDLPConfig(**TINY_DDLP), FRAME)
    path = tmp_path_factory.mktemp("ddlp") / "last"
    return save_checkpoint(path, ddlp, model_key="ddlp", plugin=PLUGIN,
                           data={"name": "smmnist", "frame_shape": list(FRAME), "n_context": 2, "n_future": 2})


def make(ddlp_ckpt=None, **overrides) -> DiffuseDDLP:
    src = {"ddlp_checkpoint": str(ddlp_ckpt)} if ddlp_ckpt is not None else {"ddlp": TINY_DDLP}
    return DiffuseDDLP(DiffuseDDLPConfig(**{"timesteps": 10, **src, **overrides}), FRAME)


@pytest.fixture(scope="module")
def trained(ddlp_ckpt):
    """A tiny model with statistics over 6 clips."""
    model = make(ddlp_ckpt)
    ensure_latent_stats(model, clips(6))
    return model


# -- sizes and layout -------------------------------------------------------------------------------------------------
def test_obj3d128_denoiser_has_the_official_parameter_count():
    with torch.device("meta"):  # obj3d128: F 8, K 12, pint_dim 256, 8 heads, 6 layers, tau 4
        denoiser = PINTDenoiser(6 + 8, 256, 8, 6, 4, 12 + 1)
    assert sum(p.numel() for p in denoiser.parameters()) == 5_464_590


def test_diffusion_and_ema_state_dicts_have_the_official_layout():
    diffusion = GaussianDiffusion(PINTDenoiser(10, 16, 2, 6, 4, 5), frames=4, timesteps=1000)
    keys = list(diffusion.state_dict())
    assert len(keys) == 118  # as the official GaussianDiffusionPINT of 6 layers
    assert keys[:13] == list(GaussianDiffusion.SCHEDULE) and all(diffusion.betas.shape == (1000,) for _ in [0])
    assert {"model.time_mlp.1.weight", "model.time_mlp.3.bias", "model.particle_projection.2.weight",
            "model.particle_decoder.2.bias", "model.particle_transformer.blocks.5.attn.rel_pos_bias.rel_pos_bias",
            "model.particle_transformer.head.weight"} <= set(keys)
    assert diffusion.state_dict()["model.particle_transformer.blocks.0.attn.mask"].shape == (1, 1, 1, 4, 1, 4)
    ema = EMA(diffusion).official_state_dict()
    assert list(ema)[:2] == ["initted", "step"]
    assert [k for k in ema if k.startswith("online_model.")] == [f"online_model.{k}" for k in keys]
    assert [k for k in ema if k.startswith("ema_model.")] == [f"ema_model.{k}" for k in keys]


def test_official_checkpoint_round_trip(trained):
    model_pth, stats = official_state(trained, step=7)
    assert set(model_pth) == {"step", "model", "opt", "ema", "scaler"} and set(stats) == set(STATS_KEYS)
    other = make()
    load_official_state(other, model_pth, stats)
    for a, b in zip(trained.state_dict().items(), other.state_dict().items(), strict=True):
        if not a[0].startswith("ddlp."):
            assert a[0] == b[0] and torch.equal(a[1], b[1]), a[0]


# -- building -----------------------------------------------------------------------------------------------------------
def test_builds_from_a_ddlp_checkpoint_and_embeds_its_config(ddlp_ckpt):
    from vpkit.core.checkpoint import load_state_dict

    model = make(ddlp_ckpt)
    saved = load_state_dict(ddlp_ckpt)
    assert all(torch.equal(v, saved[k]) for k, v in model.ddlp.state_dict().items())
    assert model.config.ddlp["n_kp_enc"] == 4 and not any(p.requires_grad for p in model.ddlp.parameters())
    # the embedded config rebuilds the same network without the DDLP folder
    again = DiffuseDDLP(model.config.model_copy(update={"ddlp_checkpoint": "/nonexistent"}), FRAME)
    assert list(again.state_dict()) == list(model.state_dict())


def test_bad_builds_name_the_fix(ddlp_ckpt):
    with pytest.raises(VpkitError, match="ddlp_checkpoint"):
        DiffuseDDLP(DiffuseDDLPConfig(), FRAME)
    with pytest.raises(VpkitError, match="trained on frames"):
        DiffuseDDLP(DiffuseDDLPConfig(ddlp_checkpoint=str(ddlp_ckpt)), (3, 64, 64))


# -- statistics ---------------------------------------------------------------------------------------------------------
def test_stats_are_computed_once_written_beside_the_ddlp_and_read_back(ddlp_ckpt, tmp_path, monkeypatch):
    data = clips(5)
    model = make(ddlp_ckpt, stats_batch_size=2)
    beside = ddlp_ckpt / STATS_FILE
    beside.unlink(missing_ok=True)
    assert not model.particle_norm.ready
    where = ensure_latent_stats(model, data, save_to=tmp_path)
    assert where == beside and beside.is_file() and (tmp_path / STATS_FILE).is_file()
    assert model.particle_norm.ready
    # the statistics are those of every particle / bg vector of the first tau frames of every clip
    video = torch.stack(data)[:, :4].float() / 255
    rows, bg = model.encode_particles(video)
    rows, bg = rows.reshape(-1, rows.shape[-1]), bg.reshape(-1, bg.shape[-1])
    stats = load_latent_stats(beside)
    torch.testing.assert_close(stats["mu"], rows.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stats["std"], rows.std(0), atol=1e-5, rtol=1e-3)
    torch.testing.assert_close(stats["max_val_bg"], bg.max(0)[0])
    torch.testing.assert_close(stats["min_val"], rows.min(0)[0])
    # a second model reads the file instead of computing
    monkeypatch.setattr("vpkit_ddlp.diffuse.compute_latent_stats", lambda *a, **k: pytest.fail("recomputed"))
    other = make(ddlp_ckpt)
    assert ensure_latent_stats(other, data) == beside
    assert all(torch.equal(a, b) for a, b in zip(other.particle_norm.stats().values(),
                                                 model.particle_norm.stats().values(), strict=True))
    assert ensure_latent_stats(other, data) is None  # already has them: nothing to do


def test_latents_are_normalised_and_round_trip(trained):
    video = torch.stack(clips(6)[:2])[:, :4].float() / 255  # clips the statistics saw
    rows, bg = trained.encode_particles(video)
    latent, mask = trained.to_latent(rows, bg)
    assert latent.shape == (2, 4, 5, 10) and latent[:, :, :4].abs().max() <= 1.0 + 1e-4
    assert mask[:, :, 4, 6:].sum() == 0 and mask[:, :, 4, :6].all() and mask[:, :, :4].all()
    back = trained.from_latent(latent)
    torch.testing.assert_close(back["z_features"], rows[..., 6:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(back["z_bg"], bg, atol=1e-5, rtol=1e-4)


# -- training -----------------------------------------------------------------------------------------------------------
def test_training_step_needs_statistics():
    model = make()
    with pytest.raises(VpkitError, match="latent statistics"):
        model.training_step(torch.rand(2, 4, *FRAME), make_train_context())


def test_training_step_reaches_only_the_denoiser_and_the_ema_follows(ddlp_ckpt):
    model = make(ddlp_ckpt, ema_update_after_step=1, ema_update_every=1)
    ensure_latent_stats(model, clips(4))
    model.train()
    assert not model.ddlp.training and not model.ema.ema_model.training
    opt = model.configure_optimizers()
    before = {k: v.clone() for k, v in model.ema.ema_model.state_dict().items()}
    for step in range(4):
        out = model.training_step(torch.rand(2, 5, *FRAME), make_train_context(step=step))
        assert torch.isfinite(out.loss)
        opt.optimizers[0].zero_grad()
        out.loss.backward()
        grads = [p.grad for p in model.diffusion.parameters()]
        assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
        assert all(p.grad is None for p in model.ddlp.parameters())
        assert all(p.grad is None for p in model.ema.parameters())
        opt.optimizers[0].step()
        for schedule in opt.schedulers:
            schedule.step()
    assert int(model.ema.step) == 4 and bool(model.ema.initted)
    assert opt.optimizers[0].param_groups[0]["lr"] == 8e-5
    assert opt.optimizers[0].param_groups[0]["betas"] == (0.9, 0.99)
    # steps 0, 1 copy, step 2 copies then averages identical weights, step 3 averages: between old and new
    online, shadow = model.diffusion.state_dict(), model.ema.ema_model.state_dict()
    weight = "model.particle_decoder.2.weight"
    assert not torch.equal(shadow[weight], before[weight]) and not torch.equal(shadow[weight], online[weight])


def test_ema_copies_during_warm_up_then_averages_with_the_warm_up_decay():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, beta=0.995, update_after_step=2, update_every=1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(3):  # steps 0..2: copies
        ema.update()
    assert torch.equal(ema.ema_model.weight, net.weight)
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update()  # step 3, the first past the warm-up: initialises by copying (then averages equal weights)
    assert torch.equal(ema.ema_model.weight, net.weight) and bool(ema.initted)
    with torch.no_grad():
        net.weight.fill_(5.0)
    ema.update()  # step 4: n = 5 - 2 - 1 = 2, decay 1 - 3^(-2/3)
    decay = 1 - 3 ** (-2 / 3)
    torch.testing.assert_close(ema.ema_model.weight, torch.full((2, 2), 3.0 * decay + 5.0 * (1 - decay)))


# -- generation ---------------------------------------------------------------------------------------------------------
def test_generate_shapes_range_and_seeding(trained):
    videos = generate(trained, 3, 6, torch.Generator().manual_seed(1), batch_size=2)
    assert videos.shape == (3, 6, *FRAME) and videos.min() >= 0 and videos.max() <= 1
    again = generate(trained, 3, 6, torch.Generator().manual_seed(1), batch_size=2)  # same batches, same draws
    assert torch.equal(videos, again)
    assert not torch.equal(videos, generate(trained, 3, 6, torch.Generator().manual_seed(2)))
    with pytest.raises(VpkitError, match="horizon"):
        generate(trained, 1, 3)


def test_unroll_continues_the_generated_frames_with_pint(trained):
    latent = torch.rand(2, 4, 5, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1
    p = trained.from_latent(latent)
    rolled = trained.unroll(p, 3)
    assert rolled["z"].shape == (2, 7, 4, 2) and rolled["obj_on"].shape == (2, 7, 4)
    assert torch.equal(rolled["z"][:, :4], p["z"])
    block = trained.ddlp.dyn_module.block_size  # 3 in the tiny DDLP: the window is the last 3 frames
    d = trained.ddlp.dyn_module(*(p[n][:, -block:] for n in ("z", "z_scale", "obj_on", "z_depth", "z_features",
                                                              "z_bg")))
    torch.testing.assert_close(rolled["z"][:, 4], d["mu"][:, -1])


# -- CLI ----------------------------------------------------------------------------------------------------------------
class _DiffusePlugin:
    @vpkit.hookimpl
    def register_models(self, register) -> None:
        register(DIFFUSE_DDLP_SPEC)


def test_generate_command_writes_gif_and_mp4(trained, tmp_path):
    import typer
    from vpkit_ddlp.diffuse_cli import generate_command

    from vpkit.core.plugins import get_host

    host = get_host()
    if "diffuse-ddlp" not in host.models:  # until plugin.py registers it
        host.register_plugin(_DiffusePlugin(), name="ddlp-diffuse-test")
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last", trained, model_key="diffuse-ddlp",
                           plugin=PLUGIN, data={"name": "smmnist", "frame_shape": list(FRAME), "n_context": 4,
                                                "n_future": 0})
    app = typer.Typer()
    app.command("generate")(generate_command)
    app.command("noop")(lambda: None)  # two commands: typer keeps `generate` as a sub-command
    out = tmp_path / "videos"
    result = CliRunner().invoke(app, ["generate", str(ckpt), "-n", "2", "--horizon", "5", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["generate.json", "video_000.gif", "video_000.mp4", "video_001.gif", "video_001.mp4"]
    assert all((out / n).stat().st_size > 0 for n in names)
    bad = CliRunner().invoke(app, ["generate", str(tmp_path / "missing"), "--out", str(out)])
    assert bad.exit_code != 0


# -- parity with the official code ------------------------------------------------------------------------------------
OFFICIAL = os.environ.get("VPKIT_DDLP_OFFICIAL")


@pytest.fixture(scope="module")
def official():
    if not OFFICIAL:
        pytest.skip("set VPKIT_DDLP_OFFICIAL to a checkout of github.com/taldatech/ddlp to compare with it")
    stubs = {"cv2": {}, "accelerate": {"Accelerator": object}, "datasets": {},
             "datasets.get_dataset": {"get_video_dataset": None}}
    try:
        import einops  # noqa: F401
    except ImportError:  # the official module imports einops; the code paths compared use one reshape of it
        stubs["einops"] = {"rearrange": None, "reduce": lambda t, pattern, op: t.reshape(t.shape[0], -1)}
        stubs["einops.layers"] = {}
        stubs["einops.layers.torch"] = {"Rearrange": None}
    saved = {name: sys.modules.get(name) for name in stubs}
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    sys.path.insert(0, OFFICIAL)
    try:
        import models
        from modules import diffusion_modules
    finally:
        sys.path.remove(OFFICIAL)
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return types.SimpleNamespace(models=models, diffusion=diffusion_modules)


def test_denoiser_loss_and_sampler_match_official(official):
    odm = official.diffusion
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the official time embedding follows the default dtype
    try:
        ref = odm.GaussianDiffusionPINT(
            odm.PINTDenoiser(10, hidden_dim=32, projection_dim=32, n_head=4, n_layer=2, block_size=4, dropout=0.1,
                             predict_delta=False, positional_bias=True, max_particles=7),
            seq_length=4, timesteps=1000, sampling_timesteps=1000, loss_type="l1", objective="pred_x0")
        mine = GaussianDiffusion(PINTDenoiser(10, 32, 4, 2, 4, 7), frames=4, timesteps=1000)
        assert list(mine.state_dict()) == list(ref.state_dict())
        mine.load_state_dict(ref.state_dict())
        assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in ref.parameters())
        x = torch.rand(3, 4, 7, 10, generator=torch.Generator().manual_seed(0)) * 2 - 1
        mask = torch.ones_like(x)
        mask[:, :, 6, 6:] = 0
        t = torch.tensor([0, 500, 999])
        ref.eval(), mine.eval()
        assert torch.equal(ref.model(x, t), mine.model(x, t))
        ref.train(), mine.train()  # same draws: t, noise, then dropout
        torch.manual_seed(1)
        loss_ref = ref(x, mask=mask)
        torch.manual_seed(1)
        tt = torch.randint(0, 1000, (3,))
        loss = mine.loss(x, tt, torch.randn_like(x), mask)
        assert abs(float(loss.detach() - loss_ref.detach())) <= 1e-14 * abs(float(loss_ref.detach()))
        ref.eval(), mine.eval()
        for step in (999, 10, 0):
            torch.manual_seed(2)
            a, a0 = ref.p_sample(x, step)
            torch.manual_seed(2)
            b, b0 = mine.p_sample(x, step, torch.randn_like(x))
            assert torch.equal(a, b) and torch.equal(a0, b0)
    finally:
        torch.set_default_dtype(saved)


def test_ema_matches_official(official):
    odm = official.diffusion

    def nets():
        ref = odm.GaussianDiffusionPINT(odm.PINTDenoiser(10, hidden_dim=16, projection_dim=16, n_head=2, n_layer=1,
                                                         block_size=4, max_particles=5),
                                        seq_length=4, timesteps=20, objective="pred_x0")
        mine = GaussianDiffusion(PINTDenoiser(10, 16, 2, 1, 4, 5), frames=4, timesteps=20)
        mine.load_state_dict(ref.state_dict())
        return ref, mine

    ref, mine = nets()
    ema_ref, ema_mine = official.diffusion.EMA(ref, beta=0.995, update_every=10), EMA(mine)
    gen = torch.Generator().manual_seed(5)
    for _ in range(150):
        with torch.no_grad():
            for p1, p2 in zip(ref.parameters(), mine.parameters(), strict=True):
                delta = torch.randn(p1.shape, generator=gen) * 0.01
                p1.add_(delta), p2.add_(delta)
        ema_ref.update(), ema_mine.update()
    a, b = ema_ref.state_dict(), ema_mine.official_state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
