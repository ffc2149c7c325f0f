"""The training engine: exact resume, divergence handling, outputs, best-checkpoint selection, hooks, precision."""

from __future__ import annotations

import json
import os
import re
import signal
import types
from pathlib import Path

import pluggy
import pytest
import torch
from safetensors.torch import load_file

import vpkit
from vpkit.core import hookspecs
from vpkit.core.checkpoint import TRAIN_STATE_FILE, load_train_state, read_checkpoint
from vpkit.core.config import TrainConfig
from vpkit.core.errors import VpkitError
from vpkit.core.specs import MetricSpec
from vpkit.engine import evaluator
from vpkit.engine.precision import resolve_precision
from vpkit.engine.trainer import SeededClips, Trainer, train_loader
from vpkit.testing.toys import BatchedToyVideos, ToyConfig, ToyPredictor, ToyVideos, ToyVideosConfig

FRAME_SHAPE = (1, 8, 8)
DATA_META = {"name": "toy-videos", "frame_shape": list(FRAME_SHAPE), "n_context": 2, "n_future": 2}


# -- helpers --------------------------------------------------------------------------------------------------------


class FakeEvaluator:
    """Stands in for `vpkit.engine.evaluator.evaluate`. It disturbs what a careless trainer would let leak into
    training: it draws from the global RNG (sampling without a generator) and runs BatchNorm in train mode."""

    def __init__(self, values: dict[str, list[float]] | None = None) -> None:
        self.values = values or {}
        self.calls: list[dict] = []

    def __call__(self, model, dataset, *, n_context, horizon, num_samples, metrics, metric_options, num_videos,
                 seed, device, progress):
        metrics = [getattr(m, "name", m) for m in metrics]
        self.calls.append({"n_context": n_context, "horizon": horizon, "num_samples": num_samples,
                           "metrics": metrics, "num_videos": num_videos, "training": model.training})
        clips = torch.stack([dataset[i] for i in range(num_videos)]).float().div(255)
        model.predict(clips[:, :n_context], horizon, num_samples=num_samples)  # global RNG
        model.train()
        model.encoder(clips[:, 0])  # moves BatchNorm running statistics
        call = len(self.calls) - 1
        summary = {}
        for name in metrics:
            series = self.values.get(name, [10.0])
            summary[name] = {"best": {"mean": series[min(call, len(series) - 1)]}}
        return types.SimpleNamespace(summary=summary)


@pytest.fixture(autouse=True)
def one_thread():
    """Toy-sized ops gain nothing from threads, and on a shared 2-core machine threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake_evaluate(monkeypatch):
    """Install a FakeEvaluator as `vpkit.engine.evaluator.evaluate`."""
    fake = FakeEvaluator()
    monkeypatch.setattr(evaluator, "evaluate", fake)
    return fake


class Recorder:
    """Records every trainer event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    @vpkit.hookimpl
    def on_train_start(self, trainer):
        self.events.append(("start", trainer.step))

    @vpkit.hookimpl
    def on_step_end(self, trainer, step, logs):
        self.events.append(("step", step, dict(logs)))

    @vpkit.hookimpl
    def on_validation_end(self, trainer, step, metrics):
        self.events.append(("val", step, dict(metrics)))

    @vpkit.hookimpl
    def on_checkpoint_saved(self, trainer, path):
        self.events.append(("ckpt", trainer.step, Path(path).name))

    @vpkit.hookimpl
    def on_train_end(self, trainer):
        self.events.append(("end", trainer.step))


def hook_relay(*plugins):
    pm = pluggy.PluginManager("vpkit")
    pm.add_hookspecs(hookspecs)
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm.hook


def make_model(seed: int = 0, **overrides) -> ToyPredictor:
    torch.manual_seed(seed)
    return ToyPredictor(ToyConfig(**overrides), FRAME_SHAPE)


def make_trainer(out_dir: Path, model=None, *, train=None, data=None, resume_from=None, hook=None, val=True,
                 metrics=("psnr",), device="cpu", **model_overrides) -> Trainer:
    data_cfg = ToyVideosConfig(**(data or {}))
    train_cfg = TrainConfig(**{"steps": 6, "batch_size": 4, "val_every": 2, "val_videos": 4, "sample_every": 3,
                               "checkpoint_every": 3, "log_every": 2, "val_metric": "psnr", **(train or {})})
    return Trainer(
        model if model is not None else make_model(**model_overrides), model_key="toy",
        plugin_meta={"name": "toy", "distribution": "vpkit-toy", "version": "0.0"}, train_cfg=train_cfg,
        train_set=BatchedToyVideos(data_cfg, "train"), val_set=ToyVideos(data_cfg, "test") if val else None,
        data_meta=DATA_META, out_dir=out_dir, metrics=list(metrics), metric_options={}, device=device,
        resume_from=resume_from, hook=hook if hook is not None else hook_relay(), preset="tiny",
    )


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def assert_same_state(a, b) -> None:
    """Nested state dicts (optimiser states) equal exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_state(x, y)
    else:
        assert a == b


def read_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- exact resume ---------------------------------------------------------------------------------------------------


class Interrupt:
    """Stops a run after `at` steps: by Ctrl-C (SIGINT to this process) or by a crash (an exception)."""

    def __init__(self, at: int, how: str) -> None:
        self.at, self.how = at, how

    @vpkit.hookimpl
    def on_step_end(self, trainer, step, logs):
        if step == self.at:
            if self.how == "ctrl-c":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise RuntimeError("simulated crash")


@pytest.mark.parametrize("stop", ["steps", "ctrl-c", "crash"])
@pytest.mark.parametrize("manual", [False, True], ids=["auto", "manual"])
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path, fake_evaluate, stop, manual):
    train = {"grad_clip": 0.5, "log_every": 1}
    straight = make_trainer(tmp_path / "straight", manual=manual, train=train)
    straight.fit()

    run = tmp_path / "split"
    if stop == "steps":  # a first run of 3 steps (which validates and samples at its end), then 3 more
        make_trainer(run, manual=manual, train={**train, "steps": 3}).fit()
    elif stop == "ctrl-c":  # Ctrl-C after step 3: 'last' is written at step 3
        result = make_trainer(run, manual=manual, train=train, hook=hook_relay(Interrupt(3, "ctrl-c"))).fit()
        assert result.interrupted and result.step == 3
    else:  # a crash after step 5 with checkpoints every 2 steps: resume from step 4
        with pytest.raises(RuntimeError, match="simulated crash"):
            make_trainer(run, manual=manual, train={**train, "checkpoint_every": 2},
                         hook=hook_relay(Interrupt(5, "crash"))).fit()
    resumed_at = read_checkpoint(run / "checkpoints" / "last").meta["train"]["step"]
    assert resumed_at == {"steps": 3, "ctrl-c": 3, "crash": 4}[stop]

    # The resumed run starts from a differently initialised model: everything must come from the checkpoint.
    resumed = make_trainer(run, make_model(seed=123, manual=manual), train=train,
                           resume_from=run / "checkpoints" / "last")
    assert resumed.step == resumed_at
    result = resumed.fit()
    assert result.step == 6

    assert_same_tensors(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_tensors(load_file(tmp_path / "straight/checkpoints/last/model.safetensors"),
                        load_file(run / "checkpoints/last/model.safetensors"))
    for a, b in zip(straight.optimization.optimizers, resumed.optimization.optimizers, strict=True):
        assert_same_state(a.state_dict(), b.state_dict())
    if stop != "steps":  # metrics.jsonl of the resumed run holds each step once, as the straight run's does
        lines = [(r["step"], r["split"], r["values"]) for r in read_lines(run)]
        assert lines == [(r["step"], r["split"], r["values"]) for r in read_lines(tmp_path / "straight")]


def test_resume_restores_optimiser_schedule_position_and_best(tmp_path, fake_evaluate):
    first = make_trainer(tmp_path, train={"steps": 3})
    first.fit()
    saved = load_train_state(tmp_path / "checkpoints" / "last")
    assert saved["step"] == 3 and saved["data_position"] == {"epoch": 0, "batch": 3}
    assert saved["best"] == {"metric": "psnr", "value": 10.0, "step": 2}

    resumed = make_trainer(tmp_path, make_model(seed=7), resume_from=tmp_path / "checkpoints" / "last")
    (optimizer,) = resumed.optimization.optimizers
    assert_same_state(optimizer.state_dict(), first.optimization.optimizers[0].state_dict())
    assert optimizer.state_dict()["state"][0]["exp_avg"].abs().sum() > 0  # not a fresh Adam
    assert resumed.optimization.schedulers[0].last_epoch == 3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.9)  # StepLR(2, 0.9) after 3 steps
    assert resumed.step == 3 and resumed.data_position == (0, 3)
    assert resumed.best_metric == 10.0 and resumed.best_step == 2
    assert_same_tensors(resumed.model.state_dict(), first.model.state_dict())


def test_resume_rejects_finished_run_and_wrong_model(tmp_path, fake_evaluate):
    make_trainer(tmp_path, train={"steps": 2}).fit()
    last = tmp_path / "checkpoints" / "last"
    with pytest.raises(VpkitError, match="already at step 2.*raise --steps"):
        make_trainer(tmp_path, train={"steps": 2}, resume_from=last)
    with pytest.raises(VpkitError, match="do not fit this model's config"):
        make_trainer(tmp_path, resume_from=last, hidden=4)
    with pytest.raises(VpkitError, match="1 optimiser\\(s\\) and 1 schedule\\(s\\), the model now makes 2 and 2"):
        make_trainer(tmp_path, resume_from=last, manual=True)
    (last / TRAIN_STATE_FILE).unlink()
    with pytest.raises(VpkitError, match="train_state.pt is missing"):
        make_trainer(tmp_path, resume_from=last)


# -- data -----------------------------------------------------------------------------------------------------------


def _batches(dataset, cfg, start, count):
    batches = iter(train_loader(dataset, cfg, start, torch.device("cpu")))
    return [next(batches) for _ in range(count)]


def test_loader_batches_depend_only_on_seed_and_position():
    data = ToyVideosConfig(num_videos=10)
    cfg = TrainConfig(batch_size=3, seed=5)
    run = _batches(ToyVideos(data, "train"), cfg, (0, 0), 7)  # 3 batches per epoch (the 10th video is dropped)
    assert [(b.epoch, b.index) for b in run] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert all(b.clips.shape == (3, 6, 1, 8, 8) and b.clips.dtype == torch.uint8 for b in run)
    assert not torch.equal(run[0].clips, run[3].clips)  # a new permutation (and noise) each epoch

    torch.manual_seed(999)  # the global RNG must not matter
    restarted = _batches(ToyVideos(data, "train"), cfg, (1, 1), 3)
    for a, b in zip(run[4:], restarted, strict=True):
        assert torch.equal(a.clips, b.clips)

    workers = _batches(ToyVideos(data, "train"), cfg.model_copy(update={"num_workers": 2}), (0, 0), 7)
    for a, b in zip(run, workers, strict=True):
        assert (a.epoch, a.index) == (b.epoch, b.index) and torch.equal(a.clips, b.clips)

    reseeded = _batches(ToyVideos(data, "train"), cfg.model_copy(update={"seed": 6}), (0, 0), 1)
    assert not torch.equal(run[0].clips, reseeded[0].clips)


def test_loader_leaves_global_rng_alone_and_uses_getitems():
    dataset = BatchedToyVideos(ToyVideosConfig(), "train")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _batches(dataset, TrainConfig(batch_size=4), (0, 0), 3)
    assert torch.equal(torch.rand(3), expected)
    assert dataset.batch_calls == 3  # one __getitems__ call per batch, not one __getitem__ per video
    assert len(SeededClips(dataset, 0)) == len(dataset)


def test_loader_tells_epoch_aware_datasets_the_epoch():
    class EpochAware(ToyVideos):
        def __init__(self, config, split):
            super().__init__(config, split)
            self.epoch, self.seen = 0, []

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, index):
            self.seen.append(self.epoch)
            return super().__getitem__(index)

    dataset = EpochAware(ToyVideosConfig(num_videos=8), "train")
    _batches(dataset, TrainConfig(batch_size=4), (1, 1), 3)  # the rest of epoch 1, then epoch 2
    assert dataset.seen == [1] * 4 + [2] * 8


def test_data_errors_name_the_fix(tmp_path, fake_evaluate):
    with pytest.raises(VpkitError, match="fewer than one batch of 8; lower train.batch_size to at most 5"):
        make_trainer(tmp_path / "a", data={"num_videos": 5}, train={"batch_size": 8}).fit()
    with pytest.raises(VpkitError, match="clips have 3 frames, the model needs 2 \\+ 2 = 4"):
        make_trainer(tmp_path / "b", data={"seq_len": 3}).fit()


# -- divergence -----------------------------------------------------------------------------------------------------


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fake_evaluate):
    recorder = Recorder()
    trainer = make_trainer(tmp_path, nan_at_step=4, train={"checkpoint_every": 2}, hook=hook_relay(recorder))
    last = tmp_path / "checkpoints" / "last"
    expected = f"Loss became nan at step 5; the last good checkpoint is {re.escape(str(last))}"
    with pytest.raises(VpkitError, match=expected):
        trainer.fit()
    assert read_checkpoint(last).meta["train"]["step"] == 4
    weights = load_file(last / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert recorder.events[-1] == ("end", 4)


def test_nan_before_any_checkpoint_says_so(tmp_path, fake_evaluate):
    with pytest.raises(VpkitError, match="Loss became nan at step 1; no checkpoint was written yet"):
        make_trainer(tmp_path, nan_at_step=0).fit()
    assert not (tmp_path / "checkpoints" / "last").exists()


def test_non_finite_weights_are_never_saved(tmp_path, fake_evaluate):
    class Poison:
        @vpkit.hookimpl
        def on_step_end(self, trainer, step, logs):
            if step == 2:
                with torch.no_grad():
                    trainer.model.decoder.bias.fill_(float("inf"))

    with pytest.raises(VpkitError, match="Weight 'decoder.bias' became non-finite at step 2; no checkpoint"):
        make_trainer(tmp_path, train={"checkpoint_every": 2, "val_every": 5}, hook=hook_relay(Poison())).fit()
    assert not (tmp_path / "checkpoints" / "last").exists()


# -- outputs, validation, hooks -------------------------------------------------------------------------------------


def test_run_writes_metrics_checkpoints_and_samples(tmp_path, fake_evaluate):
    result = make_trainer(tmp_path, train={"steps": 5, "keep_step_checkpoints": True}).fit()
    assert result.step == 5 and result.last == tmp_path / "checkpoints" / "last"
    assert result.best == tmp_path / "checkpoints" / "best" and result.best_metric == 10.0

    lines = read_lines(tmp_path)
    assert [(r["step"], r["split"]) for r in lines] == [
        (2, "train"), (2, "val"), (4, "train"), (4, "val"), (5, "train"), (5, "val")]
    train_line = lines[0]
    assert set(train_line["values"]) == {"loss", "mse"} and train_line["values"]["loss"] > 0
    assert train_line["lr"] == pytest.approx(1e-2) and train_line["time"] >= 0
    assert lines[4]["lr"] == pytest.approx(1e-2 * 0.9**2)  # the rate step 5 used: StepLR(2, 0.9)
    assert lines[1]["values"] == {"psnr": 10.0}

    meta = read_checkpoint(result.last).meta
    assert meta["model"]["key"] == "toy" and meta["plugin"]["distribution"] == "vpkit-toy"
    assert meta["data"] == DATA_META
    assert meta["train"]["step"] == 5 and meta["train"]["best"] == {"psnr": 10.0}
    assert meta["train"]["preset"] == "tiny" and meta["train"]["config"]["steps"] == 5
    assert (result.last / TRAIN_STATE_FILE).is_file()
    assert read_checkpoint(result.best).meta["train"]["step"] == 2  # first validation; later ones only tie
    assert not (result.best / TRAIN_STATE_FILE).exists()  # best is for eval/export, resume uses last
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best", "last", "step-3", "step-5"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step-000003.gif", "step-000003.png", "step-000005.gif", "step-000005.png"]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

    (call, *_) = fake_evaluate.calls
    assert call == {"n_context": 2, "horizon": 2, "num_samples": 1, "metrics": ["psnr"], "num_videos": 4,
                    "training": False}


def test_sample_grid_shows_truth_and_samples(tmp_path, fake_evaluate):
    import imageio.v2 as imageio

    trainer = make_trainer(tmp_path, train={"steps": 1})
    trainer.fit()
    grid = imageio.imread(tmp_path / "samples" / "step-000001.png")
    # 4 videos x (truth + 3 samples) rows of 8-pixel frames with 2-pixel gaps; 4 frames per row
    assert grid.shape == (16 * 10 - 2, 4 * 10 - 2, 3)
    frames = imageio.mimread(tmp_path / "samples" / "step-000001.gif")
    assert len(frames) == 4


@pytest.mark.parametrize(("metric", "series", "best_step", "best_value"), [
    ("psnr", [1.0, 3.0, 2.0], 4, 3.0),  # higher is better
    ("err", [3.0, 1.0, 2.0], 4, 1.0),  # lower is better
    ("err", [1.0, 3.0, 0.5], 6, 0.5),
])
def test_best_checkpoint_follows_the_metric_direction(tmp_path, fake_evaluate, fresh_host, metric, series, best_step,
                                                      best_value):
    class ErrPlugin:
        @staticmethod
        @vpkit.hookimpl
        def register_metrics(register):
            register(MetricSpec(name="err", build=lambda options: None, higher_is_better=False))

    fresh_host.register_plugin(ErrPlugin, name="err-plugin")
    fake_evaluate.values = {metric: series}
    result = make_trainer(tmp_path, metrics=[metric], train={"val_metric": metric}).fit()
    assert result.best_metric == best_value
    best_meta = read_checkpoint(result.best).meta["train"]
    assert best_meta["step"] == best_step and best_meta["best"] == {metric: best_value}
    assert read_checkpoint(result.last).meta["train"]["best"] == {metric: best_value}
    assert load_train_state(result.last)["best"] == {"metric": metric, "value": best_value, "step": best_step}


def test_val_metric_must_be_validated(tmp_path, fake_evaluate):
    with pytest.raises(VpkitError, match="train.val_metric 'ssim' must be one of the validation metrics \\(psnr\\)"):
        make_trainer(tmp_path, train={"val_metric": "ssim"})


def test_without_val_set_samples_come_from_train_videos(tmp_path, fake_evaluate):
    result = make_trainer(tmp_path, val=False, train={"steps": 3}).fit()
    assert result.best is None and result.best_metric is None and not fake_evaluate.calls
    assert (tmp_path / "samples" / "step-000003.png").is_file()


def test_hooks_fire_in_order_through_the_host(tmp_path, fake_evaluate, fresh_host):
    recorder = Recorder()
    fresh_host.register_plugin(recorder, name="recorder")
    data_cfg = ToyVideosConfig()
    trainer = Trainer(
        make_model(), model_key="toy", plugin_meta={"name": "toy"},
        train_cfg=TrainConfig(steps=4, batch_size=4, val_every=2, val_videos=2, sample_every=10,
                              checkpoint_every=4, val_metric="psnr"),
        train_set=ToyVideos(data_cfg, "train"), val_set=ToyVideos(data_cfg, "test"), data_meta=DATA_META,
        out_dir=tmp_path, metrics=["psnr"], metric_options={}, device="cpu",
    )  # hook defaults to the host's relay
    trainer.fit()
    kinds = [(e[0], e[1]) for e in recorder.events]
    assert kinds == [("start", 0), ("step", 1), ("step", 2), ("val", 2), ("ckpt", 2), ("step", 3), ("step", 4),
                     ("val", 4), ("ckpt", 4), ("end", 4)]
    assert [e[2] for e in recorder.events if e[0] == "ckpt"] == ["best", "last"]
    assert set(recorder.events[1][2]) == {"loss", "mse"}
    assert recorder.events[3][2] == {"psnr": 10.0}


def test_validation_with_the_real_evaluator(tmp_path):
    result = make_trainer(tmp_path, metrics=["psnr", "ssim"], data={"size": 16},  # SSIM needs 11x11 or more
                          train={"steps": 2, "val_samples": 2}).fit()
    (val,) = [line for line in read_lines(tmp_path) if line["split"] == "val"]
    assert set(val["values"]) == {"psnr", "ssim"}
    assert 0 < val["values"]["psnr"] < 100 and -1 <= val["values"]["ssim"] <= 1
    assert result.best_metric == val["values"]["psnr"] and result.best is not None


# -- optimisation ---------------------------------------------------------------------------------------------------


def test_grad_clip_bounds_the_global_norm(tmp_path, fake_evaluate):
    class GradNorm:
        def __init__(self):
            self.norms = []

        @vpkit.hookimpl
        def on_step_end(self, trainer, step, logs):
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            self.norms.append((float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))),
                               logs["grad_norm"]))

    spy = GradNorm()
    make_trainer(tmp_path, train={"steps": 2, "grad_clip": 1e-3}, hook=hook_relay(spy)).fit()
    assert len(spy.norms) == 2
    for clipped, before in spy.norms:
        assert before > 1e-3 and clipped == pytest.approx(1e-3, rel=1e-3)


def test_manual_optimisation_steps_every_optimiser(tmp_path, fake_evaluate):
    trainer = make_trainer(tmp_path, manual=True, train={"steps": 2})
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    assert not torch.equal(before["encoder.0.weight"], after["encoder.0.weight"])  # first optimiser
    assert not torch.equal(before["decoder.weight"], after["decoder.weight"])  # second optimiser
    assert [s.last_epoch for s in trainer.optimization.schedulers] == [2, 2]


def test_bf16_mixed_trains_on_cpu(tmp_path, fake_evaluate):
    result = make_trainer(tmp_path, train={"steps": 2, "precision": "bf16-mixed"}).fit()
    assert result.step == 2
    assert all(torch.isfinite(v).all() for v in load_file(result.last / "model.safetensors").values())


def test_fp16_on_cpu_is_refused_with_alternatives():
    with pytest.raises(VpkitError, match="16-mixed is unsupported on cpu.*bf16-mixed or 32"):
        resolve_precision("16-mixed", "cpu")
    with pytest.raises(VpkitError, match="Unknown precision 'bf16'. Did you mean 'bf16-mixed'"):
        resolve_precision("bf16", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (fp16 gradient scaling is CUDA-only)")
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_trains_and_resumes_on_cuda(tmp_path, fake_evaluate, precision):
    train = {"precision": precision, "grad_clip": 1.0, "checkpoint_every": 2}
    make_trainer(tmp_path, train={**train, "steps": 2}, device="cuda").fit()
    state = load_train_state(tmp_path / "checkpoints" / "last")
    assert (state["scaler"] is not None) == (precision == "16-mixed") and "cuda" in state["rng"]
    resumed = make_trainer(tmp_path, make_model(seed=3), train={**train, "steps": 4}, device="cuda",
                           resume_from=tmp_path / "checkpoints" / "last")
    result = resumed.fit()
    assert result.step == 4
    assert all(torch.isfinite(v).all() for v in load_file(result.last / "model.safetensors").values())


# -- the output directory -------------------------------------------------------------------------------------------


def test_unwritable_out_dir_and_existing_run_are_refused(tmp_path, fake_evaluate):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(VpkitError, match="Cannot write to the output directory .*a-file/run.*--out"):
        make_trainer(blocker / "run")
    make_trainer(tmp_path / "run", train={"steps": 1}).fit()
    with pytest.raises(VpkitError, match="already holds a run. Resume it with --resume .*checkpoints/last"):
        make_trainer(tmp_path / "run")
