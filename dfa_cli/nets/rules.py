"""The learning rules of Nøkland (2016) as autograd Functions.

Every tensor carries a leading replica axis R: R independent networks trained side by side
(R = 1 for an ordinary run). Row-vector convention: ``a = h @ W + b`` with ``W`` of shape
``(R, n_in, n_out)``, so ``W`` here is the paper's ``Wᵀ``.

- BP needs nothing from this module: it is plain autograd through the forward pass.
- FA:  :class:`LinearFA` sends ``δa @ Bᵀ`` to the layer below instead of ``δa @ Wᵀ``;
  :class:`Conv2dFA` does the same for a convolution (transposed convolution with fixed kernels B).
- DFA: :class:`DirectFeedback` sits on the output logits; its backward turns the output error
  ``e`` into every hidden layer's signal with one matmul ``e @ [B_1 | … | B_L]``.
- IFA: :class:`IndirectFeedback` sends ``e @ B_1`` to the first hidden layer and carries the
  resulting ``δa_1`` forward through ``W_2 … W_L`` to the layers above.

Rules from later work, compared with these under the same protocol:

- DRTP (Frenkel et al. 2021): :class:`DirectTargetProjection`, DFA with the one-hot target ``y*``
  in place of the error ``e``: no hidden update needs the output.
- shallow: the hidden blocks get no signal at all; only the output layer learns.
- uSF, brSF, frSF (sign symmetry, Liao et al. 2016, as BioTorch defines them): FA's
  :class:`LinearFA` with a feedback matrix made from ``sign(W)`` at every step (:func:`sign_feedback`).

DFA and IFA are used on a network whose hidden blocks read a *detached* input, so no ``Wᵀδ`` is
ever computed: the Functions below hand each block's output (its "feedback point", or tap) a
gradient, and autograd does only the block's local backward (activation′, dropout mask, pooling,
weight gradient). ``loss.backward()`` and any ``torch.optim`` optimizer work unchanged.
"""
from __future__ import annotations

import math

import torch


def uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator) -> torch.Tensor:
    """Fill ``tensor`` with U(-bound, bound) drawn from ``generator`` (reproducible on any device)."""
    sample = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
    return tensor.copy_(sample.mul_(2 * bound).sub_(bound))


FEEDBACK_KINDS = ("uniform", "gaussian", "binary")
FEEDBACK_SCALES = ("paper", "source")   # method.feedback_scale (docs/later-rules.md)


def errors_per_unit(n_out: int, density: float) -> int:
    """How many output errors a hidden unit receives under sparse feedback: at least one."""
    return max(1, round(density * n_out)) if density < 1 else n_out


def feedback_bound(n_out: int, n: int, density: float = 1.0, source: str | None = None) -> float:
    """The bound of ``B_i``'s uniform draw (the other kinds keep its variance): 1/√n, the paper's.

    ``source`` names the code whose scale is wanted instead: ``drtp`` (DRTP's code draws B with
    ``kaiming_uniform_``: √(6/n)) or ``ssdfa`` (sparse DFA's code widens a sparse B to
    (n_out·k)^¼/√n, k the errors per unit; a dense B it draws at 1/√n, as the paper).
    """
    if source == "drtp":
        return math.sqrt(6 / n)
    if source == "ssdfa" and density < 1:
        return (n_out * errors_per_unit(n_out, density)) ** 0.25 / math.sqrt(n)
    return 1 / math.sqrt(n)


def feedback_block(n_out: int, n: int, generator: torch.Generator, kind: str = "uniform",
                   density: float = 1.0, dtype: torch.dtype = torch.float32,
                   source: str | None = None) -> torch.Tensor:
    """One DFA feedback matrix ``B_i`` (``n_out × n``), at the paper's scale unless ``source``
    (:func:`feedback_bound`).

    ``uniform``: U(±1/√n) (the author's code); ``gaussian`` and ``binary`` (±c) with the same
    variance, 1/(3n). ``density`` < 1 (sparse feedback, Crafton et al. 2019): every hidden unit
    receives ``max(1, round(density·n_out))`` of the output errors, chosen at random, the rest 0 —
    so no unit is left without a signal.
    """
    bound = feedback_bound(n_out, n, density, source)
    if kind == "uniform":
        block = uniform_(torch.empty(n_out, n, dtype=dtype), bound, generator)
    elif kind == "gaussian":
        block = torch.randn(n_out, n, generator=generator, dtype=dtype) * (bound / math.sqrt(3))
    else:
        signs = torch.rand(n_out, n, generator=generator, dtype=dtype) < 0.5
        block = (signs.to(dtype) * 2 - 1) * (bound / math.sqrt(3))
    if density < 1:
        chosen = torch.rand(n_out, n, generator=generator).argsort(dim=0)[:errors_per_unit(n_out, density)]
        block = block * torch.zeros(n_out, n, dtype=dtype).scatter_(0, chosen, 1.0)
    return block


def dfa_feedback(widths: list[int], n_out: int, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32, kind: str = "uniform", density: float = 1.0,
                 source: str | None = None) -> torch.Tensor:
    """The concatenated DFA feedback ``[B_1 | … | B_L]`` of shape ``(n_out, Σ n_i)`` for one replica.

    Each block ``B_i`` is drawn independently (:func:`feedback_block`; by default U(±1/√n_i), n_i the
    width of the receiving layer, as in the author's code), so equal-width layers never share a matrix.
    """
    return torch.cat([feedback_block(n_out, n, generator, kind, density, dtype, source) for n in widths], dim=1)


SIGN_RULES = ("usf", "brsf", "frsf")


def sign_feedback(weight: torch.Tensor, rule: str, magnitudes: torch.Tensor | None = None) -> torch.Tensor:
    """The feedback matrix of a sign-symmetric rule (BioTorch's ``layers/fa_constructor``), shaped
    like ``weight`` ``(R, n_in, n_out)``, with our init's scale (U(±1/√n_in), std 1/√(3·n_in)):

    - ``usf``: ``sign(W)/√(3·n_in)``;
    - ``brsf``: ``|M| ∘ sign(W)``, ``M`` ~ U(±1/√n_in) drawn anew at every step (global generator);
    - ``frsf``: ``|M| ∘ sign(W)``, ``M`` = ``magnitudes`` drawn once at initialisation.
    """
    sign = torch.sign(weight.detach())
    if rule == "usf":
        return sign / math.sqrt(3 * weight.shape[1])
    if rule == "brsf":
        bound = 1 / math.sqrt(weight.shape[1])
        magnitudes = torch.rand(weight.shape, dtype=weight.dtype, device=weight.device) * bound
    return magnitudes.abs() * sign


class LinearFA(torch.autograd.Function):
    """``a = h @ W + b`` whose backward sends ``δa @ Bᵀ`` down, with ``B`` fixed (shaped like ``W``)."""

    @staticmethod
    def forward(ctx, h, weight, bias, feedback):
        ctx.save_for_backward(h, feedback)
        return torch.baddbmm(bias, h, weight)

    @staticmethod
    def backward(ctx, grad_a):
        h, feedback = ctx.saved_tensors
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.bmm(grad_a, feedback.transpose(1, 2))
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(h.transpose(1, 2), grad_a)
        if ctx.needs_input_grad[2]:
            grad_b = grad_a.sum(1, keepdim=True)
        return grad_h, grad_w, grad_b, None


class Conv2dFA(torch.autograd.Function):
    """``a = conv2d(h, W, b)`` whose backward sends the transposed convolution of ``δa`` with the
    fixed kernels ``B`` (shaped like ``W``) down, instead of the one with ``W``.

    ``groups`` stacks independent replicas (grouped convolution, see :mod:`dfa_cli.nets.fc`).
    One ``convolution_backward`` call with ``B`` in the weight slot gives all three gradients:
    the input gradient uses ``B``; the weight and bias gradients never read the weight's values.
    Gradients autograd does not need (``ctx.needs_input_grad``) are not computed.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, feedback, padding: int, groups: int):
        ctx.save_for_backward(h, feedback)
        ctx.padding, ctx.groups = padding, groups
        return torch.nn.functional.conv2d(h, weight, bias, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx, grad_a):
        h, feedback = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:3])
        if not any(mask):
            return None, None, None, None, None, None
        p = ctx.padding
        grad_h, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_a, h, feedback, [feedback.shape[0]], [1, 1], [p, p], [1, 1], False, [0, 0],
            ctx.groups, mask)
        return grad_h, grad_w, grad_b, None, None, None


class DirectFeedback(torch.autograd.Function):
    """Identity on the logits; backward gives every tap the gradient ``e @ B_i``.

    ``feedback`` is ``(R, n_out, Σ n_i)``; taps are ``(R, batch, *shape_i)`` with
    ``prod(shape_i) = n_i`` (a conv tap is a whole pooled map: dense feedback, not per channel).
    """

    @staticmethod
    def forward(ctx, logits, feedback, *taps):
        ctx.save_for_backward(feedback)
        ctx.tap_shapes = [t.shape for t in taps]
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, e):
        (feedback,) = ctx.saved_tensors
        signal = torch.bmm(e, feedback)                      # one matmul for all layers
        widths = [math.prod(s[2:]) for s in ctx.tap_shapes]
        grads = [g.reshape(s) for g, s in zip(signal.split(widths, dim=2), ctx.tap_shapes)]
        return (e, None, *grads)


class DirectTargetProjection(torch.autograd.Function):
    """DRTP: identity on the logits; backward gives the output layer its error ``e`` and every tap
    ``t @ B_i``, with ``t`` the one-hot target (:func:`scaled_targets`): the hidden signals never
    read the output. ``targets``: ``(R, batch, n_out)``."""

    @staticmethod
    def forward(ctx, logits, feedback, targets, *taps):
        ctx.save_for_backward(feedback, targets)
        ctx.tap_shapes = [t.shape for t in taps]
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, e):
        feedback, targets = ctx.saved_tensors
        signal = torch.bmm(targets, feedback)
        widths = [math.prod(s[2:]) for s in ctx.tap_shapes]
        grads = [g.reshape(s) for g, s in zip(signal.split(widths, dim=2), ctx.tap_shapes)]
        return (e, None, None, *grads)


def scaled_targets(logits: torch.Tensor, y: torch.Tensor, scale: str = "paper",
                   reduction: str = "mean") -> torch.Tensor:
    """DRTP's projected vector, shaped like ``logits``: the one-hot target scaled as ``e`` is
    (``paper``: over the batch size under ``reduction=mean``, as it is under ``sum``), or the
    one-hot target itself, summed over the batch (``source``: its code)."""
    onehot = torch.zeros_like(logits).scatter_(-1, y.unsqueeze(-1), 1.0)
    return onehot.div_(logits.shape[1]) if scale == "paper" and reduction == "mean" else onehot


class IndirectFeedback(torch.autograd.Function):
    """Identity on the logits; backward feeds ``e @ B_1`` to the first tap and travels forward.

    Arguments after ``feedback`` (``B_1``, ``(R, n_out, n_1)``): the weights ``W_2 … W_L``, the
    local derivatives ``d_1 … d_{L-1}`` (activation′ times dropout mask, ``∂h_i/∂a_i``), then
    the taps ``h_1 … h_L``. With ``δa_i = g_i ⊙ d_i`` the gradient handed to tap ``i ≥ 2`` is
    ``g_i = δa_{i-1} @ W_i`` — the paper's ``δa_i = (W_i δa_{i-1}) ⊙ f′(a_i)`` once autograd applies
    ``f′`` locally.
    """

    @staticmethod
    def forward(ctx, logits, feedback, n_hidden, *rest):
        weights, derivs = rest[:n_hidden - 1], rest[n_hidden - 1:2 * n_hidden - 2]
        ctx.n_hidden = n_hidden
        ctx.save_for_backward(feedback, *weights, *derivs)
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, e):
        feedback, *saved = ctx.saved_tensors
        n = ctx.n_hidden
        weights, derivs = saved[:n - 1], saved[n - 1:]
        g = torch.bmm(e, feedback)
        grads = [g]
        for weight, deriv in zip(weights, derivs):
            g = torch.bmm(g * deriv, weight)
            grads.append(g)
        none_for_weights_and_derivs = [None] * (2 * n - 2)
        return (e, None, None, *none_for_weights_and_derivs, *grads)
