"""`vpkit import ddlp`: official run directories (hparams.json + saves/{ds}_{ddlp|dlp}.pth, a plain state_dict)
fabricated from tiny models round-trip exactly; bad directories fail with a clear message; with VPKIT_DDLP_OFFICIAL
naming an official checkout, weights saved by the official classes import and reproduce their outputs."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from vpkit_ddlp.config import DDLPConfig, DLPConfig
from vpkit_ddlp.ddlp import DDLP
from vpkit_ddlp.dlp import DLP
from vpkit_ddlp.importer import load_official

from vpkit.core.checkpoint import load_model
from vpkit.core.errors import VpkitError

SMALL = {"patch_size": 16, "enc_channels": (8, 8, 8), "prior_channels": (4, 4, 8), "n_kp_prior": 4, "n_kp_enc": 3,
         "learned_feature_dim": 4}
SMALL_DDLP = {**SMALL, "timestep_horizon": 3, "n_context": 3, "n_future": 1, "num_static_frames": 2,
              "pint_dim": 16, "pint_heads": 2, "pint_layers": 1}
FRAME = (3, 32, 32)


def official_hparams(config: DLPConfig | DDLPConfig, frame_shape=FRAME, ds: str = "obj3d128") -> dict:
    """A config json as the official train scripts copy it to `<run>/hparams.json` (official key set)."""
    c = config
    hp = {"ds": ds, "root": "/data", "device": "cuda", "batch_size": 4, "lr": c.lr, "kp_activation": c.kp_activation,
          "pad_mode": c.pad_mode, "load_model": False, "pretrained_path": None, "num_epochs": 150, "n_kp": 1,
          "recon_loss_type": c.recon_loss_type, "sigma": c.sigma, "beta_kl": c.beta_kl, "beta_rec": c.beta_rec,
          "patch_size": c.patch_size, "topk": 10, "n_kp_enc": c.n_kp_enc, "eval_epoch_freq": 1,
          "learned_feature_dim": c.learned_feature_dim, "n_kp_prior": c.n_kp_prior, "weight_decay": 0.0,
          "kp_range": [-1, 1], "warmup_epoch": 1, "dropout": 0.0, "iou_thresh": 0.2, "anchor_s": c.anchor_s,
          "kl_balance": c.kl_balance, "image_size": frame_shape[-1], "ch": frame_shape[0],
          "enc_channels": list(c.enc_channels), "prior_channels": list(c.prior_channels), "timestep_horizon": 1,
          "predict_delta": True, "beta_dyn": 0.1, "scale_std": c.scale_std, "offset_std": c.offset_std,
          "obj_on_alpha": 0.1, "obj_on_beta": 0.1, "beta_dyn_rec": 1.0, "num_static_frames": 4, "pint_layers": 6,
          "pint_heads": 8, "pint_dim": 256, "run_prefix": "", "animation_horizon": 100, "eval_im_metrics": True,
          "use_resblock": False, "scheduler_gamma": 0.95, "adam_betas": [0.9, 0.999], "adam_eps": 0.0001,
          "train_enc_prior": True, "start_dyn_epoch": 0, "cond_steps": 10, "animation_fps": 0.06,
          "use_correlation_heatmaps": c.use_correlation_heatmaps, "enable_enc_attn": False,
          "filtering_heuristic": c.filtering_heuristic}
    if isinstance(c, DDLPConfig):
        hp.update(timestep_horizon=c.timestep_horizon, cond_steps=c.n_context, num_static_frames=c.num_static_frames,
                  pint_layers=c.pint_layers, pint_heads=c.pint_heads, pint_dim=c.pint_dim, beta_dyn=c.beta_dyn)
    return hp


def official_run(root: Path, model: DLP | DDLP, hp: dict, kind: str) -> Path:
    """`<root>/hparams.json` and `<root>/saves/{ds}_{kind}.pth` as `train_{kind}.py` leaves them."""
    (root / "saves").mkdir(parents=True, exist_ok=True)
    (root / "hparams.json").write_text(json.dumps(hp, indent=2))
    torch.save(model.state_dict(), root / "saves" / f"{hp['ds']}_{kind}{hp['run_prefix']}.pth")
    return root


def tiny_ddlp(seed: int = 0) -> DDLP:
    torch.manual_seed(seed)
    return DDLP(DDLPConfig(**SMALL_DDLP), FRAME).eval()


def tiny_dlp(seed: int = 0) -> DLP:
    torch.manual_seed(seed)
    return DLP(DLPConfig(**SMALL), FRAME).eval()


def clip(frames: int = 3) -> torch.Tensor:
    return torch.rand(2, frames, *FRAME, generator=torch.Generator().manual_seed(3))


def test_ddlp_run_round_trips(tmp_path):
    mine = tiny_ddlp()
    run = official_run(tmp_path / "run", mine, official_hparams(mine.config), "ddlp")
    key, model, data = load_official(run, {})
    assert key == "ddlp" and not model.training
    assert model.config.model_dump() == {**mine.config.model_dump(), "epoch_steps": model.config.epoch_steps}
    assert model.config.epoch_steps == 2920 * 90 // 4  # the obj3d128 preset's official epoch
    for name, value in mine.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert data == {"name": "obj3d", "config": {"image_size": 32, "seq_len": 4}, "frame_shape": [3, 32, 32],
                    "n_context": 3, "n_future": 47}
    with torch.no_grad():
        torch.testing.assert_close(model.predict(clip(), 2), mine.predict(clip(), 2), rtol=0, atol=0)


def test_dlp_run_from_the_pth_file(tmp_path):
    mine = tiny_dlp()
    run = official_run(tmp_path / "run", mine, official_hparams(mine.config, ds="shapes"), "dlp")
    key, model, data = load_official(run / "saves" / "shapes_dlp.pth", {})
    assert key == "dlp"
    assert data["name"] == "shapes" and data["n_context"] == 1 and data["n_future"] == 0
    x = clip(1)[:, 0]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_images(x, deterministic=True)["rec"],
                                   mine.forward_images(x, deterministic=True)["rec"], rtol=0, atol=0)


def test_cli_import_writes_a_checkpoint(tmp_path):
    from vpkit.cli.main import main

    mine = tiny_ddlp()
    run = official_run(tmp_path / "run", mine, official_hparams(mine.config), "ddlp")
    out = tmp_path / "imported"
    with pytest.raises(SystemExit) as done:  # the console entry point exits through Typer
        main(["import", "ddlp", str(run / "saves" / "obj3d128_ddlp.pth"), "--out", str(out), "--set", "n_future=5"])
    assert done.value.code == 0
    model, ckpt = load_model(out)
    assert ckpt.model_key == "ddlp" and ckpt.meta["data"]["n_future"] == 5
    with torch.no_grad():
        torch.testing.assert_close(model.eval().predict(clip(), 2), mine.predict(clip(), 2), rtol=0, atol=0)


def test_weights_option_and_several_checkpoints(tmp_path):
    mine = tiny_ddlp()
    hp = {**official_hparams(mine.config), "ds": "balls"}
    run = official_run(tmp_path / "run", mine, hp, "ddlp")
    other = tiny_ddlp(seed=1)
    torch.save(other.state_dict(), run / "saves" / "balls_ddlp_best.pth")
    # the latest checkpoint wins by name; --set weights picks another
    assert torch.equal(load_official(run, {})[1].state_dict()["fg_module.object_dec.fc.0.weight"],
                       mine.state_dict()["fg_module.object_dec.fc.0.weight"])
    best = load_official(run, {"weights": "balls_ddlp_best.pth"})[1]
    assert torch.equal(best.state_dict()["fg_module.object_dec.fc.0.weight"],
                       other.state_dict()["fg_module.object_dec.fc.0.weight"])
    (run / "saves" / "balls_ddlp.pth").unlink()
    torch.save(other.state_dict(), run / "saves" / "balls_ddlp_best_lpips.pth")
    with pytest.raises(VpkitError, match="several checkpoints.*--set weights=NAME"):
        load_official(run, {})


def test_errors_are_clear(tmp_path):
    mine = tiny_ddlp()
    hp = official_hparams(mine.config)
    run = official_run(tmp_path / "run", mine, hp, "ddlp")
    with pytest.raises(VpkitError, match="not found"):
        load_official(tmp_path / "nowhere", {})
    with pytest.raises(VpkitError, match="Unknown option 'weigths'.*Did you mean 'weights'"):
        load_official(run, {"weigths": "x.pth"})
    lone = tmp_path / "lone"
    lone.mkdir()
    torch.save(mine.state_dict(), lone / "x.pth")
    with pytest.raises(VpkitError, match="hparams.json not found"):
        load_official(lone / "x.pth", {})
    (lone / "hparams.json").write_text("{not json")
    with pytest.raises(VpkitError, match="not valid JSON"):
        load_official(lone, {})
    (lone / "hparams.json").write_text(json.dumps({k: v for k, v in hp.items() if k != "n_kp_enc"}))
    with pytest.raises(VpkitError, match="lacks n_kp_enc"):
        load_official(lone, {})
    (lone / "hparams.json").write_text(json.dumps({**hp, "n_kp_enc": 2}))  # the weights have K = 3
    with pytest.raises(VpkitError, match="do not fit ddlp.*particle_rel_pos_bias"):
        load_official(lone, {})
    (lone / "hparams.json").write_text(json.dumps({**hp, "ds": "kitti"}))
    with pytest.raises(VpkitError, match="ds='kitti' is not one vpkit knows.*--set dataset=NAME"):
        load_official(lone, {})
    assert load_official(lone, {"dataset": "kitti"})[2]["name"] == "kitti"
    (lone / "hparams.json").write_text(json.dumps({**hp, "use_resblock": True}))
    with pytest.raises(VpkitError, match="use_resblock is true"):
        load_official(lone, {})
    (lone / "hparams.json").write_text(json.dumps({k: v for k, v in hp.items() if k != "pint_dim"}))
    with pytest.raises(VpkitError, match="lacks pint_dim.*dyn_module"):
        load_official(lone, {})
    (lone / "hparams.json").write_text(json.dumps(hp))
    torch.save({"step": 1, "model": {}, "ema": {}}, lone / "x.pth")
    with pytest.raises(VpkitError, match="DiffuseDDLP"):
        load_official(lone, {})
    (lone / "x.pth").write_bytes(b"garbage")
    with pytest.raises(VpkitError, match="not a readable PyTorch state_dict"):
        load_official(lone, {})


def test_dlp_weights_under_ddlp_hparams_are_refused(tmp_path):
    dlp = tiny_dlp()
    hp = official_hparams(tiny_ddlp().config)  # DDLP keys, DLPv2 weights: imports as dlp, the keys decide
    run = official_run(tmp_path / "run", dlp, hp, "dlp")
    key, _, data = load_official(run, {})
    assert key == "dlp" and data["config"] == {"image_size": 32, "seq_len": 1}
    hp2 = {**official_hparams(dlp.config), "learned_feature_dim": 6}
    (run / "hparams.json").write_text(json.dumps(hp2))
    with pytest.raises(VpkitError, match="do not fit dlp"):
        load_official(run, {})


# -- parity with the official classes (needs an official checkout) -----------------------------------------------------

OFFICIAL = os.environ.get("VPKIT_DDLP_OFFICIAL")


@pytest.fixture(scope="module")
def official():
    if not OFFICIAL:
        pytest.skip("set VPKIT_DDLP_OFFICIAL to a checkout of github.com/taldatech/ddlp to compare with it")
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))  # imported by the official utils, unused here
    sys.path.insert(0, OFFICIAL)
    try:
        import models
        from utils import util_func
    finally:
        sys.path.remove(OFFICIAL)
    return types.SimpleNamespace(models=models, save_config=util_func.save_config)


def _official_kwargs(hp: dict) -> dict:
    names = ("enc_channels", "prior_channels", "image_size", "n_kp", "learned_feature_dim", "pad_mode", "sigma",
             "dropout", "patch_size", "n_kp_enc", "n_kp_prior", "kp_range", "kp_activation", "anchor_s",
             "use_resblock", "scale_std", "offset_std", "obj_on_alpha", "obj_on_beta", "use_correlation_heatmaps",
             "enable_enc_attn", "filtering_heuristic")
    return {"cdim": hp["ch"], **{name: hp[name] for name in names}}


def test_official_ddlp_run_imports_and_matches(official, tmp_path):
    config = DDLPConfig(**{**SMALL_DDLP, "enc_channels": (8, 16, 32), "n_kp_prior": 4, "n_kp_enc": 4})
    hp = official_hparams(config)
    torch.manual_seed(0)
    ref = official.models.ObjectDynamicsDLP(
        timestep_horizon=hp["timestep_horizon"], predict_delta=hp["predict_delta"], pint_layers=hp["pint_layers"],
        pint_heads=hp["pint_heads"], pint_dim=hp["pint_dim"], **_official_kwargs(hp)).eval()
    run = tmp_path / "run"
    (run / "saves").mkdir(parents=True)
    official.save_config(str(run), hp)  # train_ddlp.py: save_config(log_dir, hparams)
    torch.save(ref.state_dict(), run / "saves" / f"{hp['ds']}_ddlp{hp['run_prefix']}.pth")
    key, model, _ = load_official(run, {})
    assert key == "ddlp"
    video = torch.rand(2, 6, *FRAME, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref.sample(video, num_steps=3, deterministic=True, cond_steps=3)[:, 3:].clamp(0, 1)
        got = model.predict(video[:, :3], 3)[:, 0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_official_dlp_run_imports_and_matches(official, tmp_path):
    config = DLPConfig(**{**SMALL, "use_correlation_heatmaps": True})
    hp = official_hparams(config, ds="obj3d")
    torch.manual_seed(0)
    ref = official.models.ObjectDLP(use_tracking=False, **_official_kwargs(hp)).eval()
    run = tmp_path / "run"
    (run / "saves").mkdir(parents=True)
    official.save_config(str(run), hp)
    torch.save(ref.state_dict(), run / "saves" / "obj3d_dlp.pth")
    key, model, _ = load_official(run, {})
    assert key == "dlp"
    x = torch.rand(2, *FRAME, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref(x, deterministic=True)["rec"]
        got = model.forward_images(x, deterministic=True)["rec"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
