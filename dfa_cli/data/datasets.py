"""Data sets in torchvision's on-disk layout → tensors resident on the training device.

Files are read directly (idx for MNIST, pickles for CIFAR) so that a copy without CIFAR's
``filenames`` entry loads and a truncated file is reported in one sentence; torchvision is used
only to download a missing set, and only when ``data.download`` allows it.

Preprocessing (:func:`preprocess`): ``none`` keeps pixels in [0, 1]; ``simple`` and ``channel``
standardize with the training set's mean and std, over all inputs or per colour channel (the
author's Data.lua's other ``-normalization`` modes); ``zca`` whitens train and test inputs with the
training set's ZCA statistics (the paper's conv rows), computed once in float64 and cached in a
cache folder (never in the data root, which may be read-only).
"""
from __future__ import annotations

import gzip
import io
import hashlib
import logging
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..runs.errors import UserError
from ..runs.records import atomic_write_bytes

ENV_VAR = "DFA_DATA_DIR"
CACHE_ENV_VAR = "DFA_CACHE_DIR"
PREPROCESS = ("none", "simple", "channel", "zca")
SPLITS = ("test", "validation")
VALIDATION_SIZE = 10_000   # -validate in the author's Data.lua: the last 10k training examples
ZCA_PIXEL_SCALE = 255.0   # zca_eps is in 0..255 pixel units, as in the author's whitening of byte-valued data
ZCA_VERSION = 1           # bump when the statistics' definition changes: old cache files are then ignored

log = logging.getLogger(__name__)

# name → (folder under the root, train files, test files, label key, classes, torchvision class)
LAYOUTS = {
    "mnist": ("MNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
              ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"], None, 10, "MNIST"),
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", 10, "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100, "CIFAR100"),
}
# What each data set's inputs are (C, H, W), known before loading (config validation).
INPUT_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}


@dataclass
class Dataset:
    """Flattened inputs (``x``: ``(N, C·H·W)`` float32) and int64 labels, on one device.

    Inputs are in [0, 1] (``preprocess == "none"``; :func:`scale_to_unit`), standardized
    (``"simple"``, ``"channel"``; :func:`standardize`) or ZCA-whitened (``"zca"``).
    """
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, int, int]
    n_classes: int
    root: str
    preprocess: str = "none"
    eval_split: str = "test"   # what x_test is: the test set, or the validation split of the training set
    pixel_span: float = 255.0  # the byte range that [0, 1] stands for (scale_to_unit); ZCA works in pixel units

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


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download made (torchvision makes them first), deepest first,
    as long as they are empty: a refused run leaves no empty data/MNIST/raw behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _present(directory: Path, files: list[str]) -> bool:
    return all((directory / f).is_file() for f in files)


def _check_subset(key: str, n, available: int, part: str, directory: Path) -> None:
    """A subset cuts the first ``n``; more than there are would silently train on them all."""
    if n and n > available:
        raise UserError(f"{key}={n} is more than the {available} {part} images in {directory}; "
                        f"use at most {available}, or {key}=null for all of them.")


def load_dataset(name: str, root=None, download: bool = True, subset=None,
                 test_subset=None, split: str = "test") -> Dataset:
    """Load ``name`` (mnist | cifar10 | cifar100) from the data root, downloading if allowed.

    ``split="validation"`` (the author's ``-validate``): train on the training set but its last
    ``VALIDATION_SIZE`` examples (MNIST 50k, CIFAR 40k), and evaluate on those instead of the test
    set. ``subset``/``test_subset`` then cut the first N of the training/validation parts.
    """
    if split not in SPLITS:
        raise UserError(f"data.split={split!r} is not supported; choose one of: {', '.join(SPLITS)}.")
    if name not in LAYOUTS:
        raise UserError(f"Unknown data set '{name}'; choose one of: {', '.join(LAYOUTS)}.")
    folder, train_files, test_files, label_key, n_classes, _ = LAYOUTS[name]
    root_path, source = resolve_root(root)
    directory = root_path / folder
    if not _present(directory, train_files + test_files):
        if not download:
            raise _missing(name, root_path, source, folder, train_files, "data.download=false")
        made = [d for d in (directory, *directory.parents) if not d.exists()]   # deepest first
        try:
            _download(name, root_path)
        except Exception as err:  # no internet, unwritable root, …: all end the same way
            _remove_empty(made)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise _missing(name, root_path, source, folder, train_files,
                           f"the download failed ({reason})") from None
    x_train, y_train = _read_split(name, directory, train_files, label_key)
    if split == "validation":
        if len(x_train) <= VALIDATION_SIZE:
            raise UserError(f"data.split=validation needs more than {VALIDATION_SIZE} training examples; "
                            f"{directory} holds {len(x_train)}.")
        cut = len(x_train) - VALIDATION_SIZE
        x_test, y_test = x_train[cut:], y_train[cut:]
        x_train, y_train = x_train[:cut], y_train[:cut]
    else:
        x_test, y_test = _read_split(name, directory, test_files, label_key)
    eval_part = "validation" if split == "validation" else "test"
    _check_subset("data.subset", subset, len(x_train), "training", directory)
    _check_subset("data.test_subset", test_subset, len(x_test), eval_part, directory)
    if subset:
        x_train, y_train = x_train[:subset], y_train[:subset]
    if test_subset:
        x_test, y_test = x_test[:test_subset], y_test[:test_subset]

    x_train_unit, x_test_unit, span = scale_to_unit(x_train, x_test)
    return Dataset(name, x_train_unit, torch.from_numpy(y_train), x_test_unit,
                   torch.from_numpy(y_test), tuple(x_train.shape[1:]), n_classes, str(root_path),
                   eval_split=split, pixel_span=span)


def scale_to_unit(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Flattened float32 inputs in [0, 1] as the author's Data.lua makes them without ``-whiten``
    (``-normalization scale``): minus the training set's global minimum, divided by the maximum
    of what is left; the test inputs with the same two numbers. On the full MNIST and CIFAR
    training sets that is exactly ``x / 255`` (their pixels span 0..255). Also returns that span."""
    low = np.float32(x_train.min()) if x_train.size else np.float32(0)
    span = np.float32(x_train.max()) - low if x_train.size else np.float32(255)
    span = span if span > 0 else np.float32(1)   # a constant image set: only shifted

    def unit(x: np.ndarray) -> torch.Tensor:
        flat = x.reshape(len(x), -1).astype(np.float32)
        return torch.from_numpy((flat - low) / span if low else flat / span)

    return unit(x_train), unit(x_test), float(span)


# ---- preprocessing ----------------------------------------------------------------------------
def resolve_cache_dir(cache_dir=None) -> Path:
    """``data.cache_dir``, else ``$DFA_CACHE_DIR``, else ``$XDG_CACHE_HOME/dfa-cli`` (``~/.cache/dfa-cli``)."""
    if cache_dir:
        return Path(str(cache_dir)).expanduser()
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "dfa-cli"


def zca_statistics(x: torch.Tensor, eps: float = 1e-5, via_gram: bool | None = None,
                   pixel_scale: float = ZCA_PIXEL_SCALE
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA whitening of ``x`` (``(N, D)``, pixels in [0, 1]): ``mean`` ``(D,)`` and ``P`` ``(D, D)``.

    Whitened data is ``(x − mean) @ P``. In float64: covariance ``C = X̄ᵀX̄ / (N − 1)`` of the
    pixels in 0..255 units, ``C = U diag(λ) Uᵀ``, ``P = U diag(1/√(λ + eps)) Uᵀ`` rescaled to act
    on [0, 1] inputs — exactly unsup.zca_whiten as the author's code applied it to byte-valued
    CIFAR (so ``eps`` = 1e-5 barely touches any direction; on [0, 1] units it would damp the
    smallest ones). Returned in float32, the precision the data is trained in.

    With fewer examples than dimensions (``via_gram``, default: when N − 1 < D) the same ``P`` comes
    from the N×N Gram matrix: the covariance's nonzero eigenpairs are the Gram's, and the
    directions no example spans (λ = 0) get 1/√eps. Far faster for small subsets.
    """
    if len(x) < 2:
        raise UserError(f"ZCA whitening needs at least 2 training examples, got {len(x)}; "
                        f"use a larger data.subset or data.preprocess=none.")
    X = x.detach().cpu().numpy().astype(np.float64) * pixel_scale
    n, d = X.shape
    mean = X.mean(axis=0)
    X -= mean
    if via_gram is None:
        via_gram = n - 1 < d
    if via_gram:
        lam, V = np.linalg.eigh(X @ X.T / (n - 1))
        keep = lam > max(lam.max(), 0) * 1e-12
        lam, V = lam[keep], V[:, keep]
        U = (X.T @ V) / np.sqrt(lam * (n - 1))      # the covariance's eigenvectors, λ > 0
        P = (U * (1 / np.sqrt(lam + eps) - 1 / np.sqrt(eps))) @ U.T
        P[np.diag_indices(d)] += 1 / np.sqrt(eps)
    else:
        cov = X.T @ X                      # numpy computes XᵀX as a symmetric rank-k update
        cov /= n - 1
        lam, U = np.linalg.eigh(cov)
        lam = np.clip(lam, 0, None)        # round-off makes a few tiny ones negative
        P = (U / np.sqrt(lam + eps)) @ U.T
    P *= pixel_scale
    return torch.from_numpy(mean / pixel_scale).float(), torch.from_numpy(P).float()


def _fingerprint(x: torch.Tensor, eps: float, pixel_scale: float = ZCA_PIXEL_SCALE) -> str:
    """Identifies the exact training set (content, not only its size) and the whitening settings."""
    h = hashlib.blake2b(digest_size=12)
    scale = "" if pixel_scale == ZCA_PIXEL_SCALE else f"scale={pixel_scale!r} "
    h.update(f"zca-v{ZCA_VERSION} eps={eps!r} {scale}shape={tuple(x.shape)} ".encode())
    h.update(memoryview(x.detach().cpu().contiguous().numpy()).cast("B"))
    return h.hexdigest()


def cached_zca(name: str, x_train: torch.Tensor, eps: float, cache_dir=None,
               pixel_scale: float = ZCA_PIXEL_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`zca_statistics` of ``x_train``, from the cache when an earlier run computed them.

    Cache files are keyed by data set, training-set size and a fingerprint of its content and of
    ``eps``; they are written atomically (temporary file, then rename). An unreadable cache file is
    recomputed; an unwritable cache folder only costs the recomputation next time.
    """
    folder = resolve_cache_dir(cache_dir)
    path = folder / f"zca-{name}-n{len(x_train)}-{_fingerprint(x_train, eps, pixel_scale)}.pt"
    if path.is_file():
        try:
            stats = torch.load(path, map_location="cpu", weights_only=True)
            log.info(f"ZCA whitening statistics from the cache {path}")
            return stats["mean"], stats["matrix"]
        except Exception as err:  # a damaged file is only a cache miss
            log.warning(f"ignoring the unreadable ZCA cache file {path} ({type(err).__name__}); recomputing it.")
    if len(x_train) <= x_train.shape[1]:
        log.warning(f"ZCA whitening from {len(x_train)} examples of {x_train.shape[1]} dimensions is "
                    f"rank-deficient: directions unseen in training are scaled by up to 1/√zca_eps.")
    start = time.perf_counter()
    mean, matrix = zca_statistics(x_train, eps, pixel_scale=pixel_scale)
    log.info(f"ZCA whitening statistics of {name} ({len(x_train)} examples) computed in "
             f"{time.perf_counter() - start:.1f} s")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"mean": mean, "matrix": matrix, "name": name, "n": len(x_train), "eps": eps}, buffer)
        atomic_write_bytes(path, buffer.getbuffer())
        log.info(f"ZCA whitening statistics cached in {path}")
    except OSError as err:
        log.warning(f"could not cache the ZCA statistics in {folder} ({err.strerror or err}); "
                    f"set data.cache_dir=… or ${CACHE_ENV_VAR} to a writable folder.")
    return mean, matrix


def whiten(x: torch.Tensor, mean: torch.Tensor, matrix: torch.Tensor, rows: int = 8192) -> torch.Tensor:
    """``(x − mean) @ P`` on ``x``'s device, in blocks of ``rows`` to bound the extra memory."""
    mean, matrix = mean.to(x.device, x.dtype), matrix.to(x.device, x.dtype)
    out = torch.empty_like(x)
    for s in range(0, len(x), rows):
        torch.mm(x[s:s + rows] - mean, matrix, out=out[s:s + rows])
    return out


def standardize(data: Dataset, per_channel: bool) -> Dataset:
    """Train and test inputs minus the training set's mean, divided by its std, as DataProvider's
    ``normalize`` does for the author's ``-normalization simple`` (one mean and std over every
    input value) and ``channel`` (one per colour channel). The std is the unbiased one (torch.std's),
    the statistics are taken in float64; both splits use the training set's."""
    if data.x_train.numel() < 2:
        raise UserError(f"data.preprocess={'channel' if per_channel else 'simple'} needs at least 2 "
                        f"training values; use a larger data.subset or data.preprocess=none.")
    channels = data.input_shape[0] if per_channel else 1
    grouped = data.x_train.view(len(data.x_train), channels, -1).transpose(0, 1).reshape(channels, -1)
    std, mean = torch.std_mean(grouped.double(), dim=1)
    std = torch.where(std > 0, std, torch.ones_like(std))   # a constant channel: only shifted

    def apply(x: torch.Tensor) -> torch.Tensor:
        shaped = x.view(len(x), channels, -1)
        out = (shaped - mean.to(x.dtype)[:, None]) / std.to(x.dtype)[:, None]
        return out.reshape(x.shape)

    return Dataset(**{**data.__dict__, "x_train": apply(data.x_train), "x_test": apply(data.x_test),
                      "preprocess": "channel" if per_channel else "simple"})


def preprocess(data: Dataset, kind: str = "none", eps: float = 1e-5, cache_dir=None) -> Dataset:
    """``none``: unchanged; ``simple``/``channel``: :func:`standardize`; ``zca``: train and test
    whitened with the training set's statistics."""
    if kind not in PREPROCESS:
        raise UserError(f"data.preprocess={kind!r} is not supported; choose one of: {', '.join(PREPROCESS)}.")
    if kind == "none":
        return data
    if kind in ("simple", "channel"):
        return standardize(data, per_channel=kind == "channel")
    mean, matrix = cached_zca(data.name, data.x_train, eps, cache_dir, data.pixel_span)
    return Dataset(**{**data.__dict__, "x_train": whiten(data.x_train, mean, matrix),
                      "x_test": whiten(data.x_test, mean, matrix), "preprocess": "zca"})
