"""The report package itself (issue 12, items 6 and 7): imports go one way, modules stay small,
the entry point resolves, and many records are read fast (config.yaml only when needed)."""
from __future__ import annotations

import ast
import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml

from dfa_cli.report import collect as report_collect
from dfa_cli.report import spec

from test_report import PROTOCOL_SUMMARY, REPO, hydra_config, row_fields, write_run

PACKAGE = REPO / "dfa_cli" / "report"


def internal_imports(path: Path) -> set[str]:
    """The modules of dfa_cli.report that ``path`` imports (anywhere in it, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dfa_cli.report."):
            found.add(node.module.split(".")[2])
    return found - {None}


def test_imports_go_one_way_and_modules_stay_small():
    modules = {p.stem: internal_imports(p) for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert {"collect", "cells", "render", "figures", "cli"} <= set(modules)
    order, done = [], set()

    def visit(name, path=()):
        assert name not in path, f"import cycle: {' → '.join(path + (name,))}"
        if name in done:
            return
        for dep in modules[name]:
            visit(dep, path + (name,))
        done.add(name)
        order.append(name)
    for name in modules:
        visit(name)
    assert not modules["spec"] and "cli" not in set().union(*modules.values())
    for name in ("collect", "cells", "views", "render"):   # the tables never need the figures
        assert not modules[name] & {"plots", "figures", "tsne", "gallery"}, name
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 300, path.name
    assert not (REPO / "dfa_cli" / "figures.py").exists() and not (REPO / "dfa_cli" / "report.py").exists()


def test_the_entry_point_resolves():
    import importlib
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["dfa-report"]
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_yaml_is_parsed_with_the_c_loader_and_only_when_the_summary_lacks_a_field(tmp_path, monkeypatch):
    loaders = []
    monkeypatch.setattr(yaml, "load", lambda text, Loader: loaders.append(Loader) or {})
    spec.load_yaml("a: 1")
    assert loaders == [yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader]
    monkeypatch.undo()
    parsed = []
    real = report_collect.load_yaml
    monkeypatch.setattr(report_collect, "load_yaml", lambda text: parsed.append(1) or real(text))
    for seed in range(3):
        write_run(tmp_path / f"r{seed}", seed=seed, test_error=1.7)
    assert len(report_collect.collect([tmp_path]).runs) == 3 and parsed == []
    write_run(tmp_path / "old", seed=9, test_error=1.7, drop=("stop_train_error",))
    runs = report_collect.collect([tmp_path]).runs
    assert len(parsed) == 1 and runs.set_index("seed").loc[9, "setting"] == ""   # from .hydra/


def write_many(root: Path, n: int) -> None:
    """``n`` records written plainly (no fsync): a campaign's worth of folders, quickly."""
    summary = {**PROTOCOL_SUMMARY, **row_fields(), "test_error": 1.7, "best_test_error": 1.6, "train_error": 0.0,
               "epochs": 3}
    config = yaml.safe_dump(hydra_config(summary))
    metrics = "".join(json.dumps({"epoch": e, "test_error": 2.0, "train_error": 1.0}) + "\n" for e in (1, 2, 3))
    for i in range(n):
        d = root / f"run{i:05d}"
        os.makedirs(d / ".hydra")
        (d / "summary.json").write_text(json.dumps({**summary, "seed": i, "method": ("bp", "fa", "dfa")[i % 3]}))
        (d / "metrics.jsonl").write_text(metrics)
        (d / ".hydra" / "config.yaml").write_text(config)


@pytest.mark.slow
def test_ten_thousand_records_make_their_cells(tmp_path):
    """Every one of 10,000 records is read and counted (how fast: scripts/bench_report.py, which
    measures; a timed assertion here would fail on a slow or busy machine and prove nothing)."""
    from test_report import run_cli
    write_many(tmp_path / "runs", 10_000)
    result = run_cli(tmp_path / "runs", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert ",bp,test_error,3334," in result.stdout and ",dfa,test_error,3333," in result.stdout
