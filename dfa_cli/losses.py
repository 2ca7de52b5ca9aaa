"""Output losses. Both give the output error ``e = ∂loss/∂logits`` that every rule trains the top layer with."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "ce")


def per_replica_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean loss over the batch for each replica: logits ``(R, B, C)``, targets ``(R, B)`` → ``(R,)``.

    ``bce`` (the paper): sigmoid + binary cross-entropy on one-hot targets, summed over classes,
    so ``e = sigmoid(a_y) − y``. ``ce``: softmax + cross-entropy, ``e = softmax(a_y) − y``.
    Summing the result over replicas keeps each replica's gradient exactly its own.
    """
    if kind == "bce":
        # (scatter rather than F.one_hot, which validates the labels with a host sync on some devices)
        onehot = torch.zeros_like(logits).scatter_(-1, targets.unsqueeze(-1), 1.0)
        return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(-1).mean(-1)
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(-1)
