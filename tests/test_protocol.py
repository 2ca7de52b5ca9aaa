"""The paper's protocol as the author's code (anokland/dfa-torch, Main.lua, Data.lua, Models/*.lua)
runs it: the EMA's start, FA's first layer, the LR schedules, the validation split, fp32, threads."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from dfa_cli.data import datasets as data_module
from dfa_cli.training import engine
from dfa_cli.runs.errors import UserError
from dfa_cli.nets.conv import ConvNet
from dfa_cli.nets.fc import FCNet
from dfa_cli.runs.records import SUMMARY
from dfa_cli.run import sweep_threads, train
from dfa_cli.training.schedule import LRSchedule

from test_engine import quick, read_metrics


# ---- the early stop's EMA ------------------------------------------------------------------------
def test_ema_starts_at_100_percent_so_a_perfect_run_stops_at_epoch_33(fake_mnist, tmp_path, monkeypatch):
    """Main.lua: train_err_mean = 1, then 0.75·mean + 0.25·err; stop at ≤ 0.0001 (0.01 %).
    With 0 % training error from the first epoch: 100·0.75³² = 0.0100 > 0.01 ≥ 100·0.75³³."""
    assert 100 * 0.75 ** 32 > 0.01 >= 100 * 0.75 ** 33

    def perfect_epoch(self, epoch, first_step=0, timing=(0.0, 0.0)):
        return torch.zeros(len(self.active), 2, dtype=torch.float64)
    monkeypatch.setattr(engine.Trainer, "_train_epoch", perfect_epoch)
    summary = train(quick(fake_mnist, "trainer.max_epochs=50", "trainer.stop_train_error=0.01"), tmp_path)[0]
    rows = read_metrics(tmp_path)
    assert summary["stop_reason"] == "converged" and summary["epochs"] == 33
    assert rows[0]["train_error_ema"] == pytest.approx(75.0)
    assert rows[-1]["train_error_ema"] == pytest.approx(100 * 0.75 ** 33)


# ---- the starting weights --------------------------------------------------------------------------
def test_fa_keeps_a_random_first_layer_on_an_mlp_and_zeroes_the_rest():
    """mlp.lua: layer 1 is a plain nn.Linear, which FA's zeroing loop (class Linear) does not find."""
    sizes = [12, 9, 7, 5, 3]
    fa, dfa, bp = (FCNet(sizes, "tanh", m, [4], init="paper") for m in ("fa", "dfa", "bp"))
    assert (fa.init, dfa.init, bp.init) == ("zero_above_first", "zero", "uniform")
    torch.testing.assert_close(fa.weights[0], bp.weights[0])     # same seed, same random draw
    torch.testing.assert_close(fa.biases[0], bp.biases[0])
    bound = 1 / math.sqrt(sizes[0])
    assert 0.5 * bound < fa.weights[0].abs().max() <= bound
    assert all(torch.count_nonzero(p) == 0 for p in [*fa.weights[1:], *fa.biases[1:]])
    assert all(torch.count_nonzero(p) == 0 for p in dfa.parameters())
    for i, w in enumerate(bp.weights):                           # FA's B: the random W before zeroing
        torch.testing.assert_close(getattr(fa, f"fa_feedback{i}"), w.detach())
    assert FCNet(sizes, "logistic", "fa", [0]).init == "zero_above_first"
    assert FCNet(sizes, "relu", "fa", [0]).init == "uniform"
    assert FCNet(sizes, "tanh", "fa", [0], init="zero").init == "zero"


def test_fa_on_the_conv_net_zeroes_every_layer_as_conv_lua_does():
    """conv.lua builds every FA conv and FC layer from the custom classes, so all start at zero."""
    net = ConvNet((1, 12, 12), 3, "fa", [0], channels=(2, 3), fc=(5,), pool=2, pool_stride=2)
    assert net.init == "zero" and all(torch.count_nonzero(p) == 0 for p in net.parameters())


# ---- LR schedules ------------------------------------------------------------------------------------
def test_auto_schedule_halves_when_the_epoch_is_no_better_than_the_ema_and_ends_after_8():
    s = LRSchedule("auto", max_halvings=8)
    assert s.after_epoch(1, train_error=10.0, ema=77.5, halvings=0) == (0, False)
    assert s.after_epoch(2, train_error=5.0, ema=5.0, halvings=0) == (1, False)     # ≥: halves
    assert s.after_epoch(3, train_error=5.1, ema=5.0, halvings=7) == (8, False)
    assert s.after_epoch(4, train_error=0.1, ema=5.0, halvings=8) == (8, True)     # the next epoch ends it
    assert LRSchedule.lr(1e-4, 3) == pytest.approx(1.25e-5)


def test_step_and_constant_schedules():
    step = LRSchedule("step", step_epochs=3)
    assert [step.after_epoch(e, 1.0, 0.5, 0)[0] for e in range(1, 8)] == [0, 0, 1, 0, 0, 1, 0]
    assert all(LRSchedule().after_epoch(e, 9.0, 1.0, 0) == (0, False) for e in range(1, 5))


def test_a_run_records_the_lr_each_epoch_trained_with(fake_mnist, tmp_path):
    train(quick(fake_mnist, "trainer.max_epochs=5", "trainer.lr_schedule=step", "trainer.lr_step_epochs=2"),
          tmp_path)
    assert [r["lr"] for r in read_metrics(tmp_path)] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
    s = json.loads((tmp_path / SUMMARY).read_text())
    assert (s["lr_schedule"], s["lr_step_epochs"], s["lr_halvings"]) == ("step", 2, 2)


def test_auto_schedule_run_ends_after_its_halvings(fake_mnist, tmp_path, monkeypatch):
    """A training error rising by 10 % per epoch meets the EMA (falling from 100 %) at epoch 6."""
    def rising(self, epoch, first_step=0, timing=(0.0, 0.0)):
        return torch.tensor([[1.0, min(99.0, 10.0 * epoch)]] * len(self.active), dtype=torch.float64)
    monkeypatch.setattr(engine.Trainer, "_train_epoch", rising)
    summary = train(quick(fake_mnist, "trainer.max_epochs=30", "trainer.lr_schedule=auto",
                          "trainer.lr_max_halvings=3"), tmp_path)[0]
    rows = read_metrics(tmp_path)
    # epoch 1: EMA 77.5 > 10 → no halving; then 20 vs 63.1, 30 vs 54.8, 40 vs 51.1, 50 vs 50.8,
    # 60 vs 53.1 → halve (1), 70 → 2, 80 → 3; epoch 9 finds 3 halvings made and ends the run.
    assert [r["lr"] for r in rows] == pytest.approx([1e-3] * 6 + [5e-4, 2.5e-4, 1.25e-4])
    assert summary["stop_reason"] == "lr_halvings" and summary["epochs"] == 9


def test_auto_schedule_refuses_stacked_seeds(fake_mnist, tmp_path):
    with pytest.raises(UserError, match="cannot train stacked seeds"):
        train(quick(fake_mnist, "trainer.lr_schedule=auto", "seeds=[0,1]"), tmp_path)


# ---- the validation split -------------------------------------------------------------------------
def test_validation_split_trains_on_the_first_part_and_evaluates_on_the_last(fake_mnist, tmp_path, monkeypatch):
    """Data.lua -validate: MNIST trains on images 1..50000 and tests on 50001..60000."""
    monkeypatch.setattr(data_module, "VALIDATION_SIZE", 56)
    full = data_module.load_dataset("mnist", fake_mnist, download=False)
    val = data_module.load_dataset("mnist", fake_mnist, download=False, split="validation")
    assert val.eval_split == "validation" and len(val.x_train) == 200 and len(val.x_test) == 56
    torch.testing.assert_close(val.x_train, full.x_train[:200])
    torch.testing.assert_close(val.x_test, full.x_train[200:])
    assert torch.equal(val.y_test, full.y_train[200:])
    assert data_module.VALIDATION_SIZE == 56 and len(full.x_test) == 128


def test_a_validation_run_records_val_error_not_test_error(fake_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "VALIDATION_SIZE", 56)
    summary = train(quick(fake_mnist, "data.split=validation"), tmp_path)[0]
    assert "test_error" not in summary and "val_error" in summary and summary["eval_split"] == "validation"
    assert summary["n_train"] == 200 and summary["n_test"] == 56
    assert all("val_error" in r and "test_error" not in r for r in read_metrics(tmp_path))


def test_the_real_mnist_validation_split(real_data):
    val = data_module.load_dataset("mnist", real_data, download=False, split="validation")
    assert (len(val.x_train), len(val.x_test)) == (50000, 10000)


# ---- precision, threads, and what a record says ----------------------------------------------------
@pytest.mark.parametrize("precision, tf32", [("highest", False), ("high", True)])
def test_fp32_switches_off_tf32_for_matmuls_and_cudnn(fake_mnist, tmp_path, precision, tf32):
    before = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    try:
        summary = train(quick(fake_mnist, f"trainer.matmul_precision={precision}"), tmp_path)[0]
        assert torch.backends.cudnn.allow_tf32 is tf32 and summary["cudnn_allow_tf32"] is tf32
        assert summary["cuda_matmul_allow_tf32"] is tf32
    finally:
        torch.backends.cudnn.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])


def test_threads_setting_and_the_joblib_default(fake_mnist, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)      # (the tests run with one; the setting must change it)
        assert train(quick(fake_mnist, "trainer.threads=1"), tmp_path)[0]["threads"] == 1
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    target = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    jobs = [SimpleNamespace(launcher={"_target_": target, "n_jobs": n}) for n in (1, 2, 4, 16, -1)]
    assert [sweep_threads(job) for job in jobs] == [8, 4, 2, 1, 1]
    assert sweep_threads(SimpleNamespace(launcher={"_target_": "hydra._internal.BasicLauncher"})) is None


def test_the_summary_holds_every_setting_that_defines_a_cell(fake_mnist, tmp_path):
    s = train(quick(fake_mnist, "method=fa", "dropout=paper", "trainer.threads=1"), tmp_path)[0]
    for key in ("init", "init_config", "stop_train_error", "dropout_input", "dropout_hidden", "lr",
                "lr_schedule", "lr_step_epochs", "lr_max_halvings", "eval_split", "subset", "test_subset",
                "threads", "max_epochs", "batch_size", "matmul_precision", "cudnn_allow_tf32", "optim_eps"):
        assert key in s, key
    assert s["init"] == "zero_above_first" and s["lr_schedule"] == "constant" and s["eval_split"] == "test"
    assert s["optim_eps"] == 1e-8
