"""Helpers for the resume, signal, launcher and bad-input tests: runs long enough to interrupt,
records without their timing fields, and a started ``dfa-run`` to kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from conftest import REPO, compose_config, write_fake_mnist

TIMING = {"seconds", "elapsed", "wall_seconds", "seconds_per_epoch", "finished_at"}
# Subprocesses train on one thread (fast and steady on a busy machine); references computed in the
# test process do the same, so that numbers can be compared bit for bit.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def long_mnist(root: Path) -> Path:
    """Fake MNIST big enough that an epoch takes a noticeable time (256 steps of 16)."""
    return write_fake_mnist(root, n_train=4096, n_test=256)


def overrides(data: Path, *extra: str, epochs: int = 4) -> list[str]:
    """A small dropout run (so the global RNG matters) that never stops early."""
    return ["model=fc800x1", "model.width=32", f"trainer.max_epochs={epochs}", "trainer.batch_size=16",
            "trainer.stop_train_error=0", "dropout=paper", "optim.lr=1e-3", f"data.root={data}",
            "data.download=false", "trainer.progress=false", *extra]


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reference(data: Path, directory: Path, *extra: str, epochs: int = 4) -> dict:
    """The records of an uninterrupted run, trained in this process (they do not depend on where
    the data or the run directory are, so one computation serves every test that asks)."""
    key = (extra, epochs, (Path(data) / "MNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size)
    if key not in _references:
        from dfa_cli.run import train
        with one_thread():
            train(compose_config(*overrides(data, *extra, epochs=epochs)), directory)
        _references[key] = records(directory)
    return _references[key]


_references: dict = {}


def records(run_dir: Path) -> dict:
    """``{record dir: (metrics rows, summary)}`` without timing fields, for every record under ``run_dir``."""
    out = {}
    for summary in sorted(Path(run_dir).rglob("summary.json")):
        d = summary.parent
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        strip = lambda row: {k: v for k, v in row.items() if k not in TIMING}  # noqa: E731
        out[str(d.relative_to(run_dir))] = ([strip(r) for r in rows], strip(json.loads(summary.read_text())))
    return out


def start_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **ENV}
    return subprocess.Popen([sys.executable, "-m", "dfa_cli.run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(proc: subprocess.Popen, run_dir: Path, n: int = 1, timeout: float = 120) -> None:
    """Until ``run_dir`` has ``n`` epochs in its metrics and a checkpoint (it then trains epoch n + 1)."""
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if (run_dir / "checkpoint.pt").exists() and metrics.read_text().count("\n") >= n:
            time.sleep(0.05)  # into the next epoch
            return
        if proc.poll() is not None:
            raise AssertionError(f"dfa-run ended early: {proc.communicate()}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("dfa-run wrote no epoch in time")


def signal_at_step(monkeypatch, n: int, signum=signal.SIGTERM) -> None:
    """Deliver ``signum`` to this process right after the n-th training step (counted over runs)."""
    from dfa_cli.training import engine
    original, count = engine.Trainer._train_step, {"steps": 0}

    def step(self, idx):
        original(self, idx)
        count["steps"] += 1
        if count["steps"] == n:
            os.kill(os.getpid(), signum)
    monkeypatch.setattr(engine.Trainer, "_train_step", step)
