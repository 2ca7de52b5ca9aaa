"""Hidden features of test examples, saved after training for the t-SNE maps (``experiment=tsne``).

With ``diagnostics.features=true`` each seed's record gets ``features.npz`` (compressed numpy) when
that seed finishes training, written before its ``summary.json``:

    labels   (n,)        int64   test labels
    index    (n,)        int64   positions in the test set (the first n = diagnostics.feature_examples)
    input    (n, D)      float32 the network's input (pixels in [0, 1], flattened)
    hidden1 … hiddenL    float32 each hidden layer's activation h_i = f(a_i), dropout off (eval mode)
    layers   (L+1,)      str     the names above, in order

``dfa-report --out`` draws them with scikit-learn's t-SNE (:mod:`dfa_cli.figures`).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..nets.fc import ACTIVATIONS
from ..runs.records import atomic_write_bytes

FEATURES = "features.npz"


@torch.no_grad()
def hidden_features(model, x: torch.Tensor, replica: int, chunk: int = 1000) -> list[np.ndarray]:
    """Replica ``replica``'s hidden activations for ``x`` ``(n, D)``, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    f = ACTIVATIONS[model.activation]
    parts: list[list[np.ndarray]] = []
    try:
        for s in range(0, len(x), chunk):
            pre: list[torch.Tensor] = []
            model(x[s:s + chunk], pre_activations=pre)
            parts.append([f(a[replica]).float().cpu().numpy() for a in pre])
    finally:
        model.train(was_training)
    return [np.concatenate(layer) for layer in zip(*parts)]


def save_features(model, x: torch.Tensor, y: torch.Tensor, replica: int, path) -> Path:
    """Write ``features.npz`` (see the module doc) atomically to ``path``."""
    path = Path(path)
    hidden = hidden_features(model, x, replica)
    arrays = {"labels": y.cpu().numpy().astype(np.int64), "index": np.arange(len(x), dtype=np.int64),
              "input": x.float().cpu().numpy()}
    arrays.update({f"hidden{i}": h for i, h in enumerate(hidden, 1)})
    arrays["layers"] = np.array(["input"] + [f"hidden{i}" for i in range(1, len(hidden) + 1)])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getbuffer())
    return path


class FeatureDump:
    """What the trainer calls when a seed finishes: that replica's features of the first n test examples."""

    def __init__(self, n_examples: int = 2000):
        self.n_examples = int(n_examples)

    def __call__(self, model, data, replica: int, directory) -> Path:
        n = min(self.n_examples, len(data.x_test))
        return save_features(model, data.x_test[:n], data.y_test[:n], replica, Path(directory) / FEATURES)
