"""Networks built from config, with feedback points where the learning rule needs them.

All weights carry a leading replica axis R (see :mod:`dfa_cli.rules`): a fully connected
``weight`` is ``(R, n_in, n_out)``, its ``bias`` ``(R, 1, n_out)``; a convolution's weight is
``(R, C_out, C_in, k, k)``, its bias ``(R, C_out)``. Replica ``r`` is initialised from its own seed
with a CPU generator, so a seed gives the same network on every device and whether or not it is
trained stacked with others.

- :class:`FCNet`: the paper's fully connected networks.
- :class:`ConvNet`: the paper's "CONV tanh" network (conv → f → dropout → max-pool blocks, then
  fully connected layers).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .rules import (SIGN_RULES, Conv2dFA, DirectFeedback, DirectTargetProjection, IndirectFeedback,
                    LinearFA, dfa_feedback, scaled_targets, sign_feedback, uniform_)

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


def dropout_mask(h: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted-dropout mask (kept units scaled by 1/(1-p)); it multiplies activation and feedback."""
    return (torch.rand_like(h) >= p).to(h.dtype) / (1 - p)


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

    ``feedback``/``density``: how DFA's fixed random matrices are drawn (:func:`~dfa_cli.rules.feedback_block`).
    """

    def __init__(self, sizes: Sequence[int], activation: str, method: str, seeds: Sequence[int],
                 init: str = "paper", dropout_input: float = 0.0, dropout_hidden: float = 0.0,
                 feedback: str = "uniform", density: float = 1.0):
        super().__init__()
        self.sizes, self.activation, self.method = list(sizes), activation, method
        self.feedback_kind, self.density = feedback, density
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
            self.feedback[r].copy_(dfa_feedback(self.hidden_widths, self.sizes[-1], gen,
                                                kind=self.feedback_kind, density=self.density))
        elif self.method == "ifa":
            self.feedback[r].copy_(dfa_feedback(self.hidden_widths[:1], self.sizes[-1], gen))
        zero_start(self.layers(), self.init, r)

    def forward(self, x: torch.Tensor, pre_activations: list | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(R, batch, n_in)``, or ``(batch, n_in)`` shared by all replicas → logits ``(R, batch, n_out)``.

        ``pre_activations``: a list that receives each hidden layer's ``a_i`` (``(R, batch, n_i)``, in
        the graph) — for diagnostics (:mod:`dfa_cli.diagnostics`, :mod:`dfa_cli.features`).
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
            return DirectTargetProjection.apply(logits, self.feedback, scaled_targets(logits, targets), *taps)
        if cut and self.method == "ifa":
            upper = [self.weights[i] for i in range(1, n_hidden)]   # (slicing a ParameterList builds a module)
            return IndirectFeedback.apply(logits, self.feedback, n_hidden, *upper, *derivs[:-1], *taps)
        return logits


IFA_ON_CONV = ("method=ifa is not defined for model=conv: IFA carries the error forward through "
               "the layers above the first, and between the conv layers lie max-pooling maps whose "
               "forward error path the paper leaves undefined, so use method=bp, fa or dfa with model=conv.")


def rule_on_conv(method: str) -> str:
    return (f"method={method} is defined here for the fully connected models only (model.kind=fc), "
            f"not for model=conv; use method=bp, fa or dfa with model=conv.")
STACKING = ("loop", "grouped")   # how stacked replicas share a conv layer (see ConvNet)


def conv_map_shapes(input_shape: Sequence[int], channels: Sequence[int], kernel: int, padding: int,
                    pool: int, pool_stride: int) -> list[tuple[int, int, int]]:
    """The ``(C, H, W)`` of each pooled map (the conv net's feedback points).

    Stride-1 convolutions (``H + 2·padding − kernel + 1``), then max-pooling without padding,
    rounding down (Torch7's and PyTorch's default): 3×32×32 → 96×15×15 → 128×7×7 → 256×3×3.
    Raises :class:`UserError` when a map vanishes.
    """
    _, h, w = input_shape
    shapes = []
    for i, c in enumerate(channels):
        h, w = h + 2 * padding - kernel + 1, w + 2 * padding - kernel + 1
        if min(h, w) < pool:
            raise UserError(
                f"model=conv does not fit {'x'.join(map(str, input_shape))} inputs: the map before "
                f"pooling layer {i + 1} is {max(h, 0)}x{max(w, 0)}, smaller than the {pool}x{pool} "
                f"pooling window; use fewer conv layers (model.channels) or a smaller model.pool.")
        h, w = (h - pool) // pool_stride + 1, (w - pool) // pool_stride + 1
        shapes.append((int(c), h, w))
    return shapes


class ConvNet(ReplicatedNet):
    """The paper's conv net: blocks conv → f → dropout → max-pool, then FC layers → ``n_out``.

    The architecture follows the author's ``Models/conv.lua``; the defaults are the paper's
    (5×5 convs 96 → 128 → 256, padding 2, 3×3/2 max-pooling, FC 2048 → 2048). Rules:

    - BP: plain autograd.
    - FA: each conv sends its error down through its fixed kernels ``B`` (a copy of its initial
      random weights) with :class:`~dfa_cli.rules.Conv2dFA`; FC layers use ``LinearFA``.
    - DFA: the feedback point (tap) sits after each max-pool and after each hidden FC layer (after
      its dropout); ``B_i`` is dense over the whole pooled map (``n_out × C·H·W``). Every block reads
      a detached input, so no input gradient is computed anywhere; each tap's signal ``e @ B_i``
      flows back locally through pool, dropout mask and f′ to its conv weights.
    - IFA: refused (see ``IFA_ON_CONV``).

    Stacked replicas (``stack``): ``loop`` runs one convolution per replica (on a 2-core CPU as fast
    per seed as a separate run, and faster than ``grouped``); ``grouped`` runs one grouped
    convolution for all (activations ``(batch, R·C, H, W)``, weights viewed as
    ``(R·C_out, C_in, k, k)``, ``groups=R``), which may pay on a GPU (not measured). Both keep the
    replicas exactly independent; the FC layers are batched matmuls as in :class:`FCNet`.
    Evaluation runs in chunks of ``eval_chunk`` examples (over all replicas) to bound memory; the
    result does not depend on it.
    """

    def __init__(self, input_shape: Sequence[int], n_out: int, method: str, seeds: Sequence[int], *,
                 channels: Sequence[int] = (96, 128, 256), kernel: int = 5, padding: int = 2,
                 pool: int = 3, pool_stride: int = 2, fc: Sequence[int] = (2048, 2048),
                 activation: str = "tanh", init: str = "paper", dropout_input: float = 0.0,
                 dropout_conv: Sequence[float] | None = None, dropout_hidden: float = 0.0,
                 stack: str = "loop", eval_chunk: int = 1000, feedback: str = "uniform", density: float = 1.0):
        super().__init__()
        self.feedback_kind, self.density = feedback, density
        if method == "ifa":
            raise UserError(IFA_ON_CONV)
        if method in LATER_RULES:
            raise UserError(rule_on_conv(method))
        self.input_shape, self.method, self.activation = tuple(input_shape), method, activation
        self.channels, self.fc = [int(c) for c in channels], [int(n) for n in fc]
        self.kernel, self.padding, self.pool, self.pool_stride = kernel, padding, pool, pool_stride
        self.dropout_input, self.dropout_hidden = dropout_input, dropout_hidden
        self.dropout_conv = [dropout_hidden] * len(channels) if dropout_conv is None else list(dropout_conv)
        if len(self.dropout_conv) != len(self.channels):
            raise UserError(f"dropout.conv has {len(self.dropout_conv)} entries but the conv net has "
                            f"{len(self.channels)} conv layers; give one rate per conv layer.")
        if stack not in STACKING:
            raise UserError(f"model.stack={stack!r} is not supported; choose one of: {', '.join(STACKING)}.")
        self.stack, self.eval_chunk = stack, eval_chunk
        self.init = resolve_init(init, method, activation, "conv")
        self.map_shapes = conv_map_shapes(self.input_shape, self.channels, kernel, padding, pool, pool_stride)
        n_rep = len(seeds)
        c_in = [self.input_shape[0], *self.channels[:-1]]
        self.conv_weights = nn.ParameterList(
            [nn.Parameter(torch.empty(n_rep, co, ci, kernel, kernel)) for ci, co in zip(c_in, self.channels)])
        self.conv_biases = nn.ParameterList([nn.Parameter(torch.empty(n_rep, co)) for co in self.channels])
        sizes = [math.prod(self.map_shapes[-1]), *self.fc, n_out]
        self.sizes = sizes
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(n_rep, sizes[i], sizes[i + 1])) for i in range(len(sizes) - 1)])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.empty(n_rep, 1, sizes[i + 1])) for i in range(len(sizes) - 1)])
        if method == "fa":
            for i, w in enumerate(self.conv_weights):
                self.register_buffer(f"fa_conv_feedback{i}", torch.empty_like(w))
            for i, w in enumerate(self.weights):
                self.register_buffer(f"fa_feedback{i}", torch.empty_like(w))
        if method == "dfa":
            self.register_buffer("feedback", torch.empty(n_rep, n_out, sum(self.hidden_widths)))
        with torch.no_grad():
            for r, seed in enumerate(seeds):
                self._init_replica(r, torch.Generator().manual_seed(int(seed)))

    @property
    def hidden_widths(self) -> list[int]:
        """Sizes of the feedback points: each pooled map ``C·H·W``, then each hidden FC layer."""
        return [math.prod(s) for s in self.map_shapes] + self.fc

    def _init_replica(self, r: int, gen: torch.Generator) -> None:
        # Fixed, method-independent draw order (as FCNet): conv layers, FC layers, then DFA's B.
        # U(±1/√fan_in), fan_in = C_in·k·k for a conv; FA's B kernels are the initial weights.
        for i, (w, b) in enumerate(zip(self.conv_weights, self.conv_biases)):
            bound = 1 / math.sqrt(math.prod(w.shape[2:]))
            uniform_(w[r], bound, gen)
            uniform_(b[r], bound, gen)
            if self.method == "fa":
                getattr(self, f"fa_conv_feedback{i}")[r].copy_(w[r])
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            bound = 1 / math.sqrt(w.shape[1])
            uniform_(w[r], bound, gen)
            uniform_(b[r], bound, gen)
            if self.method == "fa":
                getattr(self, f"fa_feedback{i}")[r].copy_(w[r])
        if self.method == "dfa":
            self.feedback[r].copy_(dfa_feedback(self.hidden_widths, self.sizes[-1], gen,
                                                kind=self.feedback_kind, density=self.density))
        zero_start(self.layers(), self.init, r)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(R, batch, C·H·W)``, or ``(batch, C·H·W)`` shared by all replicas → ``(R, batch, n_out)``.
        (``targets`` is for the rules that read them, none of which is defined on the conv net.)"""
        chunk = max(1, self.eval_chunk // self.replicas)
        if not self.training and x.shape[-2] > chunk:
            return torch.cat([self._forward(part) for part in x.split(chunk, dim=-2)], dim=1)
        return self._forward(x)

    @staticmethod
    def _per_replica(h: torch.Tensor, group: int) -> torch.Tensor:
        """``(batch, G·C, H, W)`` → ``(G, batch, C·H·W)`` (a view when G = 1)."""
        return h.reshape(h.shape[0], group, -1).transpose(0, 1)

    def _lanes(self) -> list[tuple[int, int]]:
        """Replica ranges that share one convolution call: all (``grouped``) or one each (``loop``)."""
        size = self.replicas if self.stack == "grouped" else 1
        return [(a, min(a + size, self.replicas)) for a in range(0, self.replicas, size)]

    def _conv_lane(self, x: torch.Tensor, a: int, b: int, cut: bool) -> tuple[list, torch.Tensor]:
        """The conv blocks of replicas ``a:b`` on ``x`` ``(b−a, batch, C·H·W)`` → (taps, last pooled map),
        both ``(b−a, batch, ·)``; ``groups = b − a`` keeps the replicas independent."""
        train, g = self.training, b - a
        fa = train and self.method == "fa"
        f = ACTIVATIONS[self.activation]
        c, hh, ww = self.input_shape
        n = x.shape[1]
        h = x.reshape(g, n, c, hh, ww).transpose(0, 1).reshape(n, g * c, hh, ww)
        taps = []
        for i, (w, bias) in enumerate(zip(self.conv_weights, self.conv_biases)):
            w, bias = w[a:b].flatten(0, 1), bias[a:b].flatten()
            inp = h.detach() if cut else h
            if fa:
                kernels = getattr(self, f"fa_conv_feedback{i}")[a:b].flatten(0, 1)
                pre = Conv2dFA.apply(inp, w, bias, kernels, self.padding, g)
            else:
                pre = F.conv2d(inp, w, bias, padding=self.padding, groups=g)
            h = f(pre)
            if train and self.dropout_conv[i] > 0:
                h = h * dropout_mask(h, self.dropout_conv[i])
            h = F.max_pool2d(h, self.pool, self.pool_stride)
            if cut:
                taps.append(self._per_replica(h, g))
        return taps, self._per_replica(h, g)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        n_rep, train = self.replicas, self.training
        cut = train and self.method == "dfa"
        f = ACTIVATIONS[self.activation]
        if x.dim() == 2:
            x = x.expand(n_rep, *x.shape)
        if train and self.dropout_input > 0:
            x = x * dropout_mask(x, self.dropout_input)
        lanes = [self._conv_lane(x[a:b], a, b, cut) for a, b in self._lanes()]
        join = (lambda parts: parts[0]) if len(lanes) == 1 else (lambda parts: torch.cat(parts))
        taps = [join([lane[0][i] for lane in lanes]) for i in range(len(lanes[0][0]))]
        h = join([lane[1] for lane in lanes])
        last = len(self.weights) - 1
        for i in range(last):
            h = f(self._linear(i, h.detach() if cut else h))
            if train and self.dropout_hidden > 0:
                h = h * dropout_mask(h, self.dropout_hidden)
            if cut:
                taps.append(h)
        logits = self._linear(last, h.detach() if cut else h)
        if cut:
            return DirectFeedback.apply(logits, self.feedback, *taps)
        return logits


def hidden_sizes(model_cfg) -> list[int]:
    """``model.hidden`` when given, else ``model.depth`` layers of ``model.width``.

    For the conv net: its channels, then its FC widths.
    """
    if model_cfg.get("kind") == "conv":
        return [int(c) for c in model_cfg.channels] + [int(n) for n in model_cfg.fc]
    if model_cfg.get("hidden"):
        return list(model_cfg.hidden)
    return [model_cfg.width] * model_cfg.depth


def build_model(cfg, input_shape: Sequence[int], n_classes: int, seeds: Sequence[int]) -> nn.Module:
    """The network that ``cfg.model``/``cfg.method``/``cfg.init``/``cfg.dropout`` describe."""
    m = cfg.model
    feedback = {"feedback": cfg.method.get("feedback", "uniform"), "density": cfg.method.get("density", 1.0)}
    if m.get("kind") == "conv":
        d = cfg.dropout
        conv_rates = d.get("conv")
        return ConvNet(input_shape, n_classes, cfg.method.name, seeds, channels=list(m.channels),
                       kernel=m.kernel, padding=m.padding, pool=m.pool, pool_stride=m.pool_stride,
                       fc=list(m.fc), activation=m.activation, init=cfg.init.name,
                       dropout_input=d.input, dropout_hidden=d.hidden,
                       dropout_conv=None if conv_rates is None else list(conv_rates),
                       stack=m.get("stack", "loop"), **feedback)
    sizes = [math.prod(input_shape), *hidden_sizes(m), n_classes]
    return FCNet(sizes, m.activation, cfg.method.name, seeds, init=cfg.init.name,
                 dropout_input=cfg.dropout.input, dropout_hidden=cfg.dropout.hidden, **feedback)
