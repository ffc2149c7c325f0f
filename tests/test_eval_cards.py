"""`vpkit eval` with profiles and FVD end to end, eval cards read back, and `vpkit eval --compare`. The LPIPS trunk
and I3D are stand-ins of the real files' layout and call (the ImageNet and Kinetics weights are not available here).
"""

from __future__ import annotations

import json

import pytest
import torch
from test_evaluator import (
    N_CONTEXT,
    SIZE,
    FakeDataConfig,
    FakeModelConfig,
    FakeNoiseModel,
    StaticVideos,
    invoke,
)

from vpkit.core.errors import VpkitError
from vpkit.engine import report
from vpkit.plugins.metrics import lpips as lpips_metric
from vpkit.testing.i3d import save_stand_in_i3d

HORIZON = 10  # FVD needs clips of 10+ frames


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VPKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random AlexNet trunk in torchvision's layout and a stand-in I3D."""
    import torchvision

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    alex = root / lpips_metric.BACKBONE_FILE
    torch.save({f"features.{k}": v for k, v in features.items()}, alex)
    return {"alex": alex, "i3d": save_stand_in_i3d(root / "i3d_torchscript.pt")}


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    """A run holding a checkpoint of a noisy fake model on fake static videos of N_CONTEXT + 10 frames."""
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
            register(DatasetSpec("fake-long", FakeDataConfig,
                                 lambda cfg, split: StaticVideos(cfg.count, length=N_CONTEXT + HORIZON)))

    host = plugins.Host(load_entry_points=False)
    host.register_plugin(FakePlugin, name="fake")
    monkeypatch.setattr(plugins, "_HOST", host)
    path = tmp_path / "run" / "checkpoints" / "best"
    save_checkpoint(path, FakeNoiseModel(FakeModelConfig(), (1, SIZE, SIZE)), model_key="fake-noise",
                    plugin={"name": "fake", "distribution": "fake", "version": "0"},
                    data={"name": "fake-long", "config": {"count": 4}, "frame_shape": [1, SIZE, SIZE],
                          "n_context": N_CONTEXT, "n_future": HORIZON}, train={"step": 3})
    return path


def test_the_full_srvp_protocol_with_fvd(checkpoint, weights, tmp_path):
    out = tmp_path / "srvp"
    result = invoke(checkpoint, "--metrics", "psnr,ssim,lpips,fvd", "--samples", "100", "--profile", "srvp",
                    "--lpips-backbone", weights["alex"], "--i3d", weights["i3d"], "--out", out)
    assert result.exit_code == 0, result.output
    card = json.loads((out / "report.json").read_text())
    assert card["format"] == "vpkit-eval-card/2" and card["num_samples_drawn"] == 100
    assert card["profile"]["name"] == "srvp" and card["profile"]["fvd_sample"] == "first"
    assert card["metrics"]["ssim"]["settings"]["window_size"] == 11
    assert card["metrics"]["lpips"]["settings"]["net"] == "alex"
    fvd = card["set_metrics"]["fvd"]
    assert fvd["value"] > 0 and fvd["sample"] == "first" and fvd["include_context"]
    assert fvd["frames"] == N_CONTEXT + HORIZON and fvd["num_real"] == fvd["num_fake"] == 4
    assert fvd["identity"] == f"i3d:{card['metrics']['fvd']['settings']['sha256'][:16]}:squash"
    assert any("fewer than 256" in w for w in card["warnings"]) and "fewer than 256" in result.output
    for name in ("psnr.png", "ssim.png", "lpips.png", "samples.png", "samples.gif"):
        assert (out / name).is_file(), name
    assert "fvd ↓" in result.output and "profile srvp" in result.output
    # A second run reads the real I3D statistics from the cache.
    again = invoke(checkpoint, "--metrics", "psnr,fvd", "--samples", "3", "--i3d", weights["i3d"], "--out",
                   tmp_path / "again", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "report.json").read_text())["set_metrics"]["fvd"]["real_stats"][
        "source"] == "cache"


def test_profiles_change_the_numbers_and_compare_says_so(checkpoint, tmp_path):
    for profile in ("vpkit", "svg"):
        result = invoke(checkpoint, "--metrics", "psnr,ssim", "--samples", "4", "--profile", profile, "--out",
                        tmp_path / profile)
        assert result.exit_code == 0, result.output
    cards = [json.loads((tmp_path / p / "report.json").read_text()) for p in ("vpkit", "svg")]
    assert cards[0]["summary"]["ssim"]["best"]["mean"] != cards[1]["summary"]["ssim"]["best"]["mean"]
    result = invoke("--compare", tmp_path / "vpkit" / "report.json", tmp_path / "svg" / "report.json", "--out",
                    tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    assert "run/best #1" in result.output and "run/best #2" in result.output
    assert "Choices that differ" in result.output and "profile" in result.output
    assert "ssim was computed with different settings" in result.output
    assert (tmp_path / "cmp" / "compare_psnr.png").is_file() and (tmp_path / "cmp" / "compare_ssim.png").is_file()


def card(**changes):
    base = {"format": "vpkit-eval-card/2", "n_context": 2, "horizon": 3, "num_samples_drawn": 4, "num_videos": 5,
            "profile": {"name": "vpkit", "spread": "ci95"}, "dataset": {"name": "d", "split": "test"},
            "checkpoint": {"path": "runs/a/checkpoints/best"},
            "metrics": {"psnr": {"higher_is_better": True, "settings": {"reduction": "channel-mean"}},
                        "fvd": {"higher_is_better": False, "settings": {}}},
            "summary": {"psnr": {a: {"mean": 20.0, "ci95": 0.5, "std": 1.0} for a in ("best", "mean", "worst")}},
            "per_frame": {"psnr": {a: {"mean": [21.0, 20.0, 19.0], "ci95": [0.1, 0.2, 0.3]}
                                   for a in ("best", "mean", "worst")}},
            "set_metrics": {"fvd": {"value": 300.0, "sample": "random", "frames": 5, "num_fake": 5,
                                    "include_context": True, "identity": "i3d:x:squash"}}}
    base.update(changes)
    return base


def write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_compare_highlights_the_better_run_per_direction(tmp_path):
    from rich.console import Console

    a = report.Report.from_dict(card(), label="a")
    better = card(summary={"psnr": {x: {"mean": 22.0, "ci95": 0.5, "std": 1.0} for x in ("best", "mean", "worst")}},
                  set_metrics={"fvd": {"value": 250.0, "sample": "random", "frames": 5, "num_fake": 5,
                                       "include_context": True, "identity": "i3d:x:squash"}})
    b = report.Report.from_dict(better, label="b")
    tables, warnings = report.compare([a, b])
    console = Console(record=True, width=200)
    for table in tables:
        console.print(table)
    text = console.export_text()
    assert "22.00 ± 0.50" in text and "250.00" in text and warnings == []
    assert len(tables) == 1  # nothing differs
    cells = [list(column.cells) for column in tables[0].columns[1:]]  # per run: psnr, fvd
    assert cells[1][0] == "[bold green]22.00 ± 0.50[/]" and cells[0][0] == "20.00 ± 0.50"  # higher PSNR wins
    assert cells[1][1] == "[bold green]250.00[/]" and cells[0][1] == "300.00"  # lower FVD wins


def test_compare_lists_differences_and_missing_metrics(tmp_path):
    a = report.Report.from_dict(card(), label="a")
    b = report.Report.from_dict(card(horizon=10, profile={"name": "ddlp", "spread": "std"}, set_metrics={}),
                                label="b")
    tables, warnings = report.compare([a, b])
    assert len(tables) == 2
    assert any("horizon" in w for w in warnings) and any("profile" in w for w in warnings)
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(tables[0])
    text = console.export_text()
    assert "20.00 ± 1.00" in text and "—" in text  # ddlp's spread is the std; b has no FVD


def test_reading_cards_old_new_and_broken(tmp_path):
    old = report.load_report(write(tmp_path / "old.json", card(format="vpkit-eval-card/1")))
    assert "older vpkit" in old.warnings[0]
    with pytest.raises(VpkitError, match="newer vpkit than this one"):
        report.load_report(write(tmp_path / "new.json", card(format="vpkit-eval-card/9")))
    with pytest.raises(VpkitError, match="is not a vpkit eval card"):
        report.load_report(write(tmp_path / "other.json", {"loss": 1}))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VpkitError, match="is not valid JSON"):
        report.load_report(tmp_path / "bad.json")
    with pytest.raises(VpkitError, match="does not exist"):
        report.load_report(tmp_path / "none.json")
    assert report.Report.from_dict(card()).label == "a/best"


def test_cli_refuses_bad_profiles_samples_rules_and_argument_mixes(checkpoint, tmp_path):
    def refused(*args) -> str:
        result = invoke(*args)
        assert isinstance(result.exception, VpkitError), result.output
        return str(result.exception)

    assert "Unknown metric profile 'tf'" in refused(checkpoint, "--profile", "tf")
    assert "does not exist" in refused(checkpoint, "--metrics", "psnr,fvd", "--i3d", tmp_path / "missing.pt")
    assert "kvd" in refused(checkpoint, "--metrics", "psnr,kvd")
    assert "--compare" in refused(checkpoint, checkpoint)
    assert "two or more" in refused("--compare", tmp_path / "a.json")
