"""``logger=tensorboard``: event files that say what metrics.jsonl says, one run per record, once per epoch."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dfa_cli.runs import checkpoint as ckpt
from dfa_cli.config import validate
from dfa_cli.runs.errors import UserError
from dfa_cli.runs.records import METRICS
from dfa_cli.run import train

from conftest import compose_config
from survive import one_thread

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason='tensorboard is not installed: pip install -e ".[test]"')


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def tiny(fake_mnist, *extra):
    return compose_config("model=fc800x1", "model.width=16", "trainer.max_epochs=2", "trainer.batch_size=32",
                          "trainer.stop_train_error=0", f"data.root={fake_mnist}", "data.download=false",
                          "trainer.progress=false", "logger=tensorboard", *extra)


def rows(record: Path) -> list[dict]:
    return [json.loads(line) for line in (record / METRICS).read_text().splitlines()]


def scalars(record: Path) -> dict[str, list[tuple[int, float]]]:
    """``tag → [(step, value), …]`` as TensorBoard reads the record's folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(record))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def raw_points(record: Path) -> list[tuple[str, int]]:
    """Every ``(tag, step)`` in every event file of the folder, with no purging of restarts."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    points = []
    for path in sorted(record.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            points += [(v.tag, event.step) for v in event.summary.value]
    return points


def near(a: float, b: float) -> bool:   # event files hold float32
    return a == pytest.approx(b, rel=1e-6, abs=1e-7)


@needs_tensorboard
def test_each_stacked_seed_gets_its_own_run_with_the_jsonl_values(fake_mnist, tmp_path):
    train(tiny(fake_mnist, "seeds=[0,1]", "model.depth=2", "method=fa", "diagnostics.alignment=true",
               "diagnostics.every=4"), tmp_path / "run")
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))   # only the seeds' folders are runs
    for seed in (0, 1):
        record = tmp_path / "run" / f"seed{seed}"
        got, want = scalars(record), rows(record)
        layers = [f"alignment/{kind}/layer{i}" for kind in ("delta_angle", "weight_angle", "fa_feedback_angle")
                  for i in (1, 2)]
        assert set(got) == {"loss/train", "loss/test", "error/train", "error/test", "error/train_ema", "lr",
                            "seconds", *layers}
        pairs = {"loss/train": "train_loss", "loss/test": "test_loss", "error/train": "train_error",
                 "error/test": "test_error", "error/train_ema": "train_error_ema", "lr": "lr", "seconds": "seconds"}
        for tb_tag, key in pairs.items():
            assert [s for s, _ in got[tb_tag]] == [1, 2]
            assert all(near(v, row[key]) for (_, v), row in zip(got[tb_tag], want)), tb_tag
        for kind in ("delta_angle", "weight_angle", "fa_feedback_angle"):
            for i in (1, 2):
                points = got[f"alignment/{kind}/layer{i}"]
                expected = [(r["epoch"], r["alignment"][kind][i - 1]) for r in want
                            if r["alignment"][kind][i - 1] is not None]
                assert [s for s, _ in points] == [e for e, _ in expected]
                assert all(near(v, w) for (_, v), (_, w) in zip(points, expected))
    assert scalars(tmp_path / "run" / "seed0")["loss/train"] != scalars(tmp_path / "run" / "seed1")["loss/train"]


@needs_tensorboard
def test_the_validation_split_is_logged_as_val(tmp_path):
    from conftest import write_fake_mnist
    root = write_fake_mnist(tmp_path / "data", n_train=10_100, n_test=16)
    train(tiny(root, "data.split=validation", "data.subset=64", "data.test_subset=32", "trainer.max_epochs=1"),
          tmp_path / "run")
    got = scalars(tmp_path / "run")
    assert {"loss/val", "error/val"} <= set(got) and not {"loss/test", "error/test"} & set(got)
    assert near(got["error/val"][0][1], rows(tmp_path / "run")[0]["val_error"])


class Killed(Exception):
    pass


@needs_tensorboard
def test_a_resumed_run_shows_each_epoch_once(fake_mnist, tmp_path, monkeypatch):
    """Killed after epoch 2's row (jsonl and event file) but before its checkpoint: the resume trains
    epoch 2 again, and TensorBoard still holds one point per epoch, equal to the jsonl."""
    save, calls = ckpt.save, {"n": 0}

    def save_then_die_at_epoch_2(path, state):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed
        save(path, state)
    monkeypatch.setattr(ckpt, "save", save_then_die_at_epoch_2)
    with pytest.raises(Killed):
        train(tiny(fake_mnist, "trainer.max_epochs=3"), tmp_path / "run")
    monkeypatch.undo()
    assert sorted({s for t, s in raw_points(tmp_path / "run") if t == "loss/train"}) == [1, 2]
    train(tiny(fake_mnist, "trainer.max_epochs=3"), tmp_path / "run", resume=True)
    points = raw_points(tmp_path / "run")
    assert len(points) == len(set(points))                                  # no (tag, epoch) twice
    got, want = scalars(tmp_path / "run"), rows(tmp_path / "run")
    assert [s for s, _ in got["error/test"]] == [1, 2, 3]
    assert all(near(v, row["test_error"]) for (_, v), row in zip(got["error/test"], want))


def test_the_default_writes_no_event_files(fake_mnist, tmp_path):
    train(tiny(fake_mnist, "logger=none", "trainer.max_epochs=1"), tmp_path / "run")
    assert (tmp_path / "run" / METRICS).is_file() and not list((tmp_path / "run").glob("events.*"))


def test_without_the_package_it_is_one_sentence_before_any_data_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)     # as if it were not installed
    cfg = compose_config("logger=tensorboard", f"data.root={tmp_path / 'no-data'}", "data.download=false")
    with pytest.raises(UserError) as err:
        train(cfg, tmp_path / "run")
    assert str(err.value) == ('logger=tensorboard needs the tensorboard package, which is not installed; '
                              'install it with pip install -e ".[tensorboard]".')
    with pytest.raises(UserError, match="logger='wandb' is not supported; choose one of: none, tensorboard"):
        validate(compose_config("logger.name=wandb"))
