"""Figures for ``dfa-report --out``, each drawn only where its data exists:

- ``<table>_curves_NN_<row>.png``: a row's test-error curves, one line per method;
- ``<table>_bars.png``: a paper table, ours beside the paper;
- ``<table>_learning_NN_<row>.png``: learning curves of a row, one panel per cell (method): training
  error as the paper measures it (online, during the training pass), the clean evaluation pass
  over the training set when recorded (``trainer.eval_train=true``), and test error; log scale;
- ``<table>_alignment_NN_<row>_<method>.png``: per hidden layer, the angle between the rule's
  update and the true BP gradient vs epoch (``diagnostics.alignment=true``);
- ``depth_fc240x100*.png``: the 100-hidden-layer experiment, train and test error per method;
- ``<table>_tsne_NN_<row>.png``: t-SNE maps of the saved features (``diagnostics.features=true``,
  ``experiment=tsne``): rows are methods, columns the input and each hidden layer.

Curves are the mean over seeds with a min–max band. matplotlib (Agg, no display) is imported only
here, this module only when ``--out`` is given, and scikit-learn only when there are t-SNE maps to
draw.
"""
from __future__ import annotations

import math
import re
import textwrap
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, ScalarFormatter  # noqa: E402

from .report import METHODS, METRICS, Report, View, read_metrics  # noqa: E402

FEATURES = "features.npz"  # written by dfa_cli.features (which imports torch, so not imported here)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@lru_cache(maxsize=512)
def _metrics(path: str) -> tuple:
    return tuple(read_metrics(Path(path) / METRICS))


def seed_curve(paths: list[str], column="test_error") -> pd.DataFrame:
    """Per epoch over seeds: mean, min and max of ``column`` (epochs a seed did not reach are skipped).

    ``column``: a key of the epoch rows, or a function of a row giving the value (None: no value).
    """
    get = column if callable(column) else (lambda r: r.get(column))
    rows = [{"epoch": r.get("epoch"), "value": get(r)} for path in paths for r in _metrics(str(path))]
    frame = pd.DataFrame(rows, columns=["epoch", "value"]).apply(pd.to_numeric, errors="coerce").dropna()
    return frame.groupby("epoch")["value"].agg(["mean", "min", "max"])


def curves_figure(view: View, row_cells: pd.DataFrame, path: Path) -> Path | None:
    """One row of a table: each method's test-error curve, mean over seeds with a min–max band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for i, cell in enumerate(row_cells.itertuples(index=False)):
        curve = seed_curve(cell.paths)
        if curve.empty:
            continue
        color = f"C{i}"
        ax.plot(curve.index, curve["mean"], color=color, label=f"{cell.method.upper()}, n={cell.n}")
        ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.2, linewidth=0)
        paper_mean = getattr(cell, "paper_mean", math.nan)
        if math.isfinite(paper_mean):
            ax.axhline(paper_mean, color=color, linestyle=":", linewidth=1)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    first = row_cells.iloc[0]
    setting = f" [{first['setting']}]" if first["setting"] else ""
    ax.set_title(f"{view.title.split(':')[0]} — {first['row']}{setting}", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error %")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="mean, min–max over seeds\n(dotted: the paper)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bars_figure(view: View, path: Path) -> Path | None:
    """A paper table's rows that have runs of ours: ours (solid) beside the paper (hatched), ± std."""
    cells = view.frame
    rows = cells.groupby("row_id").filter(lambda r: r["ours_mean"].notna().any())
    if rows.empty:
        return None
    labels = list(dict.fromkeys(rows["row"]))
    methods = list(dict.fromkeys(rows["method"]))
    width = 0.8 / (2 * len(methods))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.5 * len(labels) * len(methods) + 1), 4.5))
    for i, method in enumerate(methods):
        m = rows[rows["method"] == method].set_index("row").reindex(labels)
        x = [j + (2 * i - len(methods) + 0.5) * width for j in range(len(labels))]
        ax.bar(x, m["ours_mean"], width, yerr=m["ours_std"].fillna(0), color=f"C{i}", capsize=2,
               label=f"{method.upper()} ours")
        ax.bar([v + width for v in x], m["paper_mean"], width, yerr=m["paper_std"].fillna(0),
               color=f"C{i}", alpha=0.35, hatch="//", capsize=2, label=f"{method.upper()} paper")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("test error % (mean ± std)")
    ax.set_title(view.title, fontsize=9)
    ax.legend(fontsize=7, ncol=len(methods))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_figures(report: Report, out: Path, tsne_points: int = 1000) -> list[Path]:
    """Every figure the records allow (see the module doc); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for view in report.views:
        if "paths" not in view.frame:
            continue
        for row_id, row_cells in view.frame.groupby("row_id"):
            row_cells = row_cells[row_cells["n"] > 0]
            if row_cells.empty:
                continue
            first = row_cells.iloc[0]
            name = first["row"] if view.key != "other_runs" else f"{first['data']} {first['row']} {first['setting']}"
            name = _slug(name)[:60]
            written.append(curves_figure(view, row_cells, out / f"{view.key}_curves_{row_id:02d}_{name}.png"))
        if view.key != "other_runs":
            written.append(bars_figure(view, out / f"{view.key}_bars.png"))
        written += diagnostic_figures(view, out, tsne_points)
    return [p for p in written if p is not None]


# ---- learning curves, alignment, depth, t-SNE (issue 6) ----------------------------------------
ERROR_FLOOR = 1e-3   # percent: an error of 0 is drawn here on the log axis
TRAIN_CURVES = (("train_error", "train (online, as the paper)", "C0", "-"),
                ("train_error_eval", "train (clean eval pass)", "C2", "--"),
                ("test_error", "test", "C3", "-"))
ALIGNMENT_TITLES = {"delta_angle": "δa_i: rule vs BP", "weight_angle": "ΔW_i: rule vs BP",
                    "fa_feedback_angle": "FA: W_{i+1} vs its B_{i+1}"}
MAX_LAYER_LINES = 8  # deeper nets show this many layers, evenly spaced, first and last included


def _row_name(view: View, first) -> str:
    name = first["row"] if view.key != "other_runs" else f"{first['data']} {first['row']} {first['setting']}"
    return _slug(name)[:60]


def _title(view: View, first) -> str:
    setting = f" [{first['setting']}]" if first["setting"] else ""
    return f"{view.title.split(':')[0]} — {first['row']}{setting}"


def _suptitle(fig, text: str, width_inches: float) -> None:
    fig.suptitle(textwrap.fill(text, width=max(40, int(width_inches * 12))), fontsize=9)


def learning_figure(title: str, cells: pd.DataFrame, path: Path) -> Path | None:
    """One panel per cell: online and clean training error and test error vs epoch, log scale."""
    order = {m: i for i, m in enumerate(METHODS)}   # the paper's column order: BP, FA, DFA (IFA)
    cells = sorted(cells.itertuples(index=False), key=lambda c: (order.get(c.method, len(order)), c.method))
    fig, axes = plt.subplots(1, len(cells), figsize=(3.4 * len(cells) + 0.8, 3.8), sharey=True, squeeze=False)
    drawn = False
    for ax, cell in zip(axes[0], cells):
        for column, label, color, style in TRAIN_CURVES:
            curve = seed_curve(cell.paths, column)
            if curve.empty:
                continue
            curve = curve.clip(lower=ERROR_FLOOR)
            ax.plot(curve.index, curve["mean"], color=color, linestyle=style, label=label)
            ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.15, linewidth=0)
            drawn = True
        ax.set_title(f"{cell.method.upper()}, n={cell.n}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="both", alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes[0][0].set_ylabel(f"error % (log; 0 drawn at {ERROR_FLOOR:g})")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    low, high = axes[0][0].get_ylim()
    axes[0][0].yaxis.set_major_formatter(plain)
    axes[0][0].yaxis.set_minor_formatter(plain if high / low < 20 else NullFormatter())
    axes[0][0].legend(fontsize=7, title="mean, min–max over seeds", title_fontsize=7)
    _suptitle(fig, title, fig.get_figwidth())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _layer_value(key: str, layer: int):
    def get(row):
        values = (row.get("alignment") or {}).get(key) or []
        return values[layer] if layer < len(values) else None
    return get


def _shown_layers(n: int) -> list[int]:
    if n <= MAX_LAYER_LINES:
        return list(range(n))
    return sorted({round(i * (n - 1) / (MAX_LAYER_LINES - 1)) for i in range(MAX_LAYER_LINES)})


def alignment_figure(title: str, paths: list[str], path: Path) -> Path | None:
    """Angle vs epoch per hidden layer, one panel per measured angle; mean and min–max over seeds."""
    rows = [r for p in paths for r in _metrics(str(p)) if isinstance(r.get("alignment"), dict)]
    keys = [k for k in ALIGNMENT_TITLES if any(isinstance(r["alignment"].get(k), list) for r in rows)]
    if not keys:
        return None
    n_layers = max(len(r["alignment"].get(keys[0]) or []) for r in rows)
    layers = _shown_layers(n_layers)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys) + 0.6, 3.8), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for j, layer in enumerate(layers):
            curve = seed_curve(paths, _layer_value(key, layer))
            if curve.empty:
                continue
            color = cmap(j / max(1, len(layers) - 1))
            ax.plot(curve.index, curve["mean"], color=color, label=f"hidden {layer + 1}")
            ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.15, linewidth=0)
        ax.axhline(90, color="grey", linestyle=":", linewidth=1)
        ax.set_title(ALIGNMENT_TITLES[key], fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 180)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=7, integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("angle (degrees)")
    shown = "" if len(layers) == n_layers else f"{len(layers)} of {n_layers} layers; "
    axes[0][-1].legend(fontsize=7, title=f"{shown}mean, min–max\nover seeds", title_fontsize=7,
                       loc="upper left", bbox_to_anchor=(1.02, 1))   # outside: the curves stay visible
    _suptitle(fig, f"{title}: angle between the rule's update and the true BP gradient", fig.get_figwidth())
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def tsne_embedding(x, seed: int = 0):
    """2-D t-SNE of the rows of ``x`` (scikit-learn; perplexity 30, less for tiny sets)."""
    import numpy as np
    from sklearn.manifold import TSNE
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    perplexity = min(30.0, max(1.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed).fit_transform(x)


def _feature_runs(cells: pd.DataFrame) -> list[tuple[str, Path]]:
    """(method, features.npz) per cell that has one: the first of its runs that saved features."""
    found = []
    for cell in cells.itertuples(index=False):
        files = [Path(p) / FEATURES for p in cell.paths if (Path(p) / FEATURES).is_file()]
        if files:
            found.append((cell.method, files[0]))
    return found


def tsne_figure(title: str, runs: list[tuple[str, Path]], path: Path, points: int = 1000) -> Path | None:
    """Side-by-side t-SNE maps: a row per method, a column per layer (input, hidden 1..L), by label."""
    import numpy as np
    loaded = []
    for method, file in runs:
        try:
            with np.load(file) as z:
                layers = [str(n) for n in z["layers"]]
                loaded.append((method, file, layers, {n: z[n] for n in layers}, z["labels"]))
        except (OSError, KeyError, ValueError):
            continue  # an unreadable features file: that method is left out
    if not loaded:
        return None
    n_cols = max(len(layers) for _, _, layers, _, _ in loaded)
    fig, axes = plt.subplots(len(loaded), n_cols, figsize=(2.4 * n_cols, 2.4 * len(loaded) + 0.6), squeeze=False)
    cache: list[tuple] = []  # (array, embedding): the input is the same for every method
    for i, (method, _, layers, arrays, labels) in enumerate(loaded):
        n = len(labels)
        keep = np.sort(np.random.default_rng(0).choice(n, size=min(points, n), replace=False))
        for j, name in enumerate(layers):
            x = arrays[name][keep]
            emb = next((e for a, e in cache if a.shape == x.shape and np.array_equal(a, x)), None)
            if emb is None:
                emb = tsne_embedding(x)
                cache.append((x, emb))
            ax = axes[i][j]
            ax.scatter(emb[:, 0], emb[:, 1], c=labels[keep], cmap="tab10", vmin=-0.5, vmax=9.5, s=3,
                       linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name.replace("hidden", "hidden "), fontsize=9)
            if j == 0:
                ax.set_ylabel(method.upper(), fontsize=10)
        for j in range(len(layers), n_cols):
            axes[i][j].axis("off")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=plt.get_cmap("tab10")(d), markersize=4)
               for d in range(10)]
    fig.legend(handles, [str(d) for d in range(10)], loc="lower center", ncol=10, fontsize=7, frameon=False)
    _suptitle(fig, f"{title}: t-SNE of {min(points, len(loaded[0][4]))} test examples (one seed per method)",
              fig.get_figwidth())
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def diagnostic_figures(view: View, out: Path, tsne_points: int = 1000) -> list[Path | None]:
    """Learning curves per row, alignment per cell, the depth experiment and t-SNE maps of ``view``."""
    written = []
    if "paths" not in view.frame:
        return written
    for row_id, row_cells in view.frame.groupby("row_id"):
        row_cells = row_cells[row_cells["n"] > 0]
        if row_cells.empty:
            continue
        first = row_cells.iloc[0]
        stem, title = f"{view.key}_{{}}_{row_id:02d}_{_row_name(view, first)}", _title(view, first)
        written.append(learning_figure(title, row_cells, out / f"{stem.format('learning')}.png"))
        for cell in row_cells.itertuples(index=False):
            written.append(alignment_figure(f"{title}, {cell.method.upper()}", cell.paths,
                                            out / f"{stem.format('alignment')}_{cell.method}.png"))
        if first["model"] == "fc240x100":
            suffix = "" if view.key == "table1_mnist" else f"_{view.key}_{row_id:02d}"
            written.append(learning_figure(f"Depth experiment, 100 hidden layers — {title}", row_cells,
                                           out / f"depth_fc240x100{suffix}.png"))
        runs = _feature_runs(row_cells)
        if runs:
            written.append(tsne_figure(title, runs, out / f"{stem.format('tsne')}.png", tsne_points))
    return written
