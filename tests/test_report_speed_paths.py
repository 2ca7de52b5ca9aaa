"""The fast paths of dfa-report (issue 49, item 5) give what the plain ways gave: the t-quantile table
is scipy's, the unbuffered reads read what ``read_text`` and a buffered tail read, ``rows_of`` is
itertuples, the paired differences are the merge they replace, and the tables import neither scipy
nor torch. No timing is asserted here (scripts/bench_report.py measures)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dfa_cli.report import cells, collect, spec
from dfa_cli.report.cells import PAIRED_COLUMNS, ROW_KEY, paired, rows_of, t_interval, t_quantile

from test_report import REPO, write_cell, write_run


# ---- the t quantile ---------------------------------------------------------------------------------
def test_the_t_table_is_scipys_to_the_last_bit_and_beyond_it_scipy_answers():
    from scipy.stats import t
    assert len(cells.T_975) == 100
    for df in range(1, 131):   # the table, then scipy.special beyond it
        assert t_quantile(0.975, df) == float(t.ppf(0.975, df)), df
    for q in (0.95, 0.995):    # another level: never the table
        assert t_quantile(q, 7) == float(t.ppf(q, 7))
    mean, low, high = t_interval([0.1, 0.3, 0.2, 0.4])
    half = float(t.ppf(0.975, 3)) * math.sqrt(sum((d - 0.25) ** 2 for d in [0.1, 0.3, 0.2, 0.4]) / 3) / 2
    assert (mean, low, high) == (0.25, 0.25 - half, 0.25 + half)


def test_the_tables_import_neither_scipy_nor_torch_nor_matplotlib():
    records = str(REPO / "results" / "paper" / "mnist")   # batch-mean records: Table 1 and its intervals
    code = ("import contextlib, io, sys\n"
            "from dfa_cli.report.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            f"    main([{records!r}, '--loss-reduction', 'mean', '--format', 'markdown'])\n"
            "assert 'paired differences vs BP' in out.getvalue() and '] higher n=3' in out.getvalue()\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'torch', 'matplotlib'}))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---- reading the files --------------------------------------------------------------------------------
def _buffered_last_line(path: Path):
    """The tail as dfa-report read it before (a buffered file, split into lines)."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - collect.TAIL_BYTES))
        tail = f.read()
    if not tail:
        return None, True
    return tail.rstrip(b"\n").split(b"\n")[-1].decode("utf-8", "replace"), tail.endswith(b"\n")


@pytest.mark.parametrize("content", [
    b"", b"\n", b"\n\n", b'{"epoch": 1}', b'{"epoch": 1}\n', b'{"epoch": 1}\n{"epoch": 2}\n\n\n',
    b'{"epoch": 1}\n{"epo', b'{"epoch": 1}\r\n{"epoch": 2}\r\n', b'{"a": "\xff\xfe"}\n',
    b'{"epoch": 1}\n' * 2000, b'{"x": "' + b"y" * 10_000 + b'"}\n', b"z" * 8191 + b"\n" + b'{"epoch": 3}\n',
], ids=range(12))
def test_the_unbuffered_tail_is_the_buffered_one(tmp_path, content):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(content)
    assert collect._last_line(path) == _buffered_last_line(path)
    assert collect._last_line(str(path)) == _buffered_last_line(path)


def test_a_metrics_file_that_cannot_be_read_is_said_as_before(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()
    assert collect.metrics_problem(tmp_path, 3) == "cannot read metrics.jsonl (Is a directory)"
    assert collect.metrics_problem(tmp_path / "nowhere", 3) == "no metrics.jsonl: no curves in the figures"


def _read_text_reason(path: Path) -> str | None:
    """What read_run said of a summary.json it could not parse, when it read it with read_text."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        return f"summary.json is not valid JSON ({err})"
    return None


@pytest.mark.parametrize("content", [
    b'{"a": 1,\r\n "b": }', b'{"a": 1,\r "b": }', b'\xef\xbb\xbf{"a": 1}', b'{"a": 1}\n\xff', b'{"a": "\r"}',
    b'{\r\n"a": [1, 2,\r\n]}', b"",
], ids=range(7))
def test_summary_json_is_refused_with_the_message_read_text_gave(tmp_path, content):
    run = write_run(tmp_path / "run", test_error=1.7)
    (run / "summary.json").write_bytes(content)
    expected = _read_text_reason(run / "summary.json")
    assert expected is not None
    with pytest.raises(collect.Unreadable) as err:
        collect.read_run(run)
    assert str(err.value) == expected


def test_a_crlf_summary_reads_as_the_plain_one(tmp_path):
    plain = write_run(tmp_path / "plain", test_error=1.7, seed=3)
    crlf = write_run(tmp_path / "crlf", test_error=1.7, seed=3)
    (crlf / "summary.json").write_bytes((plain / "summary.json").read_bytes().replace(b"\n", b"\r\n"))
    a, b = collect.read_run(plain)[0], collect.read_run(crlf)[0]
    assert {**a, "path": ""} == {**b, "path": ""}


# ---- the folders: overlapping roots, relative roots ------------------------------------------------------
def test_each_run_counts_once_whatever_roots_name_it(tmp_path, monkeypatch):
    write_cell(tmp_path / "results" / "mnist", "dfa", [1.7, 1.8])
    monkeypatch.chdir(tmp_path / "results")
    roots = [Path("."), Path("mnist"), tmp_path / "results", tmp_path / "results" / "mnist" / "dfa_s0",
             Path("./mnist/")]
    runs = collect.collect(roots).runs
    assert sorted(runs["path"]) == ["mnist/dfa_s0", "mnist/dfa_s1"]   # as the first root that reached each names it
    assert len(collect.collect([Path("mnist/dfa_s1"), Path(".")]).runs) == 2


# ---- the conf folder: found once per report --------------------------------------------------------------
def test_the_conf_folder_is_found_once_per_report_and_still_overridable(monkeypatch, tmp_path):
    spec.reread_presets()
    first = spec.conf_dir()
    assert (Path(first) / "config.yaml").is_file() and spec.conf_dir() is first   # cached
    spec.reread_presets()
    assert spec.conf_dir() == first
    monkeypatch.setattr(spec, "conf_dir", lambda: tmp_path)   # as tests do: row_protocol asks it each time
    assert spec.row_protocol("mnist", "fc800x2", "tanh", "dropout").source == ""
    spec.reread_presets()   # a report run under the replacement still starts afresh
    assert spec.row_protocol("mnist", "fc800x2", "tanh", "dropout").source == ""


# ---- YAML: libyaml's loader, else PyYAML's own ----------------------------------------------------------
def test_without_libyaml_the_pure_python_loader_reads_the_same(monkeypatch):
    text = (REPO / "results" / "paper" / "mnist" / "fc240x100_tanh_bp_s0" / ".hydra" / "config.yaml").read_text()
    with_c = spec.load_yaml(text)
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    assert spec.load_yaml(text) == with_c == yaml.load(text, Loader=yaml.SafeLoader)


# ---- pandas without its per-value costs ------------------------------------------------------------------
def test_rows_of_is_itertuples():
    frame = pd.DataFrame({"text": ["a", None, "c"], "n": [1, 2, 3], "x": [0.5, math.nan, 2.0],
                          "flag": [True, False, True], "paths": [["p"], [], ["q", "r"]], "maybe": [None, 1, "z"]})
    expected = list(frame.itertuples(index=False, name=None))
    got = list(rows_of(frame, list(frame.columns)))
    assert [tuple(map(repr, r)) for r in got] == [tuple(map(repr, r)) for r in expected]
    assert [tuple(map(type, r)) for r in got] == [tuple(map(type, r)) for r in expected]
    assert list(rows_of(frame.iloc[0:0], ["text", "n"])) == []


def _paired_by_merge(placed, cell_frame, metric):
    """The paired differences as dfa-report computed them before (a pandas merge per method)."""
    rows = []
    for row_id, row in cell_frame.groupby("row_id", sort=True):
        first = row.iloc[0]
        in_row = placed[(placed[ROW_KEY] == first[ROW_KEY]).all(axis=1)]
        base = in_row[in_row["method"] == "bp"]
        if base.empty or in_row["method"].eq("bp").all():
            continue
        for method in [m for m in row["method"] if m != "bp"]:
            other = in_row[in_row["method"] == method]
            entry = {"table": first["table"], "row": first["row"], "row_id": row_id, "method": method,
                     "baseline": "bp", "setting": "", "mark": "", "n_pairs": 0, "seeds": "",
                     "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan}
            if len(base) and len(other):
                settings = set(base["setting"]) | set(other["setting"])
                entry["setting"] = " | ".join(sorted(s or "paper protocol" for s in settings))
                if len(settings) == 1:
                    entry["mark"] = "".join(row.loc[row["method"] == method, "mark"])
                    both = base.merge(other, on="seed", suffixes=("_b", "_m"))
                    both = both[both[f"{metric}_b"].notna() & both[f"{metric}_m"].notna()].sort_values("seed")
                    diffs = list(both[f"{metric}_m"] - both[f"{metric}_b"])
                    mean, low, high = t_interval(diffs)
                    entry.update(n_pairs=len(diffs), seeds=" ".join(map(str, both["seed"])), mean_diff=mean,
                                 ci_low=low, ci_high=high)
            rows.append(entry)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def test_paired_differences_are_the_merge_they_replace():
    import random
    rng = random.Random(49)
    runs, cell_rows = [], []
    for row_id, (model, activation) in enumerate([("fc800x1", "tanh"), ("fc800x2", "tanh"), ("fc800x2", "relu"),
                                                  ("fc800x3", "tanh"), ("fc800x4", "tanh")]):
        key = {"data": "mnist", "model": model, "activation": activation, "variant": "none"}
        methods = [["bp", "fa", "dfa"], ["fa", "dfa"], ["bp"], ["bp", "dfa"], ["bp", "fa", "dfa"]][row_id]
        for method in methods:
            setting = "trainer.max_epochs=30" if (row_id == 3 and method == "dfa") else ""
            for seed in rng.sample(range(12), rng.randint(1, 8)):
                error = math.nan if rng.random() < 0.15 else round(rng.uniform(1, 3), 2)
                runs.append({**key, "method": method, "setting": setting, "seed": seed, "test_error": error,
                             "path": f"{model}-{method}-{seed}"})
        for method in ("bp", "fa", "dfa"):
            cell_rows.append({"table": "table1_mnist", "row": f"{model} {activation}", "row_id": row_id, **key,
                              "method": method, "mark": "†" if row_id == 4 and method == "fa" else ""})
    placed = pd.DataFrame(runs).sample(frac=1, random_state=1).reset_index(drop=True)
    cell_frame = pd.DataFrame(cell_rows)
    new, old = paired(placed, cell_frame, "test_error"), _paired_by_merge(placed, cell_frame, "test_error")
    assert new["n_pairs"].sum() > 0 and (new["setting"].str.contains(" | ", regex=False)).any()
    assert new.to_csv(index=False) == old.to_csv(index=False)
    assert list(new.dtypes) == list(old.dtypes)


# ---- the benchmark's records ----------------------------------------------------------------------------
def test_the_benchmark_writes_records_that_fill_the_paper_tables_with_shared_seeds(tmp_path):
    from conftest import load_script
    bench = load_script("bench_report")
    kinds = bench.write_records(tmp_path, 2 * 94 + 3)
    runs = collect.collect([tmp_path]).runs
    assert kinds == 94 and len(runs) == 2 * 94 + 3 and set(runs["loss_reduction"]) == {"sum"}
    assert not runs.duplicated(subset=[*ROW_KEY, "method", "setting", "seed"]).any()   # no copy is a rerun
    seeds = runs.groupby([*ROW_KEY, "method"])["seed"].apply(frozenset)
    row = seeds.xs("fc800x1", level="model")   # the methods of a row share their seeds: pairs vs BP
    assert len(row) == 3 and len(frozenset.intersection(*row)) >= 6
    wall, cpu, csv = bench.report_once(tmp_path)
    assert wall > 0 and cpu > 0 and csv.startswith("table,row,") and "table1_mnist" in csv
