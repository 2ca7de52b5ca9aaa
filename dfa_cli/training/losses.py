"""Output losses. Both give the output error ``e = ∂loss/∂logits`` that every rule trains the top layer with.

``loss.reduction`` says how a batch's errors make one step (:func:`batch_scale`):

- ``sum``: the author's code (``BCECriterion:updateGradInput`` hands back ``σ(a) − y`` per example,
  never divided by the batch size): the gradient is the sum over the batch. Under RMSprop a full
  batch's step is then the same as with a mean (up to eps), but an epoch's last, partial batch
  (CIFAR 16, MNIST 32 examples) steps about n/64 as far.
- ``mean``: the gradient is the mean over the batch, so every batch, the partial one too, takes a
  full-size step. The usual choice under SGD or Adam, whose step grows with the gradient's scale.

The loss that is reported is the mean over examples either way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "ce")
REDUCTIONS = ("sum", "mean")


def batch_scale(batch: int, reduction: str) -> int:
    """What the per-example mean loss is multiplied by before ``backward`` (the batch for ``sum``)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction {reduction!r} is not one of {REDUCTIONS}")
    return batch if reduction == "sum" else 1


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
