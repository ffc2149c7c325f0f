"""Seeds for one purpose each, and the generator a dataset read draws its randomness from.

`derive_seed(seed, *keys)` mixes a run's seed with keys naming a purpose (e.g. `"batch", epoch, index`).
`read_generator(seed, stream, index)` is the generator for one read of item `index` of a dataset that draws at
random (a clip start, an augmentation): seeded from the dataset's seed, the stream's name, the index and one draw of
torch's global generator. vpkit's trainer seeds the global generators per batch (`SeededClips`), so a batch gets the
same draws whichever DataLoader worker builds it and after a resume, while repeated reads of an item differ; a
generator seeded once in `__init__` and advanced per read would instead repeat its draws in every worker.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A well-mixed 63-bit seed for one purpose, e.g. `derive_seed(seed, "batch", epoch, index)`."""
    words = [seed & (2**64 - 1)] + [zlib.crc32(k.encode()) if isinstance(k, str) else k & (2**64 - 1) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1


def read_generator(seed: int, stream: str, index: int) -> torch.Generator:
    """A generator for one read of item `index` (advances torch's global generator by one draw)."""
    draw = int(torch.randint(2**31 - 1, (1,)))
    return torch.Generator().manual_seed(derive_seed(seed, stream, index, draw))
