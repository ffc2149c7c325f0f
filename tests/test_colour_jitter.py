"""RIVER's clip-consistent colour jitter (`vpkit/engine/augment.py`) and CLEVRER's `colour_jitter` option."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from vpkit.core.config import TrainConfig, build_config, parse_overrides
from vpkit.core.errors import VpkitError
from vpkit.engine.augment import (
    ColourJitter,
    ColourJitterClips,
    draw_jitter,
    jitter_clip,
)
from vpkit.engine.h5videos import H5Videos, write_videos
from vpkit.engine.trainer import train_loader
from vpkit.plugins.datasets import clevrer


def random_clip(seed: int, frames: int = 4, channels: int = 3, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (frames, channels, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


class Clips(torch.utils.data.Dataset):
    """Fixed random uint8 clips with the attributes vpkit's datasets carry."""

    def __init__(self, count: int = 6, channels: int = 3) -> None:
        self.clips = [random_clip(i, channels=channels) for i in range(count)]
        self.frame_shape = (channels, 16, 16)
        self.fps, self.skipped, self.path = 10.0, 2, Path("train.h5")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.clips[index]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:  # must not bypass the jitter
        return [self.clips[i] for i in indices]

    def locate(self, index: int) -> tuple[int, int]:
        return index, 0


def test_draws_follow_rivers_order_and_formulas():
    for seed in range(5):
        reference = torch.Generator().manual_seed(seed)
        u1, u2, u3, u4 = (torch.rand(1, generator=reference).item() for _ in range(4))
        jitter = draw_jitter(torch.Generator().manual_seed(seed))
        expected = (1 + (u1 - 0.5) / 5, 1 + (u2 - 0.5) / 5, 1 + (u3 - 0.5) / 5, (u4 - 0.5) / 2)
        assert jitter == pytest.approx(expected, abs=1e-12)


def test_draws_lie_in_their_ranges():
    generator = torch.Generator().manual_seed(0)
    draws = np.array([draw_jitter(generator) for _ in range(2000)])
    low, high = draws.min(axis=0), draws.max(axis=0)
    assert np.all(low >= [0.9, 0.9, 0.9, -0.25]) and np.all(high < [1.1, 1.1, 1.1, 0.25])
    assert np.all(low < [0.901, 0.901, 0.901, -0.249]) and np.all(high > [1.099, 1.099, 1.099, 0.249])
    custom = np.array([draw_jitter(generator, 0.5, 0.0, 0.2, 0.5) for _ in range(500)])
    assert np.all(np.abs(custom - [1, 1, 1, 0]) <= [0.5, 0, 0.2, 0.5]) and custom[:, 1].tolist() == [1.0] * 500
    with pytest.raises(VpkitError, match="hue range"):
        draw_jitter(generator, hue=0.6)
    with pytest.raises(VpkitError, match="brightness range"):
        draw_jitter(generator, brightness=-0.1)


def test_applying_equals_torchvision_in_rivers_order():
    generator = torch.Generator().manual_seed(1)
    for seed in range(4):
        clip, jitter = random_clip(seed, frames=5, size=24), draw_jitter(generator)
        expected = TF.adjust_brightness(clip, jitter.brightness)
        expected = TF.adjust_contrast(expected, jitter.contrast)
        expected = TF.adjust_saturation(expected, jitter.saturation)
        expected = TF.adjust_hue(expected, jitter.hue)
        out = jitter_clip(clip, jitter)
        assert out.dtype == torch.uint8 and out.shape == clip.shape
        assert torch.equal(out, expected)


def test_every_frame_of_a_clip_gets_the_same_change():
    frame = random_clip(7, frames=1, size=24)
    clip = frame.repeat(6, 1, 1, 1)
    out = jitter_clip(clip, draw_jitter(torch.Generator().manual_seed(3)))
    assert all(torch.equal(out[t], out[0]) for t in range(6))
    assert not torch.equal(out, clip)


def test_zero_ranges_and_the_identity_give_back_the_input():
    clip = random_clip(2)
    assert torch.equal(jitter_clip(clip, ColourJitter()), clip)
    assert draw_jitter(torch.Generator(), 0, 0, 0, 0) == ColourJitter()
    dataset = Clips()
    wrapped = ColourJitterClips(dataset, 0, brightness=0, contrast=0, saturation=0, hue=0)
    assert all(torch.equal(wrapped[i], dataset[i]) for i in range(len(dataset)))


def test_grey_clips_get_brightness_and_contrast_only():
    clip = random_clip(4, channels=1)
    jitter = ColourJitter(1.08, 0.93, 1.05, 0.2)
    out = jitter_clip(clip, jitter)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    assert torch.equal(out, TF.adjust_contrast(TF.adjust_brightness(clip, 1.08), 0.93))
    assert torch.equal(out, jitter_clip(clip, jitter._replace(saturation=0.9, hue=-0.2)))  # ignored for grey
    wrapped = ColourJitterClips(Clips(channels=1), 5)
    assert wrapped[0].shape == (4, 1, 16, 16) and not torch.equal(wrapped[0], wrapped.dataset[0])


def test_bad_clips_are_refused():
    with pytest.raises(VpkitError, match="uint8 clip"):
        jitter_clip(random_clip(0).float(), ColourJitter())
    with pytest.raises(VpkitError, match="C = 1 or 3"):
        jitter_clip(random_clip(0, channels=2), ColourJitter())
    dataset = Clips()
    dataset.frame_shape = (4, 16, 16)
    with pytest.raises(VpkitError, match="not 4 channels"):
        ColourJitterClips(dataset, 0)


def read_all(wrapped: ColourJitterClips, torch_seed: int) -> list[torch.Tensor]:
    torch.manual_seed(torch_seed)
    return [wrapped[i] for i in range(len(wrapped))]


def test_the_wrapper_is_reproducible_from_its_seed_and_varies_between_reads():
    dataset = Clips()
    wrapped = ColourJitterClips(dataset, 11)
    first, again = read_all(wrapped, 0), read_all(ColourJitterClips(dataset, 11), 0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other_seed = read_all(ColourJitterClips(dataset, 12), 0)
    assert not any(torch.equal(a, b) for a, b in zip(first, other_seed))
    later = read_all(wrapped, 1)  # a later read (other global draw) of the same clips
    assert not any(torch.equal(a, b) for a, b in zip(first, later))
    assert not any(torch.equal(a, b) for a, b in zip(first, dataset.clips))
    jitters = {wrapped.jitter(0) for _ in range(20)}
    assert len(jitters) == 20
    copy = pickle.loads(pickle.dumps(wrapped))  # as a DataLoader worker gets it
    assert all(torch.equal(a, b) for a, b in zip(read_all(copy, 0), first))


def test_the_wrapper_forwards_what_consumers_read():
    dataset = Clips()
    wrapped = ColourJitterClips(dataset, 0)
    assert len(wrapped) == 6 and wrapped.frame_shape == (3, 16, 16)
    assert (wrapped.fps, wrapped.skipped, wrapped.path, wrapped.locate(3)) == (10.0, 2, Path("train.h5"), (3, 0))
    assert not hasattr(wrapped, "__getitems__") and not hasattr(wrapped, "set_epoch")
    with pytest.raises(AttributeError):
        wrapped.missing  # noqa: B018


def test_a_batch_is_the_same_for_any_number_of_loader_workers():
    wrapped = ColourJitterClips(Clips(count=8), 3)
    batches = {}
    for count in (0, 2):
        config = TrainConfig(batch_size=2, seed=5, num_workers=count)
        loader = train_loader(wrapped, config, (0, 0), torch.device("cpu"))
        batches[count] = [batch.clips for batch in itertools.islice(iter(loader), 4)]
        del loader
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2]))
    flat = torch.cat(batches[0])
    assert len({flat[i].float().mean().item() for i in range(len(flat))}) == len(flat)


# -- CLEVRER ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clevrer_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clevrer_jitter")
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        write_videos(root / f"{split}.h5", [(f"{split}{i}", rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
                                            for i in range(count)])
    return root


def build(root: Path, split: str, **data):
    config = build_config(clevrer.ClevrerConfig, {"data_root": str(root), "seq_len": 4, "test_seq_len": 6}, data)
    return clevrer.build(config, split)


def test_the_set_option_validates():
    data = parse_overrides(["data.colour_jitter=true"])["data"]
    assert build_config(clevrer.ClevrerConfig, data).colour_jitter is True
    assert clevrer.ClevrerConfig().colour_jitter is False
    with pytest.raises(VpkitError, match="colour_jitter"):
        build_config(clevrer.ClevrerConfig, {"colour_jitter": "sometimes"})


def test_clevrer_jitters_only_its_training_clips(clevrer_root):
    plain = {split: build(clevrer_root, split) for split in clevrer.SPLITS}
    jittered = {split: build(clevrer_root, split, colour_jitter=True) for split in clevrer.SPLITS}
    assert all(isinstance(plain[split], H5Videos) for split in clevrer.SPLITS)
    train = jittered["train"]
    assert isinstance(train, ColourJitterClips) and isinstance(train.dataset, H5Videos)
    assert len(train) == len(plain["train"]) == 3 * 9 and train.frame_shape == (3, 16, 16)
    torch.manual_seed(0)
    for index in (0, 13, 26):
        clip = train[index]
        assert clip.dtype == torch.uint8 and clip.shape == (4, 3, 16, 16)
        assert not torch.equal(clip, plain["train"][index])
    for split in ("val", "test"):
        assert isinstance(jittered[split], H5Videos)
        assert all(torch.equal(jittered[split][i], plain[split][i]) for i in range(len(plain[split])))
