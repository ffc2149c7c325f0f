"""KTH human actions (Schuldt, Laptev and Caputo 2004) as SVG and SRVP use it: 64x64 grey, 25 fps, whole videos.

Source: the six public zips of https://www.csc.kth.se/cvap/actions/ (boxing, handclapping, handwaving, jogging,
running, walking; 599 AVI files `personXX_ACTION_dY_uncomp.avi`, 160x120, 25 fps). `vpkit data prepare kth --root
DIR` downloads them into `DIR/raw` (no checksum is published: each zip's CRCs are tested and its SHA-256 pinned), or
uses the zips or the AVI files already there (`DIR/raw/*.zip`, `DIR/raw/**/*.avi`).

Conversion, as SRVP's `preprocessing/kth/convert.py` (itself SVG's `convert_kth.lua`): every AVI goes through ffmpeg
(the binary imageio-ffmpeg ships) with `-r 25 -s 64x64` (`--size 128` for SVG's 128x128 KTH) — the same scaler (swscale bicubic, aspect ratio squashed)
and frame-rate conversion — to RGB, of which the first channel is kept (`data/kth.py` reads `[:, :, 0]`). Whole
videos are kept; KTH's segment annotations are ignored.

Splits (`DIR/train.h5`, `DIR/test.h5`):
- train.h5: every video of persons 1–20 (SVG's and SRVP's code; the KTH paper and MCnet use 1–16 for training —
  `train_persons` picks at load time). `val` is SRVP's 95/5 split of those videos (`RandomState(42)`); SRVP shuffles
  them in `os.listdir` order, which depends on the filesystem, so vpkit shuffles them in name order within each class.
- test.h5: SRVP's fixed test set (`make_test_set.py`, seed 42): 1000 clips of 40 frames, each a random class, person
  21–25, trial d1–d4 and start drawn with numpy's legacy `RandomState` in SRVP's order, so the same clips are chosen
  from the same videos. Names record `personXX_ACTION_dY@start`.

A video ffmpeg cannot decode is skipped with a warning naming it; if the test draw needs it, preparation stops.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from pydantic import Field

import vpkit
from vpkit.core.errors import VpkitError
from vpkit.core.specs import DatasetSpec
from vpkit.engine.download import RemoteFile, fetch_file
from vpkit.engine.prepared import (
    RAW,
    PreparedConfig,
    PrepareOptions,
    holdout,
    need_files,
    open_split,
    resolve_root,
    split_counts,
    split_path,
    splits_ready,
    summary,
    write_split,
)

NAME = "kth"
CLASSES = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")  # SRVP's order (draws use it)
MIRRORS: tuple[str, ...] = ("https://www.csc.kth.se/cvap/actions/", "http://www.nada.kth.se/cvap/actions/")
IMAGE_SIZE = 64
FRAME_RATE = 25
TEST_PERSONS = (21, 26)  # numpy randint bounds: persons 21..25
TEST_TRIALS = (1, 5)  # d1..d4
_VIDEO = re.compile(r"person(\d\d)_([a-z]+)_d(\d)(?:_uncomp)?\.avi$")


class KTHConfig(PreparedConfig):
    seq_len: int = Field(20, gt=0, description="frames per training clip (SRVP/SVG: 10 context + 10 predicted)")
    test_seq_len: int | None = Field(40, gt=0, description="frames per test clip (10 context + 30 predicted; "
                                     "the test file holds 40)")
    train_persons: list[int] = Field(list(range(1, 21)), description="persons whose videos train (SVG/SRVP: 1-20; "
                                     "the KTH paper: 1-16)")
    rgb: bool = Field(False, description="repeat the grey frames to three equal channels (RIVER's KTH HDF5 files "
                      "hold RGB frames; its autoencoder takes 3 channels)")


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise VpkitError(f"{path.name} is not a complete zip ({exc})") from None
    if bad is not None:
        raise VpkitError(f"{path.name}: {bad} fails its CRC check")


def remote_files() -> list[RemoteFile]:
    return [RemoteFile(f"{action}.zip", verify=_check_zip) for action in CLASSES]


def _find_videos(raw: Path) -> dict[str, Path]:
    """`personXX_ACTION_dY` -> AVI path, for every AVI under `raw`."""
    videos = {}
    for path in sorted(raw.rglob("*.avi")):
        match = _VIDEO.search(path.name)
        if match and match.group(2) in CLASSES:
            videos[path.name.removesuffix(".avi").removesuffix("_uncomp")] = path
    return videos


def _gather(root: Path, options: PrepareOptions, mirrors: tuple[str, ...]) -> dict[str, Path]:
    """The AVI files in ROOT/raw, extracting (and first downloading) the class zips whose videos are absent."""
    raw = root / RAW
    raw.mkdir(parents=True, exist_ok=True)
    videos = _find_videos(raw)
    present = {name.split("_")[1] for name in videos}
    missing = [remote for remote in remote_files() if remote.name.removesuffix(".zip") not in present]
    if missing and not options.download and not all((raw / r.name).is_file() for r in missing):
        raise need_files(NAME, root, [r.name for r in missing if not (raw / r.name).is_file()],
                         f"Fetch them from {MIRRORS[0]} (or run without --no-download).")
    for remote in missing:
        hint = f"put {remote.name} from {MIRRORS[0]} in {raw} and run `vpkit data prepare kth --root {root}` again"
        options.status(f"kth: {remote.name}")
        archive = fetch_file(remote, raw, mirrors=mirrors, progress=options.progress, offline_hint=hint)
        options.status(f"kth: extracting {archive.name}")
        target = raw / remote.name.removesuffix(".zip")
        target.mkdir(exist_ok=True)
        with zipfile.ZipFile(archive) as source:
            for member in source.infolist():
                if member.filename.endswith(".avi"):  # by base name: nothing is written outside `target`
                    final = target / Path(member.filename).name
                    part = final.with_name(final.name + ".part")
                    with source.open(member) as data, open(part, "wb") as sink:
                        shutil.copyfileobj(data, sink)
                    part.replace(final)
    return _find_videos(raw)


def decode(path: Path, size: int = IMAGE_SIZE, rate: int = FRAME_RATE) -> np.ndarray:
    """`ffmpeg -i PATH -r RATE -s SIZExSIZE` to RGB, first channel: uint8 [T, SIZE, SIZE, 1] (SRVP's frames)."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-r", str(rate),
               "-s", f"{size}x{size}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        raise VpkitError(f"ffmpeg cannot decode it ({reason[-1] if reason else f'exit {result.returncode}'})")
    frames = np.frombuffer(result.stdout, np.uint8)
    if frames.size == 0 or frames.size % (size * size * 3):
        raise VpkitError("ffmpeg decoded no whole frame")
    return frames.reshape(-1, size, size, 3)[..., :1].copy()


def test_draws(lengths: Callable[[str], int], size: int = 1000, seq_len: int = 40,
               seed: int = 42) -> list[tuple[str, int]]:
    """SRVP's KTH test clips: (video, start) pairs drawn in `make_test_set.py`'s order from `RandomState(seed)`;
    `lengths(video)` gives a video's frame count."""
    rng = np.random.RandomState(seed)
    draws = []
    for _ in range(size):
        action = CLASSES[rng.randint(len(CLASSES))]
        person = rng.randint(*TEST_PERSONS)
        trial = rng.randint(*TEST_TRIALS)
        video = f"person{person:02d}_{action}_d{trial}"
        draws.append((video, int(rng.randint(lengths(video) - seq_len + 1))))
    return draws


def prepare(root: Path, options: PrepareOptions, *, mirrors: tuple[str, ...] = MIRRORS, test_size: int = 1000,
            test_length: int = 40) -> str:
    """Download (unless in ROOT/raw), decode with ffmpeg and write ROOT/train.h5 and ROOT/test.h5."""
    if splits_ready(root, ("train", "test")) and not options.force:
        return summary(NAME, root, split_counts(root, ("train", "test")))
    size = options.size or IMAGE_SIZE
    videos = _gather(root, options, mirrors)
    if not videos:
        raise need_files(NAME, root, [f"{c}.zip" for c in CLASSES], f"Fetch them from {MIRRORS[0]}.")
    decoded: dict[str, np.ndarray] = {}
    broken: dict[str, str] = {}

    def load(name: str) -> np.ndarray:
        if name not in decoded:
            if name not in videos:
                raise VpkitError(f"the KTH test draw needs {name}, which is not in {root / RAW}")
            try:
                decoded[name] = decode(videos[name], size)
            except VpkitError as exc:
                broken[name] = str(exc)
                raise VpkitError(f"the KTH test draw needs {name}, which cannot be read: {exc}") from None
        return decoded[name]

    def train_videos() -> Iterator[tuple[str, np.ndarray]]:
        for action in CLASSES:
            for name in sorted(n for n in videos if n.split("_")[1] == action and int(n[6:8]) < TEST_PERSONS[0]):
                options.status(f"kth train: {name}")
                try:
                    yield name, decode(videos[name], size)
                except VpkitError as exc:
                    options.warn(f"skipped {videos[name]}: {exc}")

    write_split(root / "train.h5", train_videos(), options, fps=FRAME_RATE)
    options.status("kth test: drawing SRVP's clips")
    draws = test_draws(lambda name: len(load(name)), size=test_size, seq_len=test_length)
    write_split(root / "test.h5", ((f"{name}@{start}", load(name)[start:start + test_length])
                                   for name, start in draws), options, fps=FRAME_RATE)
    return summary(NAME, root, split_counts(root, ("train", "test")))


def _train_indices(config: KTHConfig, split: str) -> list[int]:
    """Videos of `train.h5` for `split` ("train" or "val"): those of `train_persons`, then SRVP's 95/5 holdout."""
    import h5py

    path = split_path(resolve_root(config, NAME), "train", NAME)
    with h5py.File(path, "r") as file:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in file["names"][:]]
    persons = set(config.train_persons)
    chosen = [i for i, name in enumerate(names) if int(name[6:8]) in persons]
    if not chosen:
        raise VpkitError(f"{path} holds no video of persons {sorted(persons)}.")
    train, val = holdout(len(chosen))
    return [chosen[i] for i in (train if split == "train" else val)]


def build(config: KTHConfig, split: str):
    if split == "test":
        return open_split(config, "test", NAME, rgb=config.rgb)
    return open_split(config, split, NAME, file="train", videos=_train_indices(config, split),
                      clips="random" if split == "train" else "first", rgb=config.rgb)


@vpkit.hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(DatasetSpec(
        name=NAME,
        config_cls=KTHConfig,
        build=build,
        splits=("train", "val", "test"),
        description="KTH human actions, 64x64 grey, 25 fps (SVG/SRVP): persons 1-20 train (95/5 val), SRVP's "
                    "1000 test clips of 40 frames from persons 21-25",
        source=MIRRORS[0],
        size="1.1 GB of zips; about 1.2 GB converted at 64x64 (4.6 GB at 128x128)",
        licence="free for research; cite Schuldt, Laptev and Caputo, ICPR 2004",
        prepare=prepare,
        access="download",
    ))
