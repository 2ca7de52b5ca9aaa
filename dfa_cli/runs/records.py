"""Run records: the contract between ``dfa-run`` and ``dfa-report`` (DESIGN §5).

A run directory holds Hydra's ``.hydra/``, ``metrics.jsonl`` (one JSON object per epoch, appended
with one write per line) and ``summary.json``, written last and atomically. A directory without a
valid ``summary.json`` is an unfinished or broken run (it may hold a ``checkpoint.pt``, see
:mod:`dfa_cli.runs.checkpoint`). A failed write (full disk) is one sentence, and leaves what was
written before intact.
"""
from __future__ import annotations

import json
import math
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import torch
import yaml

from .errors import UserError

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


def disk_error(path: Path, err: OSError) -> UserError:
    """A failed write (full disk, lost permission, …) as one sentence; earlier records stay intact."""
    return UserError(f"could not write {path} ({err.strerror or err}); the records of finished epochs "
                     f"are intact: free some space or fix the folder, then resume the run with "
                     f"resume={Path(path).parent}.")


def _finite_or_none(value):
    """JSON has no NaN/inf: a diverged number is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    try:
        atomic_write_text(path, json.dumps(_finite_or_none(obj), indent=2, allow_nan=False) + "\n")
    except OSError as err:
        raise disk_error(path, err) from None


class RunRecord:
    """The record of one trained network (one seed) in ``directory``.

    ``mirror`` (see :mod:`dfa_cli.runs.logger`): shown each row after it is written, closed with the summary.
    """

    def __init__(self, directory, mirror=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.mirror = mirror

    def log_epoch(self, row: dict) -> None:
        line = (json.dumps(_finite_or_none(row), allow_nan=False) + "\n").encode()
        path = self.directory / METRICS
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                try:
                    write_all(fd, line)  # one line at a time: a kill leaves at most a partial last line
                    os.fsync(fd)         # on disk before the epoch's checkpoint says it is done
                except OSError:
                    os.ftruncate(fd, size)  # a failed write (full disk) leaves no partial line behind
                    raise
            finally:
                os.close(fd)
        except OSError as err:
            raise disk_error(path, err) from None
        if self.mirror is not None:
            self.mirror.log_epoch(row)

    def write_summary(self, summary: dict) -> None:
        write_json(self.directory / SUMMARY, summary)
        if self.mirror is not None:
            self.mirror.close()


def truncate_metrics(directory, epochs: int) -> None:
    """Keep the first ``epochs`` complete lines of ``metrics.jsonl`` (drops a partial last line)."""
    path = Path(directory) / METRICS
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            break
        if not line.endswith("\n") or row.get("epoch", 0) > epochs:
            break
        kept.append(line)
    try:
        if kept:
            atomic_write_text(path, "".join(kept))
        else:
            path.unlink()
    except OSError as err:
        raise disk_error(path, err) from None


def replica_dirs(run_dir, seeds) -> list[Path]:
    """Where each seed's record goes: the run directory itself, or one ``seed<N>/`` per stacked seed.

    Each stacked seed gets its own ``.hydra/`` with ``seed`` set to its value, so its record is
    indistinguishable from that of a separate run.
    """
    run_dir = Path(run_dir)
    if len(seeds) == 1:
        return [run_dir]
    dirs = []
    for seed in seeds:
        d = run_dir / f"seed{seed}"
        d.mkdir(parents=True, exist_ok=True)
        _copy_hydra_dir(run_dir / ".hydra", d / ".hydra", seed)
        dirs.append(d)
    return dirs


def _copy_hydra_dir(src: Path, dst: Path, seed: int) -> None:
    if not src.is_dir():
        return
    shutil.copytree(src, dst, dirs_exist_ok=True)
    config_file = dst / "config.yaml"
    if config_file.is_file():
        config = yaml.safe_load(config_file.read_text()) or {}
        config["seed"], config["seeds"] = seed, None
        config.setdefault("trainer", {})["replicas"] = 1
        atomic_write_text(config_file, yaml.safe_dump(config, sort_keys=False))


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the dfa-cli checkout that ran (with ``-dirty`` for local changes), if any."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model (``/proc/cpuinfo`` on Linux; ``platform`` elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def cpu_capability() -> str:
    """The widest vector instructions torch's CPU kernels use here (``AVX512``, ``AVX2``, ``DEFAULT``):
    the same CPU model name covers machines with and without AVX-512, about 1.8× apart per epoch."""
    return torch.backends.cpu.get_cpu_capability()


def machine_name(device: torch.device) -> str:
    """:func:`device_name`, and on the CPU its vector instructions: ``AMD EPYC AVX512``."""
    return device_name(device) + (f" {cpu_capability()}" if device.type == "cpu" else "")


def environment(device: torch.device) -> dict:
    """Where and with what a run ran (on the CPU, also its vector instructions)."""
    name = device_name(device)
    from .. import __version__
    return {
        "device": str(device), "device_name": name,
        **({"cpu_capability": cpu_capability()} if device.type == "cpu" else {}), "torch_version": torch.__version__,
        "python_version": sys.version.split()[0], "dfa_cli_version": __version__,
        "git_commit": git_commit(), "hostname": socket.gethostname(),
    }
