"""Standardized inputs (data.preprocess=simple | channel, the author's other -normalization modes):
the math by hand, train-only statistics, and a run that records what it used."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import compose_config
from dfa_cli.data.datasets import Dataset, preprocess, standardize
from dfa_cli.runs.errors import UserError
from dfa_cli.runs.records import SUMMARY
from dfa_cli.run import train


def two_channel_set(x_train, x_test) -> Dataset:
    """Images of 2 channels × 2 pixels, flattened channel-major as the loader flattens (C, H, W)."""
    t = lambda rows: torch.tensor(rows, dtype=torch.float32)
    return Dataset("toy", t(x_train), torch.zeros(len(x_train), dtype=torch.long), t(x_test),
                   torch.zeros(len(x_test), dtype=torch.long), (2, 1, 2), 10, "nowhere")


TOY = two_channel_set([[0.0, 0.2, 1.0, 1.0],
                       [0.4, 0.2, 0.6, 0.2]], [[0.2, 0.2, 0.8, 0.6]])


def test_simple_uses_one_mean_and_unbiased_std_over_all_training_values():
    # the 8 training values: mean 0.45; squared deviations sum to 1.02, so std = √(1.02 / 7)
    mean, std = 0.45, (1.02 / 7) ** 0.5
    out = preprocess(TOY, "simple")
    torch.testing.assert_close(out.x_train, (TOY.x_train - mean) / std)
    torch.testing.assert_close(out.x_test, (TOY.x_test - mean) / std)   # the training set's numbers
    assert out.preprocess == "simple" and out.x_train.shape == TOY.x_train.shape


def test_channel_uses_each_channels_own_mean_and_std():
    # channel 0 (values 0, .2, .4, .2): mean .2, std √(.08/3); channel 1 (1, 1, .6, .2): mean .7, std √(.44/3)
    mean = torch.tensor([0.2, 0.2, 0.7, 0.7])
    std = torch.tensor([(0.08 / 3) ** 0.5] * 2 + [(0.44 / 3) ** 0.5] * 2)
    out = preprocess(TOY, "channel")
    torch.testing.assert_close(out.x_train, (TOY.x_train - mean) / std)
    torch.testing.assert_close(out.x_test, (TOY.x_test - mean) / std)
    assert out.preprocess == "channel"


def test_standardized_training_set_has_zero_mean_unit_std_and_test_keeps_its_offset():
    g = torch.Generator().manual_seed(0)
    shapes = (3, 4, 4)
    x = torch.rand(200, 48, generator=g) * torch.tensor([1.0, 0.5, 0.2]).repeat_interleave(16)
    data = Dataset("toy", x, torch.zeros(200, dtype=torch.long), x[:50] + 1.0,
                   torch.zeros(50, dtype=torch.long), shapes, 10, "nowhere")
    out = standardize(data, per_channel=True).x_train.view(200, 3, 16).double()
    torch.testing.assert_close(out.mean((0, 2)), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.std((0, 2)), torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)
    shifted = standardize(data, per_channel=False)
    assert shifted.x_test.mean() > shifted.x_train.mean() + 1   # standardized with the training set's std


def test_standardizing_does_not_depend_on_the_pixel_units():
    """The author standardizes 0..255 bytes, we standardize [0, 1]: the result is the same."""
    bytes_ = two_channel_set((TOY.x_train * 255).tolist(), (TOY.x_test * 255).tolist())
    for kind in ("simple", "channel"):
        torch.testing.assert_close(preprocess(bytes_, kind).x_train, preprocess(TOY, kind).x_train)


def test_constant_training_set_is_only_shifted_and_a_single_value_is_refused():
    flat = two_channel_set([[0.5] * 4, [0.5] * 4], [[0.7] * 4])
    out = preprocess(flat, "simple")
    assert torch.all(out.x_train == 0) and torch.allclose(out.x_test, torch.full((1, 4), 0.2))
    one = Dataset("toy", torch.ones(1, 1), torch.zeros(1, dtype=torch.long), torch.ones(1, 1),
                  torch.zeros(1, dtype=torch.long), (1, 1, 1), 10, "nowhere")
    with pytest.raises(UserError, match="needs at least 2 training values"):
        preprocess(one, "simple")


def test_config_lists_the_standardizations_and_refuses_others():
    assert compose_config("data.preprocess=channel").data.preprocess == "channel"
    with pytest.raises(UserError, match="none, simple, channel, zca"):
        preprocess(TOY, "pixel")


def test_run_records_the_standardization_it_used(fake_mnist, tmp_path):
    cfg = compose_config(f"data.root={fake_mnist}", "data.download=false", "data.preprocess=simple",
                         "model=fc800x1", "model.hidden=[16]", "trainer.max_epochs=1",
                         "trainer.progress=false")
    (summary,) = train(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / SUMMARY).read_text())["preprocess"] == "simple"
    assert summary["preprocess"] == "simple"
