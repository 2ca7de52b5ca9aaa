"""Checkpoints and resume: a killed or interrupted run continues to the records of an uninterrupted one."""
from __future__ import annotations

import json
import re
import signal

import pytest
import yaml

from dfa_cli.runs import checkpoint as ckpt
from dfa_cli.training import engine
from dfa_cli.runs.errors import UserError
from dfa_cli.runs.records import METRICS, SUMMARY
from dfa_cli.cli import check_resume, expand_resume
from dfa_cli.run import train
from dfa_cli.runs.signals import Interrupted

from conftest import compose_config, run_cli
from survive import (ENV, long_mnist, one_thread, overrides, records, reference, signal_at_step, start_cli,
                     wait_for_epochs)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():  # as the subprocesses (survive.ENV): fast on a busy machine, comparable bits
        yield




def small(fake_mnist, *extra):
    return compose_config(*overrides(fake_mnist, "trainer.batch_size=32", *extra, epochs=3))


@pytest.mark.parametrize("extra", [(), ("seeds=[0,1,2]",), ("method=bp", "optim=adam")],
                         ids=["one-seed", "stacked", "bp-adam"])
def test_a_run_stopped_mid_epoch_resumes_bit_for_bit(fake_mnist, tmp_path, monkeypatch, extra):
    train(small(fake_mnist, *extra), tmp_path / "ref")
    signal_at_step(monkeypatch, 8 + 3)  # 8 steps an epoch: stop in epoch 2 after step 3
    with pytest.raises(Interrupted) as stop:
        train(small(fake_mnist, *extra), tmp_path / "run")
    assert (stop.value.epoch, stop.value.step, stop.value.exit_code) == (2, 3, 143)
    state = ckpt.load(tmp_path / "run" / ckpt.CHECKPOINT)
    assert (state["epoch"], state["step"]) == (2, 3)
    assert not list((tmp_path / "run").rglob(SUMMARY))
    train(small(fake_mnist, *extra), tmp_path / "run", resume=True)
    assert records(tmp_path / "run") == records(tmp_path / "ref")
    assert len(records(tmp_path / "ref")) == (3 if extra == ("seeds=[0,1,2]",) else 1)
    assert not (tmp_path / "run" / ckpt.CHECKPOINT).exists()  # removed once every seed is done


def test_stacked_seeds_that_stopped_early_stay_stopped_on_resume(fake_mnist, tmp_path, monkeypatch):
    original = engine.Trainer._stop_reason

    def seed1_converges_in_epoch1(self, rep, row):
        return "converged" if rep.seed == 1 and row["epoch"] == 1 else original(self, rep, row)
    monkeypatch.setattr(engine.Trainer, "_stop_reason", seed1_converges_in_epoch1)
    cfg = small(fake_mnist, "seeds=[0,1,2]")
    train(cfg, tmp_path / "ref")
    signal_at_step(monkeypatch, 8 + 8 + 2)  # epoch 3, step 2: seed 1 has been sliced away
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "run")
    assert set(ckpt.load(tmp_path / "run" / ckpt.CHECKPOINT)["finished"]) == {1}
    summaries = train(cfg, tmp_path / "run", resume=True)
    assert [s["epochs"] for s in summaries] == [3, 1, 3]
    assert records(tmp_path / "run") == records(tmp_path / "ref")


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


def test_checkpoint_every_n_epochs_resumes_from_the_last_one(fake_mnist, tmp_path, monkeypatch):
    cfg = small(fake_mnist, "trainer.checkpoint_every=2")
    train(cfg, tmp_path / "ref")
    save, saved = ckpt.save, []

    def save_then_die_after_epoch_3(path, state):
        saved.append(state["epoch"])     # the epoch a resume starts from
        save(path, state)
    original = engine.Trainer._epoch_row

    def row(self, rep, epoch, *args):
        if epoch == 3:
            raise Killed                 # epoch 3 trained, its records not yet written
        return original(self, rep, epoch, *args)
    monkeypatch.setattr(ckpt, "save", save_then_die_after_epoch_3)
    monkeypatch.setattr(engine.Trainer, "_epoch_row", row)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert saved == [3]                  # after epoch 2 only, not after epoch 1
    train(cfg, tmp_path / "run", resume=True)
    assert records(tmp_path / "run") == records(tmp_path / "ref")


def test_a_kill_between_metrics_and_checkpoint_loses_only_that_epoch(fake_mnist, tmp_path, monkeypatch):
    save, calls = ckpt.save, {"n": 0}

    def save_then_die_at_epoch_2(path, state):
        calls["n"] += 1
        if calls["n"] == 2:          # epoch 2's metrics line is written, its checkpoint is not
            raise Killed
        save(path, state)
    train(small(fake_mnist), tmp_path / "ref")
    monkeypatch.setattr(ckpt, "save", save_then_die_at_epoch_2)
    with pytest.raises(Killed):
        train(small(fake_mnist), tmp_path / "run")
    monkeypatch.undo()
    assert len((tmp_path / "run" / METRICS).read_text().splitlines()) == 2
    with open(tmp_path / "run" / METRICS, "a") as f:
        f.write('{"epoch": 3, "train_lo')  # and a half-written line, as a kill mid-write leaves
    train(small(fake_mnist), tmp_path / "run", resume=True)
    assert records(tmp_path / "run") == records(tmp_path / "ref")


@pytest.mark.slow   # a real process, killed twice and started three times (~30 s)
def test_a_real_run_stopped_by_sigterm_then_sigkill_resumes_to_the_uninterrupted_records(tmp_path):
    data = long_mnist(tmp_path / "data")
    run_dir = tmp_path / "res" / "run"
    proc = start_cli(*overrides(data, f"hydra.run.dir={run_dir}"))
    wait_for_epochs(proc, run_dir, 1)
    proc.send_signal(signal.SIGTERM)              # finish the step, checkpoint, one line, exit 143
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in out + err
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"dfa-run: interrupted by SIGTERM at (epoch \d+ after step \d+|the end of epoch \d+); "
                        rf"checkpoint written to {run_dir}/checkpoint.pt; rerun with resume={run_dir} "
                        rf"to continue\.", line), line
    done = len((run_dir / METRICS).read_text().splitlines())
    assert done == ckpt.load(run_dir / ckpt.CHECKPOINT)["epoch"] - 1 and not (run_dir / SUMMARY).exists()

    proc = start_cli(f"resume={run_dir}")        # resume, then lose it to SIGKILL mid-epoch
    wait_for_epochs(proc, run_dir, done + 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / SUMMARY).exists(), "the run finished before it could be killed"

    resumed = run_cli("run", f"resume={run_dir}", env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert records(run_dir) == reference(data, tmp_path / "ref")
    assert not (run_dir / ckpt.CHECKPOINT).exists()
    # the resume commands left the run's own .hydra/ as it was first written
    assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["resume"] is False
    assert "resume=true" not in (run_dir / ".hydra" / "overrides.yaml").read_text()


def test_a_sweep_resumes_skipping_finished_jobs(fake_mnist, tmp_path):
    sweep = tmp_path / "sweep"
    args = ("-m", "seed=0,1", "model=fc800x1", "model.width=8", "trainer.max_epochs=2", f"data.root={fake_mnist}",
            "data.download=false", "trainer.progress=false", f"hydra.sweep.dir={sweep}")
    first = run_cli("run", *args, env=ENV)
    assert first.returncode == 0, first.stderr
    want = records(sweep)
    job1 = next(sweep.glob("1_*"))
    finished = (sweep / next(iter(want)) / SUMMARY).read_bytes()
    (job1 / SUMMARY).unlink()                      # job 1 was killed before its first checkpoint
    (job1 / METRICS).write_text('{"epoch": 1, "tr')
    assert check_resume(list(args)) == (f"{sweep} already holds the records of a run; add resume=true to "
                                         f"continue it (finished runs are left as they are), or choose "
                                         f"another hydra.sweep.dir.")
    resumed = run_cli("run", "-m", f"resume={sweep}", env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("skipped, not retrained") == 1
    assert records(sweep) == want
    assert (sweep / next(iter(want)) / SUMMARY).read_bytes() == finished


def test_resume_shorthand_reuses_the_runs_own_overrides(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {
        "hydra": ["hydra.run.dir=/old/place"], "task": ["method=bp", "seed=3", "trainer.progress=true"]}}}))
    argv = expand_resume([f"resume={run}", "trainer.progress=false"])
    assert argv == ["method=bp", "seed=3", "trainer.progress=false", "resume=true", f"hydra.run.dir={run}"]
    (run / "seed3").mkdir()
    assert expand_resume([f"resume={run / 'seed3'}"])[-1] == f"hydra.run.dir={run}"
    sweep = tmp_path / "sweep dir"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {
        "hydra": ["hydra/launcher=joblib", f"hydra.sweep.dir={sweep}"], "task": ["seed=0,1"]}}}))
    assert expand_resume(["-m", f"resume={sweep}"]) == [
        "-m", "hydra/launcher=joblib", "seed=0,1", "resume=true", f"hydra.sweep.dir='{sweep}'"]
    assert expand_resume(["resume=true", "seed=1"]) == ["resume=true", "seed=1"]
    assert check_resume(["resume=true"]) == ("resume=true needs the directory to continue: add "
                                             "hydra.run.dir=<dir>, or use resume=<dir>.")
    assert check_resume(["resume=true", f"hydra.run.dir={run}"]) is None
    with pytest.raises(UserError, match="no run or sweep there"):
        expand_resume([f"resume={tmp_path / 'nothing'}"])


def test_a_checkpoint_from_a_different_config_is_refused_naming_the_differences(fake_mnist, tmp_path, monkeypatch):
    signal_at_step(monkeypatch, 10)
    with pytest.raises(Interrupted):
        train(small(fake_mnist), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(UserError) as err:
        train(small(fake_mnist, "optim.lr=0.5", "model.width=8"), tmp_path, resume=True)
    message = str(err.value)
    assert "model.width: 32 → 8" in message and "optim.lr: 0.001 → 0.5" in message
    assert "model.name: 'fc32x1' → 'fc8x1'" in message and "\n" not in message
    assert {p: p.read_bytes() for p in before} == before
    # what may change on resume: paths and display
    train(small(fake_mnist, "trainer.progress=auto", f"results_dir={tmp_path / 'elsewhere'}"), tmp_path, resume=True)
    assert json.loads((tmp_path / SUMMARY).read_text())["epochs"] == 3


def test_a_corrupt_checkpoint_is_one_sentence(fake_mnist, tmp_path):
    (tmp_path / METRICS).write_text('{"epoch": 1}\n')
    (tmp_path / ckpt.CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match=r"checkpoint .*checkpoint.pt is unreadable .*; delete it to start"):
        train(small(fake_mnist), tmp_path, resume=True)


def test_records_without_resume_are_refused_and_left_alone(fake_mnist, tmp_path):
    train(small(fake_mnist, "trainer.max_epochs=1"), tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="already holds the records of a run; add resume=true"):
        train(small(fake_mnist, "trainer.max_epochs=1"), tmp_path)
    assert {p: p.read_bytes() for p in before} == before
