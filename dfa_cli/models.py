"""Networks built from config, with feedback points where the learning rule needs them.

All weights carry a leading replica axis R (see :mod:`dfa_cli.rules`): ``weight`` is
``(R, n_in, n_out)``, ``bias`` ``(R, 1, n_out)``. Replica ``r`` is initialised from its own seed
with a CPU generator, so a seed gives the same network on every device and whether or not it is
trained stacked with others.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .rules import DirectFeedback, IndirectFeedback, LinearFA, dfa_feedback, uniform_

METHODS = ("bp", "fa", "dfa", "ifa")
ACTIVATIONS = {"tanh": torch.tanh, "logistic": torch.sigmoid, "relu": torch.relu}


def activation_derivative(name: str, h: torch.Tensor) -> torch.Tensor:
    """f′(a) expressed through the activation's output h = f(a)."""
    if name == "tanh":
        return 1 - h * h
    if name == "logistic":
        return h * (1 - h)
    return (h > 0).to(h.dtype)


def resolve_init(init: str, method: str, activation: str) -> str:
    """The paper's rule (author's code): FA/DFA with tanh/logistic start from zero weights.

    IFA is left out on purpose: its error reaches layer i ≥ 2 only through ``W_i``, so from
    zero weights those layers (and the output) can never move.
    """
    if init != "paper":
        return init
    zero_start = method in ("fa", "dfa") and activation in ("tanh", "logistic")
    return "zero" if zero_start else "uniform"


def dropout_mask(h: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted-dropout mask (kept units scaled by 1/(1-p)); it multiplies activation and feedback."""
    return (torch.rand_like(h) >= p).to(h.dtype) / (1 - p)


class FCNet(nn.Module):
    """Fully connected net ``in → hidden… → out`` trained by one of the four rules."""

    def __init__(self, sizes: Sequence[int], activation: str, method: str, seeds: Sequence[int],
                 init: str = "paper", dropout_input: float = 0.0, dropout_hidden: float = 0.0):
        super().__init__()
        self.sizes, self.activation, self.method = list(sizes), activation, method
        self.dropout_input, self.dropout_hidden = dropout_input, dropout_hidden
        self.init = resolve_init(init, method, activation)
        n_layers, n_rep = len(sizes) - 1, len(seeds)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(n_rep, sizes[i], sizes[i + 1])) for i in range(n_layers)])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.empty(n_rep, 1, sizes[i + 1])) for i in range(n_layers)])
        if method == "fa":
            for i in range(n_layers):
                self.register_buffer(f"fa_feedback{i}", torch.empty(n_rep, sizes[i], sizes[i + 1]))
        if method in ("dfa", "ifa"):
            widths = self.hidden_widths if method == "dfa" else self.hidden_widths[:1]
            self.register_buffer("feedback", torch.empty(n_rep, sizes[-1], sum(widths)))
        with torch.no_grad():
            for r, seed in enumerate(seeds):
                self._init_replica(r, torch.Generator().manual_seed(int(seed)))

    @property
    def hidden_widths(self) -> list[int]:
        return self.sizes[1:-1]

    @property
    def replicas(self) -> int:
        return self.weights[0].shape[0]

    def _init_replica(self, r: int, gen: torch.Generator) -> None:
        # Draw order is fixed and method-independent: the same seed gives BP and DFA the same
        # random weights; feedback matrices come after all weights.
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            bound = 1 / math.sqrt(w.shape[1])
            uniform_(w[r], bound, gen)
            uniform_(b[r], bound, gen)
            if self.method == "fa":
                getattr(self, f"fa_feedback{i}")[r].copy_(w[r])  # FA's B: the initial random W
        if self.method == "dfa":
            self.feedback[r].copy_(dfa_feedback(self.hidden_widths, self.sizes[-1], gen))
        elif self.method == "ifa":
            self.feedback[r].copy_(dfa_feedback(self.hidden_widths[:1], self.sizes[-1], gen))
        if self.init == "zero":
            for p in self.parameters():
                p[r].zero_()

    def _linear(self, i: int, h: torch.Tensor) -> torch.Tensor:
        w, b = self.weights[i], self.biases[i]
        if self.method == "fa" and self.training:
            return LinearFA.apply(h, w, b, getattr(self, f"fa_feedback{i}"))
        return torch.baddbmm(b, h, w)

    def forward(self, x: torch.Tensor, pre_activations: list | None = None) -> torch.Tensor:
        """``x``: ``(R, batch, n_in)``, or ``(batch, n_in)`` shared by all replicas → logits ``(R, batch, n_out)``.

        ``pre_activations``: a list that receives each hidden layer's ``a_i`` (``(R, batch, n_i)``, in
        the graph) — for diagnostics (:mod:`dfa_cli.diagnostics`, :mod:`dfa_cli.features`).
        """
        if x.dim() == 2:
            x = x.expand(self.replicas, *x.shape)
        train, cut = self.training, self.method in ("dfa", "ifa") and self.training
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
        if cut and self.method == "ifa":
            return IndirectFeedback.apply(logits, self.feedback, n_hidden, *self.weights[1:n_hidden],
                                          *derivs[:-1], *taps)
        return logits

    @torch.no_grad()
    def keep_replicas(self, keep: torch.Tensor) -> None:
        """Drop finished replicas in place; parameters keep their identity for the optimizer."""
        for p in self.parameters():
            p.data = p.data[keep]
            p.grad = None
        for name, buf in self.named_buffers():
            setattr(self, name, buf[keep])


def hidden_sizes(model_cfg) -> list[int]:
    """``model.hidden`` when given, else ``model.depth`` layers of ``model.width``."""
    if model_cfg.get("hidden"):
        return list(model_cfg.hidden)
    return [model_cfg.width] * model_cfg.depth


def build_model(cfg, input_shape: Sequence[int], n_classes: int, seeds: Sequence[int]) -> nn.Module:
    """The network that ``cfg.model``/``cfg.method``/``cfg.init``/``cfg.dropout`` describe."""
    m = cfg.model
    sizes = [math.prod(input_shape), *hidden_sizes(m), n_classes]
    return FCNet(sizes, m.activation, cfg.method.name, seeds, init=cfg.init.name,
                 dropout_input=cfg.dropout.input, dropout_hidden=cfg.dropout.hidden)
