"""The figures of ``dfa-report --out`` (issue 12, items 1 and 5): each drawn on its own, a failure
named with its reason; one colour per method; honest curves; names that tell figures apart;
t-SNE cached and reported; report.md with each table's figures under it."""
from __future__ import annotations

import json
import struct

import matplotlib
import numpy as np
import pandas as pd
import pytest

from dfa_cli import report
from dfa_cli.report import figures, gallery, plots, tsne
from dfa_cli.report.spec import FEATURES

from test_figures_extra import fake_features, pngs, write_record
from test_report import PNG_SIGNATURE, run_cli, write_cell


def captured(monkeypatch) -> list:
    """Figures are kept open here instead of saved, so a test can look at what was drawn."""
    kept = []

    def keep(fig, path):
        kept.append(fig)
        return path
    monkeypatch.setattr(figures, "save", keep)
    return kept


def cells_of(rows) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "paths": [str(p) for p in paths], "n": len(paths), "mark": mark,
                          "paper_mean": paper} for m, paths, mark, paper in rows])


# ---- item 1: never a traceback ------------------------------------------------------------------
def test_a_figure_that_fails_is_named_and_the_others_are_drawn(tmp_path):
    runs = tmp_path / "results"
    for method in ("bp", "fa", "dfa"):
        write_record(runs / f"{method}_0", method=method, seed=0)
    bad = runs / "dfa_1"
    write_record(bad, method="dfa", seed=1)
    rows = [json.loads(line) for line in (bad / "metrics.jsonl").read_text().splitlines()]
    rows[1]["alignment"] = [10.0, 20.0]                  # a list where an object belongs
    (bad / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, content in (("truncated", None), ("empty", b"")):
        run = write_record(runs / f"tsne_{name}", method="bp", model="fc400x3", hidden=[400] * 3, seed=0,
                           alignment=False, features=fake_features(n=40), lr=2e-4 if name == "empty" else 1e-4)
        data = (run / FEATURES).read_bytes()
        (run / FEATURES).write_bytes(data[: len(data) // 2] if content is None else content)
    out = tmp_path / "out"
    result = run_cli(runs, "--out", out)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if " not drawn: " in line]
    assert len(failed) == 3, result.stderr
    assert any("alignment_table1-mnist_2x800-tanh_dfa.png not drawn: ValueError" in line and
               "'alignment' is list, not an object" in line and "dfa_1" in line for line in failed)
    assert any("tsne_other-runs_mnist_3x400-tanh.png not drawn" in line and "tsne_truncated/features.npz" in line
               and "BadZipFile" in line for line in failed)
    assert any("tsne_other-runs_mnist_3x400-tanh_optim.lr-0.0002.png not drawn" in line and "EOFError" in line
               and "tsne_empty/features.npz" in line for line in failed)
    names = pngs(out / "figures")
    assert {"alignment_table1-mnist_2x800-tanh_fa.png", "learning-curves_table1-mnist_2x800-tanh.png",
            "test-error_table1-mnist_2x800-tanh.png"} <= set(names)   # the rest are drawn
    markdown = (out / "report.md").read_text()
    assert "### Figures not drawn (3)" in markdown and "alignment_table1-mnist_2x800-tanh_dfa.png" in markdown
    assert (out / "figures_failed.csv").is_file() and (out / "table1_mnist.md").is_file()


# ---- item 5: what a figure shows -----------------------------------------------------------------
def test_one_colour_per_method_in_every_figure(tmp_path, monkeypatch):
    kept = captured(monkeypatch)
    paths = {m: [write_record(tmp_path / m, method=m, seed=0)] for m in ("bp", "fa", "dfa")}
    figures.test_error_figure("row", cells_of([("dfa", paths["dfa"], "", 1.7), ("bp", paths["bp"], "", 1.6)]),
                              tmp_path / "a.png")
    figures.test_error_figure("row", cells_of([("fa", paths["fa"], "", 1.6), ("dfa", paths["dfa"], "", 1.7)]),
                              tmp_path / "b.png")
    figures.learning_figure("row", cells_of([("dfa", paths["dfa"], "", 1.7)]), tmp_path / "c.png")
    colours = [{line.get_label().split(" ")[0]: matplotlib.colors.to_hex(line.get_color())
                for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")} for fig in kept[:2]]
    assert colours[0]["DFA"] == colours[1]["DFA"] == plots.METHOD_COLOURS["dfa"].lower()
    assert colours[0]["BP"] == plots.METHOD_COLOURS["bp"].lower()
    assert {matplotlib.colors.to_hex(line.get_color()) for line in kept[2].axes[0].get_lines()
            if not line.get_label().startswith("_")} == {"#555555"}   # the key to the line styles
    assert {matplotlib.colors.to_hex(line.get_color()) for line in kept[2].axes[0].get_lines()
            if line.get_label().startswith("_")} == {plots.METHOD_COLOURS["dfa"].lower()}
    assert len(set(plots.METHOD_COLOURS.values())) == len(plots.METHOD_COLOURS)


def test_the_paper_line_is_named_only_where_it_is_drawn(tmp_path, monkeypatch):
    kept = captured(monkeypatch)
    paths = [write_record(tmp_path / "r", method="dfa", seed=0)]
    figures.test_error_figure("with", cells_of([("dfa", paths, "", 1.74)]), tmp_path / "a.png")
    figures.test_error_figure("without", cells_of([("dfa", paths, "", float("nan"))]), tmp_path / "b.png")
    titles = [fig.axes[0].get_legend().get_title().get_text() for fig in kept]
    assert "dotted: the paper" in titles[0] and "dotted" not in titles[1]


def test_a_curve_averages_only_while_every_seed_runs(tmp_path, monkeypatch):
    kept = captured(monkeypatch)
    short = write_record(tmp_path / "short", method="dfa", seed=0, epochs=3)
    long = write_record(tmp_path / "long", method="dfa", seed=1, epochs=6)
    figures.test_error_figure("row", cells_of([("dfa", [short, long], "", float("nan"))]), tmp_path / "a.png")
    lines = kept[0].axes[0].get_lines()
    mean = next(line for line in lines if line.get_label() == "DFA (n=2)")
    assert list(mean.get_xdata()) == [1, 2, 3]          # both seeds: test errors 12/e for each
    assert list(mean.get_ydata()) == pytest.approx([12.0, 6.0, 4.0])
    (tail,) = [line for line in lines if line.get_label().startswith("_") and line.get_linewidth() < 1]
    assert list(tail.get_xdata()) == [3, 4, 5, 6]        # the seed that ran on, alone and thin
    assert "thin: single seeds after others stopped" in kept[0].axes[0].get_legend().get_title().get_text()


def test_the_paired_figure_marks_pairs_of_shortened_runs(tmp_path, monkeypatch):
    kept = captured(monkeypatch)

    def pairs(mark):
        return pd.DataFrame([{"table": "table1", "row": row, "row_id": i, "method": "fa", "baseline": "bp",
                              "setting": "", "mark": m, "n_pairs": 1, "seeds": "0", "mean_diff": d,
                              "ci_low": float("nan"), "ci_high": float("nan")}
                             for i, (row, m, d) in enumerate([("1x800", "", 0.1), ("100x240", mark, 0.0)])])
    figures.paired_figure("marked", pairs("†"), tmp_path / "a.png")
    figures.paired_figure("plain", pairs(""), tmp_path / "b.png")
    marked, plain = kept
    assert [t.get_text() for t in marked.axes[0].texts] == ["†"]
    assert "shortened runs" in marked.legends[0].get_title().get_text()
    assert len(plain.axes[0].texts) == 0 and "shortened" not in plain.legends[0].get_title().get_text()


def test_titles_wrap_log_ticks_are_plain_and_labels_use_mathtext(tmp_path, monkeypatch):
    kept = captured(monkeypatch)
    paths = [str(write_record(tmp_path / f"r{s}", method="dfa", seed=s, epochs=8)) for s in (0, 1)]
    long_title = "Other runs, mnist 2x800 tanh [" + ", ".join(f"setting.number{i}=value{i}" for i in range(8)) + "]"
    figures.learning_figure(long_title, cells_of([("dfa", paths, "", 1.7)]), tmp_path / "a.png")
    figures.alignment_figure("row, DFA", paths, tmp_path / "b.png")
    learning, alignment = kept
    assert "\n" in learning._suptitle.get_text()
    ax = learning.axes[0]
    assert ax.get_yscale() == "log"
    assert [ax.yaxis.get_major_formatter()(v, 0) for v in (0.001, 0.2, 5.0, 50.0)] == ["0.001", "0.2", "5", "50"]
    assert [a.get_title() for a in alignment.axes[:2]] == [r"$\delta a_i$: rule vs BP", r"$\Delta W_i$: rule vs BP"]
    note = " ".join(t.get_text() for t in alignment.texts)
    assert "No point at epoch 1" in note and "undefined" in note and "zero start" in note


def test_file_names_say_what_a_figure_is_and_tell_figures_apart():
    a = gallery.figure_name("test-error", "other_runs", "mnist", "2x800 tanh", "data.subset=2000, optim.lr=0.001")
    b = gallery.figure_name("test-error", "other_runs", "mnist", "2x800 tanh", "data.subset=2000, optim.lr=0.002")
    assert a == "test-error_other-runs_mnist_2x800-tanh_data.subset-2000-optim.lr-0.001.png" and a != b
    long = ", ".join(f"trainer.setting{i}={i}" for i in range(20))
    c, d = (gallery.figure_name("learning-curves", "other_runs", "mnist", "2x800 tanh", long + end)
            for end in ("", ", x=1"))
    assert c != d and len(c) <= gallery.MAX_NAME + 4 and c.startswith("learning-curves_other-runs_mnist_2x800-tanh_")


def test_figures_are_small_pngs(tmp_path, capsys):
    write_cell(tmp_path / "results", "dfa", [1.7, 1.8])
    report.main([str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    for path in pngs(tmp_path / "out" / "figures").values():
        data = path.read_bytes()
        width, height = struct.unpack(">II", data[16:24])
        assert data[:8] == PNG_SIGNATURE and width <= 1100 and height <= 800, (path.name, width, height)
        assert len(data) < 200_000


def test_report_md_embeds_each_figure_under_its_table(tmp_path, capsys):
    write_cell(tmp_path / "results", "dfa", [1.7, 1.8])
    write_cell(tmp_path / "results", "bp", [1.6, 1.65], method="bp")
    write_cell(tmp_path / "results", "odd", [2.0], model="fc400x3", hidden=[400, 400, 400])
    report.main([str(tmp_path / "results"), "--out", str(tmp_path / "out")])
    sections = {s.split("\n", 1)[0]: s for s in (tmp_path / "out" / "report.md").read_text().split("### ")[1:]}
    table1 = next(s for title, s in sections.items() if title.startswith("Table 1 — MNIST: test error"))
    other = next(s for title, s in sections.items() if title.startswith("Other runs"))
    assert "![Test error vs epoch: Table 1 — MNIST, 2x800 tanh](figures/test-error_table1-mnist_2x800-tanh.png)" in table1
    assert "(figures/ours-vs-paper_table1-mnist.png)" in table1 and "other-runs" not in table1
    assert "(figures/test-error_other-runs_mnist_3x400-tanh.png)" in other
    paired = next(s for title, s in sections.items() if "paired" in title)
    assert "(figures/paired-vs-bp_table1-mnist.png)" in paired
    for target in [line.split("](")[1].rstrip(")") for s in sections.values() for line in s.splitlines()
                   if line.startswith("![")]:
        assert (tmp_path / "out" / target).is_file()


def test_tsne_states_its_settings_is_cached_and_reports_progress(tmp_path, monkeypatch):
    import sklearn.manifold
    calls = []
    real = sklearn.manifold.TSNE

    class Counting(real):
        def fit_transform(self, x, *a, **kw):
            calls.append(x.shape)
            return super().fit_transform(x, *a, **kw)
    monkeypatch.setattr(sklearn.manifold, "TSNE", Counting)
    kept, lines = captured(monkeypatch), []
    monkeypatch.setattr(tsne, "save", lambda fig, path: kept.append(fig) or path)
    files = []
    for method in ("bp", "dfa"):
        np.savez_compressed(tmp_path / f"{method}.npz", **fake_features(n=40, widths=(6,), seed=0 if method == "bp" else 1))
        files.append((method, tmp_path / f"{method}.npz"))
    cache = tmp_path / "cache"
    tsne.tsne_figure("row", files, tmp_path / "t.png", points=30, progress=lines.append, cache=cache)
    assert len(calls) == 4 and lines[0].startswith("t-SNE 1/4: BP input, 30 points (")
    title = kept[0]._suptitle.get_text().replace("\n", " ")
    assert "perplexity 9.67" in title and "seed 0" in title and "30 test examples" in title
    lines.clear()
    tsne.tsne_figure("row", files, tmp_path / "t.png", points=30, progress=lines.append, cache=cache)
    assert len(calls) == 4                                  # every map from the cache
    assert all(line.endswith("(from the cache)") for line in lines) and len(lines) == 4


def test_a_shortened_cells_alignment_title_says_how_it_was_cut(tmp_path, monkeypatch):
    """An alignment run bounded in epochs sits in its table cell marked †: its figure says so too."""
    kept = captured(monkeypatch)
    write_record(tmp_path / "runs" / "short" / "fa_0", method="fa", seed=0, max_epochs=3)
    write_record(tmp_path / "runs" / "full" / "dfa_0", method="dfa", seed=0)
    report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--format", "csv"])
    titles = sorted(f._suptitle.get_text().replace("\n", " ") for f in kept
                    if f._suptitle is not None and "angle between" in f._suptitle.get_text())
    assert len(titles) == 2
    assert "2x800 tanh, DFA: angle" in titles[0]
    assert "2x800 tanh, FA† [trainer.max_epochs=3]: angle" in titles[1]
