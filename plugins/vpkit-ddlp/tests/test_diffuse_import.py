"""`vpkit import diffuse-ddlp RESULT_DIR`: an official DiffuseDDLP result folder (diffusion_hparams.json,
ddlp_hparams.json, latent_stats.pth, saves/model.pth with the EMA) over an official DDLP run, both fabricated from tiny
vpkit models, imports with every weight and statistic equal and generates the same videos; a missing file, a missing
DDLP and weights of another DDLP fail with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from vpkit_ddlp import importer
from vpkit_ddlp.config import DDLPConfig
from vpkit_ddlp.ddlp import DDLP
from vpkit_ddlp.diffuse import DiffuseDDLP, DiffuseDDLPConfig, generate, official_state
from vpkit_ddlp.diffuse_import import load_official_diffuse

from vpkit.core.checkpoint import load_model
from vpkit.core.errors import VpkitError

DDLP_SMALL = {"patch_size": 16, "enc_channels": (8, 8, 8), "prior_channels": (4, 4, 8), "n_kp_prior": 4,
              "n_kp_enc": 3, "learned_feature_dim": 4, "timestep_horizon": 3, "n_context": 3, "n_future": 1,
              "num_static_frames": 2, "pint_dim": 16, "pint_heads": 2, "pint_layers": 1}
FRAME = (3, 32, 32)


def official_ddlp_run(root: Path, ddlp: DDLP) -> Path:
    """A released-style DDLP folder: `hparams.json` (official key names) beside `obj3d128_ddlp.pth`."""
    c = ddlp.config
    hp = {name: getattr(c, name) for name in importer.SHARED_FIELDS + importer.DDLP_FIELDS
          if getattr(c, name) is not None}
    hp.update(ds="obj3d128", ch=FRAME[0], image_size=FRAME[-1], n_kp=1, kp_range=[-1, 1], use_resblock=False,
              enable_enc_attn=False, dropout=0.0, run_prefix="", cond_steps=c.n_context, animation_fps=0.06)
    root.mkdir(parents=True)
    (root / "hparams.json").write_text(json.dumps(hp, indent=2))
    torch.save(ddlp.state_dict(), root / "obj3d128_ddlp.pth")
    return root


def tiny_diffuse(ddlp: DDLP, seed: int = 0) -> DiffuseDDLP:
    """A DiffuseDDLP over `ddlp` with EMA weights that differ from the online ones and made-up statistics."""
    torch.manual_seed(seed)
    model = DiffuseDDLP(DiffuseDDLPConfig(ddlp=ddlp.config.model_dump(mode="json"), timesteps=10, lr=1e-4), FRAME)
    model.ddlp.load_state_dict(ddlp.state_dict())
    with torch.no_grad():
        for p in model.ema.ema_model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        model.ema.step.fill_(123)
        model.ema.initted.fill_(True)
        stats = {k: torch.randn_like(v) for k, v in model.particle_norm.stats().items()}
        for suffix in ("", "_bg"):
            stats[f"max_val{suffix}"] = stats[f"min_val{suffix}"] + 1.0 + torch.rand_like(stats[f"min_val{suffix}"])
    model.particle_norm.set_stats(stats)
    return model.eval()


def official_result(root: Path, model: DiffuseDDLP, ddlp_run: Path) -> Path:
    """`<root>/{diffusion_hparams.json, ddlp_hparams.json, latent_stats.pth, saves/model.pth}` as
    train_diffuse_ddlp.py leaves them."""
    (root / "saves").mkdir(parents=True)
    c = model.config
    hp = {"ds": "obj3d128", "ds_root": "/data/obj3d", "device": "cuda", "batch_size": 32, "lr": c.lr,
          "train_num_steps": 700000, "diffusion_num_steps": c.timesteps, "loss_type": c.loss_type,
          "particle_norm": c.particle_norm, "diffuse_frames": c.diffuse_frames, "ddlp_dir": str(ddlp_run),
          "ddlp_ckpt": str(ddlp_run / "obj3d128_ddlp.pth"), "result_dir": str(root)}
    (root / "diffusion_hparams.json").write_text(json.dumps(hp, indent=2))
    (root / "ddlp_hparams.json").write_text((ddlp_run / "hparams.json").read_text())
    model_pth, stats = official_state(model, step=5000)
    torch.save(model_pth, root / "saves" / "model.pth")
    torch.save(stats, root / "latent_stats.pth")
    return root


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diffuse_import")
    torch.manual_seed(0)
    ddlp = DDLP(DDLPConfig(**DDLP_SMALL), FRAME).eval()
    ddlp_run = official_ddlp_run(tmp / "ddlp-obj3d128", ddlp)
    mine = tiny_diffuse(ddlp)
    return tmp, mine, ddlp_run, official_result(tmp / "obj3d128_diffuse_ddlp", mine, ddlp_run)


def test_result_folder_imports_exactly_and_generates_the_same(fabricated):
    _, mine, _, result = fabricated
    key, model, data = load_official_diffuse(result, {})  # the DDLP found at the recorded ddlp_ckpt
    assert key == "diffuse-ddlp" and not model.training
    assert model.config.timesteps == 10 and model.config.lr == 1e-4 and model.config.diffuse_frames == 4
    assert {**model.config.ddlp, "epoch_steps": 0} == {**mine.config.ddlp, "epoch_steps": 0}  # epoch: the preset's
    theirs, ours = model.state_dict(), mine.state_dict()
    assert list(theirs) == list(ours)
    for name, value in ours.items():
        assert torch.equal(theirs[name], value), name
    assert not torch.equal(model.ema.ema_model.model.particle_decoder[2].weight,
                           model.diffusion.model.particle_decoder[2].weight)  # the EMA copy, not the online one
    assert int(model.ema.step) == 123
    assert data == {"name": "obj3d", "config": {"image_size": 32, "seq_len": 4}, "frame_shape": [3, 32, 32],
                    "n_context": 3, "n_future": 47}
    videos = generate(model, 2, 5, torch.Generator().manual_seed(0))
    assert videos.shape == (2, 5, *FRAME)
    torch.testing.assert_close(videos, generate(mine, 2, 5, torch.Generator().manual_seed(0)), rtol=0, atol=0)


def test_cli_import_with_ddlp_option(fabricated, tmp_path):
    from vpkit.cli.main import main

    _, mine, ddlp_run, result = fabricated
    moved = tmp_path / "result"  # a copy whose recorded DDLP paths lead nowhere: --set ddlp names the run
    (moved / "saves").mkdir(parents=True)
    hp = json.loads((result / "diffusion_hparams.json").read_text())
    hp.update(ddlp_dir="./checkpoints/ddlp-gone", ddlp_ckpt="./checkpoints/ddlp-gone/obj3d128_ddlp.pth")
    (moved / "diffusion_hparams.json").write_text(json.dumps(hp))
    for name in ("latent_stats.pth", "saves/model.pth"):
        (moved / name).write_bytes((result / name).read_bytes())
    with pytest.raises(VpkitError, match="was not found.*ddlp-gone.*--set ddlp="):
        load_official_diffuse(moved, {})
    out = tmp_path / "imported"
    with pytest.raises(SystemExit) as done:
        main(["import", "diffuse-ddlp", str(moved), "--out", str(out), "--set", f"ddlp={ddlp_run}"])
    assert done.value.code == 0
    model, ckpt = load_model(out)
    assert ckpt.model_key == "diffuse-ddlp"
    for name, value in mine.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_missing_files_and_mismatched_weights_are_clear(fabricated, tmp_path):
    _, _, ddlp_run, result = fabricated
    with pytest.raises(VpkitError, match="not found"):
        load_official_diffuse(tmp_path / "nowhere", {})
    with pytest.raises(VpkitError, match="Unknown option 'ddpl'.*Did you mean 'ddlp'"):
        load_official_diffuse(result, {"ddpl": str(ddlp_run)})
    bare = tmp_path / "bare"
    (bare / "saves").mkdir(parents=True)
    (bare / "diffusion_hparams.json").write_text((result / "diffusion_hparams.json").read_text())
    with pytest.raises(VpkitError, match=r"saves[/\\]model.pth not found"):
        load_official_diffuse(bare, {})
    torch.manual_seed(1)  # another DDLP: a wider PINT, so the denoiser's weights cannot fit
    other = official_ddlp_run(tmp_path / "other-ddlp", DDLP(DDLPConfig(**{**DDLP_SMALL, "pint_dim": 8}), FRAME))
    with pytest.raises(VpkitError, match="'model' weights do not fit the denoiser.*shape"):
        load_official_diffuse(result, {"ddlp": str(other)})
