"""Checkpoints: continue a killed, preempted or interrupted run where it stopped.

One file per run directory, ``checkpoint.pt`` (for stacked seeds: in the top run directory, covering
every seed still training and carrying the summaries of those that have finished). It is written
atomically (a temporary file, fsync, rename) after each epoch's records, and mid-epoch when a
signal asks the run to stop; it is deleted once every seed has its ``summary.json``.

It holds the model and optimizer state, each seed's bookkeeping (EMA, best error, epoch seconds) and
data-order generator, the global CPU generator's state and the run device's CUDA generator's, the
position (next epoch, steps of it already taken, the epoch's statistics so far) and the resolved
config it was made with. Resuming restores all of it, so a resumed run's records equal those of an
uninterrupted one (bitwise on CPU).

A run may be resumed only with the config it was started with, except for the keys in
:data:`MAY_DIFFER`, which change where things are or how they are shown, never the numbers.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .errors import UserError
from .records import METRICS, SUMMARY, atomic_write_bytes, disk_error, truncate_metrics

CHECKPOINT = "checkpoint.pt"
FORMAT = 1

# Keys that may differ between the run and its resumption: paths, display settings (the progress
# bar, the logger that also shows the rows) and speed settings that change the numbers by float
# rounding at most (thread count, the fused optimizer), not the protocol.
MAY_DIFFER = ("resume", "results_dir", "data.root", "data.download", "data.cache_dir", "trainer.progress",
              "trainer.checkpoint_every", "trainer.threads", "optim.fused", "trainer.fast_step", "logger")


def save(path: Path, state: dict) -> None:
    """``torch.save`` into a temporary file beside ``path``, fsync, then rename over ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        atomic_write_bytes(path, buffer.getbuffer())
    except OSError as err:
        raise disk_error(path, err) from None


def load(path: Path) -> dict:
    """The checkpoint in ``path`` (tensors on the CPU); one sentence if it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, not a checkpoint at all, unreadable, …
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise UserError(f"the checkpoint {path} is unreadable ({reason}); delete it to start this "
                        f"run over, or restore it from a backup.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a dfa-run checkpoint of format {FORMAT}; delete it to start "
                        f"this run over.")
    return state


def cuda_rng_state(state: dict, device: torch.device) -> torch.Tensor:
    """The CUDA generator state to restore on ``device``: the one saved (the run device's own).
    Checkpoints written before issue 50 hold a list, one state per visible GPU: from it the entry of
    the GPU the run used (its config's ``cuda:N``, else this run's index) when the list is that long,
    else the first (fewer GPUs are visible now)."""
    saved = state["rng_cuda"]
    if torch.is_tensor(saved):
        return saved
    name = str((state.get("config") or {}).get("device", ""))
    index = int(name[5:]) if name.startswith("cuda:") and name[5:].isdigit() else (device.index or 0)
    return saved[index] if index < len(saved) else saved[0]


def plain(obj):
    """Built-in types only (e.g. ``torch.__version__`` is a str subclass), as a weights-only load needs."""
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or type(obj) in (bool, int, float, str) or torch.is_tensor(obj):
        return obj
    for kind in (bool, int, float, str):
        if isinstance(obj, kind):
            return kind(obj)
    return str(obj)


def plain_config(cfg) -> dict:
    """The resolved config as plain data (what a checkpoint records and compares)."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: obj}


# Settings added since some runs started whose default is not the behaviour that came before them:
# a config without the key ran as this value. (loss.reduction: the batch mean, until 2026-12-07.)
BEFORE_THE_KEY = {"loss.reduction": "mean"}


def config_differences(saved: dict, current: dict) -> list[str]:
    """``key: saved → current`` for every key (outside :data:`MAY_DIFFER`) whose value changed.

    A key the saved config lacks is a setting added to dfa-run since the run started; it is a
    difference only where the current value is not the behaviour that came before it
    (:data:`BEFORE_THE_KEY`; other new settings default to exactly that behaviour).
    """
    a, b = _flatten(saved), _flatten(current)
    a.update({k: v for k, v in BEFORE_THE_KEY.items() if k not in a and k.split(".")[0] in saved})
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == k or key.startswith(k + ".") for k in MAY_DIFFER) or key not in a:
            continue
        va, vb = a.get(key, "(absent)"), b.get(key, "(absent)")
        if va != vb:
            diffs.append(f"{key}: {va!r} → {vb!r}")
    return diffs


def record_dirs(run_dir: Path, seeds: list[int]) -> list[Path]:
    """Where each seed's record lives (see :func:`dfa_cli.runs.records.replica_dirs`), creating nothing."""
    run_dir = Path(run_dir)
    return [run_dir] if len(seeds) == 1 else [run_dir / f"seed{s}" for s in seeds]


def holds_records(directory: Path) -> bool:
    """Whether ``directory`` holds records of a run: in itself, a seed folder or a sweep's job folder."""
    directory = Path(directory)
    if not directory.is_dir():
        return False
    return any(next(directory.glob(level + name), None) is not None
               for level in ("", "*/", "*/*/") for name in (METRICS, SUMMARY, CHECKPOINT))


def _read_summary(directory: Path) -> dict | None:
    try:
        return json.loads((directory / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def _original_config(run_dir: Path) -> dict | None:
    """The config in the run's own ``.hydra/config.yaml`` (kept as first written), if readable."""
    try:
        return plain_config(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    except Exception:  # absent (runs started from Python) or unreadable: nothing to compare with
        return None


@dataclass
class Plan:
    """What to do with a run directory: ``fresh``, ``resume`` (with ``state``) or ``done``."""
    action: str
    state: dict | None = None
    summaries: list = field(default_factory=list)


def plan(run_dir: Path, seeds: list[int], config: dict, resume: bool) -> Plan:
    """Decide how a run in ``run_dir`` starts, and bring its records in line with its checkpoint.

    Without ``resume`` a directory that already holds records is refused (nothing is touched).
    With it: a complete run (every seed has its summary) is left as it is; a checkpoint from a
    different config is refused, naming the differences; otherwise the records are truncated to
    the checkpoint's last complete epoch (a kill between the metrics and the checkpoint leaves
    one epoch too many) and training continues from it. Without a checkpoint it starts over.
    """
    run_dir = Path(run_dir)
    dirs = record_dirs(run_dir, seeds)
    ckpt = run_dir / CHECKPOINT
    if not (ckpt.exists() or any((d / n).exists() for d in dirs for n in (METRICS, SUMMARY))):
        return Plan("fresh")
    if not resume:
        raise UserError(f"{run_dir} already holds the records of a run; add resume=true to continue "
                        f"it (a finished run is left as it is), or choose another hydra.run.dir.")
    state = load(ckpt) if ckpt.exists() else None
    reference = state["config"] if state else _original_config(run_dir)
    if reference is not None:
        diffs = config_differences(reference, config)
        if diffs:
            shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
            raise UserError(f"cannot resume {run_dir}: it was started with a different config "
                            f"({shown}); rerun with its original settings, or start a new run elsewhere.")
    summaries = [_read_summary(d) for d in dirs]
    if all(s is not None for s in summaries):
        ckpt.unlink(missing_ok=True)  # killed after the last summary, before the clean-up
        return Plan("done", summaries=summaries)
    finished = set(state["finished"]) if state else set()
    for seed, d in zip(seeds, dirs):
        if seed in finished:
            continue
        (d / SUMMARY).unlink(missing_ok=True)  # written just before a kill: it is written again
        truncate_metrics(d, state["epoch"] - 1 if state else 0)
    return Plan("resume", state=state) if state else Plan("fresh")
