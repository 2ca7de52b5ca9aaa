"""SIGTERM / SIGINT finish the step, write a checkpoint and stop in one line; resuming completes the run.

A real ``dfa-run`` stopped by SIGTERM (exit 143, the one line, the checkpoint) and resumed is in
test_resume.py (``test_a_real_run_stopped_by_sigterm_then_sigkill_…``); submitit's USR2 in test_launchers.py.
"""
from __future__ import annotations

import os
import signal

import pytest

from dfa_cli.runs import checkpoint as ckpt
from dfa_cli.runs import signals
from dfa_cli.run import train
from dfa_cli.runs.signals import Interrupted, stop_on_signals

from conftest import compose_config
from survive import one_thread, overrides, records, signal_at_step


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def small(fake_mnist, *extra):
    return compose_config(*overrides(fake_mnist, "trainer.batch_size=32", *extra, epochs=3))




@pytest.fixture
def sigint_not_ignored():
    """A shell starts background jobs with SIGINT ignored, and dfa-run rightly leaves an ignored
    signal alone; this test needs Ctrl-C's usual handler, whatever launched pytest."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_is_exit_130_and_the_handlers_are_restored(fake_mnist, tmp_path, monkeypatch, sigint_not_ignored):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal_at_step(monkeypatch, 5, signal.SIGINT)
    with pytest.raises(Interrupted) as stop:
        train(small(fake_mnist), tmp_path)
    assert stop.value.exit_code == 130 and str(stop.value).startswith("interrupted by SIGINT at epoch 1 after step 5")
    assert {s: signal.getsignal(s) for s in before} == before
    assert ckpt.load(tmp_path / ckpt.CHECKPOINT)["step"] == 5


@pytest.fixture
def sigterm_handler():
    """Install a Python SIGTERM handler for the test (as submitit does in its jobs)."""
    installed = []

    def install(handler):
        installed.append(signal.signal(signal.SIGTERM, handler))
    yield install
    if installed:
        signal.signal(signal.SIGTERM, installed[0])


def test_a_handler_that_was_there_before_gets_the_signal_after_the_checkpoint(fake_mnist, tmp_path, monkeypatch,
                                                                              sigterm_handler):
    """submitit's way: its handler requeues the job and exits (here: SystemExit), or ignores the signal."""
    seen = []

    def requeue(signum, frame):
        seen.append((ckpt.load(tmp_path / "run" / ckpt.CHECKPOINT)["step"], signum))
        raise SystemExit(-1)
    train(small(fake_mnist), tmp_path / "ref")
    sigterm_handler(requeue)
    signal_at_step(monkeypatch, 13, signal.SIGTERM)
    with pytest.raises(SystemExit):
        train(small(fake_mnist), tmp_path / "run")
    assert seen == [(5, signal.SIGTERM)] and signal.getsignal(signal.SIGTERM) is requeue
    train(small(fake_mnist), tmp_path / "run", resume=True)
    assert records(tmp_path / "run") == records(tmp_path / "ref")


def test_a_handler_that_ignores_the_signal_lets_training_go_on(fake_mnist, tmp_path, monkeypatch, sigterm_handler):
    seen = []
    sigterm_handler(lambda signum, frame: seen.append(signum))
    signal_at_step(monkeypatch, 13, signal.SIGTERM)
    summary = train(small(fake_mnist), tmp_path)[0]
    assert seen == [signal.SIGTERM] and summary["epochs"] == 3
    assert not (tmp_path / ckpt.CHECKPOINT).exists()


def test_an_ignored_signal_stays_ignored(monkeypatch):
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with stop_on_signals() as flag:
            os.kill(os.getpid(), signal.SIGTERM)
            assert flag.signum is None
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_ctrl_c_stops_at_once():
    with stop_on_signals() as flag:
        flag._handler(signal.SIGINT, None)
        with pytest.raises(KeyboardInterrupt):
            flag._handler(signal.SIGINT, None)


def test_submitit_jobs_also_watch_its_preemption_signal(monkeypatch):
    assert signals._watched() == [signal.SIGINT, signal.SIGTERM]
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert signals._watched() == [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2]
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert signals._watched()[-1] == signal.SIGUSR1
