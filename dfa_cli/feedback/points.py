"""Feedback points in a model's own ``forward``, and the output that turns ``e`` into their signals.

A :class:`Point` marks the end of a hidden block: ``h = self.p1(block1(x))``. An :class:`Output`
wraps the logits: ``return self.out(head(h))``; it is built with the model's points, in a fixed
order, and owns the fixed random feedback ``[B_1 | … | B_L]`` (a buffer). Under DFA (training,
grad enabled):

- a point stores its feature map ``h_i`` (the tap) and hands the block above ``h_i.detach()``, so
  autograd never computes a gradient w.r.t. a block's input: no ``Wᵀδ`` between points;
- the output hands the taps to :class:`DirectFeedback`, an identity on the logits whose backward
  receives ``e = ∂loss/∂logits`` from whatever loss was used, and gives every tap ``e @ B_i`` from
  one matmul ``e @ [B_1 | … | B_L]``; autograd then does each block's local backward.

``B_i`` is ``n_out × n_i``, dense over the point's whole feature map (``n_i`` its elements per
example: C·H·W for a conv map, T·C for tokens × channels), drawn U(±1/√n_i) like the built-in nets'
(:func:`dfa_cli.nets.rules.dfa_feedback`), always in float32 from the output's seed, then cast. It is drawn
at the first forward pass, when the shapes are known, or taken from a ``state_dict``.

A forward pass is one sequence of point calls closed by the output: each call of the output takes
the taps reached since the previous one, so two forward passes before one ``backward`` never mix.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ..nets.rules import FEEDBACK_KINDS, dfa_feedback

CUT_RULES = ("dfa", "shallow", "drtp")   # the rules whose blocks read detached inputs


class FeedbackError(ValueError):
    """A model the feedback API cannot train as written; the message is one sentence."""


class DirectFeedback(torch.autograd.Function):
    """Identity on the logits; backward gives every tap ``g_i = s @ B_i`` with ``s`` the output error
    ``e`` (DFA) or the given ``source`` (DRTP: the scaled one-hot target), both flattened per example."""

    @staticmethod
    def forward(ctx, logits, feedback, widths, source, *taps):
        ctx.save_for_backward(feedback, source)
        ctx.widths, ctx.shapes = widths, [t.shape for t in taps]
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, e):
        feedback, source = ctx.saved_tensors
        drive = e if source is None else source
        signal = drive.reshape(drive.shape[0], -1) @ feedback     # one matmul for every point
        grads = [g.reshape(s) for g, s in zip(signal.split(ctx.widths, dim=1), ctx.shapes)]
        return (e, None, None, None, *grads)


class Point(nn.Module):
    """A feedback point: identity, except under DFA while training (see the module's docstring).

    It belongs to the :class:`Output` it is listed in; it holds no state of its own.
    """

    def __init__(self):
        super().__init__()
        # plain attributes, not submodules: the output is reached through the model, not the point
        object.__setattr__(self, "_output", None)
        object.__setattr__(self, "index", None)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self._output is None:
            raise FeedbackError("this feedback.Point belongs to no feedback.Output; list every point of "
                                "the model in its Output([...]).")
        return self._output._reach(self, h)

    def extra_repr(self) -> str:
        return "" if self.index is None else f"index={self.index}"


class Output(nn.Module):
    """The model's output: ``return self.out(logits)``; ``points`` in the order of ``B_1 … B_L``.

    ``seed``: where the feedback matrices are drawn from (default: drawn from torch's global
    generator when the output is built, so ``torch.manual_seed`` makes them reproducible).
    ``feedback``/``density``: how they are drawn (:func:`dfa_cli.nets.rules.feedback_block`).
    The rule is set for the whole model with :func:`dfa_cli.feedback.set_rule` (default ``dfa``).
    """

    def __init__(self, points: Iterable[Point], seed: int | None = None, feedback: str = "uniform",
                 density: float = 1.0):
        super().__init__()
        points = list(points)
        if not points or not all(isinstance(p, Point) for p in points):
            raise FeedbackError("feedback.Output takes a non-empty list of feedback.Point modules, the "
                                "points of the model in the order of their feedback matrices.")
        if len(set(map(id, points))) != len(points) or any(p._output is not None for p in points):
            raise FeedbackError("each feedback.Point may be listed once, in one feedback.Output.")
        if feedback not in FEEDBACK_KINDS or not 0 < density <= 1:
            raise FeedbackError(f"feedback must be one of {', '.join(FEEDBACK_KINDS)} and density in "
                                f"(0, 1], got {feedback!r} and {density!r}.")
        for i, p in enumerate(points):
            object.__setattr__(p, "_output", self)
            object.__setattr__(p, "index", i)
        self.points = points   # a plain list: the points are the model's submodules, not the output's
        self.seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else int(seed)
        self.feedback_kind, self.density = feedback, density
        self.rule = "dfa"
        self.reduction = "mean"   # how the training loss reduces the batch: DRTP scales its targets to match
        self.register_buffer("feedback", None)          # (n_out, Σ n_i), drawn at the first pass
        self.register_buffer("feedback_widths", None)   # (L,) the n_i, so a state_dict restores the split
        self._widths: list[int] | None = None           # the same on the host (no device sync per step)
        self._taps: dict[int, torch.Tensor] = {}
        self._targets: torch.Tensor | None = None
        self._measured: dict[int, int] | None = None    # see measure_points()

    # ---- the rule at run time ---------------------------------------------------------------------
    def cutting(self) -> bool:
        """Whether this pass trains by direct feedback (points detach, the output feeds them)."""
        return self.rule in CUT_RULES and self.training and torch.is_grad_enabled()

    def set_targets(self, targets: torch.Tensor) -> None:
        """DRTP only: the class labels ``(batch,)`` of the next forward pass."""
        self._targets = targets

    def reset(self) -> None:
        """Forget the taps of a forward pass that stopped before the output (an exception in ``forward``)."""
        self._taps, self._targets = {}, None

    @property
    def widths(self) -> list[int] | None:
        """Each point's ``n_i`` (elements of its feature map per example), once known."""
        return None if self._widths is None else list(self._widths)

    def measure_points(self, on: bool = True) -> dict[int, int] | None:
        """Start recording each point's ``n_i`` under any rule (``on``), or stop and return them."""
        measured, self._measured = self._measured, ({} if on else None)
        return measured

    def _reach(self, point: Point, h) -> torch.Tensor:
        if self._measured is not None and torch.is_tensor(h) and h.dim() >= 2:
            self._measured[point.index] = math.prod(h.shape[1:])
        if not self.cutting():
            return h
        if not torch.is_tensor(h) or not h.is_floating_point() or h.dim() < 2:
            what = f"a {tuple(h.shape)} {h.dtype} tensor" if torch.is_tensor(h) else type(h).__name__
            raise FeedbackError(f"feedback point {point.index} got {what}; a point takes one floating-point "
                                f"tensor, batch first, then the feature map.")
        if point.index in self._taps:
            raise FeedbackError(f"feedback point {point.index} was reached twice before the output; a point "
                                f"marks one place in one forward pass (give a reused block one point per "
                                f"use), and after an exception in forward call the output's reset().")
        self._taps[point.index] = h
        return h.detach()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        taps, targets = self._taps, self._targets
        self.reset()
        if not self.cutting():
            return logits
        missing = [i for i in range(len(self.points)) if i not in taps]
        if missing:
            raise FeedbackError(f"feedback point(s) {', '.join(map(str, missing))} were not reached in this "
                                f"forward pass; every point listed in the Output must be called once per pass, "
                                f"before it.")
        taps = [taps[i] for i in range(len(self.points))]
        self._check(logits, taps)
        widths = [math.prod(t.shape[1:]) for t in taps]
        self._materialize(widths, math.prod(logits.shape[1:]), logits)
        if self.rule == "shallow":
            return logits          # the taps get no signal: only the block above the last point learns
        source = None
        if self.rule == "drtp":
            source = self._scaled_targets(logits, targets, self.reduction)
        return DirectFeedback.apply(logits, self.feedback, widths, source, *taps)

    # ---- shapes and the feedback matrices ---------------------------------------------------------
    def _check(self, logits: torch.Tensor, taps: list[torch.Tensor]) -> None:
        for i, t in enumerate(taps):
            if t.shape[0] != logits.shape[0]:
                raise FeedbackError(f"feedback point {i} has {t.shape[0]} rows but the output has "
                                    f"{logits.shape[0]}; points and output must put the batch first.")
            if not t.requires_grad:
                raise FeedbackError(f"feedback point {i} does not depend on any trainable parameter, so "
                                    f"nothing below it could learn from its signal; move it after a block "
                                    f"with weights.")

    def _materialize(self, widths: list[int], n_out: int, like: torch.Tensor) -> None:
        if self.feedback is None:
            gen = torch.Generator().manual_seed(self.seed)
            block = dfa_feedback(widths, n_out, gen, kind=self.feedback_kind, density=self.density)
            self.feedback = block.to(device=like.device, dtype=like.dtype)
            self.feedback_widths = torch.tensor(widths, device=like.device)
            self._widths = list(widths)
        expected = self._widths or [None] * len(widths)
        if self.feedback.shape != (n_out, sum(widths)) or any(e not in (None, w) for e, w in zip(expected, widths)):
            raise FeedbackError(f"the points' feature maps have {widths} elements per example and the output "
                                f"{n_out}, but the feedback matrices were drawn for {expected} and "
                                f"{self.feedback.shape[0]}; the shapes must stay those of the first pass.")

    @staticmethod
    def _scaled_targets(logits: torch.Tensor, targets, reduction: str) -> torch.Tensor:
        if targets is None or logits.dim() != 2:
            raise FeedbackError("rule drtp needs (batch, classes) logits and the labels of each pass: call "
                                "the output's set_targets(y) before the forward pass.")
        onehot = torch.zeros_like(logits).scatter_(1, targets.reshape(-1, 1).to(logits.device), 1.0)
        return onehot / logits.shape[0] if reduction == "mean" else onehot   # scaled as e is

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Buffers not drawn yet take their shape from the state being loaded (like lazy modules).
        for name in ("feedback", "feedback_widths"):
            if getattr(self, name) is None and prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.feedback_widths is not None:
            self._widths = [int(n) for n in self.feedback_widths.tolist()]

    def extra_repr(self) -> str:
        shape = "not drawn yet" if self.feedback is None else "x".join(map(str, self.feedback.shape))
        return f"points={len(self.points)}, rule={self.rule}, seed={self.seed}, feedback={shape}"
