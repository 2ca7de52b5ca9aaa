"""Adversarial training with the fast gradient sign method (Table 1's "2x800 tanh + adversarial" row).

The author's protocol (anokland/dfa-torch, ``-eps``; DESIGN §2): for each training batch, the input
gradient ∂L/∂x is computed with **true back-propagation** through the current weights, whatever rule
trains the network; ``x_adv = x + ε·sign(∂L/∂x)`` (ε = 0.08 on [0,1] inputs, no clipping in the
author's code: ``clip`` is an option, off by default); the training step — with the selected rule —
then sees ``x_adv`` only (the clean batch's gradient is discarded, ``-accGradient 0``).

The input gradient is taken with :func:`torch.autograd.grad` w.r.t. the input only, so the
parameters' ``.grad`` and the optimizer state are untouched. No host synchronisation: the whole
perturbation can live inside a step that a CUDA graph captures.
"""
from __future__ import annotations

import torch

from .losses import per_replica_loss
from ..nets.truebp import true_bp

PAPER_EPS = 0.08


def input_gradient(model, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """∂L/∂x by true back-propagation (``L`` = the training loss summed over replicas).

    ``x``: ``(R, B, D)``, one batch per replica: since the replicas' losses are summed, each
    replica's slice of the gradient is its own loss's gradient w.r.t. its own batch. The model runs
    in whatever mode it is in (in training: dropout active, as in the author's code).
    """
    x = x.detach().requires_grad_(True)
    with true_bp(model):
        logits = model(x)
    total = per_replica_loss(logits, y, loss).sum()
    (grad,) = torch.autograd.grad(total, x)
    return grad


def fgsm(model, x: torch.Tensor, y: torch.Tensor, eps: float, loss: str = "bce",
         clip: bool = False, gradient=None) -> torch.Tensor:
    """``x + eps·sign(∂L/∂x)`` (∂L/∂x by true BP), clipped to [0, 1] when ``clip``; detached.

    ``‖x_adv − x‖∞ = eps`` exactly (before clipping) wherever the gradient is non-zero; an input
    whose gradient is exactly zero (e.g. a zero-initialised first layer) is left unchanged.
    ``gradient(x, y)``, when given, computes ∂L/∂x instead of autograd (the CPU's hand-written
    step, :meth:`dfa_cli.training.fast.FastFCStep.input_gradient`).
    """
    grad = input_gradient(model, x, y, loss) if gradient is None else gradient(x.detach(), y)
    x_adv = x.detach() + eps * grad.sign()
    return x_adv.clamp(0.0, 1.0) if clip else x_adv


class FGSM:
    """The perturbation the trainer applies to every training batch (``adversarial.eps`` > 0)."""

    def __init__(self, eps: float, clip: bool = False, loss: str = "bce"):
        self.eps, self.clip, self.loss = float(eps), bool(clip), loss

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, gradient=None) -> torch.Tensor:
        return fgsm(model, x, y, self.eps, self.loss, self.clip, gradient)

    def __repr__(self) -> str:
        return f"FGSM(eps={self.eps}, clip={self.clip}, loss={self.loss!r})"
