"""`vpkit import river`: official-layout files fabricated from tiny models (DDP `module.` prefixes, the trainer's
checkpoint dict, the autoencoder embedded or apart, a Lightning-style `vqvae.ckpt` naming Lightning's classes)
round-trip into vpkit checkpoints; hostile pickles are refused without running; with VPKIT_RIVER_OFFICIAL, an
official `Model` saved the official way imports and samples as the official code."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch
from vpkit_river.config import RiverConfig
from vpkit_river.importer import load_official
from vpkit_river.model import River
from vpkit_river.plugin import RIVER_PRESETS
from vpkit_river.vqvae import RiverVQVAE

from vpkit.core.errors import VpkitError

FRAME = (3, 32, 32)
TINY = {**RIVER_PRESETS["tiny"].model, "n_context": 2, "n_future": 14}
# what no weight records: the tiny preset's frame size, attention heads, GroupNorm groups and sampler grid
OPTIONS = {"preset": "clevrer128", "frame_size": 32, "heads": 2, "norm_groups": 4, "steps": 3}


def tiny_river(seed: int = 0) -> River:
    torch.manual_seed(seed)
    model = River(RiverConfig(**TINY), FRAME)
    with torch.no_grad():  # a codebook on the encoder's scale, BatchNorm statistics that are not the identity
        model.ae.backbone.vector_quantizer.embedding.weight.normal_(0, 0.3)
        for name, buffer in model.ae.backbone.named_buffers():
            if "running_var" in name:
                buffer.uniform_(0.5, 2.0)
    return model


def ddp(state: dict) -> dict:
    return {f"module.{k}": v for k, v in state.items()}


def official_model_pth(path: Path, model: River, with_autoencoder: bool = True) -> Path:
    """The official trainer's checkpoint layout: DDP keys, optimiser and schedule states, the step."""
    state = {k: v for k, v in model.state_dict().items() if with_autoencoder or not k.startswith("ae.")}
    optimizer = torch.optim.AdamW(model.vector_field_regressor.parameters(), lr=1e-4)
    torch.save({"model": ddp(state), "optimizer": optimizer.state_dict(),
                "lr_scheduler": {"base_lrs": [1e-4], "last_epoch": 7, "lr_lambdas": [{}]}, "global_step": 7}, path)
    return path


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def same_samples(a: River, b: River) -> None:
    context = torch.rand(2, 2, *FRAME, generator=torch.Generator().manual_seed(1))
    ga, gb = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    assert torch.equal(a.predict(context, 2, generator=ga), b.predict(context, 2, generator=gb))


# -- model.pth ------------------------------------------------------------------------------------------------------


def test_model_pth_with_embedded_autoencoder_round_trips(tmp_path, river_host):
    from vpkit.cli.main import main
    from vpkit.core.checkpoint import load_model, read_checkpoint

    model = tiny_river()
    pth = official_model_pth(tmp_path / "model.pth", model)
    argv = ["import", "river", str(pth), "--out", str(tmp_path / "imported")]
    for key, value in OPTIONS.items():
        argv += ["--set", f"{key}={value}"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None)
    ckpt = read_checkpoint(tmp_path / "imported")
    assert ckpt.model_key == "river" and ckpt.frame_shape == FRAME
    assert ckpt.meta["data"]["name"] == "clevrer" and ckpt.meta["data"]["n_context"] == 2
    loaded, _ = load_model(tmp_path / "imported")
    assert loaded.config.vqvae == model.config.vqvae
    for field in ("inner_dim", "depth", "mid_depth", "ffn_mult", "distance_hidden", "position_table", "out_norm"):
        assert getattr(loaded.config, field) == getattr(model.config, field), field
    same_weights(loaded, model)
    same_samples(loaded.eval(), model.eval())


def test_model_pth_without_autoencoder_takes_the_vqvae_pth(tmp_path):
    model = tiny_river()
    pth = official_model_pth(tmp_path / "model.pth", model, with_autoencoder=False)
    with pytest.raises(VpkitError, match="holds no autoencoder weights"):
        load_official(pth, OPTIONS)
    vqvae = tmp_path / "vqvae.pth"  # CLEVRER's release: {"model": DDP state_dict of the VQVAE}
    torch.save({"model": ddp(model.ae.backbone.state_dict())}, vqvae)
    key, imported, data = load_official(pth, {**OPTIONS, "autoencoder": str(vqvae)})
    assert key == "river" and data["frame_shape"] == list(FRAME)
    same_weights(imported, model)


def test_import_command_takes_the_autoencoder_flag(tmp_path, river_host, capsys):
    """`vpkit import river model.pth --autoencoder vqvae.pth`; the flag is the one way to give it, and only the
    river importer takes it."""
    from vpkit.cli.main import main
    from vpkit.core.checkpoint import load_model

    model = tiny_river()
    pth = official_model_pth(tmp_path / "model.pth", model, with_autoencoder=False)
    vqvae = tmp_path / "vqvae.pth"
    torch.save({"model": ddp(model.ae.backbone.state_dict())}, vqvae)
    settings = [arg for key, value in OPTIONS.items() for arg in ("--set", f"{key}={value}")]

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exit_info:
            main(["import", *args])
        return exit_info.value.code or 0

    out = tmp_path / "imported"
    assert run("river", str(pth), "--autoencoder", str(vqvae), "--out", str(out), *settings) == 0
    loaded, _ = load_model(out)
    same_weights(loaded, model)
    assert run("river", str(pth), "--set", f"autoencoder={vqvae}", "--out", str(tmp_path / "b"), *settings) != 0
    assert "--autoencoder VALUE" in capsys.readouterr().err
    assert run("svg", str(pth), "--autoencoder", str(vqvae), "--out", str(tmp_path / "c")) != 0
    assert "not an option of the 'svg' importer" in capsys.readouterr().err


def test_embedded_autoencoder_wins_over_the_file(tmp_path):
    model = tiny_river()
    pth = official_model_pth(tmp_path / "model.pth", model)
    other = tiny_river(seed=1).ae.backbone
    torch.save({"model": ddp(other.state_dict())}, tmp_path / "vqvae.pth")
    with pytest.warns(UserWarning, match="using the embedded ones"):
        _, imported, _ = load_official(pth, {**OPTIONS, "autoencoder": str(tmp_path / "vqvae.pth")})
    same_weights(imported, model)


def test_lightning_vqvae_ckpt_is_read_without_lightning(tmp_path, monkeypatch):
    """A Lightning checkpoint names Lightning's classes (here a callback class keying `callbacks`, as Lightning
    < 1.5 wrote it, and a callback instance): they are read as inert stand-ins and Lightning is never imported."""
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")
    fake = {name: types.ModuleType(name) for name in names}

    class ModelCheckpoint:
        def __init__(self) -> None:
            self.monitor, self.best_model_score = "val/rec_loss", torch.tensor(0.1)

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = names[-1], "ModelCheckpoint"
    fake[names[-1]].ModelCheckpoint = ModelCheckpoint  # type: ignore[attr-defined]
    for name, module in fake.items():
        monkeypatch.setitem(sys.modules, name, module)
    model = tiny_river()
    vq_state = model.ae.backbone.state_dict()
    ckpt = {"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8",
            "state_dict": {**vq_state, "loss.discriminator.main.0.weight": torch.randn(4, 3, 4, 4),
                           "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 4, 1, 1)},
            "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.1)}},
            "checkpoint_callback": ModelCheckpoint(),
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}], "lr_schedulers": [],
            "hyper_parameters": {"embed_dim": 4, "n_embed": 64}}
    torch.save(ckpt, tmp_path / "vqvae.ckpt")
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(Exception, match="Unsupported global|weights_only"):  # what weights_only alone says
        torch.load(tmp_path / "vqvae.ckpt", weights_only=True)
    pth = official_model_pth(tmp_path / "model.pth", model, with_autoencoder=False)
    _, imported, _ = load_official(pth, {**OPTIONS, "autoencoder": str(tmp_path / "vqvae.ckpt")})
    same_weights(imported, model)
    assert "pytorch_lightning" not in sys.modules
    # the autoencoder file alone imports as a river-vqvae
    key, vqvae, data = load_official(tmp_path / "vqvae.ckpt", OPTIONS)
    assert data["frame_shape"] == list(FRAME)
    assert key == "river-vqvae" and isinstance(vqvae, RiverVQVAE)
    same_weights(vqvae, model.ae.backbone)


def test_import_with_a_refiner(tmp_path, river_host):
    from vpkit_river.refiner import TINY_REFINER, RefinerConfig, RiverRefiner

    from vpkit.core.checkpoint import plugin_section, save_checkpoint

    model = tiny_river()
    pth = official_model_pth(tmp_path / "model.pth", model)
    torch.manual_seed(3)
    refiner = RiverRefiner(RefinerConfig(**TINY_REFINER), FRAME)
    data = {"name": "clevrer", "frame_shape": list(FRAME), "n_context": 1, "n_future": 2}
    ref = save_checkpoint(tmp_path / "ref", refiner, model_key="river-refiner", plugin=plugin_section("river"),
                          data=data)
    _, imported, _ = load_official(pth, {**OPTIONS, "refiner": str(ref)})
    assert imported.config.refiner_net == refiner.config.rcan and imported.config.refiner_source == str(ref)
    for key, value in refiner.refiner.state_dict().items():
        assert torch.equal(imported.state_dict()["refiner." + key], value), key
    for key, value in model.state_dict().items():
        assert torch.equal(imported.state_dict()[key], value), key


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["model", "autoencoder"])
def test_hostile_pickle_is_refused_without_running(tmp_path, where):
    marker = tmp_path / "pwned"
    model = tiny_river()
    pth = official_model_pth(tmp_path / "model.pth", model, with_autoencoder=where == "model")
    bad = tmp_path / ("model.pth" if where == "model" else "vqvae.ckpt")
    payload = torch.load(pth, weights_only=True) if where == "model" else {
        "state_dict": model.ae.backbone.state_dict()}
    payload["hyper_parameters"] = {"callback": _Hostile(marker)}
    torch.save(payload, bad)
    options = OPTIONS if where == "model" else {**OPTIONS, "autoencoder": str(bad)}
    with pytest.raises(VpkitError, match=r"names the global '(posix|os)\.system'"):
        load_official(pth, options)
    assert not marker.exists()


def test_clear_errors(tmp_path):
    model = tiny_river()
    pth = official_model_pth(tmp_path / "model.pth", model)
    with pytest.raises(VpkitError, match="Unknown option 'autoencodr'.*Did you mean 'autoencoder'"):
        load_official(pth, {"autoencodr": "x"})
    with pytest.raises(VpkitError, match="Unknown preset 'bair65'"):
        load_official(pth, {**OPTIONS, "preset": "bair65"})
    with pytest.raises(VpkitError, match="not found"):
        load_official(pth, {**OPTIONS, "autoencoder": str(tmp_path / "missing.ckpt")})
    state = torch.load(pth, weights_only=True)
    del state["model"]["module.vector_field_regressor.in_blocks.0.norm1.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(VpkitError, match="do not fit.*missing vector_field_regressor.in_blocks.0.norm1.weight"):
        load_official(tmp_path / "cut.pth", OPTIONS)
    state = torch.load(pth, weights_only=True)  # a regressor and an autoencoder that do not belong together
    state["model"]["module.vector_field_regressor.project_in.1.weight"] = torch.zeros(32, 15)
    torch.save(state, tmp_path / "mixed.pth")
    with pytest.raises(VpkitError, match="do not belong together"):
        load_official(tmp_path / "mixed.pth", OPTIONS)
    torch.save({"model": {"something.else": torch.zeros(1)}}, tmp_path / "foreign.pth")
    with pytest.raises(VpkitError, match="holds no RIVER autoencoder"):
        load_official(tmp_path / "foreign.pth", OPTIONS)
    (tmp_path / "page.pth").write_text("<!doctype html><html>not a checkpoint</html>")
    with pytest.raises(VpkitError, match="could not be read"):
        load_official(tmp_path / "page.pth", OPTIONS)


# -- the taming/LDM VQGAN releases (BAIR, KTH) -----------------------------------------------------------------------

VQGAN_OPTIONS = {"preset": "bair64", "frame_size": 32, "heads": 2, "norm_groups": 8, "steps": 3}


def tiny_vqgan_river(seed: int = 0) -> River:
    from vpkit_river.vqgan_config import VQGANConfig
    from vpkit_river.vqgan_presets import TINY_VQGAN

    torch.manual_seed(seed)
    model = River(RiverConfig(**TINY, vqgan=VQGANConfig(**TINY_VQGAN)), FRAME)
    with torch.no_grad():
        model.ae.quantize.embedding.weight.normal_(0, 0.3)
    return model


def test_vqgan_model_pth_round_trips(tmp_path):
    model = tiny_vqgan_river()
    assert any(k.startswith("ae.quant_conv.") for k in model.state_dict())  # official ldm-vq keys
    pth = official_model_pth(tmp_path / "model.pth", model)
    with pytest.raises(VpkitError, match="preset=bair64 or --set preset=kth64"):
        load_official(pth, {k: v for k, v in VQGAN_OPTIONS.items() if k != "preset"})
    key, imported, data = load_official(pth, VQGAN_OPTIONS)
    assert key == "river" and data["name"] == "bair" and (data["n_context"], data["n_future"]) == (1, 15)
    assert imported.config.vqgan.ch_mult == model.config.vqgan.ch_mult
    same_weights(imported, model)
    imported.config = imported.config.model_copy(update={"n_context": 2})
    same_samples(imported.eval(), model.eval())


def test_lightning_vqgan_ckpt_with_discriminator(tmp_path):
    from vpkit_river.vqgan_presets import build_vqgan

    model = tiny_vqgan_river()
    torch.manual_seed(1)
    vqgan = build_vqgan(model.config.vqgan, FRAME)
    vqgan.load_state_dict({**vqgan.state_dict(), **{k.removeprefix("ae."): v for k, v in model.state_dict().items()
                                                     if k.startswith("ae.")}})
    state = {**vqgan.state_dict(), "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1)}
    torch.save({"state_dict": state, "pytorch-lightning_version": "1.4.2", "global_step": 5}, tmp_path / "vqvae.ckpt")
    pth = official_model_pth(tmp_path / "model.pth", model, with_autoencoder=False)
    _, imported, _ = load_official(pth, {**VQGAN_OPTIONS, "autoencoder": str(tmp_path / "vqvae.ckpt")})
    same_weights(imported, model)
    key, alone, data = load_official(tmp_path / "vqvae.ckpt", VQGAN_OPTIONS)
    assert key == "river-vqgan" and data["frame_shape"] == list(FRAME)
    same_weights(alone, vqgan)  # the discriminator too; LPIPS is not part of the model


# -- parity with the official code ----------------------------------------------------------------------------------

OFFICIAL = os.environ.get("VPKIT_RIVER_OFFICIAL")


@pytest.mark.skipif(not OFFICIAL, reason="set VPKIT_RIVER_OFFICIAL to a checkout of github.com/Araachie/river "
                    "(with einops and torchdiffeq importable) to import a checkpoint of the official Model")
def test_imported_official_checkpoint_matches_official_outputs(tmp_path):
    """An official `Model` (CLEVRER's autoencoder type, small regressor) saved as its trainer does (`model.pth` of a
    DDP model) plus `vqvae.pth`, imported, gives the official vector field and decoded frames (float32)."""
    pytest.importorskip("einops")
    pytest.importorskip("torchdiffeq")
    sys.path.insert(0, OFFICIAL)
    try:
        from model.model import Model
        from model.vqgan.vqvae import build_vqvae
    finally:
        sys.path.remove(OFFICIAL)
    torch.manual_seed(0)
    ae_cfg = {"type": "ours", "encoder": {"in_channels": 3, "out_channels": 4},
              "vector_quantizer": {"num_embeddings": 8192, "embedding_dimension": 4},
              "decoder": {"in_channels": 4, "out_channels": 3}}
    official_ae = build_vqvae(ae_cfg)
    with torch.no_grad():
        official_ae.vector_quantizer.embedding.weight.normal_(0, 0.3)
    torch.save({"model": ddp(official_ae.state_dict())}, tmp_path / "vqvae.pth")
    vf_cfg = {"state_size": 4, "state_res": [4, 4], "inner_dim": 64, "depth": 1, "mid_depth": 1, "out_norm": "ln"}
    official = Model({"sigma": 1e-7, "autoencoder": {**ae_cfg, "ckpt_path": str(tmp_path / "vqvae.pth")},
                      "vector_field_regressor": vf_cfg}).eval()
    torch.save({"model": ddp(official.state_dict()), "global_step": 1}, tmp_path / "model.pth")
    key, mine, data = load_official(tmp_path / "model.pth", {"autoencoder": str(tmp_path / "vqvae.pth"),
                                                             "frame_size": 32})
    assert key == "river" and data["frame_shape"] == [3, 32, 32] and data["n_context"] == 2
    assert mine.state_dict().keys() == official.state_dict().keys()
    for name, value in official.state_dict().items():
        assert torch.equal(mine.state_dict()[name], value), name
    frames = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        out = official.ae.backbone(frames * 2 - 1)
        latents = mine.ae.encode(frames)
        assert torch.allclose(latents, out.latents, atol=1e-5)
        assert torch.allclose(mine.ae.decode(latents) * 2 - 1, out.reconstructed_images, atol=1e-5)
        args = (torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4))
        distance, time = torch.tensor([1, 5]), torch.tensor([0.1, 0.8])
        assert torch.allclose(mine.vector_field_regressor(*args, distance, time),
                              official.vector_field_regressor(*args, distance, time), atol=1e-5)
