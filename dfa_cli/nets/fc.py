"""The networks' common ground and the fully connected nets, with feedback points where the
learning rule needs them.

All weights carry a leading replica axis R (see :mod:`dfa_cli.nets.rules`): a fully connected
``weight`` is ``(R, n_in, n_out)``, its ``bias`` ``(R, 1, n_out)``. Replica ``r`` is initialised
from its own seed with a CPU generator, so a seed gives the same network on every device and
whether or not it is trained stacked with others.

- :class:`ReplicatedNet`: the replica axis and the fully connected layers every net has.
- :class:`FCNet`: the paper's fully connected networks, for every rule.
- The conv net is :class:`dfa_cli.nets.conv.ConvNet`; :func:`dfa_cli.network.build_model` builds either
  from config.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .rules import (SIGN_RULES, DirectFeedback, DirectTargetProjection, IndirectFeedback, LinearFA,
                    dfa_feedback, scaled_targets, sign_feedback, uniform_)

PAPER_RULES = ("bp", "fa", "dfa", "ifa")
LATER_RULES = ("shallow", "drtp", *SIGN_RULES)   # defined here for the fully connected nets
METHODS = PAPER_RULES + LATER_RULES
ACTIVATIONS = {"tanh": torch.tanh, "logistic": torch.sigmoid, "relu": torch.relu}


def activation_derivative(name: str, h: torch.Tensor) -> torch.Tensor:
    """f′(a) expressed through the activation's output h = f(a)."""
    if name == "tanh":
        return 1 - h * h
    if name == "logistic":
        return h * (1 - h)
    return (h > 0).to(h.dtype)


def resolve_init(init: str, method: str, activation: str, kind: str = "fc") -> str:
    """The paper's starting weights, as the author's code sets them (``init=paper``):

    - ``zero``: DFA with tanh/logistic; FA on the conv net (``conv.lua`` zeroes every FA layer).
      DRTP follows DFA (its hidden signals never read the weights either).
    - ``zero_above_first``: FA on a fully connected net with tanh/logistic. ``mlp.lua`` builds the
      first layer as a plain ``nn.Linear`` (no error goes below it) and its zeroing loop finds only
      the FA ``Linear`` class, so layer 1 keeps U(±1/√fan_in) and every layer above starts at zero.
    - ``uniform``: everything else (BP, ReLU, IFA, shallow, sign symmetry). IFA is left out on
      purpose: its error reaches layer i ≥ 2 only through ``W_i``, so from zero weights those layers
      could never move; shallow's hidden layers never learn, so they must start random; and
      sign(0) = 0 would give the sign-symmetric rules no feedback at all.
    """
    if init != "paper":
        return init
    if activation not in ("tanh", "logistic") or method not in ("fa", "dfa", "drtp"):
        return "uniform"
    return "zero_above_first" if method == "fa" and kind == "fc" else "zero"


def zero_start(layers: Sequence[tuple[nn.Parameter, nn.Parameter]], init: str, r: int) -> None:
    """Zero replica ``r`` of the ``(weight, bias)`` pairs (bottom layer first) as ``init`` says."""
    if init not in ("zero", "zero_above_first"):
        return
    for w, b in layers[1:] if init == "zero_above_first" else layers:
        w[r].zero_()
        b[r].zero_()


def scale_source(method: str, feedback_scale: str) -> str | None:
    """Whose feedback scale ``feedback_scale=source`` means for ``method`` (None: the paper's)."""
    if feedback_scale == "paper":
        return None
    if feedback_scale != "source" or method not in ("dfa", "drtp"):
        raise ValueError(f"feedback_scale={feedback_scale!r} is for method dfa or drtp (paper | source)")
    return "ssdfa" if method == "dfa" else "drtp"


def dropout_mask(h: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted-dropout mask (kept units scaled by 1/(1-p)); it multiplies activation and feedback.
    Drawn in logical (NCHW) order whatever ``h``'s memory layout, so a seed gives the same masks."""
    return (torch.rand(h.shape, dtype=h.dtype, device=h.device) >= p).to(h.dtype) / (1 - p)


class ReplicatedNet(nn.Module):
    """What every network shares: the replica axis and the fully connected layers ``weights``/``biases``."""

    @property
    def replicas(self) -> int:
        return self.weights[0].shape[0]

    def _linear(self, i: int, h: torch.Tensor) -> torch.Tensor:
        w, b = self.weights[i], self.biases[i]
        if self.method == "fa" and self.training:
            return LinearFA.apply(h, w, b, getattr(self, f"fa_feedback{i}"))
        if self.method in SIGN_RULES and self.training and i > 0:   # (layer 1 sends nothing down)
            feedback = sign_feedback(w, self.method, getattr(self, f"sign_magnitudes{i}", None))
            return LinearFA.apply(h, w, b, feedback)
        return torch.baddbmm(b, h, w)

    def layers(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """Every layer's ``(weight, bias)``, bottom first (conv layers, then fully connected)."""
        conv = list(zip(getattr(self, "conv_weights", []), getattr(self, "conv_biases", [])))
        return conv + list(zip(self.weights, self.biases))

    @torch.no_grad()
    def keep_replicas(self, keep: torch.Tensor) -> None:
        """Drop finished replicas in place; parameters keep their identity for the optimizer."""
        for p in self.parameters():
            p.data = p.data[keep]
            p.grad = None
        for name, buf in self.named_buffers():
            setattr(self, name, buf[keep])


class FCNet(ReplicatedNet):
    """Fully connected net ``in → hidden… → out`` trained by one of :data:`METHODS`.

    ``feedback``/``density``: how DFA's fixed random matrices are drawn (:func:`~dfa_cli.nets.rules.feedback_block`).
    ``feedback_scale``: ``paper``, or ``source`` for DRTP's and sparse DFA's scale as their code has it
    (:func:`~dfa_cli.nets.rules.feedback_bound`, :func:`~dfa_cli.nets.rules.scaled_targets`).
    ``reduction``: the training loss's (``mean`` | ``sum``), which DRTP's targets are scaled to match.
    """

    def __init__(self, sizes: Sequence[int], activation: str, method: str, seeds: Sequence[int],
                 init: str = "paper", dropout_input: float = 0.0, dropout_hidden: float = 0.0,
                 feedback: str = "uniform", density: float = 1.0, feedback_scale: str = "paper",
                 reduction: str = "mean"):
        super().__init__()
        self.sizes, self.activation, self.method = list(sizes), activation, method
        self.reduction = reduction   # the loss's (dfa_cli.training.losses): how DRTP scales its targets
        self.feedback_kind, self.density = feedback, density
        self.feedback_scale, self.feedback_source = feedback_scale, scale_source(method, feedback_scale)
        self.dropout_input, self.dropout_hidden = dropout_input, dropout_hidden
        self.init = resolve_init(init, method, activation, "fc")
        n_layers, n_rep = len(sizes) - 1, len(seeds)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(n_rep, sizes[i], sizes[i + 1])) for i in range(n_layers)])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.empty(n_rep, 1, sizes[i + 1])) for i in range(n_layers)])
        if method == "fa":
            for i in range(n_layers):
                self.register_buffer(f"fa_feedback{i}", torch.empty(n_rep, sizes[i], sizes[i + 1]))
        if method == "frsf":   # |M| of frSF: fixed random magnitudes
            for i in range(1, n_layers):
                self.register_buffer(f"sign_magnitudes{i}", torch.empty(n_rep, sizes[i], sizes[i + 1]))
        if method in ("dfa", "ifa", "drtp"):
            widths = self.hidden_widths[:1] if method == "ifa" else self.hidden_widths
            self.register_buffer("feedback", torch.empty(n_rep, sizes[-1], sum(widths)))
        with torch.no_grad():
            for r, seed in enumerate(seeds):
                self._init_replica(r, torch.Generator().manual_seed(int(seed)))

    @property
    def hidden_widths(self) -> list[int]:
        return self.sizes[1:-1]

    @property
    def cut(self) -> bool:
        """Whether the hidden blocks read detached inputs (no ``Wᵀδ`` anywhere) while training."""
        return self.training and self.method in ("dfa", "ifa", "drtp", "shallow")

    def _init_replica(self, r: int, gen: torch.Generator) -> None:
        # Draw order is fixed and method-independent: the same seed gives BP and DFA the same
        # random weights; feedback matrices come after all weights.
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            bound = 1 / math.sqrt(w.shape[1])
            uniform_(w[r], bound, gen)
            uniform_(b[r], bound, gen)
            if self.method == "fa":
                getattr(self, f"fa_feedback{i}")[r].copy_(w[r])  # FA's B: the initial random W
        if self.method == "frsf":   # M, independent of W (else B = W at the start), after all weights
            for i in range(1, len(self.weights)):
                m = getattr(self, f"sign_magnitudes{i}")[r]
                uniform_(m, 1 / math.sqrt(m.shape[0]), gen).abs_()
        if self.method in ("dfa", "drtp"):
            self.feedback[r].copy_(dfa_feedback(self.hidden_widths, self.sizes[-1], gen, kind=self.feedback_kind,
                                                density=self.density, source=self.feedback_source))
        elif self.method == "ifa":
            self.feedback[r].copy_(dfa_feedback(self.hidden_widths[:1], self.sizes[-1], gen))
        zero_start(self.layers(), self.init, r)

    def forward(self, x: torch.Tensor, pre_activations: list | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(R, batch, n_in)``, or ``(batch, n_in)`` shared by all replicas → logits ``(R, batch, n_out)``.

        ``pre_activations``: a list that receives each hidden layer's ``a_i`` (``(R, batch, n_i)``, in
        the graph) — for diagnostics (:mod:`dfa_cli.training.diagnostics`, :mod:`dfa_cli.training.features`).
        ``targets``: the labels ``(R, batch)``, which DRTP's hidden signals are made of while training.
        """
        if x.dim() == 2:
            x = x.expand(self.replicas, *x.shape)
        train, cut = self.training, self.cut
        f = ACTIVATIONS[self.activation]
        h = x * dropout_mask(x, self.dropout_input) if train and self.dropout_input > 0 else x
        taps, derivs, n_hidden = [], [], len(self.weights) - 1
        for i in range(n_hidden):
            a = self._linear(i, h.detach() if cut else h)
            if pre_activations is not None:
                pre_activations.append(a)
            h = f(a)
            needs_deriv = self.method == "ifa" and train and i < n_hidden - 1   # IFA carries δa upward
            deriv = activation_derivative(self.activation, h) if needs_deriv else None
            if train and self.dropout_hidden > 0:
                mask = dropout_mask(h, self.dropout_hidden)
                h = h * mask
                deriv = deriv * mask if deriv is not None else None
            taps.append(h)
            derivs.append(deriv)
        logits = self._linear(n_hidden, h.detach() if cut else h)
        if cut and self.method == "dfa":
            return DirectFeedback.apply(logits, self.feedback, *taps)
        if cut and self.method == "drtp":
            if targets is None:
                raise ValueError("method=drtp trains from the targets: call model(x, targets=y)")
            targets = scaled_targets(logits, targets, self.feedback_scale, self.reduction)
            return DirectTargetProjection.apply(logits, self.feedback, targets, *taps)
        if cut and self.method == "ifa":
            upper = [self.weights[i] for i in range(1, n_hidden)]   # (slicing a ParameterList builds a module)
            return IndirectFeedback.apply(logits, self.feedback, n_hidden, *upper, *derivs[:-1], *taps)
        return logits
