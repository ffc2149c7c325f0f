"""What-if editing: the Python API (each edit changes exactly what it names; no edit reproduces `predict`; the
rollout from particles equals the model's own), `vpkit ddlp edit` and `vpkit ddlp particles` on a tiny checkpoint
and a small MP4, and their error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner
from vpkit_ddlp.config import DDLPConfig, DLPConfig
from vpkit_ddlp.ddlp import DDLP
from vpkit_ddlp.dlp import DLP
from vpkit_ddlp.edit import (
    ParticleEdit,
    apply_edits,
    draw_particles,
    encode_video,
    parse_move,
    parse_swap,
    particle_boxes,
    what_if,
)

from vpkit.core.checkpoint import plugin_section, save_checkpoint
from vpkit.core.errors import VpkitError
from vpkit.testing.videos import moving_shapes, write_test_video

SMALL = {"patch_size": 16, "enc_channels": (8, 8, 8), "prior_channels": (4, 4, 8), "n_kp_prior": 4, "n_kp_enc": 3,
         "learned_feature_dim": 4}
SMALL_DDLP = {**SMALL, "timestep_horizon": 3, "n_context": 3, "n_future": 1, "num_static_frames": 2,
              "pint_dim": 16, "pint_heads": 2, "pint_layers": 1}
FRAME = (3, 32, 32)


def tiny_ddlp(**overrides) -> DDLP:
    torch.manual_seed(0)
    return DDLP(DDLPConfig(**{**SMALL_DDLP, **overrides}), FRAME).eval()


def clip(frames: int = 3) -> torch.Tensor:
    return torch.rand(1, frames, *FRAME, generator=torch.Generator().manual_seed(3))


# -- API --------------------------------------------------------------------------------------------------------------


def test_no_edit_reproduces_predict():
    model = tiny_ddlp()
    result = what_if(model, clip(), [ParticleEdit(particle=1, move=(0.0, 0.0))], horizon=4)
    with torch.no_grad():
        expected = model.predict(clip(), 4)[:, 0]
    torch.testing.assert_close(result.original, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.edited, expected, rtol=1e-6, atol=1e-6)
    assert result.context.shape == (1, 3, *FRAME)


def test_stochastic_models_edit_their_means():
    model = tiny_ddlp(sampling="stochastic")
    result = what_if(model, clip(), [ParticleEdit(particle=0, hide=True)], horizon=2)
    det = tiny_ddlp()  # same seed, same weights
    torch.testing.assert_close(result.original, what_if(det, clip(), [], horizon=2).original, rtol=1e-6, atol=1e-6)


def test_each_edit_changes_what_it_names():
    particles = encode_video(tiny_ddlp(), clip())
    k = 2
    moved = apply_edits(particles, [ParticleEdit(particle=k, move=(0.15, -0.1))])
    torch.testing.assert_close(moved["z"][:, :, k] - particles["z"][:, :, k], torch.tensor([0.15, -0.1]).expand(1, 3, 2))
    others = [i for i in range(3) if i != k]
    assert torch.equal(moved["z"][:, :, others], particles["z"][:, :, others])
    assert all(torch.equal(moved[n], particles[n]) for n in particles if n != "z")
    scaled = apply_edits(particles, [ParticleEdit(particle=k, scale=1.5)])
    torch.testing.assert_close(scaled["z_scale"][:, :, k], particles["z_scale"][:, :, k] / 1.5)
    hidden = apply_edits(particles, [ParticleEdit(particle=k, hide=True)])
    assert torch.all(hidden["obj_on"][:, :, k] == 0) and torch.equal(hidden["obj_on"][:, :, 0],
                                                                     particles["obj_on"][:, :, 0])
    swapped = apply_edits(particles, [ParticleEdit(swap_features=(0, 2))])
    assert torch.equal(swapped["z_features"][:, :, 0], particles["z_features"][:, :, 2])
    assert torch.equal(swapped["z_features"][:, :, 2], particles["z_features"][:, :, 0])
    deeper = apply_edits(particles, [ParticleEdit(particle=k, depth=-1.0)])
    torch.testing.assert_close(deeper["z_depth"][:, :, k], particles["z_depth"][:, :, k] - 1.0)
    assert torch.equal(encode_video(tiny_ddlp(), clip())["z"], particles["z"])  # edits copy


def test_hiding_every_particle_leaves_the_background():
    model = tiny_ddlp()
    edits = [ParticleEdit(particle=k, hide=True) for k in range(3)]
    result = what_if(model, clip(), edits, horizon=1)
    with torch.no_grad():
        bg = model.bg_module.decode(result.edited_particles["z_bg"][0]).clamp(0, 1)
    torch.testing.assert_close(result.edited_context[0], bg, rtol=1e-5, atol=1e-5)


def test_edit_errors():
    with pytest.raises(VpkitError, match="Particle 7 does not exist.*3 particles, numbered 0 to 2"):
        what_if(tiny_ddlp(), clip(), [ParticleEdit(particle=7, hide=True)], horizon=1)
    with pytest.raises(VpkitError, match="Particle 5 does not exist"):
        ParticleEdit(swap_features=(0, 5)).check(3)
    with pytest.raises(VpkitError, match="choose it with --particle"):
        ParticleEdit(move=(0.1, 0.0)).check(3)
    with pytest.raises(VpkitError, match="Nothing to edit"):
        ParticleEdit(particle=1).check(3)
    with pytest.raises(VpkitError, match="positive factor"):
        ParticleEdit(particle=1, scale=0.0).check(3)
    for bad in ("0.15", "a,b", "1,2,3", "nan,0"):
        with pytest.raises(VpkitError, match="--move"):
            parse_move(bad)
    assert parse_move(" 0.15, -0.2") == (0.15, -0.2)
    assert parse_swap("3:7") == (3, 7)
    with pytest.raises(VpkitError, match="--swap-features takes A:B"):
        parse_swap("3-7")
    torch.manual_seed(0)
    dlp = DLP(DLPConfig(**SMALL), FRAME).eval()
    with pytest.raises(VpkitError, match="DLPv2 has none"):
        what_if(dlp, clip(), [ParticleEdit(particle=0, hide=True)], horizon=1)


def test_boxes_and_drawing():
    z = torch.tensor([[[0.0, 0.0], [-1.0, 1.0]]])
    scale = torch.logit(torch.tensor([[[0.25, 0.5], [0.25, 0.25]]]))
    boxes = particle_boxes(z, scale, 33, 33)  # centre 16; half-size 0.25 * 16 = 4 rows, 8 columns
    np.testing.assert_allclose(boxes[0, 0], [8, 12, 24, 20], atol=1e-4)
    np.testing.assert_allclose(boxes[0, 1], [28, -4, 36, 4], atol=1e-4)
    frames = np.zeros((1, 32, 32, 3), np.uint8)
    particles = {"z": z, "z_scale": scale, "obj_on": torch.tensor([[1.0, 0.0]])}
    drawn = draw_particles(frames, particles, upscale=4)
    assert drawn.shape == (1, 128, 128, 3) and drawn.any()
    assert draw_particles(frames, particles, upscale=4, min_transparency=2.0).max() == 0  # all left out


# -- CLI --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    model = tiny_ddlp()
    data = {"name": "obj3d", "config": {}, "frame_shape": list(FRAME), "n_context": 3, "n_future": 2}
    ckpt = save_checkpoint(root / "ckpt", model, model_key="ddlp", plugin=plugin_section("ddlp"), data=data)
    torch.manual_seed(0)
    dlp = DLP(DLPConfig(**SMALL), FRAME)
    dlp_ckpt = save_checkpoint(root / "dlp", dlp, model_key="dlp", plugin=plugin_section("ddlp"),
                               data={**data, "n_context": 1, "n_future": 0})
    video = write_test_video(root / "clip.mp4", moving_shapes(6, 48, 64, seed=1), fps=10)
    return {"root": root, "ckpt": ckpt, "dlp": dlp_ckpt, "video": video}


def cli(*args: str):
    import typer
    from vpkit_ddlp.plugin import register_commands

    app = typer.Typer()
    app.callback()(lambda: None)
    register_commands(app)
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_edit_writes_side_by_side(files):
    out = files["root"] / "edit"
    result = cli("ddlp", "edit", files["ckpt"], files["video"], "--particle", "1", "--move", "0.15,0", "--horizon",
                 "4", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "edit.json").read_text())
    assert summary["context"] == 3 and summary["horizon"] == 4 and summary["truth_frames"] == 3
    assert summary["edit"] == {"particle": 1, "move": [0.15, 0.0]}
    assert summary["edited_particles"][1]["y"] == pytest.approx(summary["particles"][1]["y"] + 0.15, abs=1e-3)
    import imageio.v3 as iio

    gif = iio.imread(out / "edit.gif")
    assert gif.shape[0] == 3 + 4 and (out / "edit.mp4").stat().st_size > 0
    # three upscaled 32-px tiles (x6) with 2-px borders, 2-px gaps; a 22-px header
    assert gif.shape[1:3] == (22 + 6 * 32 + 4, 3 * (6 * 32 + 4) + 2 * 2)


def test_cli_swap_and_defaults(files):
    out = files["root"] / "swap"
    result = cli("ddlp", "edit", files["ckpt"], files["video"], "--swap-features", "0:2", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "edit.json").read_text())["horizon"] == 2  # the checkpoint's n_future


def test_cli_particles(files):
    for key in ("ckpt", "dlp"):
        out = files["root"] / f"particles-{key}"
        result = cli("ddlp", "particles", files[key], files["video"], "--frames", "2", "--out", out, "--json")
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == ["frame_000.png", "frame_001.png", "particles.gif",
                                                         "particles.json"]
        rows = json.loads((out / "particles.json").read_text())["frames"]
        assert len(rows) == 2 and [r["particle"] for r in rows[0]] == [0, 1, 2]


def test_cli_errors(files):
    def error(*args: str) -> str:
        result = cli(*args)
        assert result.exit_code != 0
        assert isinstance(result.exception, VpkitError), result.output
        return str(result.exception)

    out = files["root"] / "bad"
    assert "Particle 9 does not exist" in error("ddlp", "edit", files["ckpt"], files["video"], "--particle", "9",
                                                "--hide", "--out", out)
    assert "--move takes DY,DX" in error("ddlp", "edit", files["ckpt"], files["video"], "--particle", "1", "--move",
                                         "up", "--out", out)
    assert "needs a DDLP checkpoint" in error("ddlp", "edit", files["dlp"], files["video"], "--particle", "1",
                                              "--hide", "--out", out)
    assert "fewer than the 3 needed" in error("ddlp", "edit", files["ckpt"], files["video"], "--particle", "1",
                                              "--hide", "--start", "4", "--out", out)
    assert "no such file" in error("ddlp", "edit", files["ckpt"], files["root"] / "none.mp4", "--particle", "1",
                                   "--hide", "--out", out)
    assert not out.exists()
