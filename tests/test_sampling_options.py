"""Sampling options (`ModelSpec.sampling`): config fields a trained model changes at sampling time, given to
`vpkit predict`, `eval` and `export` as `--NAME VALUE`; checked, validated, recorded, refused where they cannot
apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import Field

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import ModelSpec, Preset, SamplingOption
from vpkit.testing.toys import ToyConfig, ToyPredictor, register_toy_plugin


class TemperatureConfig(ToyConfig):
    temperature: float = Field(1.0, ge=0, description="noise scale at sampling")
    refine: bool = False  # stands for an option that adds a graph (a refinement network)


class TemperatureToy(ToyPredictor):
    """The toy predictor with its noise scaled by `temperature` when it samples."""

    def rollout(self, backend, context, horizon, noise):
        scaled = {name: value * self.config.temperature for name, value in noise.items()}
        return super().rollout(backend, context, horizon, scaled)


OPTIONS = (
    SamplingOption("temperature", "temperature", float, "Noise scale."),
    SamplingOption("hidden", "hidden", int, "Changes the weights' shapes: refused when the weights are loaded."),
    SamplingOption("refine", "refine", bool, "Adds a graph.", changes_graphs=True),
)


class TemperaturePlugin:
    @staticmethod
    @vpkit.hookimpl
    def register_models(register) -> None:
        register(ModelSpec(
            name="toy-temp", config_cls=TemperatureConfig, build=lambda c, s: TemperatureToy(c, s),
            presets={"tiny": Preset(dataset="toy-videos", frame_shape=(1, 8, 8))}, default_preset="tiny",
            sampling=OPTIONS))


@pytest.fixture
def host(fresh_host):
    register_toy_plugin(fresh_host)
    fresh_host.register_plugin(TemperaturePlugin(), name="toy-temp", distribution="vpkit-toy-temp", version="0.0")
    return fresh_host


def save(tmp_path: Path, key: str, model) -> Path:
    from vpkit.core.checkpoint import plugin_section, save_checkpoint

    data = {"name": "toy-videos", "config": {}, "frame_shape": [1, 8, 8], "n_context": 2, "n_future": 2}
    return save_checkpoint(tmp_path / key, model.eval(), model_key=key, plugin=plugin_section(key), data=data)


@pytest.fixture
def checkpoints(host, tmp_path):
    torch.manual_seed(0)
    return {"toy-temp": save(tmp_path, "toy-temp", TemperatureToy(TemperatureConfig(), (1, 8, 8))),
            "toy": save(tmp_path, "toy", ToyPredictor(ToyConfig(), (1, 8, 8)))}


def samples(runtime, seed: int = 0) -> torch.Tensor:
    context = torch.rand(2, 2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    return runtime.predict(context, 2, num_samples=2, generator=torch.Generator().manual_seed(seed))


def test_options_change_sampling_and_keep_the_weights(checkpoints):
    from vpkit.engine.runtime import load_runtime

    plain = load_runtime(checkpoints["toy-temp"])
    cold = load_runtime(checkpoints["toy-temp"], sampling={"temperature": 0.0, "hidden": None})
    assert cold.model.config.temperature == 0.0 and plain.model.config.temperature == 1.0
    assert cold.sampling == {"temperature": 0.0} and "--temperature 0.0" in cold.describe()
    for name, value in plain.model.state_dict().items():
        assert torch.equal(cold.model.state_dict()[name], value), name
    assert not cold.model.training
    assert torch.equal(samples(cold, seed=0), samples(cold, seed=1))  # no noise left: every seed agrees
    assert not torch.equal(samples(plain, seed=0), samples(plain, seed=1))


def test_options_are_checked_against_the_model(checkpoints):
    from vpkit.engine.runtime import load_runtime

    with pytest.raises(VpkitError, match=r"--temperature does not apply to model 'toy' \(it takes no sampling"):
        load_runtime(checkpoints["toy"], sampling={"temperature": 0.5})
    with pytest.raises(VpkitError, match=r"Invalid model config of 'toy-temp' with --temperature.*greater than or "
                       r"equal to 0"):
        load_runtime(checkpoints["toy-temp"], sampling={"temperature": -1.0})
    with pytest.raises(VpkitError, match="change the weights"):
        load_runtime(checkpoints["toy-temp"], sampling={"hidden": 16})


def test_export_builds_the_options_in_and_refuses_graph_changes_later(checkpoints, tmp_path):
    pytest.importorskip("onnxruntime")
    from vpkit.core.checkpoint import read_checkpoint
    from vpkit.engine.exporter import export_model
    from vpkit.engine.runtime import load_runtime

    result = export_model(checkpoints["toy-temp"], "onnx", out=tmp_path / "cold-onnx",
                          sampling={"temperature": 0.0})
    meta = read_checkpoint(result.path).meta
    assert meta["model"]["config"]["temperature"] == 0.0 and meta["export"]["sampling"] == {"temperature": 0.0}
    exported = load_runtime(result.path)
    eager = load_runtime(checkpoints["toy-temp"], sampling={"temperature": 0.0})
    torch.testing.assert_close(samples(exported), samples(eager), atol=1e-5, rtol=0)
    warm = load_runtime(result.path, sampling={"temperature": 1.0})  # rollout options still apply to an export
    assert not torch.equal(samples(warm, seed=0), samples(warm, seed=1))
    with pytest.raises(VpkitError, match="--refine changes the exported graphs; export the checkpoint with it"):
        load_runtime(result.path, sampling={"refine": True})


def test_cli_offers_options_and_records_them_on_the_eval_card(checkpoints, tmp_path, capsys):
    from vpkit.cli.main import main

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "Sampling options" in text and "--temperature" in text and "(toy-temp)" in text

    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(checkpoints["toy-temp"]), "--temperature", "0.5", "--samples", "2", "--videos", "2",
              "--metrics", "psnr", "--out", str(out), "--json"])
    assert exit_info.value.code in (0, None)
    card = json.loads((out / "report.json").read_text())
    assert card["checkpoint"]["sampling"] == {"temperature": 0.5}

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(checkpoints["toy"]), "--temperature", "0.5", "--samples", "1", "--out", str(out)])
    assert exit_info.value.code == 1
    assert "--temperature does not apply to model 'toy'" in capsys.readouterr().err


def test_an_option_may_not_shadow_a_command_flag(host):
    from vpkit.cli import predict
    from vpkit.cli.plugin_options import with_sampling_options

    class Shadowing:
        @staticmethod
        @vpkit.hookimpl
        def register_models(register) -> None:
            register(ModelSpec(name="toy-seed", config_cls=TemperatureConfig, build=lambda c, s: TemperatureToy(c, s),
                               presets={"tiny": Preset(dataset="toy-videos")}, default_preset="tiny",
                               sampling=(SamplingOption("seed", "hidden", int),)))

    host.register_plugin(Shadowing(), name="toy-seed", distribution="vpkit-toy-seed", version="0.0")
    with pytest.raises(VpkitError, match="--seed for `vpkit predict`, which the command already has"):
        with_sampling_options(predict.predict_command)
