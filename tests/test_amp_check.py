"""The mixed-precision start-up check: a model whose autocast loss agrees with fp32 trains mixed; one whose autocast
loss is broken falls back to fp32 with a warning, and the check itself changes nothing of the run."""

from __future__ import annotations

import io

import pluggy
import torch
from rich.console import Console

from vpkit.core import hookspecs
from vpkit.core.config import TrainConfig
from vpkit.engine.precision import amp_disagreement
from vpkit.engine.trainer import Trainer
from vpkit.testing.toys import (
    BatchedToyVideos,
    ToyConfig,
    ToyPredictor,
    ToyVideosConfig,
)


class BrokenUnderAutocast(ToyPredictor):
    """A toy whose loss is NaN under autocast, as a kernel with no low-precision support would make it."""

    def training_step(self, video, ctx):
        output = super().training_step(video, ctx)
        if torch.is_autocast_enabled(video.device.type):
            output.loss = output.loss * float("nan")
        return output


def trainer(tmp_path, model_cls, precision: str, check: bool = True) -> tuple[Trainer, io.StringIO]:
    torch.manual_seed(0)
    pm = pluggy.PluginManager("vpkit")
    pm.add_hookspecs(hookspecs)
    text = io.StringIO()
    return Trainer(
        model_cls(ToyConfig(), (1, 8, 8)), model_key="toy",
        plugin_meta={"name": "toy", "distribution": "vpkit-toy", "version": "0.0"},
        train_cfg=TrainConfig(steps=3, batch_size=4, precision=precision, check_amp=check, sample_every=1000,
                              checkpoint_every=1000),
        train_set=BatchedToyVideos(ToyVideosConfig(), "train"), val_set=None,
        data_meta={"name": "toy-videos", "frame_shape": [1, 8, 8], "n_context": 2, "n_future": 2},
        out_dir=tmp_path, metrics=[], metric_options={}, device="cpu", hook=pm.hook, preset="tiny",
        console=Console(file=text, width=200),
    ), text


def test_a_sound_model_keeps_mixed_precision(tmp_path):
    run, text = trainer(tmp_path / "bf16", ToyPredictor, "bf16-mixed")
    run.fit()
    assert run.precision.name == "bf16-mixed"
    assert "AMP check" not in text.getvalue()


def test_a_broken_model_falls_back_to_fp32_and_the_check_leaves_no_trace(tmp_path):
    run, text = trainer(tmp_path / "broken", BrokenUnderAutocast, "bf16-mixed")
    run.fit()
    assert run.precision.name == "32"
    assert "failed the AMP check" in text.getvalue() and "nan" in text.getvalue()
    reference, _ = trainer(tmp_path / "fp32", BrokenUnderAutocast, "32")
    reference.fit()
    for (name, a), b in zip(run.model.state_dict().items(), reference.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # same weights and BatchNorm statistics as a plain fp32 run


def test_disagreement_rule():
    assert amp_disagreement(1.0, 1.01) is None
    assert "off fp32" in amp_disagreement(1.0, 1.5)
    assert "nan" in amp_disagreement(1.0, float("nan"))
    assert amp_disagreement(float("nan"), 1.0) is None  # fp32 itself diverging is the NaN check's job
