"""The best-of-N protocol on fake models whose answer is known by construction, the eval card, the plots and the
`vpkit eval` command."""

from __future__ import annotations

import json
import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from torch import nn

from vpkit.core.config import BaseConfig
from vpkit.core.errors import VpkitError
from vpkit.core.model import VideoPredictor
from vpkit.core.specs import MetricSpec
from vpkit.engine import evaluator, plots
from vpkit.plugins.metrics import psnr as psnr_metric
from vpkit.plugins.metrics import ssim as ssim_metric

N_CONTEXT, HORIZON, SIZE = 2, 3, 32


def spec_of(module) -> MetricSpec:
    specs: list[MetricSpec] = []
    module.register_metrics(register=specs.append)
    return specs[0]


PSNR, SSIM = spec_of(psnr_metric), spec_of(ssim_metric)


def _mean_abs(options):
    return lambda pred, target: (pred - target).abs().mean(dim=(2, 3, 4))


MAE = MetricSpec("mae", _mean_abs, higher_is_better=False, description="mean absolute error (test only)")


class StaticVideos(torch.utils.data.Dataset):
    """Static uint8 videos of cameraman crops, values kept in [0.2, 0.8] so small offsets never clip."""

    def __init__(self, count: int = 5, length: int = N_CONTEXT + HORIZON) -> None:
        image = torch.from_numpy(data.camera()).float()[None, None] / 255
        image = F.interpolate(image, size=(128, 128), mode="area")[0]
        crops = [image[:, 8 * i: 8 * i + SIZE, 5 * i: 5 * i + SIZE] for i in range(count)]
        self.videos = [(0.2 + 0.6 * c).mul(255).round().to(torch.uint8).expand(length, -1, -1, -1) for c in crops]
        self.frame_shape = (1, SIZE, SIZE)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.videos[index]


class OffsetModel(VideoPredictor):
    """Sample s of a video repeats the last context frame plus `offsets[s] * (k + 1)` at step k. The order of the
    offsets is a random permutation per video (from the generator), so the best sample's position varies but its
    value is known: the smallest |offset|."""

    def __init__(self, offsets: list[float]) -> None:
        super().__init__()
        self.offsets = torch.tensor(offsets)
        self.frame_shape = (1, SIZE, SIZE)
        self.orders: list[torch.Tensor] = []
        self._cursor = 0

    def predict(self, context, horizon, *, num_samples=1, generator=None):
        n = len(self.offsets)
        if self._cursor % n == 0:  # a new batch of videos: draw each video's order
            self.orders.append(torch.stack([torch.randperm(n, generator=generator) for _ in range(len(context))]))
        order = self.orders[-1][:, self._cursor % n + torch.arange(num_samples)]
        self._cursor += num_samples
        steps = torch.arange(1, horizon + 1, dtype=torch.float32).view(1, 1, horizon, 1, 1, 1)
        offsets = self.offsets[order].view(*order.shape, 1, 1, 1, 1)
        return context[:, -1][:, None, None] + offsets * steps


class NoiseModel(VideoPredictor):
    """The last context frame plus Gaussian noise drawn from the generator."""

    def __init__(self, stochastic: bool = True) -> None:
        super().__init__()
        self._stochastic = stochastic
        self.frame_shape = (1, SIZE, SIZE)

    @property
    def stochastic(self) -> bool:
        return self._stochastic

    def predict(self, context, horizon, *, num_samples=1, generator=None):
        num_samples = num_samples if self._stochastic else 1
        last = context[:, -1][:, None, None].expand(-1, num_samples, horizon, -1, -1, -1)
        if not self._stochastic:
            return last + 0.05
        return last + 0.05 * torch.randn(last.shape, generator=generator)


def run(model, dataset=None, metrics=(PSNR, MAE), **kwargs):
    args = {"n_context": N_CONTEXT, "horizon": HORIZON, "num_samples": 4, "progress": False}
    return evaluator.evaluate(model, dataset or StaticVideos(), metrics=list(metrics), **{**args, **kwargs})


# -- the protocol --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples_per_call", [None, 1, 3])
def test_best_mean_and_worst_of_n_are_known_by_construction(samples_per_call):
    offsets = [0.04, -0.01, 0.02, -0.03]
    model = OffsetModel(offsets)
    result = run(model, batch_size=2, samples_per_call=samples_per_call)
    steps = np.arange(1, HORIZON + 1)
    abs_offsets = np.abs(offsets)

    # MAE of a constant offset o at step k is |o|·(k+1); PSNR is -10·log10(o²(k+1)²)
    mae = {"best": abs_offsets.min(), "mean": abs_offsets.mean(), "worst": abs_offsets.max()}
    for aggregate, o in mae.items():
        assert result.summary["mae"][aggregate]["mean"] == pytest.approx(o * steps.mean(), abs=1e-6)
        assert result.summary["mae"][aggregate]["ci95"] == pytest.approx(0.0, abs=1e-6)  # same for every video
        assert np.allclose(result.per_frame["mae"][aggregate]["mean"], o * steps, atol=1e-6)
    psnr = {o: np.mean(-10 * np.log10((o * steps) ** 2)) for o in abs_offsets}
    assert result.summary["psnr"]["best"]["mean"] == pytest.approx(psnr[0.01], abs=1e-3)
    assert result.summary["psnr"]["worst"]["mean"] == pytest.approx(psnr[0.04], abs=1e-3)
    assert result.summary["psnr"]["mean"]["mean"] == pytest.approx(np.mean(list(psnr.values())), abs=1e-3)

    # the chosen sample is where each video's permutation put the smallest offset
    orders = torch.cat(model.orders)
    expected_index = [int(row.tolist().index(1)) for row in orders]  # offsets[1] = -0.01
    assert result.per_video["psnr"]["best_sample"] == expected_index
    assert result.per_video["mae"]["best_sample"] == expected_index
    assert len(set(expected_index)) > 1  # the best sample is not always in the same position


def test_best_sample_is_chosen_per_metric_independently():
    """Sample 0 is shifted by a constant (structure kept: best SSIM, worse PSNR); sample 1 is noisy (lower error
    energy: best PSNR, but structure lost)."""
    noise = 0.06 * torch.randn(1, 1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))

    class TwoWays(VideoPredictor):
        def predict(self, context, horizon, *, num_samples=1, generator=None):
            last = context[:, -1][:, None, None].expand(-1, 1, horizon, -1, -1, -1)
            return torch.cat([last + 0.1, last + noise], dim=1)

    dataset = StaticVideos(count=3)
    result = run(TwoWays(), dataset, metrics=(PSNR, SSIM), num_samples=2)
    assert result.per_video["psnr"]["best_sample"] == [1, 1, 1]
    assert result.per_video["ssim"]["best_sample"] == [0, 0, 0]
    for v in range(3):
        truth = dataset[v][N_CONTEXT:].float()[None] / 255
        shifted, noisy = truth + 0.1, truth + noise
        assert result.per_video["psnr"]["best"][v] == pytest.approx(psnr_metric.psnr(noisy, truth).mean().item(),
                                                                    abs=1e-4)
        assert result.per_video["ssim"]["best"][v] == pytest.approx(ssim_metric.ssim(shifted, truth).mean().item(),
                                                                    abs=1e-6)
        assert result.per_video["ssim"]["worst"][v] == pytest.approx(ssim_metric.ssim(noisy, truth).mean().item(),
                                                                     abs=1e-6)


def test_summary_is_mean_and_1_96_sigma_over_root_n():
    result = run(NoiseModel(), StaticVideos(count=5), metrics=(SSIM,), num_samples=3)
    for aggregate in evaluator.AGGREGATES:
        values = np.array(result.per_video["ssim"][aggregate])
        assert values.std() > 0
        assert result.summary["ssim"][aggregate]["mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert result.summary["ssim"][aggregate]["ci95"] == pytest.approx(1.96 * values.std() / math.sqrt(5),
                                                                          abs=1e-12)
    best, mean, worst = (np.array(result.per_video["ssim"][a]) for a in evaluator.AGGREGATES)
    assert (best >= mean).all() and (mean >= worst).all() and (best > worst).any()
    assert evaluator.confidence_interval(torch.tensor([1.0, 3.0])) == pytest.approx((2.0, 1.96 * 1.0 / math.sqrt(2)))
    assert evaluator.confidence_interval(torch.tensor([0.7])) == (pytest.approx(0.7), 0.0)


def test_seeded_results_are_reproducible():
    first = run(NoiseModel(), metrics=(PSNR,), seed=3)
    again = run(NoiseModel(), metrics=(PSNR,), seed=3)
    other = run(NoiseModel(), metrics=(PSNR,), seed=4)
    assert first.per_video == again.per_video
    assert first.per_video["psnr"]["best"] != other.per_video["psnr"]["best"]


def test_deterministic_model_draws_one_sample():
    result = run(NoiseModel(stochastic=False), metrics=(MAE,), num_samples=10)
    assert result.protocol["num_samples"] == 10 and result.protocol["num_samples_drawn"] == 1
    for aggregate in evaluator.AGGREGATES:
        assert result.summary["mae"][aggregate]["mean"] == pytest.approx(0.05, abs=1e-6)


def test_num_videos_and_examples():
    result = run(OffsetModel([0.04, -0.01, 0.02, -0.03]), StaticVideos(count=5), num_videos=3, keep_examples=2,
                 batch_size=1)
    assert result.protocol["num_videos"] == 3 and len(result.per_video["psnr"]["best"]) == 3
    assert len(result.examples) == 2
    example = result.examples[1]
    assert example["context"].shape == (N_CONTEXT, 1, SIZE, SIZE)
    assert example["truth"].shape == (HORIZON, 1, SIZE, SIZE)
    assert example["samples"].shape == (evaluator.EXAMPLE_SAMPLES, HORIZON, 1, SIZE, SIZE)
    # the kept best sample is the smallest offset: last context frame - 0.01·(k+1)
    steps = torch.arange(1, HORIZON + 1).view(HORIZON, 1, 1, 1)
    assert torch.allclose(example["best"]["mae"], example["context"][-1] - 0.01 * steps, atol=1e-6)
    assert example["best_score"]["mae"] == pytest.approx(result.per_video["mae"]["best"][1], abs=1e-6)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(VpkitError, match="lower --horizon"):
        run(NoiseModel(), horizon=10)

    class Diverged(NoiseModel):
        def predict(self, context, horizon, *, num_samples=1, generator=None):
            return super().predict(context, horizon, num_samples=num_samples, generator=generator) * float("nan")

    with pytest.raises(VpkitError, match="NaN"):
        run(Diverged())


# -- BatchNorm mode ------------------------------------------------------------------------------------------------

class BNModel(VideoPredictor):
    """A 1×1 conv + BatchNorm applied to the last context frame; records BN's mode while predicting."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.bn = nn.BatchNorm2d(1)
        self.frame_shape = (1, SIZE, SIZE)
        self.bn_modes_seen: list[bool] = []
        with torch.no_grad():
            self.bn.running_mean.fill_(0.3)
            self.bn.running_var.fill_(2.0)

    @property
    def stochastic(self) -> bool:
        return False

    def predict(self, context, horizon, *, num_samples=1, generator=None):
        self.bn_modes_seen.append(self.bn.training)
        frame = torch.sigmoid(self.bn(self.conv(context[:, -1])))
        return frame[:, None, None].expand(-1, 1, horizon, -1, -1, -1)


@pytest.mark.parametrize("start_in_training", [True, False])
def test_sampling_uses_eval_mode_and_restores_everything(start_in_training):
    model = BNModel().train(start_in_training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run(model, metrics=(MAE,))
    assert model.bn_modes_seen and not any(model.bn_modes_seen)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training == start_in_training and model.bn.training == start_in_training
    assert result.protocol["batchnorm_at_sampling"] == "running statistics (eval mode)"


def test_sampling_mode_restores_buffers_after_an_error():
    model = BNModel()
    before = model.bn.running_mean.clone()
    with pytest.raises(RuntimeError), evaluator.sampling_mode(model):
        model.bn.running_mean.add_(1.0)  # a model that changes its buffers while sampling
        assert not torch.equal(model.bn.running_mean, before)
        raise RuntimeError("interrupted")
    assert torch.equal(model.bn.running_mean, before) and model.training


# -- eval card and plots -------------------------------------------------------------------------------------------

def test_report_holds_every_protocol_choice_next_to_the_numbers():
    result = run(OffsetModel([0.04, -0.01, 0.02, -0.03]), metrics=(PSNR, SSIM), seed=7)
    report = json.loads(json.dumps(result.to_report(checkpoint={"path": "runs/x/checkpoints/best", "step": 12})))
    assert report["format"] == evaluator.REPORT_FORMAT
    for key, value in {"n_context": N_CONTEXT, "horizon": HORIZON, "num_samples": 4, "num_videos": 5, "seed": 7,
                       "batchnorm_at_sampling": "no BatchNorm", "selection": "best per video per metric"}.items():
        assert report[key] == value
    assert report["checkpoint"] == {"path": "runs/x/checkpoints/best", "step": 12}
    assert {"torch", "lpips", "vpkit", "torchvision"} <= set(report["versions"])
    assert report["metrics"]["ssim"]["settings"]["sigma"] == 1.5
    assert report["metrics"]["ssim"]["settings"]["padding"] == "valid"
    assert report["metrics"]["psnr"]["higher_is_better"] is True
    assert report["summary"]["psnr"]["best"]["mean"] == pytest.approx(result.best_mean("psnr"))
    assert len(report["per_frame"]["ssim"]["best"]["ci95"]) == HORIZON
    with pytest.raises(ValueError, match="overwrite"):
        result.to_report(seed=1)


def test_plots_are_written_as_png(tmp_path):
    result = run(NoiseModel(), metrics=(PSNR, MAE))
    paths = plots.plot_all(result.to_report(), tmp_path)
    assert set(paths) == {"psnr", "mae"}
    image = imageio.imread(paths["psnr"])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10  # something was drawn


# -- the `vpkit eval` command --------------------------------------------------------------------------------------

class FakeDataConfig(BaseConfig):
    count: int = 4


class FakeModelConfig(BaseConfig):
    scale: float = 0.05


class FakeNoiseModel(NoiseModel):
    def __init__(self, config: FakeModelConfig, frame_shape) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.ones(1))


@pytest.fixture
def fake_checkpoint(tmp_path, monkeypatch):
    """A run directory holding a checkpoint of a fake model on a fake dataset, both registered in a fresh host."""
    import vpkit
    from vpkit.core import plugins
    from vpkit.core.checkpoint import save_checkpoint
    from vpkit.core.specs import DatasetSpec, ModelSpec, Preset

    class FakePlugin:
        @staticmethod
        @vpkit.hookimpl
        def register_models(register):
            register(ModelSpec("fake-noise", FakeModelConfig, FakeNoiseModel, {"default": Preset()}, "default"))

        @staticmethod
        @vpkit.hookimpl
        def register_datasets(register):
            register(DatasetSpec("fake-static", FakeDataConfig, lambda cfg, split: StaticVideos(cfg.count)))

    host = plugins.Host(load_entry_points=False)
    host.register_plugin(FakePlugin, name="fake")
    monkeypatch.setattr(plugins, "_HOST", host)
    model = FakeNoiseModel(FakeModelConfig(), (1, SIZE, SIZE))
    path = tmp_path / "run" / "checkpoints" / "best"
    save_checkpoint(path, model, model_key="fake-noise", plugin={"name": "fake", "distribution": "fake",
                                                                    "version": "0"},
                    data={"name": "fake-static", "config": {"count": 3}, "frame_shape": [1, SIZE, SIZE],
                          "n_context": N_CONTEXT, "n_future": HORIZON}, train={"step": 9})
    return path


def invoke(*args):
    import typer
    from typer.testing import CliRunner

    from vpkit.cli.eval import eval_command

    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("unused")(lambda: None)  # two commands, so the app keeps the `eval` sub-command name
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def _offline_torch_home(tmp_path, monkeypatch):
    import urllib.error

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def test_eval_command_writes_report_plots_and_gif_and_skips_missing_lpips(fake_checkpoint, tmp_path, monkeypatch):
    _offline_torch_home(tmp_path, monkeypatch)
    result = invoke(fake_checkpoint, "--samples", "3", "--device", "cpu", "--seed", "5")
    assert result.exit_code == 0, result.output
    out = fake_checkpoint.parent.parent / "eval"  # RUN/eval by default
    report = json.loads((out / "report.json").read_text())
    assert set(report["summary"]) == {"psnr", "ssim"}  # only what was really computed
    assert "alexnet-owt-7be5be79.pth" in report["skipped_metrics"]["lpips"]
    assert "skipping lpips" in result.output and "alexnet-owt-7be5be79.pth" in result.output
    assert report["horizon"] == HORIZON and report["num_videos"] == 3 and report["seed"] == 5
    assert report["checkpoint"]["step"] == 9 and report["checkpoint"]["model"] == "fake-noise"
    assert report["dataset"]["name"] == "fake-static"
    assert (out / "psnr.png").is_file() and (out / "ssim.png").is_file()
    gif = imageio.mimread(out / "samples.gif")
    # 3 test videos stacked (2-pixel gaps), each in columns best and worst by psnr + 3 random samples + truth,
    # every frame with a 2-pixel border
    assert gif[0].shape == (3 * (SIZE + 4) + 2 * 2, 6 * (SIZE + 4) + 5 * 2, 3)
    sheet = imageio.imread(out / "samples.png")
    # the PNG sheet: per video 6 labelled rows (truth, best, worst, 3 random) of context + horizon frames
    assert sheet.shape[0] == 3 * (6 * (SIZE + 4) + 5 * 2) + 2 * 6
    assert sheet.shape[1] == 150 + (N_CONTEXT + HORIZON) * (SIZE + 4) + (N_CONTEXT + HORIZON - 1) * 2
    assert "best of 3" in result.output


def test_eval_command_fails_when_lpips_is_asked_for_explicitly(fake_checkpoint, tmp_path, monkeypatch):
    _offline_torch_home(tmp_path, monkeypatch)
    result = invoke(fake_checkpoint, "--samples", "2", "--metrics", "psnr,lpips", "--out", tmp_path / "o")
    assert result.exit_code != 0
    assert isinstance(result.exception, VpkitError) and "alexnet-owt-7be5be79.pth" in str(result.exception)
    assert not (tmp_path / "o" / "report.json").exists()


def test_eval_command_json_and_options(fake_checkpoint, tmp_path):
    out = tmp_path / "elsewhere"
    result = invoke(fake_checkpoint, "--samples", "2", "--metrics", "psnr", "--horizon", "2", "--videos", "2",
                    "--out", out, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["horizon"] == 2 and printed["num_videos"] == 2
    assert json.loads((out / "report.json").read_text())["summary"] == printed["summary"]
