"""RIVER: conformance of both models, official parameter counts and state-dict keys, the flow-matching objective
and its frame draws, the sampler (evaluation counts, conditioning redrawn per evaluation, warm start, integrators),
the schedule, the autoencoder hand-over, and (with VPKIT_RIVER_OFFICIAL) parity with the official modules."""

from __future__ import annotations

import math
import os

import pytest
import torch
from vpkit_river.config import RiverConfig, VQVAEConfig
from vpkit_river.model import (
    PolynomialWarmupDecay,
    River,
    build_river,
    integrate,
    uniform_index,
)
from vpkit_river.plugin import RIVER_PRESETS, TINY_VQVAE
from vpkit_river.vector_field import VectorFieldRegressor, time_embedding
from vpkit_river.vqvae import RiverVQVAE

from vpkit.core.errors import VpkitError
from vpkit.testing import ModelConformance, make_train_context

TINY_RIVER = dict(RIVER_PRESETS["tiny"].model)
FRAME = (1, 64, 64)


def tiny_river(seed: int = 0, **overrides) -> River:
    torch.manual_seed(seed)
    return River(RiverConfig(**{**TINY_RIVER, **overrides}), FRAME)


# -- conformance ----------------------------------------------------------------------------------------------------


class TestRiverVQVAEConformance(ModelConformance):
    model_key = "river-vqvae"
    preset = "tiny"
    frame_shape = (1, 32, 32)  # 4x4 latents: keeps the convolutions cheap

    def test_onnx_export(self, harness) -> None:
        pytest.skip("the same encode/decode graphs are exported by TestRiverConformance (keeps this file fast)")


class TestRiverConformance(ModelConformance):
    model_key = "river"
    preset = "tiny"  # RK4 on a 3-point grid: 8 evaluations per frame
    frame_shape = (1, 32, 32)


# -- official architecture ------------------------------------------------------------------------------------------


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_official():
    """Counts of the official modules built from configs/*.yaml (reference section 6)."""
    with torch.device("meta"):
        vqvae = RiverVQVAE(VQVAEConfig(), (3, 128, 128))
        bair64 = VectorFieldRegressor(RiverConfig(), (4, 8, 8))
        bair256 = VectorFieldRegressor(RiverConfig(out_norm="bn"), (8, 16, 16))
        clevrer = VectorFieldRegressor(RiverConfig(), (4, 16, 16))
    assert _count(vqvae) == 7_329_703
    assert (_count(vqvae.encoder), _count(vqvae.decoder)) == (3_842_564, 3_454_371)
    assert _count(bair64) == 98_084_868
    assert _count(clevrer) == 98_084_868
    assert _count(bair256) == 98_121_736 and sum(b.numel() for b in bair256.buffers()) == 1_537


def test_state_dict_keys_are_official():
    with torch.device("meta"):
        model = River(RiverConfig(vqvae=VQVAEConfig()), (3, 128, 128))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    vf = "vector_field_regressor."
    expected = {
        vf + "position_encoding.row_embed.weight": (512, 384), vf + "position_encoding.col_embed.weight": (512, 384),
        vf + "project_in.1.weight": (768, 12), vf + "time_projection.0.weight": (256, 1),
        vf + "time_projection.2.weight": (768, 256), vf + "in_blocks.3.self_attn.in_proj_weight": (2304, 768),
        vf + "mid_blocks.4.self_attn.out_proj.weight": (768, 768), vf + "mid_blocks.0.linear1.weight": (3072, 768),
        vf + "out_blocks.3.0.weight": (768, 1536), vf + "out_blocks.0.1.linear2.weight": (768, 3072),
        vf + "out_blocks.2.1.norm2.bias": (768,), vf + "project_out.0.weight": (768, 768),
        vf + "project_out.2.weight": (768,), vf + "project_out.4.weight": (4, 768, 3, 3),
        "ae.backbone.encoder.conv_in.weight": (32, 3, 3, 3),
        "ae.backbone.encoder.residuals.2.downsample.0.weight": (256, 128, 1, 1),
        "ae.backbone.encoder.residuals.0.downsample.2.weight": (64,), "ae.backbone.encoder.residuals.1.bn2.bias": (128,),
        "ae.backbone.encoder.attn.in_proj_weight": (768, 256), "ae.backbone.encoder.attn_norm.weight": (256,),
        "ae.backbone.encoder.post_attn_residual.conv2.weight": (256, 256, 3, 3),
        "ae.backbone.encoder.out_conv.weight": (4, 256, 3, 3), "ae.backbone.decoder.conv_in.weight": (256, 4, 3, 3),
        "ae.backbone.decoder.residuals.2.0.downsample.0.weight": (32, 64, 1, 1),
        "ae.backbone.decoder.residuals.0.1.norm.running_var": (128,),
        "ae.backbone.decoder.residuals.1.1.conv.weight": (64, 64, 3, 3),
        "ae.backbone.decoder.out_conv.weight": (3, 32, 3, 3),
        "ae.backbone.vector_quantizer.embedding.weight": (8192, 4),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    ae_keys = [k for k in shapes if k.startswith("ae.backbone.")]
    assert len(ae_keys) == 121  # the AE tensors of CLEVRER's model.pth (reference 5.2), BatchNorm buffers included
    assert not any(k.startswith(vf + "position_encoding") and "weight" not in k for k in shapes)


def test_time_and_position_embeddings():
    emb = time_embedding(torch.tensor([0.0, 0.25]), 8, scale=200.0)
    freqs = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(50 * freqs), torch.sin(50 * freqs)]))
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    model = tiny_river()
    pe = model.vector_field_regressor.position_encoding
    pos = pe(3, 5)  # token (y, x) = y * 5 + x gets [col[x], row[y]]
    torch.testing.assert_close(pos[2 * 5 + 4], torch.cat([pe.col_embed.weight[4], pe.row_embed.weight[2]]))


def test_presets_are_the_official_configs(river_host):
    river = river_host.models.get("river")
    assert river.default and river.plugin == "river"
    official = {"bair64": (1, 15, "ln", "bair"), "bair256": (1, 15, "bn", "h5"), "kth64": (10, 30, "ln", "kth"),
                "clevrer128": (2, 14, "ln", "clevrer")}
    for name, (n_context, n_future, head, dataset) in official.items():
        preset = river.presets[name]
        config = RiverConfig(**preset.model)
        assert (config.n_context, config.n_future, config.out_norm, preset.dataset) == (n_context, n_future, head,
                                                                                        dataset), name
        assert preset.data.get("seq_len") == n_context + n_future, name
        assert (config.lr, config.weight_decay, config.sigma, config.steps, config.solver) == (
            1e-4, 5e-6, 1e-7, 100, "rk4")
        assert (preset.train["batch_size"], preset.train["steps"]) == (16, 300_000)
    assert river.presets["clevrer128"].data["step"] == 5  # official skip_frames 4
    assert river.presets["kth64"].data["rgb"] and river.presets["kth64"].frame_shape == (3, 64, 64)  # official h5: RGB
    # the BAIR/KTH presets flow in the official VQGAN latent space: whole models as the released model.pth files
    totals = {"bair64": (161_862_323, 63_777_455), "kth64": (161_862_323, 63_777_455),
              "bair256": (167_715_107, 69_593_371), "clevrer128": (105_414_571, 7_329_703)}
    for name, (total, autoencoder) in totals.items():
        preset = river.presets[name]
        with torch.device("meta"):
            model = build_river(RiverConfig(**preset.model), preset.frame_shape)
        assert sum(p.numel() for p in model.parameters()) == total, name
        assert sum(p.numel() for p in model.ae.parameters()) == autoencoder, name
    vqvae = river_host.models.get("river-vqvae").presets["clevrer128"]
    assert VQVAEConfig(**vqvae.model) == VQVAEConfig() and vqvae.frame_shape == (3, 128, 128)


# -- training -------------------------------------------------------------------------------------------------------


def test_flow_matching_target_and_path(monkeypatch):
    """x_t = (1 - (1 - s) t) eps + t z1 and the regression target z1 - (1 - s) eps, on given draws."""
    model = tiny_river(sigma=0.1).double()
    video = torch.rand(2, 4, *FRAME, dtype=torch.float64)
    target_index, cond_index = torch.tensor([2, 3]), torch.tensor([0, 1])
    noise = torch.randn(2, *model.latent_shape, dtype=torch.float64)
    time = torch.tensor([0.3, 0.9], dtype=torch.float64)
    seen = {}

    def spy(state, reference, conditioning, distance, t):
        seen.update(state=state, reference=reference, conditioning=conditioning, distance=distance, t=t)
        return torch.zeros_like(state)

    monkeypatch.setattr(model.vector_field_regressor, "forward", spy)
    loss = model.flow_matching_loss(video, target_index, cond_index, noise, time).loss
    with torch.no_grad():
        z = model.ae.encode(video.flatten(0, 1)).view(2, 4, *model.latent_shape)
    rows = torch.arange(2)
    z1 = z[rows, target_index]
    t = time.view(2, 1, 1, 1)
    torch.testing.assert_close(seen["state"], (1 - 0.9 * t) * noise + t * z1)
    torch.testing.assert_close(seen["reference"], z[rows, target_index - 1])
    torch.testing.assert_close(seen["conditioning"], z[rows, cond_index])
    torch.testing.assert_close(seen["distance"], torch.tensor([1, 1]))
    torch.testing.assert_close(loss, ((z1 - 0.9 * noise) ** 2).mean())


def test_training_draws_follow_the_official_ranges(monkeypatch):
    model = tiny_river()
    draws = []
    monkeypatch.setattr(River, "flow_matching_loss",
                        lambda self, video, target, cond, *a: draws.append((target, cond)) or None)
    torch.manual_seed(0)
    for _ in range(50):
        model.training_step(torch.zeros(8, 6, *FRAME), make_train_context())
    target = torch.cat([d[0] for d in draws])
    cond = torch.cat([d[1] for d in draws])
    assert set(target.tolist()) == {2, 3, 4, 5}
    assert (cond <= target - 2).all() and (cond >= 0).all()
    assert set((target - 1 - cond).tolist()) == {1, 2, 3, 4}


def test_autoencoder_is_frozen_and_stays_in_eval():
    model = tiny_river(autoencoder_source="a river-vqvae")
    model.train()
    assert not model.ae.training and not model.ae.backbone.decoder.residuals[0][1].norm.training
    assert not any(p.requires_grad for p in model.ae.parameters())
    opt = model.configure_optimizers().optimizers[0]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == _count(model.vector_field_regressor)


def test_schedule_is_warmup_then_polynomial_decay():
    f = PolynomialWarmupDecay(1e-4, 5000, 300_000, 0.5, 1e-7)
    assert f(0) == 0 and f(2500) == 0.5 and f(5000) == pytest.approx(1.0)
    mid = 5000 + (300_000 - 5000) // 2
    assert f(mid) * 1e-4 == pytest.approx((1e-4 - 1e-7) * math.sqrt(0.5) + 1e-7)
    assert f(300_000) * 1e-4 == pytest.approx(1e-7) and f(400_000) * 1e-4 == pytest.approx(1e-7)


# -- sampler --------------------------------------------------------------------------------------------------------


class StubBackend:
    """encode -> the frame's mean in every latent pixel; vector_field -> zero velocity (records its inputs);
    decode -> zeros."""

    def __init__(self, latent_shape: tuple[int, int, int]) -> None:
        self.latent_shape = latent_shape
        self.calls: list[dict[str, torch.Tensor]] = []

    def run(self, name, inputs):
        if name == "encode":
            frames = inputs["frames"]
            return {"latents": frames.mean((1, 2, 3)).view(-1, 1, 1, 1).expand(-1, *self.latent_shape).clone()}
        if name == "vector_field":
            self.calls.append(dict(inputs))
            return {"velocity": torch.zeros_like(inputs["state"])}
        return {"frames": torch.zeros(inputs["latents"].shape[0], *FRAME)}


@pytest.mark.parametrize(("solver", "steps", "warm_start", "evaluations"),
                         [("rk4", 100, 0.0, 396), ("rk4", 100, 0.1, 356), ("rk4", 10, 0.0, 36), ("euler", 10, 0.0, 9)])
def test_evaluations_per_frame(solver, steps, warm_start, evaluations):
    """Official counts (reference 1.6): RK4 on linspace(s, 1, int((1 - s) steps)), 4 evaluations per interval."""
    config = RiverConfig(**{**TINY_RIVER, "solver": solver, "steps": steps,
                            "warm_start": warm_start})
    assert config.evaluations_per_frame == evaluations
    with torch.device("meta"):
        model = River(config, FRAME)
    backend = StubBackend(model.latent_shape)
    noise = model.sample_noise(1, 1, 2, generator=torch.Generator().manual_seed(0), device="cpu")
    model.rollout(backend, torch.rand(1, 1, *FRAME), 2, noise)
    assert len(backend.calls) == 2 * evaluations
    times = torch.stack([c["time"][0] for c in backend.calls[:evaluations]])
    last = 1.0 if solver == "rk4" else float(torch.linspace(warm_start, 1, config.grid_points)[-2])
    assert times[0] == pytest.approx(warm_start) and times.max() == pytest.approx(last)


def test_conditioning_is_redrawn_at_every_evaluation():
    with torch.device("meta"):
        model = River(RiverConfig(**{**TINY_RIVER, "steps": 20}), FRAME)
    backend = StubBackend(model.latent_shape)
    context = torch.rand(3, 1, *FRAME)
    noise = model.sample_noise(3, 1, 4, generator=torch.Generator().manual_seed(0), device="cpu")
    model.rollout(backend, context, 4, noise)
    per_frame = model.config.evaluations_per_frame
    frames = [backend.calls[k * per_frame:(k + 1) * per_frame] for k in range(4)]
    # frame 0: one context frame, duplicated -> reference = conditioning = it, distance 1
    assert all(torch.equal(c["distance"], torch.ones(3)) for c in frames[0])
    assert all(torch.equal(c["conditioning"], c["reference"]) for c in frames[0])
    # frame 3: 4 earlier latents (duplicate + 3 generated) -> distances 1..4, changing within the frame, per video
    distances = torch.stack([c["distance"] for c in frames[3]])  # [evaluations, batch]
    assert set(distances.unique().tolist()) == {1.0, 2.0, 3.0, 4.0}
    assert (distances != distances[:1]).any(0).all()  # every video sees several conditioning frames
    assert (distances[:, 0] != distances[:, 1]).any()  # drawn per video


def test_warm_start_begins_from_the_previous_latent():
    """With a zero velocity the ODE keeps its start (1 - (1 - sigma) s) eps + s z_prev."""
    with torch.device("meta"):
        model = River(RiverConfig(**{**TINY_RIVER, "warm_start": 0.5, "sigma": 0.1,
                                     "steps": 8}), FRAME)
    backend = StubBackend(model.latent_shape)
    context = torch.rand(2, 2, *FRAME)
    noise = model.sample_noise(2, 2, 1, generator=torch.Generator().manual_seed(0), device="cpu")
    model.rollout(backend, context, 1, noise)
    z_prev = context[:, -1].mean((1, 2, 3)).view(2, 1, 1, 1)
    expected = (1 - 0.9 * 0.5) * noise["initial_noise"][:, 0] + 0.5 * z_prev
    torch.testing.assert_close(backend.calls[0]["state"], expected)


def test_integrators_on_a_linear_ode():
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    start = torch.ones(1, dtype=torch.float64)
    rk4 = integrate(lambda y, t, i: y, start, grid, "rk4")
    euler = integrate(lambda y, t, i: y, start, grid, "euler")
    assert abs(float(rk4) - math.e) < 1e-5
    assert float(euler) == pytest.approx(1.1 ** 10)


def test_uniform_index_is_uniform():
    idx = uniform_index(torch.randn(60_000, generator=torch.Generator().manual_seed(0)), 3)
    counts = torch.bincount(idx, minlength=3).double() / idx.numel()
    assert idx.min() == 0 and idx.max() == 2
    torch.testing.assert_close(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01, rtol=0)


# -- the autoencoder hand-over --------------------------------------------------------------------------------------


def test_river_refuses_to_train_without_a_trained_autoencoder():
    model = build_river(RiverConfig(**TINY_RIVER), FRAME)  # builds (counts, tests) ...
    with pytest.raises(VpkitError, match="model.autoencoder"):  # ... but the trainer gets no optimiser
        model.configure_optimizers()


def test_river_reads_a_vqvae_checkpoint(tmp_path, river_host):
    from vpkit.core.checkpoint import load_model, plugin_section, save_checkpoint

    torch.manual_seed(0)
    vqvae = RiverVQVAE(VQVAEConfig(**TINY_VQVAE), FRAME)
    data = {"name": "smmnist", "frame_shape": list(FRAME), "n_context": 1, "n_future": 1}
    path = save_checkpoint(tmp_path / "vq", vqvae, model_key="river-vqvae", plugin=plugin_section("river"),
                           data=data)
    model = build_river(RiverConfig(**TINY_RIVER, autoencoder=str(path)), FRAME)
    assert model.config.vqvae == vqvae.config and model.config.autoencoder_source == str(path)
    assert model.config.autoencoder is None  # read once: the RIVER checkpoint holds the weights
    for key, value in vqvae.state_dict().items():
        assert torch.equal(model.state_dict()["ae.backbone." + key], value), key
    with pytest.raises(VpkitError, match="trained on frames"):
        build_river(RiverConfig(**TINY_RIVER, autoencoder=str(path)), (3, 64, 64))
    # a RIVER checkpoint rebuilds from its own config, without the autoencoder's directory
    river = save_checkpoint(tmp_path / "river", model, model_key="river", plugin=plugin_section("river"),
                            data={**data, "n_context": 2, "n_future": 2})
    with pytest.raises(VpkitError, match="needs a river-vqvae"):
        build_river(RiverConfig(**TINY_RIVER, autoencoder=str(river)), FRAME)
    (path / "model.safetensors").unlink()
    loaded, _ = load_model(river)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


# -- parity with the official code ----------------------------------------------------------------------------------

OFFICIAL = os.environ.get("VPKIT_RIVER_OFFICIAL")


def _record(calls: list, fn):
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        calls.append(out)
        return out
    return wrapped


def compare_with_official(root: str, *, inner_dim: int = 64, depth: int = 2, mid_depth: int = 1,
                          steps: int = 5, warm_start: float = 0.0) -> dict[str, float]:
    """Max abs differences (float64) between the official modules of the checkout `root` and this plugin on the
    same weights, inputs and random draws: VQVAE encode/decode/quantiser loss, the vector field, the training loss
    for one seed, and RK4 generation with 1 and 2 context frames. Needs einops and torchdiffeq importable."""
    import sys
    import tempfile

    sys.path.insert(0, root)
    from model.model import (
        Model,  # the official RIVER (imports einops, torchdiffeq, tqdm)
    )

    from vpkit.core.model import TorchBackend

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the official log(int distance) then gives float64
    try:
        torch.manual_seed(0)
        vf_cfg = {"state_size": 4, "state_res": [4, 4], "inner_dim": inner_dim, "depth": depth,
                  "mid_depth": mid_depth, "out_norm": "ln"}
        ae_cfg = {"type": "ours", "encoder": {"in_channels": 3, "out_channels": 4},
                  "vector_quantizer": {"num_embeddings": 8192, "embedding_dimension": 4},
                  "decoder": {"in_channels": 4, "out_channels": 3}}
        from model.vqgan.vqvae import build_vqvae
        official_ae = build_vqvae(ae_cfg)
        with torch.no_grad():  # codebook on the encoder's scale, so codes differ between pixels
            official_ae.vector_quantizer.embedding.weight.normal_(0, 0.3)
            for name, buffer in official_ae.named_buffers():
                if "running_var" in name:
                    buffer.uniform_(0.5, 2.0)
                elif "running_mean" in name:
                    buffer.normal_(0, 0.1)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = f"{tmp}/vqvae.pth"
            torch.save({"model": {f"module.{k}": v for k, v in official_ae.state_dict().items()}}, ckpt)
            official = Model({"sigma": 1e-7, "autoencoder": {**ae_cfg, "ckpt_path": ckpt},
                              "vector_field_regressor": vf_cfg}).double().eval()
        config = RiverConfig(vqvae=VQVAEConfig(), inner_dim=inner_dim, depth=depth, mid_depth=mid_depth,
                             steps=steps, warm_start=warm_start, n_context=2, n_future=2)
        mine = River(config, (3, 32, 32)).double().eval()
        mine.load_state_dict(official.state_dict())
        report: dict[str, float] = {}

        def diff(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
            report[name] = float((a.double() - b.double()).abs().max())

        video = torch.rand(2, 5, 3, 32, 32)
        frames = video.flatten(0, 1)
        with torch.no_grad():
            official_out = official.ae.backbone(frames * 2 - 1)
            latents = mine.ae.encode(frames)
            diff("vqvae.encode", latents, official_out.latents)
            vq_loss, quantized, _ = mine.ae.backbone.vector_quantizer(latents)
            diff("vqvae.quantize", quantized, official_out.quantized_latents)
            diff("vqvae.vq_loss", vq_loss, official_out.vq_loss)
            diff("vqvae.decode", mine.ae.decode(latents) * 2 - 1, official_out.reconstructed_images)
            args = (torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4))
            distance, time = torch.tensor([1, 7]), torch.tensor([0.0, 0.37])
            diff("vector_field", mine.vector_field_regressor(*args, distance, time),
                 official.vector_field_regressor(*args, distance, time))
            torch.manual_seed(3)
            out = official(video * 2 - 1)
            official_loss = torch.nn.functional.mse_loss(out.reconstructed_vectors, out.target_vectors)
            torch.manual_seed(3)
            diff("training_loss", mine.training_step(video, make_train_context()).loss, official_loss)
            for n_context in (1, 2):
                draws_n: list = []
                draws_i: list = []
                randn, randint = torch.randn, torch.randint
                torch.randn, torch.randint = _record(draws_n, randn), _record(draws_i, randint)
                try:
                    generated = official.generate_frames(video[:, :n_context] * 2 - 1, num_frames=3, steps=steps,
                                                         warm_start=warm_start)
                finally:
                    torch.randn, torch.randint = randn, randint
                per_frame = config.evaluations_per_frame
                indices = torch.stack(draws_i).view(3, per_frame, 2).permute(2, 0, 1)  # [B, frame, evaluation]
                count = torch.tensor([max(n_context, 2) - 1 + k for k in range(3)]).view(1, 3, 1)
                noise = {"initial_noise": torch.stack(draws_n, dim=1),
                         "conditioning_noise": torch.special.ndtri((indices + 0.5) / count)}
                rolled = mine.rollout(TorchBackend(mine.export_plan()), video[:, :n_context], 3, noise)
                expected = ((generated[:, n_context:] + 1) / 2).clamp(0, 1)
                diff(f"generate.context{n_context}", rolled, expected)
        return report
    finally:
        torch.set_default_dtype(previous)
        sys.path.remove(root)


@pytest.mark.skipif(not OFFICIAL, reason="set VPKIT_RIVER_OFFICIAL to a checkout of github.com/Araachie/river "
                    "(with einops and torchdiffeq importable) to compare with the official modules")
def test_parity_with_official_modules():
    pytest.importorskip("einops")
    pytest.importorskip("torchdiffeq")
    report = compare_with_official(OFFICIAL)
    for name, error in report.items():
        assert error < 1e-9, f"{name}: max abs difference {error}"


# -- the two-stage recipe through the CLI ---------------------------------------------------------------------------


def test_cli_trains_vqvae_then_river_on_embedded_data(tmp_path, river_host):
    """The issue's recipe: `vpkit train --plugin river --model river-vqvae`, then `--model river --set
    model.autoencoder=CKPT`, then `vpkit eval` on the result (the console entry point, in-process)."""
    from vpkit.cli.main import main

    def vpkit(*argv: str) -> None:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        assert exit_info.value.code in (0, None), f"vpkit {' '.join(argv)} exited with {exit_info.value.code}"

    small = ("--set", "train.val_videos=2", "--set", "train.batch_size=2", "--set", "data.frame_size=32",
             "--set", "data.digit_size=16")
    vpkit("train", "--plugin", "river", "--model", "river-vqvae", "--preset", "tiny", "--steps", "3",
          "--out", str(tmp_path / "vq"), *small)
    vqvae = tmp_path / "vq" / "checkpoints" / "last"
    vpkit("train", "--plugin", "river", "--model", "river", "--preset", "tiny", "--steps", "3",
          "--out", str(tmp_path / "river"), "--set", f"model.autoencoder={vqvae}", *small)
    river = tmp_path / "river" / "checkpoints" / "last"
    vpkit("eval", str(river), "--videos", "2", "--samples", "1", "--horizon", "2", "--out", str(tmp_path / "eval"))
    assert (tmp_path / "eval" / "report.json").is_file()
