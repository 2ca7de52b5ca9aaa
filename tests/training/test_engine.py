"""The training loop: determinism, stacked seeds, early stop, divergence, records."""
from __future__ import annotations

import json

import pytest
import torch

from dfa_cli.training import engine
from dfa_cli.runs.records import METRICS, SUMMARY
from dfa_cli.run import train

from conftest import compose_config

TIMING_KEYS = {"wall_seconds", "seconds_per_epoch", "finished_at", "stacked_seeds"}


def quick(fake_mnist, *overrides):
    return compose_config(f"data.root={fake_mnist}", "data.download=false", "model.width=32",
                          "trainer.max_epochs=2", "trainer.stop_train_error=0", "optim.lr=1e-3", *overrides)


def read_metrics(directory):
    return [json.loads(line) for line in (directory / METRICS).read_text().splitlines()]


def numbers(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def test_same_seed_gives_identical_records_on_cpu(fake_mnist, tmp_path):
    cfg = quick(fake_mnist, "method=dfa", "dropout=paper")
    a, b = train(cfg, tmp_path / "a")[0], train(cfg, tmp_path / "b")[0]
    assert numbers(a) == numbers(b)
    strip = [{k: v for k, v in row.items() if k not in ("seconds", "elapsed")} for row in
             read_metrics(tmp_path / "a")], [{k: v for k, v in row.items() if k not in ("seconds", "elapsed")}
                                              for row in read_metrics(tmp_path / "b")]
    assert strip[0] == strip[1]


def test_different_seeds_give_different_runs(fake_mnist, tmp_path):
    a = train(quick(fake_mnist, "seed=0"), tmp_path / "a")[0]
    b = train(quick(fake_mnist, "seed=1"), tmp_path / "b")[0]
    assert a["train_loss"] != b["train_loss"]


@pytest.mark.parametrize("method", ["bp", "fa", "dfa", "ifa"])
def test_stacked_seeds_equal_separate_runs(fake_mnist, tmp_path, method):
    stacked = train(quick(fake_mnist, f"method={method}", "seeds=[0,1,2]"), tmp_path / "stack")
    for seed, summary in zip([0, 1, 2], stacked):
        alone = train(quick(fake_mnist, f"method={method}", f"seed={seed}"), tmp_path / f"s{seed}")[0]
        assert summary["seed"] == seed
        for key in ("train_loss", "test_loss", "train_error", "test_error"):
            assert summary[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-5), key
        assert (tmp_path / "stack" / f"seed{seed}" / SUMMARY).is_file()


def test_a_stopped_replica_leaves_the_others_unchanged(fake_mnist, tmp_path, monkeypatch):
    original = engine.Trainer._stop_reason

    def stop_seed1_early(self, rep, row):
        return "converged" if rep.seed == 1 and row["epoch"] == 1 else original(self, rep, row)
    cfg = quick(fake_mnist, "seeds=[0,1,2]", "trainer.max_epochs=3")
    monkeypatch.setattr(engine.Trainer, "_stop_reason", stop_seed1_early)
    stacked = train(cfg, tmp_path / "stack")
    monkeypatch.setattr(engine.Trainer, "_stop_reason", original)
    assert [s["epochs"] for s in stacked] == [3, 1, 3]
    for seed in (0, 2):
        alone = train(quick(fake_mnist, f"seed={seed}", "trainer.max_epochs=3"), tmp_path / f"s{seed}")[0]
        assert stacked[seed]["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-4)


def test_early_stop_follows_the_ema_of_the_training_error(fake_mnist, tmp_path):
    cfg = quick(fake_mnist, "trainer.max_epochs=30", "trainer.stop_train_error=2.0", "model.width=64")
    summary = train(cfg, tmp_path)[0]
    rows = read_metrics(tmp_path)
    ema = 100.0                           # Main.lua: train_err_mean = 1 before the first epoch
    for row in rows:
        ema = 0.75 * ema + 0.25 * row["train_error"]
        assert row["train_error_ema"] == pytest.approx(ema)
    assert summary["stop_reason"] == "converged" and summary["epochs"] == len(rows) < 30
    assert rows[-1]["train_error_ema"] <= 2.0 < rows[-2]["train_error_ema"]


def test_max_epochs_is_the_stop_reason_otherwise(fake_mnist, tmp_path):
    summary = train(quick(fake_mnist), tmp_path)[0]
    assert summary["stop_reason"] == "max_epochs" and summary["epochs"] == 2


def test_a_diverging_run_stops_and_keeps_its_records(fake_mnist, tmp_path):
    cfg = quick(fake_mnist, "optim=sgd", "optim.lr=1e38", "method=bp",
                "trainer.max_epochs=5")
    summary = train(cfg, tmp_path)[0]
    assert summary["stop_reason"] == "diverged" and summary["epochs"] < 5
    on_disk = json.loads((tmp_path / SUMMARY).read_text())   # strict JSON: NaN became null
    assert on_disk["stop_reason"] == "diverged"
    assert len(read_metrics(tmp_path)) == summary["epochs"]


def test_summary_holds_the_contract_fields(fake_mnist, tmp_path):
    train(quick(fake_mnist, "model=fc800x2", "model.width=16", "model.activation=logistic"), tmp_path)
    s = json.loads((tmp_path / SUMMARY).read_text())
    for key in ("method", "model", "activation", "data", "dropout", "seed", "test_error", "train_error",
                "best_test_error", "epochs", "stop_reason", "wall_seconds", "device", "torch_version",
                "git_commit", "variant"):
        assert key in s, key
    assert (s["model"], s["activation"], s["data"], s["method"]) == ("fc16x2", "logistic", "mnist", "dfa")
    assert s["device"] == "cpu" and s["cpu_capability"] == torch.backends.cpu.get_cpu_capability()   # AVX512 or AVX2
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "train_error", "test_loss", "test_error", "lr", "seconds"}
