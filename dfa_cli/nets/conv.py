"""The paper's "CONV tanh" network (the author's ``Models/conv.lua``): conv → f → dropout →
max-pool blocks, then fully connected layers, trained with BP, FA or DFA.

A convolution's weight carries the replica axis as the fully connected ones do:
``(R, C_out, C_in, k, k)``, its bias ``(R, C_out)`` (see :mod:`dfa_cli.nets.fc`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..runs.errors import UserError
from .fc import ACTIVATIONS, LATER_RULES, ReplicatedNet, dropout_mask, resolve_init, scale_source, zero_start
from .rules import Conv2dFA, DirectFeedback, dfa_feedback, uniform_

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


class ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward hands on its gradient in channels-last layout. The gradient of a
    pooled map comes back from the flat feedback points in NCHW order; converted here, on the
    pooled map, pooling's and the convolution's backward passes need no copies of the larger map."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


class ConvNet(ReplicatedNet):
    """The paper's conv net: blocks conv → f → dropout → max-pool, then FC layers → ``n_out``.

    The architecture follows the author's ``Models/conv.lua``; the defaults are the paper's
    (5×5 convs 96 → 128 → 256, padding 2, 3×3/2 max-pooling, FC 2048 → 2048). Rules:

    - BP: plain autograd.
    - FA: each conv sends its error down through its fixed kernels ``B`` (a copy of its initial
      random weights) with :class:`~dfa_cli.nets.rules.Conv2dFA`; FC layers use ``LinearFA``.
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
                 stack: str = "loop", eval_chunk: int = 1000, feedback: str = "uniform", density: float = 1.0,
                 feedback_scale: str = "paper"):
        super().__init__()
        self.feedback_kind, self.density = feedback, density
        self.feedback_scale, self.feedback_source = feedback_scale, scale_source(method, feedback_scale)
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
            self.feedback[r].copy_(dfa_feedback(self.hidden_widths, self.sizes[-1], gen, kind=self.feedback_kind,
                                                density=self.density, source=self.feedback_source))
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
        layout = (lambda t: t)
        if x.device.type == "cpu":   # oneDNN's pooling (and first convolution) are several times faster so
            h = h.contiguous(memory_format=torch.channels_last)   # (measured: scripts/bench_conv.py)
            layout = ChannelsLastGrad.apply
        taps = []
        for i, (w, bias) in enumerate(zip(self.conv_weights, self.conv_biases)):
            w, bias = w[a:b].flatten(0, 1), bias[a:b].flatten()
            inp = h.detach() if cut else h
            if fa:
                kernels = getattr(self, f"fa_conv_feedback{i}")[a:b].flatten(0, 1)
                pre = Conv2dFA.apply(inp, w, bias, kernels, self.padding, g)
            else:
                pre = F.conv2d(inp, w, bias, padding=self.padding, groups=g)
            if train and self.dropout_conv[i] > 0:
                h = f(pre)
                h = layout(F.max_pool2d(h * dropout_mask(h, self.dropout_conv[i]), self.pool, self.pool_stride))
            else:   # f is monotone, so pool(f(a)) = f(pool(a)): f and f′ on a quarter of the values
                h = f(layout(F.max_pool2d(pre, self.pool, self.pool_stride)))
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
