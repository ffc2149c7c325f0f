"""`river-refiner` (the official RCAN refinement network): conformance, the official parameter counts and keys, the
official objective and schedule, the trainer recipe through the CLI, and refinement of RIVER's generated frames
(`river` with `refiner=CKPT`); with VPKIT_RIVER_OFFICIAL, outputs equal the official `refinement/rcan.py`."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vpkit_river.config import RCANConfig, RiverConfig, VQVAEConfig
from vpkit_river.model import build_river
from vpkit_river.plugin import RIVER_PRESETS, TINY_VQVAE
from vpkit_river.refiner import (
    RCAN,
    TINY_REFINER,
    CosineWarmup,
    RefinerConfig,
    RiverRefiner,
    build_refiner,
)
from vpkit_river.vqvae import RiverVQVAE

from vpkit.core.errors import VpkitError
from vpkit.core.model import TorchBackend
from vpkit.testing import ModelConformance, make_train_context

FRAME = (1, 32, 32)


class TestRefinerConformance(ModelConformance):
    model_key = "river-refiner"
    preset = "tiny"
    frame_shape = FRAME


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_and_keys_are_official():
    """827,531 with the training defaults (3 groups x 3 blocks x 64), 1,688,931 with the class defaults (4 x 5)."""
    with torch.device("meta"):
        default, classdefault = RCAN(RCANConfig()), RCAN(RCANConfig(stages=4, blocks=5))
    assert _count(default) == 827_531 and _count(classdefault) == 1_688_931
    keys = list(default.state_dict())
    expected = ["head.weight", "head.bias"]
    for g in range(3):
        for b in range(3):
            for layer in ("body.0", "body.2", "body.3.conv_du.0", "body.3.conv_du.2"):
                expected += [f"body.{g}.body.{b}.{layer}.weight", f"body.{g}.body.{b}.{layer}.bias"]
        expected += [f"body.{g}.body.3.weight", f"body.{g}.body.3.bias"]
    expected += ["body.3.weight", "body.3.bias", "tail.weight", "tail.bias"]
    assert keys == expected
    with torch.device("meta"):
        tanh = RCAN(RCANConfig(tanh=True))
    assert "tail.0.weight" in tanh.state_dict()


def tiny_refiner(seed: int = 0, **overrides) -> RiverRefiner:
    torch.manual_seed(seed)
    return RiverRefiner(RefinerConfig(**{**TINY_REFINER, **overrides}), FRAME)


def test_objective_is_the_official_one():
    """Targets frames 1..T-1, each from (the true previous frame, its own reconstruction), MSE in [-1, 1]."""
    model = tiny_refiner()
    video = torch.rand(2, 3, *FRAME)
    out = model.training_step(video, make_train_context())
    target = video[:, 1:].flatten(0, 1)
    recon = model.ae.decode(model.ae.encode(target))
    refined = model.refiner(torch.cat([video[:, :-1].flatten(0, 1) * 2 - 1, recon * 2 - 1], dim=1))
    assert torch.allclose(out.loss, F.mse_loss(refined, target * 2 - 1))
    l1 = tiny_refiner(pixel_loss="l1").training_step(video, make_train_context()).loss
    assert torch.allclose(l1, F.l1_loss(refined, target * 2 - 1))


def test_perceptual_loss_uses_i3d_features(tmp_path):
    from vpkit.testing.i3d import save_stand_in_i3d

    i3d_path = save_stand_in_i3d(tmp_path / "i3d_torchscript.pt")
    with pytest.raises(ValueError, match="at least 10 target frames"):
        RefinerConfig(**{**TINY_REFINER, "perceptual_weight": 0.1})
    model = tiny_refiner(perceptual_weight=0.1, i3d=str(i3d_path), n_future=10)
    video = torch.rand(1, 11, *FRAME)
    out = model.training_step(video, make_train_context())
    pixel = model.config.model_copy(update={"perceptual_weight": 0.0})
    plain = RiverRefiner(pixel, FRAME)
    plain.load_state_dict(model.state_dict())
    base = plain.training_step(video, make_train_context()).loss
    assert out.logs["perceptual"] > 0
    assert torch.allclose(out.loss, base + 0.1 * out.logs["perceptual"])
    out.loss.backward()
    assert model.refiner.head.weight.grad is not None


def test_schedule_and_linear_scaling():
    schedule = CosineWarmup(warmup=5, total=15)
    assert [schedule(i) for i in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])  # np.linspace(0, base, 5)
    assert schedule(5) == 1.0 and schedule(10) == pytest.approx(0.5) and schedule(15) == 0.0
    assert schedule(14) == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10)))
    from vpkit.core.config import TrainConfig

    model = tiny_refiner().float()
    model.config = model.config.model_copy(update={"autoencoder_source": "x"})
    opt = model.configure_optimizers(TrainConfig(batch_size=24)).optimizers[0]
    assert opt.defaults["lr"] == pytest.approx(3e-4 * 24 / 256)
    assert opt.param_groups[0]["lr"] == 0.0  # the warm-up starts at 0, as official
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == _count(model.refiner)


def test_refiner_needs_a_trained_autoencoder():
    with pytest.raises(VpkitError, match="model.autoencoder"):
        tiny_refiner().configure_optimizers()


# -- refining RIVER's frames ----------------------------------------------------------------------------------------


def _vqvae_checkpoint(tmp_path, river_host):
    from vpkit.core.checkpoint import plugin_section, save_checkpoint

    torch.manual_seed(0)
    vqvae = RiverVQVAE(VQVAEConfig(**TINY_VQVAE), FRAME)
    data = {"name": "smmnist", "frame_shape": list(FRAME), "n_context": 1, "n_future": 1}
    return save_checkpoint(tmp_path / "vq", vqvae, model_key="river-vqvae", plugin=plugin_section("river"), data=data)


def test_river_refines_generated_frames(tmp_path, river_host):
    from vpkit.core.checkpoint import load_model, plugin_section, save_checkpoint

    vq = _vqvae_checkpoint(tmp_path, river_host)
    refiner = build_refiner(RefinerConfig(**{**TINY_REFINER, "autoencoder": str(vq)}), FRAME)
    assert refiner.config.autoencoder_source == str(vq) and refiner.config.vqvae == VQVAEConfig(**TINY_VQVAE)
    with torch.no_grad():
        for p in refiner.refiner.parameters():
            p.normal_(0, 0.05)
    data = {"name": "smmnist", "frame_shape": list(FRAME), "n_context": 1, "n_future": 2}
    ref = save_checkpoint(tmp_path / "ref", refiner, model_key="river-refiner", plugin=plugin_section("river"),
                          data=data)
    base = {**RIVER_PRESETS["tiny"].model, "autoencoder": str(vq), "steps": 2}  # one RK4 interval per frame
    plain = build_river(RiverConfig(**base), FRAME)
    torch.manual_seed(0)
    plain.vector_field_regressor.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
    refined = build_river(RiverConfig(**base, refiner=str(ref)), FRAME)
    refined.vector_field_regressor.load_state_dict(plain.vector_field_regressor.state_dict())
    assert refined.config.refiner is None and refined.config.refiner_source == str(ref)
    assert refined.config.refiner_net == refiner.config.rcan
    for key, value in refiner.refiner.state_dict().items():
        assert torch.equal(refined.state_dict()["refiner." + key], value), key
    assert "refine" in refined.export_plan().graphs and "refine" not in plain.export_plan().graphs
    assert not any(k.startswith("refiner.") for k in plain.state_dict())  # official keys unchanged without it

    context = torch.rand(2, 2, *FRAME)
    noise = plain.sample_noise(2, 2, 2, generator=torch.Generator().manual_seed(1))
    plain.eval(), refined.eval()
    raw = plain.rollout(TorchBackend(plain.export_plan()), context, 2, noise)
    out = refined.rollout(TorchBackend(refined.export_plan()), context, 2, noise)
    previous, expected = context[:, -1], []
    for k in range(2):  # frame by frame, each with the previous refined frame
        previous = refiner.refiner.refine(previous, raw[:, k])
        expected.append(previous)
    assert torch.allclose(out, torch.stack(expected, dim=1), atol=1e-6)
    assert not torch.allclose(out, raw)

    # the RIVER checkpoint carries the refiner and rebuilds alone
    path = save_checkpoint(tmp_path / "river", refined, model_key="river", plugin=plugin_section("river"),
                           data={**data, "n_context": 2})
    loaded, _ = load_model(path)
    again = loaded.eval().rollout(TorchBackend(loaded.export_plan()), context, 2, noise)
    assert torch.allclose(again, out)
    loss = refined.train().training_step(torch.rand(2, 4, *FRAME), make_train_context()).loss
    loss.backward()  # the refiner is frozen inside RIVER: no gradients, not in the optimiser
    assert all(p.grad is None for p in refined.refiner.parameters())

    # `--refine REFINER` (vpkit predict / eval / export) applies the refiner to a trained RIVER checkpoint
    from vpkit.cli.main import main
    from vpkit.core.checkpoint import read_checkpoint
    from vpkit.engine.exporter import export_model
    from vpkit.engine.runtime import load_runtime

    unrefined = save_checkpoint(tmp_path / "plain", plain, model_key="river", plugin=plugin_section("river"),
                                data={**data, "n_context": 2})
    runtime = load_runtime(unrefined, sampling={"refine": Path(ref)})
    assert runtime.model.config.refiner_source == str(ref) and runtime.sampling == {"refine": str(ref)}
    again = runtime.model.rollout(runtime.backend, context, 2, noise)
    assert torch.allclose(again, out, atol=1e-6)
    coarse = load_runtime(unrefined, sampling={"steps": 5, "solver": "euler", "warm-start": 0.25})
    assert (coarse.model.config.grid_points, coarse.model.config.evaluations_per_frame) == (3, 2)
    with pytest.raises(VpkitError, match="'solver'"):
        load_runtime(unrefined, sampling={"solver": "midpoint"})

    exported = export_model(unrefined, "onnx", out=tmp_path / "refined-onnx", sampling={"refine": Path(ref)})
    assert "refine" in exported.export["graphs"] and exported.export["parity"]["passed"]
    assert read_checkpoint(exported.path).meta["model"]["config"]["refiner_source"] == str(ref)
    onnx = load_runtime(exported.path)
    first = {name: value[:1] for name, value in noise.items()}  # the graphs were built for batch 1
    torch.testing.assert_close(onnx.model.rollout(onnx.backend, context[:1], 2, first), out[:1], atol=1e-4, rtol=0)
    with pytest.raises(VpkitError, match="--refine changes the exported graphs"):
        load_runtime(tmp_path / "refined-onnx", sampling={"refine": Path(ref)})

    clip = tmp_path / "clip.npy"
    np.save(clip, (torch.rand(4, *FRAME[1:]) * 255).to(torch.uint8).numpy())
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(clip), "--model", str(unrefined), "--refine", str(ref), "--steps", "3", "--samples",
              "1", "--out", str(tmp_path / "pred.mp4"), "--json"])
    assert exit_info.value.code in (0, None)
    assert (tmp_path / "pred.mp4").is_file() and (tmp_path / "pred.gif").is_file()

    with pytest.raises(VpkitError, match="must be a river-refiner"):
        build_river(RiverConfig(**base, refiner=str(vq)), FRAME)
    with pytest.raises(VpkitError, match="was trained on frames"):
        build_river(RiverConfig(**{**base, "autoencoder": None}, refiner=str(ref)), (1, 64, 64))


def test_a_vqvae_checkpoint_replaces_a_presets_vqgan_shape(tmp_path, river_host):
    """The BAIR/KTH presets describe a VQGAN latent space; a river-vqvae given as the autoencoder replaces it."""
    from vpkit_river.vqgan_presets import TINY_VQGAN

    vq = _vqvae_checkpoint(tmp_path, river_host)
    config = RiverConfig(**{**RIVER_PRESETS["tiny"].model, "vqgan": TINY_VQGAN, "autoencoder": str(vq)})
    model = build_river(config, FRAME)
    assert model.config.vqgan is None and model.config.vqvae == VQVAEConfig(**TINY_VQVAE)
    assert type(model.ae.backbone).__name__ == "RiverVQVAE"


def test_cli_trains_a_refiner(tmp_path, river_host):
    """`vpkit train --plugin river --model river-refiner --set model.autoencoder=VQVAE` on the embedded data."""
    from vpkit.cli.main import main
    from vpkit.core.checkpoint import read_checkpoint

    vq = _vqvae_checkpoint(tmp_path, river_host)
    argv = ["train", "--plugin", "river", "--model", "river-refiner", "--preset", "tiny", "--steps", "2",
            "--out", str(tmp_path / "run"), "--set", f"model.autoencoder={vq}", "--set", "train.val_videos=2",
            "--set", "train.batch_size=2", "--set", "data.frame_size=32", "--set", "data.digit_size=16"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None)
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert ckpt.model_key == "river-refiner" and ckpt.meta["model"]["config"]["autoencoder_source"] == str(vq)


# -- parity with the official code ----------------------------------------------------------------------------------

OFFICIAL = os.environ.get("VPKIT_RIVER_OFFICIAL")


@pytest.mark.skipif(not OFFICIAL, reason="set VPKIT_RIVER_OFFICIAL to a checkout of github.com/Araachie/river")
@pytest.mark.parametrize("args", [(3, 3, 64, 8, False), (4, 5, 64, 8, True), (2, 2, 16, 0, False)])
def test_rcan_matches_official(args):
    sys.path.insert(0, os.path.join(OFFICIAL, "refinement"))
    try:
        from rcan import (
            RCAN as OfficialRCAN,  # the official refinement/rcan.py (torch only)
        )
    finally:
        sys.path.pop(0)
    stages, blocks, channels, reduction, tanh = args
    official = OfficialRCAN(*args)
    mine = RCAN(RCANConfig(stages=stages, blocks=blocks, channels=channels, reduction=reduction, tanh=tanh))
    assert list(mine.state_dict()) == list(official.state_dict())
    mine.load_state_dict(official.state_dict())
    x = torch.randn(2, 6, 16, 16)
    assert torch.allclose(mine(x), official(x), atol=1e-6)
