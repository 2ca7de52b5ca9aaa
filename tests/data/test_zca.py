"""ZCA whitening (the conv rows' preprocessing): the math, train-only statistics, the cache."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import dfa_cli.data.datasets as data_module
from dfa_cli.data.datasets import (Dataset, cached_zca, load_dataset, preprocess, resolve_cache_dir, whiten,
                          zca_statistics)
from dfa_cli.runs.errors import UserError


def correlated_pixels(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Pixel-like data in [0, 1] with strongly correlated dimensions (like neighbouring pixels)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.rand(d, d, generator=g) ** 4
    x = torch.rand(n, d, generator=g) @ mix
    return (x / x.max()).float()


def covariance(x: torch.Tensor) -> torch.Tensor:
    x = x.double() - x.double().mean(0)
    return x.T @ x / (len(x) - 1)


def test_whitened_training_data_has_identity_covariance():
    x = correlated_pixels(4000, 48)
    assert covariance(x).diagonal().max() / covariance(x).diagonal().min() > 1.5   # not white to start
    mean, P = zca_statistics(x)
    torch.testing.assert_close(covariance(whiten(x, mean, P)), torch.eye(48, dtype=torch.float64),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(P, P.T)       # ZCA: the symmetric whitening matrix (not PCA's rotation)
    torch.testing.assert_close(mean, x.mean(0))


def test_zca_matches_an_independent_computation_in_pixel_units():
    """unsup.zca_whiten on 0..255 data: P = U diag(1/√(λ+eps)) Uᵀ of the (N−1)-normalised covariance."""
    x = correlated_pixels(500, 30)
    eps = 10.0                                 # large enough to matter: checks where eps enters
    pixels = x.double() * 255
    centred = pixels - pixels.mean(0)
    lam, U = torch.linalg.eigh(centred.T @ centred / (len(x) - 1))
    want = centred @ (U @ torch.diag(1 / torch.sqrt(lam + eps)) @ U.T)
    mean, P = zca_statistics(x, eps)
    torch.testing.assert_close(whiten(x, mean, P).double(), want, atol=1e-4, rtol=1e-4)


def test_few_examples_take_the_gram_route_to_the_same_matrix():
    x = correlated_pixels(20, 64)
    m1, p1 = zca_statistics(x, via_gram=True)
    m2, p2 = zca_statistics(x, via_gram=False)
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(p1, p2, rtol=1e-4, atol=1e-4 * p2.abs().max().item())


def test_zca_needs_two_examples():
    with pytest.raises(UserError, match="at least 2 training examples"):
        zca_statistics(torch.rand(1, 12))


def test_real_cifar10_pixels_whiten_to_identity(real_cifar10):
    """On a small sample of the real data: 4×4 RGB patches of 3000 training images (48 dims)."""
    d = load_dataset("cifar10", real_cifar10, download=False, subset=3000, test_subset=10)
    patches = d.x_train.view(-1, 3, 32, 32)[:, :, 10:14, 10:14].reshape(3000, 48)
    mean, P = zca_statistics(patches)
    white = covariance(whiten(patches, mean, P))
    torch.testing.assert_close(white, torch.eye(48, dtype=torch.float64), atol=2e-3, rtol=0)


def small_dataset(n_train=300, n_test=50, d=3 * 4 * 4, seed=0) -> Dataset:
    x = correlated_pixels(n_train + n_test, d, seed)
    y = torch.zeros(n_train + n_test, dtype=torch.long)
    return Dataset("cifar10", x[:n_train], y[:n_train], x[n_train:], y[n_train:], (3, 4, 4), 10, "nowhere")


def test_preprocess_uses_training_statistics_for_both_splits(tmp_path):
    data = small_dataset()
    out = preprocess(data, "zca", 1e-5, tmp_path)
    mean, P = zca_statistics(data.x_train)
    assert out.preprocess == "zca" and data.preprocess == "none"
    torch.testing.assert_close(out.x_train, whiten(data.x_train, mean, P))
    torch.testing.assert_close(out.x_test, whiten(data.x_test, mean, P))
    other_test = Dataset(**{**data.__dict__, "x_test": torch.rand_like(data.x_test)})
    torch.testing.assert_close(preprocess(other_test, "zca", 1e-5, tmp_path / "b").x_train, out.x_train)
    assert preprocess(data, "none") is data    # the MLP rows keep [0, 1] inputs


def test_statistics_are_cached_once_per_exact_training_set(tmp_path, monkeypatch):
    calls = []
    original = data_module.zca_statistics
    monkeypatch.setattr(data_module, "zca_statistics", lambda x, eps, **kw: calls.append(len(x)) or original(x, eps, **kw))
    data = small_dataset()
    first = cached_zca("cifar10", data.x_train, 1e-5, tmp_path)
    again = cached_zca("cifar10", data.x_train, 1e-5, tmp_path)
    assert calls == [300]
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    cached_zca("cifar10", data.x_train[:200], 1e-5, tmp_path)          # a subset: its own statistics
    cached_zca("cifar10", data.x_train.flip(0) * 0.5, 1e-5, tmp_path)   # same size, other content
    cached_zca("cifar10", data.x_train, 1e-3, tmp_path)                 # other eps
    cached_zca("cifar100", data.x_train, 1e-5, tmp_path)                # other data set
    assert calls == [300, 200, 300, 300, 300]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 5 and all(n.startswith("zca-cifar") and n.endswith(".pt") for n in names)
    assert sum("-n200-" in n for n in names) == 1 and sum(n.startswith("zca-cifar100-") for n in names) == 1


def test_damaged_cache_file_is_recomputed(tmp_path, caplog):
    data = small_dataset()
    mean, P = cached_zca("cifar10", data.x_train, 1e-5, tmp_path)
    (path,) = list(tmp_path.iterdir())
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        again = cached_zca("cifar10", data.x_train, 1e-5, tmp_path)
    assert "unreadable ZCA cache file" in caplog.text
    assert torch.equal(again[1], P)
    assert torch.load(path, weights_only=True)["matrix"].shape == P.shape     # rewritten whole


def test_unwritable_cache_folder_only_costs_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING):
        mean, P = cached_zca("cifar10", small_dataset().x_train, 1e-5, blocker / "cache")
    assert P.shape == (48, 48) and "could not cache the ZCA statistics" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_cache_folder_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("DFA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "dfa-cli"
    monkeypatch.setenv("DFA_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    assert resolve_cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"


def test_whitening_never_writes_into_the_data_root(fake_cifar10, tmp_path):
    before = sorted(p.relative_to(fake_cifar10) for p in fake_cifar10.rglob("*"))
    data = load_dataset("cifar10", fake_cifar10, download=False)
    out = preprocess(data, "zca", 1e-5, tmp_path / "cache")
    assert sorted(p.relative_to(fake_cifar10) for p in fake_cifar10.rglob("*")) == before
    assert len(list((tmp_path / "cache").glob("zca-cifar10-n100-*.pt"))) == 1
    assert np.isfinite(out.x_test.numpy()).all()


@pytest.mark.slow
def test_real_cifar10_full_training_set_whitens_to_identity(real_cifar10, tmp_path):
    """The conv rows' real preprocessing: all 50,000 training images (about a minute on 2 cores)."""
    data = preprocess(load_dataset("cifar10", real_cifar10, download=False), "zca", 1e-5, tmp_path)
    x = data.x_train.double()
    x -= x.mean(0)
    cov = (x.T @ x) / (len(x) - 1)
    eye = torch.eye(3072, dtype=torch.float64)
    assert (cov - eye).abs().max() < 2e-2
    assert (cov.diagonal() - 1).abs().mean() < 1e-3
