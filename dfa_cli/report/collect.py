"""Records → runs: every run folder under the given paths, read, type-checked and described.

A run is described by ``summary.json``; ``.hydra/config.yaml`` is read only for a field the
summary lacks (older records), so most runs cost one small JSON file and the tail of their
``metrics.jsonl``. A record with a wrong-typed field is refused with the field named, never
averaged; a finished run whose ``metrics.jsonl`` is cut short still counts (the tables use its
summary) and is listed with what is missing.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .protocol import departures
from .spec import (FULL_SIZES, HYDRA_DIR, METHODS, METRICS, REDUCTION_BEFORE_THE_KEY, REDUCTIONS, SCHEDULES,
                   SPLITS, STOP_REASONS, SUMMARY, _get, load_yaml, reread_presets)

SEED_DIR = re.compile(r"seed\d+")
TAIL_BYTES = 8192
RUN_COLUMNS = ["path", "data", "model", "activation", "variant", "method", "seed", "split", "test_error",
               "best_test_error", "train_error", "epochs", "stop_reason", "git_commit", "finished_at",
               "loss_reduction", "setting", "changed"]
PROBLEM_COLUMNS = ["run", "reason", "counted", "data", "method"]


class Unreadable(Exception):
    """A run folder whose record cannot be used; the message says why, naming the field."""


# ---- finding run folders ------------------------------------------------------------------------
def _is_record_dir(path: Path) -> bool:
    return (path / SUMMARY).is_file() or (path / METRICS).is_file() or (path / HYDRA_DIR).is_dir()


def walk_runs(root: Path):
    """Yield ``(folder, has summary.json, its path as os.walk spells it)`` for every run folder under
    ``root`` (itself included).

    A stacked-seed job keeps its records in ``seed<N>/`` subfolders: it is a container, not a run.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        has_hydra = HYDRA_DIR in dirnames
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if SUMMARY in filenames:
            yield Path(dirpath), True, dirpath
        elif METRICS in filenames or has_hydra:
            here = Path(dirpath)
            if not any(SEED_DIR.fullmatch(d) and _is_record_dir(here / d) for d in dirnames):
                yield here, False, dirpath


# ---- metrics.jsonl --------------------------------------------------------------------------------
def read_metrics(path: Path) -> tuple[list[dict], str | None]:
    """The epochs of a ``metrics.jsonl`` and what is wrong with it (None: nothing).

    A line that is not a JSON object ends the reading there: what follows is not trusted.
    """
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if not isinstance(row, dict) or not line.endswith("\n"):
                    return rows, f"metrics.jsonl line {number} is cut off or not a JSON object"
                rows.append(row)
    except OSError as err:
        return rows, f"cannot read metrics.jsonl ({err.strerror or err})"
    except UnicodeDecodeError:
        return rows, "metrics.jsonl is not text"
    return rows, None


def _last_line(path) -> tuple[str | None, bool]:
    """The last line of a file (without reading all of it) and whether it ends with a newline."""
    with open(path, "rb", buffering=0) as f:   # unbuffered: one read of the tail, no buffer to fill
        f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_BYTES))
        tail = f.readall()
    if not tail:
        return None, True
    complete = tail.endswith(b"\n")
    last = tail.rstrip(b"\n")
    return last[last.rfind(b"\n") + 1:].decode("utf-8", "replace"), complete


def metrics_problem(directory, epochs) -> str | None:
    """What a finished run's ``metrics.jsonl`` lacks, checked on its last line only."""
    path = os.path.join(directory, METRICS)
    try:
        last, complete = _last_line(path)
    except FileNotFoundError:
        return "no metrics.jsonl: no curves in the figures"
    except OSError as err:
        return f"cannot read metrics.jsonl ({err.strerror or err})"
    try:
        row = json.loads(last) if last else None
    except ValueError:
        row = None
    if last is None:
        return "metrics.jsonl is empty: no curves in the figures"
    if not complete or not isinstance(row, dict):
        return "metrics.jsonl is cut off (its last line is not a whole JSON object): curves stop early"
    if isinstance(epochs, int) and row.get("epoch") != epochs:
        return (f"metrics.jsonl ends at epoch {row.get('epoch')!r} but summary.json says {epochs} epochs: "
                f"curves stop early")
    return None


# ---- summary.json: the types of its fields -------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_text(v) -> bool:
    return isinstance(v, str) and v != ""


CHECKS = {  # field → (test, what it must be); a present, non-null value must pass
    "data": (lambda v: v in FULL_SIZES, f"a known data set ({', '.join(FULL_SIZES)})"),
    "model": (_is_text, "a model name"),
    "method": (lambda v: v in METHODS, f"a known method ({', '.join(METHODS)})"),
    "seed": (lambda v: _is_int(v) and v >= 0, "a whole number ≥ 0"),
    "activation": (_is_text, "an activation name"), "variant": (_is_text, "a variant name"),
    "hidden": (lambda v: isinstance(v, list) and all(_is_int(n) for n in v), "a list of whole numbers"),
    "epochs": (lambda v: _is_int(v) and v >= 0, "a whole number ≥ 0"),
    "max_epochs": (lambda v: _is_int(v) and v >= 1, "a whole number ≥ 1"),
    "subset": (lambda v: _is_int(v) and v >= 1, "a whole number ≥ 1 or null"),
    "test_subset": (lambda v: _is_int(v) and v >= 1, "a whole number ≥ 1 or null"),
    "n_train": (lambda v: _is_int(v) and v >= 1, "a whole number ≥ 1"),
    "n_test": (lambda v: _is_int(v) and v >= 1, "a whole number ≥ 1"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "a whole number ≥ 1"),
    "loss_reduction": (lambda v: v in REDUCTIONS, f"one of {', '.join(REDUCTIONS)}"),
    "lr": (_is_number, "a number"), "stop_train_error": (_is_number, "a number"),
    "dropout_input": (_is_number, "a number"), "dropout_hidden": (_is_number, "a number"),
    "dropout_conv": (lambda v: isinstance(v, list) and all(_is_number(n) for n in v), "a list of numbers"),
    "adversarial_eps": (_is_number, "a number"), "adversarial_clip": (lambda v: isinstance(v, bool), "true or false"),
    "cuda_matmul_allow_tf32": (lambda v: isinstance(v, bool), "true or false"),
    "cudnn_allow_tf32": (lambda v: isinstance(v, bool), "true or false"),
    "lr_schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "lr_step_epochs": (lambda v: _is_int(v) and v >= 1, "a whole number ≥ 1 or null"),
    "lr_max_halvings": (lambda v: _is_int(v) and v >= 0, "a whole number ≥ 0 or null"),
    "eval_split": (lambda v: v in SPLITS, f"one of {', '.join(SPLITS)}"),
    "stop_reason": (lambda v: v in STOP_REASONS, f"one of {', '.join(STOP_REASONS)}"),
    "init": (_is_text, "an init name"), "init_config": (_is_text, "an init name"),
    "optimizer": (_is_text, "an optimizer name"), "loss": (_is_text, "a loss name"),
    "matmul_precision": (_is_text, "a precision name"), "finished_at": (_is_text, "a time stamp"),
    "git_commit": (_is_text, "a commit"),
}
REQUIRED = ("data", "model", "method")


def _show(value) -> str:
    kind = {str: "text", bool: "a boolean", list: "a list", dict: "an object"}.get(type(value))
    return f"{value!r}" + (f" ({kind})" if kind and not isinstance(value, bool) else "")


def check_summary(s: dict) -> None:
    """Raise :class:`Unreadable` naming the first field of the wrong type."""
    for key in REQUIRED:
        if s.get(key) is None:
            raise Unreadable(f"summary.json lacks {key}")
    for key, (ok, what) in CHECKS.items():
        value = s.get(key)
        if value is not None and not ok(value):
            raise Unreadable(f"summary.json: {key} is {_show(value)}, not {what}")
    prefix = "val" if s.get("eval_split") == "validation" else "test"
    diverged = s.get("stop_reason") == "diverged"
    for key in (f"{prefix}_error", f"best_{prefix}_error", "train_error"):
        if key not in s:
            raise Unreadable(f"summary.json lacks {key}")
        value = s[key]
        if value is None and not diverged:
            raise Unreadable(f"summary.json: {key} is null, but the run did not diverge "
                             f"(stop_reason {s.get('stop_reason')!r})")
        if value is not None and not _is_number(value):
            raise Unreadable(f"summary.json: {key} is {_show(value)}, not a number")


# ---- one run --------------------------------------------------------------------------------------
class LazyConfig:
    """``.hydra/config.yaml``, parsed only when a field the summary lacks is asked for."""

    def __init__(self, directory: Path):
        self.directory, self._tree = directory, None

    def get(self, dotted: str, default=None):
        if self._tree is None:
            try:
                tree = load_yaml((self.directory / HYDRA_DIR / "config.yaml").read_text(encoding="utf-8"))
            except Exception:   # absent or broken: it only fills gaps, and the gap then stays one
                tree = None
            self._tree = tree if isinstance(tree, dict) else {}
        return _get(self._tree, dotted, default)


def read_run(directory: Path) -> tuple[dict, str | None]:
    """One finished run → (what it is and its results, what is wrong with its metrics.jsonl)."""
    where = os.fspath(directory)   # plain strings and files: pathlib's and io's objects cost, × 1,200
    try:
        with open(os.path.join(where, SUMMARY), "rb") as f:
            text = f.read().decode("utf-8")   # as read_text(encoding="utf-8") reads it, newlines too:
        summary = json.loads(text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text)
    except OSError as err:
        raise Unreadable(f"cannot read summary.json ({err.strerror or err})") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise Unreadable(f"summary.json is not valid JSON ({err})") from None
    if not isinstance(summary, dict):
        raise Unreadable("summary.json is not a JSON object")
    config = LazyConfig(directory)
    for key, dotted in (("seed", "seed"), ("activation", "model.activation")):
        if summary.get(key) is None and config.get(dotted) is not None:
            summary[key] = config.get(dotted)   # older records: the config has it
    check_summary(summary)
    if summary.get("seed") is None:
        raise Unreadable("summary.json lacks seed (and .hydra/config.yaml does not have it)")
    if not summary.get("variant"):  # records older than the variant field
        summary["variant"] = "dropout" if summary.get("dropout") not in (None, "none") else "none"
    split = summary.get("eval_split") or "test"
    prefix = "val" if split == "validation" else "test"
    shortcuts, changes = departures(summary, config)
    run = {
        "path": str(directory), "data": summary["data"], "model": summary["model"],
        "activation": summary.get("activation") or "?", "variant": summary["variant"],
        "method": summary["method"], "seed": summary["seed"], "split": split,
        "test_error": _float(summary[f"{prefix}_error"]),
        "best_test_error": _float(summary[f"best_{prefix}_error"]),
        "train_error": _float(summary["train_error"]), "epochs": summary.get("epochs"),
        "stop_reason": summary.get("stop_reason"), "git_commit": summary.get("git_commit") or "",
        "finished_at": summary.get("finished_at") or "",
        "loss_reduction": summary.get("loss_reduction") or REDUCTION_BEFORE_THE_KEY,
        "setting": ", ".join(shortcuts + changes), "changed": bool(changes),
    }
    return run, metrics_problem(where, summary.get("epochs"))


def _float(value) -> float:
    return math.nan if value is None else float(value)


# ---- every run --------------------------------------------------------------------------------------
def _incomplete_reason(directory: Path) -> str:
    rows, _ = read_metrics(directory / METRICS)
    if rows:
        return f"no summary.json: still running, or stopped after {len(rows)} logged epoch(s)"
    return "no summary.json and no logged epoch: still starting, or it failed before training"


@dataclass
class Collected:
    runs: "object"       # pandas DataFrame, RUN_COLUMNS
    problems: "object"   # pandas DataFrame, PROBLEM_COLUMNS; counted: whether the run is in the tables


def collect(paths: list[Path]) -> Collected:
    """Every run folder under ``paths`` → runs and problems (as DataFrames)."""
    import pandas as pd
    reread_presets()
    runs, problems, seen = [], [], set()

    def problem(directory, reason, counted=False, data=None, method=None):
        problems.append({"run": str(directory), "reason": reason, "counted": counted, "data": data,
                         "method": method})
    for root in paths:
        real_root, top = str(root.resolve()), os.fspath(root)   # resolve() once per root: a stat per part
        for directory, has_summary, where in walk_runs(root):
            below = where[len(top):].lstrip(os.sep)   # where = top, or os.path.join(top, …)
            key = os.path.join(real_root, below) if below else real_root
            if key in seen:
                continue
            seen.add(key)
            if not has_summary:
                config = LazyConfig(directory)
                problem(directory, _incomplete_reason(directory), data=config.get("data.name"),
                        method=config.get("method.name"))
                continue
            try:
                run, warning = read_run(directory)
            except Unreadable as err:
                problem(directory, str(err))
                continue
            runs.append(run)
            if warning:
                problem(directory, warning, counted=True, data=run["data"], method=run["method"])
    frame = pd.DataFrame(runs, columns=RUN_COLUMNS).astype({"changed": bool})
    return Collected(frame, pd.DataFrame(problems, columns=PROBLEM_COLUMNS).astype({"counted": bool}))
