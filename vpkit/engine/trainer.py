"""The training loop: plain PyTorch around the model's own `training_step`.

One step fetches a batch of uint8 clips, cuts them to `n_context + n_future` frames, converts them to float [0, 1] on
the device, runs `training_step` under the run's precision, back-propagates, clips the global gradient norm and steps
every optimiser and schedule. Around the steps: periodic validation through the evaluator, `best` / `last` /
`step-N` checkpoints, sample grids and GIFs, `metrics.jsonl`, TensorBoard events, a progress bar, and the trainer
events of the plugin hooks.

Resuming is exact. `train_state.pt` holds the optimisers, schedules, gradient scaler, step, data position
(epoch, batch) and every RNG state; each batch is built under RNGs seeded from (seed, epoch, batch), and validation
and sampling leave the RNGs and the model's buffers as they found them. So a run interrupted after k steps and
resumed ends with the same weights, bit for bit on a CPU, as a run that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vpkit.core.checkpoint import (
    load_state_dict,
    load_train_state,
    read_checkpoint,
    save_checkpoint,
)
from vpkit.core.config import TrainConfig
from vpkit.core.errors import VpkitError
from vpkit.core.model import Optimization, TrainContext, VideoPredictor
from vpkit.engine import distributed, media
from vpkit.engine.precision import resolve_precision
from vpkit.engine.seeding import derive_seed

TRAIN_STATE_VERSION = 1
SAMPLE_VIDEOS = 4  # videos in the sample grids
CHECKPOINT_HEADROOM = 4  # last + best, each briefly beside its previous version while it is replaced
SAMPLE_DRAWS = 3  # samples drawn per video for the grids


# -- seeds and RNG state ------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_cpu_rngs(seed: int) -> None:
    # Not torch.manual_seed: that would also reseed CUDA, whose stream belongs to the model.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every global RNG state (python, numpy, torch CPU, and CUDA when `device` is a GPU), in types that
    `torch.load(weights_only=True)` reads back."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # a GPU run resumed on a CPU keeps its CPU streams only
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            torch.cuda.set_rng_state(cuda_states[0])


def _as_tuples(value: Any) -> Any:
    # random.setstate wants tuples; a state that went through JSON-like containers may hold lists.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextlib.contextmanager
def preserve_rng(device: torch.device | None = None) -> Iterator[None]:
    """Run a block without disturbing any global RNG stream (validation, sampling, batch building)."""
    state = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(state)


# -- data -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchKey:
    """Which batch to build: its place in the run (epoch, index within the epoch) and the dataset indices."""

    epoch: int
    index: int
    indices: tuple[int, ...]


@dataclass
class Batch:
    """A built batch: uint8 clips `[B, T', C, H, W]` and the place it came from."""

    epoch: int
    index: int
    clips: Tensor

    def pin_memory(self) -> Batch:
        return Batch(self.epoch, self.index, self.clips.pin_memory())


class ResumableBatchSampler:
    """Batches of a seeded permutation per epoch, forever, starting from a position (epoch, batch index).

    Epoch e's order is `randperm(n)` under a generator seeded from (seed, e), so any position can be restarted
    without replaying the batches before it. The last incomplete batch of an epoch is dropped (constant batch
    statistics for BatchNorm, and a position that maps to the same videos whatever was run before).
    """

    def __init__(self, num_videos: int, batch_size: int, seed: int, start: tuple[int, int] = (0, 0)) -> None:
        if num_videos < batch_size:
            raise VpkitError(f"The train set holds {num_videos} videos, fewer than one batch of {batch_size}; "
                             f"lower train.batch_size to at most {num_videos}.")
        self.num_videos = num_videos
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = num_videos // batch_size
        self.start = start

    def order(self, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", epoch))
        return torch.randperm(self.num_videos, generator=generator)

    def __iter__(self) -> Iterator[BatchKey]:
        epoch, index = self.start
        while True:
            order = self.order(epoch)
            for b in range(index, self.batches_per_epoch):
                chunk = order[b * self.batch_size: (b + 1) * self.batch_size]
                yield BatchKey(epoch, b, tuple(chunk.tolist()))
            epoch, index = epoch + 1, 0


class SeededClips(Dataset):
    """Wraps a dataset so each batch is built under global RNGs seeded from (seed, epoch, batch index).

    On-the-fly datasets may draw from the global RNGs; seeding per batch makes a batch the same whichever worker
    builds it and whether or not the run was resumed, and leaves the caller's RNG streams untouched. A dataset with
    `set_epoch(epoch)` (on-the-fly Moving MNIST: fresh videos each epoch) is told each batch's epoch here, in the
    process that builds the batch, since a worker's copy of the dataset never sees calls made in the main process.
    A dataset with `__getitems__` builds the batch in one call.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitems__(self, key: BatchKey) -> Batch:
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(key.epoch)
        with preserve_rng():
            _seed_cpu_rngs(derive_seed(self.seed, "batch", key.epoch, key.index))
            getitems = getattr(self.dataset, "__getitems__", None)
            clips = getitems(list(key.indices)) if getitems else [self.dataset[i] for i in key.indices]
        if not isinstance(clips, Tensor):
            clips = torch.stack(list(clips))
        return Batch(key.epoch, key.index, clips)


def _keep_batch(batch: Batch) -> Batch:
    return batch


def _init_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process finishes its step and stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed()  # torch's per-worker seed: the loader's base seed + worker id
    random.seed(seed)
    np.random.seed(seed % 2**32)


def train_loader(dataset: Dataset, train_cfg: TrainConfig, start: tuple[int, int],
                 device: torch.device) -> DataLoader:
    """An endless loader of `Batch`es from position `start`, identical for any `num_workers`."""
    return DataLoader(
        SeededClips(dataset, train_cfg.seed),
        batch_sampler=ResumableBatchSampler(len(dataset), train_cfg.batch_size,  # type: ignore[arg-type]
                                            train_cfg.seed, start),
        num_workers=train_cfg.num_workers,
        collate_fn=_keep_batch,
        pin_memory=device.type == "cuda",
        worker_init_fn=_init_worker,
        # Its own generator: the loader's base seed must not be drawn from (and advance) the global torch RNG.
        generator=torch.Generator().manual_seed(derive_seed(train_cfg.seed, "loader")),
    )


# -- the trainer ----------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """How a run ended: the steps done, the checkpoints, and whether Ctrl-C stopped it early."""

    step: int
    last: Path
    best: Path | None
    best_metric: float | None
    interrupted: bool = False


class _StopOnCtrlC:
    """The first Ctrl-C asks the loop to stop after the current step, so `last` is written from a consistent
    state; a second one interrupts at once. Only the main thread can own signal handlers."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested = False
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> _StopOnCtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.console.print("[yellow]Stopping after this step and saving 'last' (Ctrl-C again to abort).[/]")

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            previous = self._previous if self._previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, previous)


class Trainer:
    """Trains `model` for `train_cfg.steps` steps; see the module docstring for what a run writes.

    :param model: the `VideoPredictor` to train (moved to `device`).
    :param model_key: its registered name, for the checkpoints.
    :param plugin_meta: the `plugin` section of the checkpoints (`vpkit.core.checkpoint.plugin_section(name)`).
    :param train_cfg: the trainer settings.
    :param train_set: map-style dataset of uint8 clips `[T', C, H, W]`, T' >= n_context + n_future.
    :param val_set: the dataset validation and sample grids read (its first videos), or None for neither.
    :param data_meta: the `data` section of the checkpoints (name, config, frame_shape, n_context, n_future).
    :param out_dir: the run directory: `checkpoints/`, `metrics.jsonl`, `tb/`, `samples/`.
    :param metrics: metric names scored at validation; `train_cfg.val_metric` must be one of them.
    :param metric_options: run-time options handed to the metrics (device, backbone paths).
    :param device: where to train.
    :param resume_from: a checkpoint with `train_state.pt` to continue from.
    :param hook: the pluggy hook relay that receives trainer events (default: the host's).
    :param console: where the progress bar and messages go (default: stderr).
    :param preset: the recipe name, recorded in the checkpoints.
    """

    def __init__(
        self,
        model: VideoPredictor,
        *,
        model_key: str,
        plugin_meta: Mapping[str, str],
        train_cfg: TrainConfig,
        train_set: Dataset,
        val_set: Dataset | None,
        data_meta: Mapping[str, Any],
        out_dir: Path | str,
        metrics: Sequence[str],
        metric_options: Mapping[str, Any] | None = None,
        device: torch.device | str = "cpu",
        resume_from: Path | str | None = None,
        hook: Any = None,
        console: Console | None = None,
        preset: str | None = None,
    ) -> None:
        from vpkit.core.plugins import get_host

        self.cfg = train_cfg
        self.world = distributed.World.from_env()
        self.device = distributed.device_for(torch.device(device), self.world)
        distributed.setup(self.device)
        distributed.check_batch(train_cfg.batch_size, train_cfg.accumulate, self.world)
        self.model = model.to(self.device)
        distributed.broadcast_parameters(self.model, self.world)
        self.model_key = model_key
        self.plugin_meta = dict(plugin_meta)
        self.train_set = train_set
        self.val_set = val_set
        self.data_meta = dict(data_meta)
        self.out_dir = Path(out_dir)
        self.metrics = list(metrics)
        self.metric_options = dict(metric_options or {})
        self.preset = preset
        self.hook = hook if hook is not None else get_host().pm.hook
        self.console = console if console is not None else Console(stderr=True)

        self.n_context: int = model.config.n_context  # type: ignore[attr-defined]
        self.n_future: int = model.config.n_future  # type: ignore[attr-defined]
        self.clip_length = self.n_context + self.n_future
        self.precision = resolve_precision(train_cfg.precision, self.device)
        self.higher_is_better = True
        # A model that predicts no frames (an image model such as DLPv2, n_future = 0) has nothing for the
        # evaluator or the sample grids to score or show: neither runs, and only `last` checkpoints are written.
        self.predicts = self.n_future > 0
        if val_set is not None and self.predicts:
            if train_cfg.val_metric not in self.metrics:
                raise VpkitError(f"train.val_metric '{train_cfg.val_metric}' must be one of the validation metrics "
                                 f"({', '.join(self.metrics) or 'none given'}).")
            self.higher_is_better = get_host().metrics.get(train_cfg.val_metric).higher_is_better

        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.last_path = self.checkpoint_dir / "last"
        self.best_path = self.checkpoint_dir / "best"
        self.step = 0
        self.data_position = (0, 0)  # (epoch, batch index) of the next batch
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.last_saved: Path | None = None  # the newest checkpoint written or resumed from: the last good one
        self.elapsed = 0.0  # training seconds over every session of this run
        self.resumed_from: Path | None = None
        self._resumed_rng: dict[str, Any] | None = None
        self._sample_clips: Tensor | None = None
        self._built_metrics: list[Any] | None = None
        self._tb: Any = None

        self.optimization: Optimization = model.configure_optimizers(train_cfg)
        if not self.optimization.optimizers:
            raise VpkitError(f"Model '{model_key}' returned no optimisers from configure_optimizers.")
        if self.optimization.manual and train_cfg.accumulate > 1:
            raise VpkitError(f"Model '{model_key}' optimises by hand, which train.accumulate cannot split into "
                             "micro-batches; use train.accumulate=1.")
        self._check_out_dir(fresh=resume_from is None)
        if resume_from is not None:
            self._load_resume_state(Path(resume_from))
        if self.step >= train_cfg.steps:
            raise VpkitError(f"{resume_from} is already at step {self.step}, and train.steps is {train_cfg.steps}; "
                             f"raise --steps to train further.")

    # -- setup --------------------------------------------------------------------------------------------------
    def _check_out_dir(self, fresh: bool) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe = self.out_dir / f".write-test-{id(self)}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise VpkitError(f"Cannot write to the output directory {self.out_dir} ({exc.strerror}); "
                             "choose a writable one with --out.") from None
        if fresh and self.last_path.exists():
            raise VpkitError(f"{self.out_dir} already holds a run. Resume it with --resume {self.last_path} "
                             "or pass another --out.")
        needed = self.checkpoint_bytes() * CHECKPOINT_HEADROOM
        free = shutil.disk_usage(self.out_dir).free
        if free < needed:
            raise VpkitError(f"Only {free / 2**20:.0f} MiB free under {self.out_dir}, and this run needs about "
                             f"{needed / 2**20:.0f} MiB for its checkpoints ({CHECKPOINT_HEADROOM} x "
                             f"{self.checkpoint_bytes() / 2**20:.0f} MiB: last and best, each written beside its "
                             "previous version); free some space or choose another --out.")

    def checkpoint_bytes(self) -> int:
        """Bytes of one checkpoint with its resume state: the weights and buffers, plus up to two optimiser tensors
        (Adam's moments) per parameter."""
        weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return weights + 2 * params

    def _load_resume_state(self, path: Path) -> None:
        ckpt = read_checkpoint(path)
        if ckpt.model_key != self.model_key:
            raise VpkitError(f"{path} holds model '{ckpt.model_key}', not '{self.model_key}'; resume it with the "
                             f"model it was trained with.")
        state = load_train_state(path)
        weights = load_state_dict(path)
        expected = self.model.state_dict()
        mismatched = sorted(set(expected) ^ set(weights)) + [
            k for k in expected if k in weights and weights[k].shape != expected[k].shape]
        if mismatched:
            raise VpkitError(f"{path}: weights do not fit this model's config (first mismatches: "
                             f"{', '.join(mismatched[:3])}); resume with the config the run was trained with.")
        self.model.load_state_dict(weights)
        opt = self.optimization
        if len(state["optimizers"]) != len(opt.optimizers) or len(state["schedulers"]) != len(opt.schedulers):
            raise VpkitError(f"{path} holds the state of {len(state['optimizers'])} optimiser(s) and "
                             f"{len(state['schedulers'])} schedule(s), the model now makes {len(opt.optimizers)} "
                             f"and {len(opt.schedulers)}; resume with the model config the run was trained with.")
        for optimizer, saved in zip(opt.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(opt.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        self.precision.load_state_dict(state.get("scaler"))
        self.step = int(state["step"])
        self.data_position = (int(state["data_position"]["epoch"]), int(state["data_position"]["batch"]))
        best = state.get("best") or {}
        if best.get("metric") == self.cfg.val_metric and best.get("value") is not None:
            self.best_metric, self.best_step = float(best["value"]), best.get("step")
        self.elapsed = float(state.get("elapsed", 0.0))
        self._resumed_rng = state["rng"]
        self.resumed_from = self.last_saved = path

    def _open_logs(self) -> None:
        """Start `metrics.jsonl` (a resumed run keeps the lines up to its step) and TensorBoard when installed."""
        self.metrics_path = self.out_dir / "metrics.jsonl"
        if not self.world.main:  # only rank 0 writes
            return
        kept: list[str] = []
        if self.resumed_from is not None and self.metrics_path.exists():
            for line in self.metrics_path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= self.step:
                        kept.append(line + "\n")
        self.metrics_path.write_text("".join(kept))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional dependency (pip install 'vpkit[tensorboard]')
            self._tb = None
        else:
            self._tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=self.step or None)

    # -- the loop -----------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until `train_cfg.steps`; returns where the checkpoints are. Ctrl-C stops after the current step,
        saves `last` and returns with `interrupted=True`. A non-finite loss raises `VpkitError`."""
        cfg = self.cfg
        loader = train_loader(self.train_set, cfg, self.data_position, self.device)  # checks the data first
        self._open_logs()
        if self.world.distributed:
            pass  # each step seeds every rank's RNGs from (seed, step, rank): see _train_step
        elif self._resumed_rng is not None:
            set_rng_state(self._resumed_rng)
        else:
            seed_everything(cfg.seed)
        self.model.train()
        started = time.perf_counter()
        self._window = {"time": started, "step": self.step, "sums": {}, "count": 0}
        interrupted, saved, batches = False, -1, None
        checked_amp = self.precision.dtype is None or not cfg.check_amp
        try:
            batches = iter(loader)
            if not self.predicts:
                self._print("the model predicts no frames (n_future = 0): no validation or sample grids, "
                            "`last` checkpoints only")
            self.hook.on_train_start(trainer=self)
            with self._progress() as progress, _StopOnCtrlC(self.console) as stop:
                task = progress.add_task("train", total=cfg.steps, completed=self.step, rate="", loss="")
                self._progress_bar, self._progress_task = progress, task
                while self.step < cfg.steps:
                    if distributed.any_rank(stop.requested, self.world):
                        interrupted = True
                        break
                    batch = next(batches)
                    if not checked_amp:
                        self._check_amp(batch)
                        checked_amp = True
                    logs = self._train_step(batch)
                    self.step += 1
                    self.data_position = self._next_position(batch)
                    self.elapsed += time.perf_counter() - started
                    started = time.perf_counter()
                    progress.update(task, completed=self.step)
                    self._log_train(logs)
                    self.hook.on_step_end(trainer=self, step=self.step, logs=logs)
                    final = self.step == cfg.steps
                    main = self.world.main  # validation and sample grids on rank 0 only
                    if main and self.val_set is not None and self.predicts and (
                            self.step % cfg.val_every == 0 or final):
                        self.validate()
                    if main and self.predicts and (self.step % cfg.sample_every == 0 or final):
                        self.write_samples()
                    if self.step % cfg.checkpoint_every == 0 or final:
                        self._save_last(step_copy=cfg.keep_step_checkpoints)
                        saved = self.step
                if interrupted and saved != self.step:
                    self._save_last(step_copy=False)
        finally:
            self.elapsed += time.perf_counter() - started
            del batches, loader  # stops loader workers now, not at garbage collection
            if self._tb is not None:
                self._tb.close()
            self.hook.on_train_end(trainer=self)
        distributed.barrier(self.world)  # every rank returns once rank 0's last checkpoint is written
        if interrupted and self.world.main:
            self.console.print(f"Interrupted at step {self.step}. Continue with --resume {self.last_path}")
        best = self.best_path if self.best_metric is not None and self.best_path.exists() else None
        return TrainResult(self.step, self.last_path, best, self.best_metric, interrupted)

    def _next_position(self, batch: Batch) -> tuple[int, int]:
        per_epoch = len(self.train_set) // self.cfg.batch_size  # type: ignore[arg-type]
        epoch, index = batch.epoch, batch.index + 1
        return (epoch + 1, 0) if index >= per_epoch else (epoch, index)

    def _to_video(self, clips: Tensor) -> Tensor:
        """uint8 `[B, T', C, H, W]` -> float `[B, T, C, H, W]` in [0, 1] on the device, T = n_context + n_future."""
        if clips.dtype != torch.uint8 or clips.ndim != 5:
            raise VpkitError(f"The dataset yields {clips.dtype} clips of shape {tuple(clips.shape[1:])}; "
                             "datasets must yield uint8 [T, C, H, W] tensors.")
        if clips.shape[1] < self.clip_length:
            raise VpkitError(f"The dataset's clips have {clips.shape[1]} frames, the model needs "
                             f"{self.n_context} + {self.n_future} = {self.clip_length}; make the dataset's clips "
                             "longer or lower model.n_context / model.n_future.")
        return clips[:, : self.clip_length].to(self.device, non_blocking=True).float().div_(255)

    def _train_step(self, batch: Batch) -> dict[str, float]:
        """One optimisation step; returns the floats to log (`loss`, the model's logs, `grad_norm` when clipping),
        averaged over processes and micro-batches. In a multi-process run this rank trains on its share of the
        batch and gradients are averaged across ranks before clipping and the optimiser steps."""
        video = self._to_video(distributed.shard(batch.clips, self.world))
        optimization = self.optimization
        world, parts = self.world, self.cfg.accumulate
        if world.distributed:
            seed = derive_seed(self.cfg.seed, "step", self.step, world.rank)
            _seed_cpu_rngs(seed)
            if self.device.type == "cuda":
                torch.cuda.manual_seed(seed)
        for optimizer in optimization.optimizers:
            optimizer.zero_grad(set_to_none=True)
        ctx = TrainContext(step=self.step, device=self.device, autocast=self.precision.autocast,
                           backward=self.precision.backward, optimizer_step=self._manual_optimizer_step)
        sums: dict[str, float] = {}
        for micro in video.chunk(parts) if parts > 1 else (video,):
            with self.precision.autocast():
                output = self.model.training_step(micro, ctx)
            if not optimization.manual:
                self.precision.backward(output.loss / parts if parts > 1 else output.loss)
            for key, value in {"loss": output.loss.detach(), **output.logs}.items():
                sums[key] = sums.get(key, 0.0) + float(value) / parts
        logs = distributed.mean_logs(sums, world)
        if not math.isfinite(logs["loss"]):
            raise self._diverged(f"Loss became {logs['loss']}", step=self.step + 1)
        if not optimization.manual:
            distributed.average_gradients(self.model.parameters(), world)
            for optimizer in optimization.optimizers:
                self.precision.unscale_(optimizer)
            if self.cfg.grad_clip is not None:
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
                logs["grad_norm"] = float(norm)
            for optimizer in optimization.optimizers:
                self.precision.step(optimizer)
        self.precision.update()
        distributed.broadcast_buffers(self.model, world)
        self._step_lr = float(optimization.optimizers[0].param_groups[0]["lr"])  # the rate this step used
        for scheduler in optimization.schedulers:
            scheduler.step()
        return logs

    def _check_amp(self, batch: Batch) -> None:
        """ultralytics-style AMP check: one step's loss on this batch, on a copy of the model, in fp32 and under
        autocast from the same RNG state; when they disagree (any rank), warn and train in fp32 instead. Nothing of
        the run changes: not the model, its BatchNorm statistics, the optimisers or the RNG streams."""
        import copy

        from vpkit.engine.precision import amp_disagreement, resolve_precision

        video = self._to_video(distributed.shard(batch.clips, self.world))
        probe = copy.deepcopy(self.model).train()
        losses = []
        for autocast in (contextlib.nullcontext, self.precision.autocast):
            ctx = TrainContext(step=self.step, device=self.device, autocast=autocast,
                               backward=lambda loss: None, optimizer_step=lambda optimizer: None)
            with preserve_rng(self.device), autocast(), torch.no_grad():
                seed = derive_seed(self.cfg.seed, "check-amp")
                _seed_cpu_rngs(seed)
                if self.device.type == "cuda":
                    torch.cuda.manual_seed(seed)
                losses.append(float(probe.training_step(video, ctx).loss.detach()))
        del probe
        problem = amp_disagreement(*losses)
        if distributed.any_rank(problem is not None, self.world):
            name = self.precision.name
            self.precision = resolve_precision("32", self.device)
            self.console.print(f"[yellow]warning:[/] {name} failed the AMP check ({problem or 'on another rank'}); "
                               "training in fp32 instead (train.check_amp=false skips the check).")

    def _manual_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """`ctx.optimizer_step` for models that optimise by hand: unscale, clip this optimiser's parameters, step.
        Under 16-mixed each optimiser may be stepped once per training step (one loss-scale update per step).
        In a multi-process run its gradients are averaged across ranks first."""
        distributed.average_gradients((p for group in optimizer.param_groups for p in group["params"]), self.world)
        self.precision.unscale_(optimizer)
        if self.cfg.grad_clip is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.precision.step(optimizer)

    def _diverged(self, what: str, step: int) -> VpkitError:
        if self.last_saved is not None:
            where = f"the last good checkpoint is {self.last_saved}"
        else:
            where = "no checkpoint was written yet"
        return VpkitError(f"{what} at step {step}; {where}. Lower the learning rate, set train.grad_clip, "
                          "or train with train.precision=32.")

    # -- logging ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _progress(self) -> Iterator[Progress]:
        disabled = self.console.quiet or not self.console.is_terminal or not self.world.main
        progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[loss]}"), TimeRemainingColumn(),
            console=self.console, disable=disabled, transient=False,
        )
        # Without a live bar (a log file, CI), a plain line per log interval shows the run is alive.
        self._plain_lines = disabled and not self.console.quiet
        with progress:
            yield progress

    def _print(self, message: str) -> None:
        if not self.console.quiet and self.world.main:
            self.console.print(message)

    def _write_line(self, record: dict[str, Any]) -> None:
        if not self.world.main:
            return
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _log_train(self, logs: Mapping[str, float]) -> None:
        """Average the step logs since the last line; every `log_every` steps write them out."""
        window = self._window
        for key, value in logs.items():
            window["sums"][key] = window["sums"].get(key, 0.0) + value
        window["count"] += 1
        if self.step % self.cfg.log_every and self.step != self.cfg.steps:
            return
        now = time.perf_counter()
        values = {k: v / window["count"] for k, v in window["sums"].items()}
        rate = (self.step - window["step"]) / max(now - window["time"], 1e-9)
        lr = self._step_lr
        self._write_line({"step": self.step, "split": "train", "values": values, "lr": lr,
                          "time": round(self.elapsed, 3)})
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"train/{key}", value, self.step)
            self._tb.add_scalar("train/lr", lr, self.step)
        self._progress_bar.update(self._progress_task, rate=f"{rate:.2f} step/s", loss=f"loss {values['loss']:.4g}")
        if self._plain_lines:
            self._print(f"step {self.step}/{self.cfg.steps}  loss {values['loss']:.4g}  {rate:.2f} step/s")
        self._window = {"time": now, "step": self.step, "sums": {}, "count": 0}

    # -- validation and samples -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _side_effect_free(self) -> Iterator[None]:
        """Evaluation mode, no gradients, and afterwards the RNG streams and buffers exactly as before: a model that
        samples with BatchNorm in train mode (SVG-LP's generation does) must not move its running statistics."""
        buffers = {name: b.detach().clone() for name, b in self.model.named_buffers()}
        was_training = self.model.training
        self.model.eval()
        try:
            with preserve_rng(self.device), torch.no_grad():
                yield
        finally:
            self.model.train(was_training)
            with torch.no_grad():
                for name, b in self.model.named_buffers():
                    b.copy_(buffers[name])

    def validate(self) -> dict[str, float]:
        """Score `val_videos` videos of the val set with the evaluator (best of `val_samples`); update `best`."""
        from vpkit.engine import evaluator

        assert self.val_set is not None
        cfg = self.cfg
        if self._built_metrics is None:  # once per run: LPIPS loads a network when built
            options = {"device": str(self.device), **self.metric_options}
            self._built_metrics = [evaluator.build_metric(name, options) for name in self.metrics]
        with self._side_effect_free():
            result = evaluator.evaluate(
                self.model, self.val_set, n_context=self.n_context, horizon=self.n_future,
                num_samples=cfg.val_samples, metrics=self._built_metrics, metric_options=self.metric_options,
                num_videos=min(cfg.val_videos, len(self.val_set)),  # type: ignore[arg-type]
                seed=cfg.seed, device=self.device, progress=False,
            )
        values = {name: float(result.summary[name]["best"]["mean"]) for name in self.metrics}
        self._write_line({"step": self.step, "split": "val", "values": values, "time": round(self.elapsed, 3)})
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"val/{key}", value, self.step)
        value = values[cfg.val_metric]
        improved = math.isfinite(value) and (
            self.best_metric is None
            or (value > self.best_metric if self.higher_is_better else value < self.best_metric))
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        self._print(f"step {self.step} val  {shown}" + ("  [green]new best[/]" if improved else ""))
        if improved:
            self.best_metric, self.best_step = value, self.step
        self.hook.on_validation_end(trainer=self, step=self.step, metrics=values)
        if improved:
            self._save(self.best_path, with_state=False)
        return values

    def write_samples(self) -> tuple[Path, Path]:
        """A PNG grid and a GIF of samples on a fixed batch of val videos (train videos without a val set).

        The grid has, per video, the true clip, then one row per sample (context frames, then predictions);
        the GIF plays context | samples | ground truth side by side, one video under the other."""
        with self._side_effect_free():
            video = self._to_video(self._fixed_clips())
            context, truth = video[:, : self.n_context], video[:, self.n_context:]
            generator = torch.Generator(self.device).manual_seed(derive_seed(self.cfg.seed, "samples"))
            samples = self.model.predict(context, self.n_future, num_samples=SAMPLE_DRAWS, generator=generator)
        rows = []
        for i in range(video.shape[0]):
            rows.append(video[i])
            rows += [torch.cat([context[i], s]) for s in samples[i]]
        stem = self.out_dir / "samples" / f"step-{self.step:06d}"
        png = media.save_png(stem.with_suffix(".png"), media.grid_image(torch.stack(rows)))
        panels = [media.sample_panel_frames(context[i], samples[i], truth[i]) for i in range(video.shape[0])]
        gif = media.save_gif(stem.with_suffix(".gif"), media.stack_panels(panels))
        return png, gif

    def _fixed_clips(self) -> Tensor:
        if self._sample_clips is None:
            source = self.val_set if self.val_set is not None else self.train_set
            count = min(SAMPLE_VIDEOS, len(source))  # type: ignore[arg-type]
            with preserve_rng():
                _seed_cpu_rngs(derive_seed(self.cfg.seed, "sample-clips"))
                self._sample_clips = torch.stack([source[i] for i in range(count)])
        return self._sample_clips

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def train_state(self) -> dict[str, Any]:
        """Everything `--resume` needs beyond the weights (read back with `weights_only=True`)."""
        return {
            "version": TRAIN_STATE_VERSION,
            "step": self.step,
            "data_position": {"epoch": self.data_position[0], "batch": self.data_position[1]},
            "optimizers": [o.state_dict() for o in self.optimization.optimizers],
            "schedulers": [s.state_dict() for s in self.optimization.schedulers],
            "scaler": self.precision.state_dict(),
            "rng": rng_state(self.device),
            "best": {"metric": self.cfg.val_metric, "value": self.best_metric, "step": self.best_step},
            "elapsed": self.elapsed,
            "precision": self.precision.name,
        }

    def _save_last(self, step_copy: bool) -> None:
        self._save(self.last_path, with_state=True)
        if step_copy:
            self._save(self.checkpoint_dir / f"step-{self.step}", with_state=True)

    def _save(self, path: Path, *, with_state: bool) -> Path:
        """Write one checkpoint, refusing non-finite weights so the last good checkpoint survives a divergence."""
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise self._diverged(f"Weight '{name}' became non-finite", step=self.step)
        if not self.world.main:  # rank 0 writes every file; the others only remember where it went
            if with_state:
                self.last_saved = path
            return path
        train_meta: dict[str, Any] = {
            "step": self.step,
            "best": {self.cfg.val_metric: self.best_metric} if self.best_metric is not None else {},
            "config": self.cfg.model_dump(mode="json"),
        }
        if self.preset is not None:
            train_meta["preset"] = self.preset
        save_checkpoint(path, self.model, model_key=self.model_key, plugin=self.plugin_meta, data=self.data_meta,
                        train=train_meta, train_state=self.train_state() if with_state else None)
        if with_state:
            self.last_saved = path
        self.hook.on_checkpoint_saved(trainer=self, path=path)
        return path
