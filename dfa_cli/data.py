"""Data sets in torchvision's on-disk layout → tensors resident on the training device.

Files are read directly (idx for MNIST, pickles for CIFAR) so that a copy without CIFAR's
``filenames`` entry loads and a truncated file is reported in one sentence; torchvision is used
only to download a missing set, and only when ``data.download`` allows it.
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

ENV_VAR = "DFA_DATA_DIR"

# name → (folder under the root, train files, test files, label key, classes, torchvision class)
LAYOUTS = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
              ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"], None, 10, "MNIST"),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", 10, "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100, "CIFAR100"),
}


@dataclass
class Dataset:
    """Flattened inputs in [0, 1] (``x``: ``(N, C·H·W)`` float32) and int64 labels, on one device."""
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, int, int]
    n_classes: int
    root: str

    def to(self, device) -> "Dataset":
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return Dataset(**{**self.__dict__, **move})


def resolve_root(root) -> tuple[Path, str]:
    """The data root and where it came from: ``data.root``, else ``$DFA_DATA_DIR``, else ``./data``."""
    if root:
        return Path(str(root)).expanduser(), "data.root"
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR
    return Path("data"), "the default ./data"


def _missing(name: str, root: Path, source: str, folder: str, files: list[str], why: str) -> UserError:
    tried = ", ".join(str(root / folder / f) for f in files[:1])
    return UserError(
        f"Data set '{name}' not found: looked for {tried} (root from {source}) and {why}; "
        f"put torchvision's '{folder}' folder under data.root=… or ${ENV_VAR}, or allow "
        f"data.download=true on a machine with internet.")


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd
    cls = getattr(tvd, LAYOUTS[name][5])
    for train in (True, False):
        cls(str(root), train=train, download=True)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an idx file of unsigned bytes (bad header); replace it with a fresh copy.")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    start, size = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) != start + size:
        raise UserError(f"{path} is truncated or corrupt ({len(raw) - start} bytes of data, "
                        f"expected {size}); replace it with a fresh copy.")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def _read_cifar_pickle(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
        raise UserError(f"{path} is truncated or corrupt ({type(err).__name__}); "
                        f"replace it with a fresh copy.") from None
    if len(data) != len(labels):
        raise UserError(f"{path} is corrupt: {len(data)} images but {len(labels)} labels.")
    return data, labels


def _read_split(name: str, directory: Path, files: list[str], label_key):
    if name == "mnist":
        images, labels = (_read_idx(directory / f) for f in files)
        return images[:, None], labels.astype(np.int64)
    parts = [_read_cifar_pickle(directory / f, label_key) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _present(directory: Path, files: list[str]) -> bool:
    return all((directory / f).is_file() for f in files)


def load_dataset(name: str, root=None, download: bool = True, subset=None,
                 test_subset=None) -> Dataset:
    """Load ``name`` (mnist | cifar10 | cifar100) from the data root, downloading if allowed."""
    if name not in LAYOUTS:
        raise UserError(f"Unknown data set '{name}'; choose one of: {', '.join(LAYOUTS)}.")
    folder, train_files, test_files, label_key, n_classes, _ = LAYOUTS[name]
    root_path, source = resolve_root(root)
    directory = root_path / folder
    if not _present(directory, train_files + test_files):
        if not download:
            raise _missing(name, root_path, source, folder, train_files, "data.download=false")
        try:
            _download(name, root_path)
        except Exception as err:  # no internet, unwritable root, …: all end the same way
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise _missing(name, root_path, source, folder, train_files,
                           f"the download failed ({reason})") from None
    x_train, y_train = _read_split(name, directory, train_files, label_key)
    x_test, y_test = _read_split(name, directory, test_files, label_key)
    if subset:
        x_train, y_train = x_train[:subset], y_train[:subset]
    if test_subset:
        x_test, y_test = x_test[:test_subset], y_test[:test_subset]

    def to_unit(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)

    return Dataset(name, to_unit(x_train), torch.from_numpy(y_train), to_unit(x_test),
                   torch.from_numpy(y_test), tuple(x_train.shape[1:]), n_classes, str(root_path))
