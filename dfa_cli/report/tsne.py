"""t-SNE maps of the hidden features that runs saved (``features.npz``, ``experiment=tsne``).

An embedding takes seconds to minutes, so each is cached (keyed by the exact points and settings)
in ``<out>/figures/.cache/`` and progress is reported while they are computed. scikit-learn is
imported only when there is a map to compute.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .plots import save, wrap
from .spec import method_label

SEED = 0             # t-SNE's random state, and the choice of the examples shown
MAX_PERPLEXITY = 30.0


def perplexity_for(n: int) -> float:
    return min(MAX_PERPLEXITY, max(1.0, (n - 1) / 3))


def tsne_embedding(x, seed: int = SEED, cache: Path | None = None):
    """2-D t-SNE of the rows of ``x`` (perplexity 30, less for tiny sets); from ``cache`` when there."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    perplexity = perplexity_for(len(x))
    key = hashlib.sha1(x.tobytes() + repr((x.shape, perplexity, seed, "pca", "auto")).encode()).hexdigest()
    file = cache / f"tsne-{key[:20]}.npy" if cache else None
    if file and file.is_file():
        try:
            return np.load(file), True
        except (OSError, ValueError):
            pass   # a broken cache entry is computed again
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits   # scikit-learn's own dependency
    # One OpenMP thread: on a busy machine its threads spin-wait for each other (measured on 2 busy
    # cores: 88 s for a 1000-point map with the default threads, 5 s with one).
    with threadpool_limits(limits=1):
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                   random_state=seed).fit_transform(x)
    if file:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            np.save(file, emb)
        except OSError:
            pass   # no cache: the next report computes it again
    return emb, False


def load_features(file: Path) -> tuple[list[str], dict, np.ndarray]:
    """(layer names, arrays by name, labels) of a ``features.npz``; a broken file is named."""
    try:
        with np.load(file) as z:
            layers = [str(n) for n in z["layers"]]
            arrays = {n: np.asarray(z[n]) for n in layers}
            labels = np.asarray(z["labels"])
    except Exception as err:   # truncated (BadZipFile), empty (EOFError), a key missing …
        raise ValueError(f"{file} is not a readable features file ({type(err).__name__}: {err})") from None
    if any(len(a) != len(labels) for a in arrays.values()):
        raise ValueError(f"{file}: its layers and labels hold different numbers of examples")
    return layers, arrays, labels


def tsne_figure(title: str, runs: list[tuple[str, Path]], path: Path, points: int = 1000,
                progress=None, cache: Path | None = None) -> Path | None:
    """Side-by-side t-SNE maps: a row per method, a column per layer (input, hidden 1..L), by label."""
    loaded = [(method, *load_features(file)) for method, file in runs]
    if not loaded:
        return None
    n_cols = max(len(layers) for _, layers, _, _ in loaded)
    total = sum(len(layers) for _, layers, _, _ in loaded)
    width = 2.1 * n_cols + 0.4
    fig, axes = plt.subplots(len(loaded), n_cols, figsize=(width, 2.1 * len(loaded) + 0.9), squeeze=False,
                             layout="constrained")
    done, shown = 0, 0
    for i, (method, layers, arrays, labels) in enumerate(loaded):
        keep = np.sort(np.random.default_rng(SEED).choice(len(labels), size=min(points, len(labels)), replace=False))
        shown = len(keep)
        for j, name in enumerate(layers):
            done += 1
            start = time.perf_counter()
            emb, cached = tsne_embedding(arrays[name][keep], cache=cache)
            if progress:
                how = "from the cache" if cached else f"{time.perf_counter() - start:.1f} s"
                progress(f"t-SNE {done}/{total}: {method_label(method)} {name}, {len(keep)} points ({how})")
            ax = axes[i][j]
            ax.scatter(emb[:, 0], emb[:, 1], c=labels[keep], cmap="tab10", vmin=-0.5, vmax=9.5, s=2.5,
                       linewidths=0, rasterized=True)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.spines[["top", "right"]].set_visible(True)   # a frame: the map's axes mean nothing
            if i == 0:
                ax.set_title(name.replace("hidden", "hidden "))
            if j == 0:
                ax.set_ylabel(method_label(method), fontsize=10)
        for j in range(len(layers), n_cols):
            axes[i][j].axis("off")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=plt.get_cmap("tab10")(d), markersize=4)
               for d in range(10)]
    fig.legend(handles, [str(d) for d in range(10)], loc="outside lower center", ncol=10, frameon=False,
               title="digit (class label)")
    fig.suptitle(wrap(f"{title}: t-SNE of {shown} test examples (perplexity {perplexity_for(shown):.3g}, "
                      f"seed {SEED}; one trained seed per method)", width))
    return save(fig, path)

