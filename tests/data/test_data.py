"""Data sets: real files when the data root has them, tiny fakes written here otherwise."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dfa_cli.data.datasets import load_dataset, scale_to_unit
from dfa_cli.runs.errors import UserError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_has_the_known_statistics(real_data):
    d = load_dataset("mnist", real_data, download=False)
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784)
    assert d.x_train.dtype == torch.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert torch.bincount(d.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(d.y_test).tolist() == MNIST_TEST_COUNTS
    assert d.x_train.mean().item() == pytest.approx(0.1307, abs=1e-4)
    assert d.x_train.std().item() == pytest.approx(0.3081, abs=1e-4)
    assert d.input_shape == (1, 28, 28) and d.n_classes == 10


def test_real_cifar10_without_filenames_entry_loads(real_data):
    if not (real_data / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip("CIFAR-10 not in the data root")
    d = load_dataset("cifar10", real_data, download=False)
    assert d.x_train.shape == (50000, 3072) and d.input_shape == (3, 32, 32)
    assert torch.bincount(d.y_train).tolist() == [5000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    channels = d.x_train.view(-1, 3, 1024)
    means = channels.mean((0, 2)).tolist()
    stds = channels.transpose(0, 1).reshape(3, -1).std(1).tolist()
    assert means == pytest.approx([0.4914, 0.4822, 0.4465], abs=1e-3)
    assert stds == pytest.approx([0.2470, 0.2435, 0.2616], abs=1e-3)


def write_fake_cifar100(root, n_train=40, n_test=20):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": list(rng.integers(0, 100, n)), "coarse_labels": [0] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def test_inputs_are_scaled_by_the_training_sets_range_as_the_authors_data_lua():
    """-normalization scale: minus the training set's min, over its (max − min); the test set with the
    same two numbers, so a test pixel outside the training range leaves [0, 1]."""
    train = np.array([[[10, 20], [30, 50]], [[10, 10], [40, 30]]], dtype=np.uint8)   # min 10, max 50
    test = np.array([[[0, 50], [90, 30]]], dtype=np.uint8)
    x_train, x_test, span = scale_to_unit(train, test)
    assert span == 40.0 and x_train.shape == (2, 4) and x_train.dtype == torch.float32
    assert x_train[0].tolist() == pytest.approx([0.0, 0.25, 0.5, 1.0])
    assert x_test[0].tolist() == pytest.approx([-0.25, 1.0, 2.0, 0.5])


def test_on_the_full_training_sets_the_scaling_is_exactly_x_over_255(real_data):
    """Both real training sets span 0..255, so the records made before this scaling stay bit for bit."""
    for name in ("mnist", "cifar10"):
        d = load_dataset(name, real_data, download=False, subset=12000)
        assert d.pixel_span == 255.0
        raw = torch.round(d.x_train * 255).to(torch.uint8)
        assert torch.equal(d.x_train, raw.float() / 255.0)


def test_cifar100_loads_from_torchvision_layout(tmp_path):
    folder = write_fake_cifar100(tmp_path)
    d = load_dataset("cifar100", tmp_path, download=False)
    with open(folder / "train", "rb") as f:
        raw = pickle.load(f)
    assert d.n_classes == 100 and d.x_train.shape == (40, 3072) and d.x_test.shape == (20, 3072)
    torch.testing.assert_close(d.x_train, torch.from_numpy(raw["data"] / 255.0).float())
    assert d.y_train.tolist() == [int(v) for v in raw["fine_labels"]]


def test_subset_takes_the_first_examples(fake_mnist):
    full = load_dataset("mnist", fake_mnist, download=False)
    part = load_dataset("mnist", fake_mnist, download=False, subset=50, test_subset=10)
    assert torch.equal(part.x_train, full.x_train[:50]) and torch.equal(part.y_test, full.y_test[:10])


def test_missing_data_set_is_one_sentence_naming_the_path(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "DFA_DATA_DIR" in message and "\n" not in message


def test_failed_download_is_reported_not_raised(tmp_path, monkeypatch):
    import dfa_cli.data.datasets as data

    def offline(name, root):
        raise OSError("network is unreachable")
    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(UserError, match="download failed .network is unreachable"):
        load_dataset("cifar10", tmp_path, download=True)


def test_data_root_comes_from_the_environment(fake_mnist, monkeypatch):
    monkeypatch.setenv("DFA_DATA_DIR", str(fake_mnist))
    assert load_dataset("mnist", None, download=False).root == str(fake_mnist)


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_corrupt_idx_file_is_one_sentence(fake_mnist, damage):
    path = fake_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100] if damage == "truncate" else b"\x12\x34" + raw[2:])
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", fake_mnist, download=False)


def test_corrupt_cifar_pickle_is_one_sentence(tmp_path):
    folder = write_fake_cifar100(tmp_path)
    (folder / "train").write_bytes((folder / "train").read_bytes()[:500])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset("cifar100", tmp_path, download=False)


def test_a_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    import dfa_cli.data.datasets as data

    def offline(name, root):   # as torchvision does: the folder first, then the download fails
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        raise OSError("network is unreachable")
    monkeypatch.setattr(data, "_download", offline)
    (tmp_path / "kept").mkdir()
    for root in (tmp_path / "data", tmp_path / "kept"):
        with pytest.raises(UserError, match="download failed .network is unreachable"):
            load_dataset("mnist", root, download=True)
    assert not (tmp_path / "data").exists()                   # made by the attempt: removed
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())   # there before: kept
