"""Shared fixtures: composed configs, a tiny fake MNIST, the real data root when present, the CLI."""
from __future__ import annotations

import copy
import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import dfa_cli.run as run_module

# One torch thread per test process: the README's command runs two pytest workers on two cores, and
# two threads each (torch's default here) only fight over them on nets this small. The processes
# the tests start inherit it, unless the caller's environment says otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parent.parent
# The tests mirror the package's rooms (tests/<room>/); a test may use another room's helpers
# (test_fast uses test_rules' hand computation), so every room's folder is importable.
sys.path[1:1] = [str(d) for d in sorted(Path(__file__).parent.iterdir()) if d.is_dir() and d.name != "__pycache__"]


def load_script(name: str):
    """``scripts/<name>.py`` as a module, for tests of the scripts' functions."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_config(*overrides: str):
    """The config ``dfa-run <overrides>`` would run with (Hydra's own composition), the caller's to change."""
    return copy.deepcopy(_composed(overrides))


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...]):
    """Composed once per list of overrides (~0.1 s each; the plan tests compose hundreds, many alike)."""
    with initialize_config_dir(config_dir=run_module.CONFIG_PATH, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file as MNIST ships it: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fake_mnist(root: Path, n_train: int = 256, n_test: int = 128, seed: int = 0) -> Path:
    """A learnable stand-in for MNIST: each class lights up its own block of pixels, plus noise."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label:2 * label + 4, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def fake_mnist(tmp_path) -> Path:
    return write_fake_mnist(tmp_path / "data")


def _real_root() -> Path | None:
    root = os.environ.get("DFA_DATA_DIR")
    return Path(root) if root and Path(root).is_dir() else None


@pytest.fixture
def real_data() -> Path:
    """The real data root from $DFA_DATA_DIR; tests that need it are skipped with the reason."""
    root = _real_root()
    if root is None or not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("real MNIST not available: set DFA_DATA_DIR to a torchvision-layout data root")
    return root


def run_cli(module: str, *args: str, cwd=None, env=None, timeout: int = 300,
            subprocess_only: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m dfa_cli.<module> args`` from this checkout; returns the completed process.

    ``dfa-run`` runs in this process unless ``subprocess_only`` (or $DFA_TEST_SUBPROCESS) says
    otherwise: the same main(), argv, environment and working folder, its stdout, stderr and exit
    code captured, only without a new interpreter importing torch and Hydra (~3 s a call)."""
    if module == "run" and not subprocess_only and not os.environ.get("DFA_TEST_SUBPROCESS"):
        return _run_in_process(list(args), cwd or REPO, env or {})
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", f"dfa_cli.{module}", *args], cwd=cwd or REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def _run_in_process(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """dfa_cli.run.main() as a process would run it; everything it changes is put back after."""
    import contextlib
    import io
    import logging
    import signal
    import traceback
    from hydra.core.global_hydra import GlobalHydra
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    saved_threads = torch.get_num_threads()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved_handlers = list(logging.getLogger().handlers)
    code = 0
    try:
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = ["dfa-run", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_module.main()
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if isinstance(stop.code, str):
                    err.write(stop.code + "\n")
            except BaseException:   # an uncaught error: what the interpreter would print, exit 1
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        torch.set_num_threads(saved_threads)
        for s, handler in saved_signals.items():
            signal.signal(s, handler)
        logging.getLogger().handlers[:] = saved_handlers
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(["dfa-run", *args], code, out.getvalue(), err.getvalue())


def write_fake_cifar10(root: Path, n_train: int = 100, n_test: int = 40, seed: int = 0) -> Path:
    """A learnable stand-in for CIFAR-10 in torchvision's layout (5 train pickles, 1 test pickle):
    each class brightens its own horizontal band of rows, on correlated noise."""
    import pickle
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def images(n):
        labels = rng.integers(0, 10, n)
        base = rng.integers(0, 120, (n, 3, 1, 32)) + rng.integers(0, 60, (n, 3, 32, 32))
        for i, label in enumerate(labels):
            base[i, :, 3 * label:3 * label + 3, :] += 80
        return base.clip(0, 255).astype(np.uint8).reshape(n, 3072), [int(v) for v in labels]
    sizes = [n_train // 5 + (1 if i < n_train % 5 else 0) for i in range(5)]
    for name, n in [*((f"data_batch_{i + 1}", s) for i, s in enumerate(sizes)), ("test_batch", n_test)]:
        data, labels = images(n)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    return root


@pytest.fixture
def fake_cifar10(tmp_path) -> Path:
    return write_fake_cifar10(tmp_path / "data")


@pytest.fixture
def real_cifar10() -> Path:
    """The real data root from $DFA_DATA_DIR when it holds CIFAR-10; else the test is skipped."""
    root = _real_root()
    if root is None or not (root / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip("real CIFAR-10 not available: set DFA_DATA_DIR to a torchvision-layout data root")
    return root


HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


def count_host_reads(monkeypatch) -> list:
    """From now on, every tensor read by the host (``.item()``, ``.cpu()``, ``float(t)``, …) is listed."""
    reads = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **kw):
            reads.append(_name)
            return _original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads
