"""Feedback alignment for a model's own layers: ``nn.Linear`` and ``nn.Conv2d`` only.

FA sends each layer's error down through a fixed random ``B`` shaped like its weight instead of
the weight itself. :func:`to_feedback_alignment` turns every plain ``nn.Linear``/``nn.Conv2d`` of a
model into :class:`LinearFA`/:class:`Conv2dFA` in place (the same object, class changed, so its
parameters, its place in the model and every reference to it stay), with ``B`` a copy of its
weights at that moment (call it on the initial weights, as the author's code takes FA's ``B``).
Any other module with parameters of its own (a norm layer, an embedding, an attention block, a raw
``nn.Parameter`` used in ``forward``) would still pass its error back through its weights, as BP
does, so such a model is refused in one sentence rather than trained as a mix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .points import FeedbackError, Output, Point


class _LinearFA(torch.autograd.Function):
    """``F.linear(h, W, b)`` whose backward sends ``δ @ B`` down (``B`` shaped like ``W``: out × in)."""

    @staticmethod
    def forward(ctx, h, weight, bias, feedback):
        ctx.save_for_backward(h, feedback)
        ctx.has_bias = bias is not None
        return F.linear(h, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        h, feedback = ctx.saved_tensors
        flat_grad, flat_h = grad.reshape(-1, grad.shape[-1]), h.reshape(-1, h.shape[-1])
        grad_h = grad @ feedback if ctx.needs_input_grad[0] else None
        grad_w = flat_grad.t() @ flat_h if ctx.needs_input_grad[1] else None
        grad_b = flat_grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b, None


class _Conv2dFA(torch.autograd.Function):
    """``F.conv2d`` whose backward convolves ``δ`` with the fixed kernels ``B`` going down: one
    ``convolution_backward`` with ``B`` in the weight slot (weight and bias gradients never read it)."""

    @staticmethod
    def forward(ctx, h, weight, bias, feedback, stride, padding, dilation, groups):
        ctx.save_for_backward(h, feedback)
        ctx.conv = (list(stride), list(padding), list(dilation), groups)
        ctx.has_bias = bias is not None
        return F.conv2d(h, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        h, feedback = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        grad_h = grad_w = grad_b = None
        if any(mask):
            grad_h, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, h, feedback, [feedback.shape[0]] if ctx.has_bias else None, stride, padding,
                dilation, False, [0, 0], groups, mask)
        return grad_h, grad_w, grad_b if mask[2] else None, None, None, None, None, None


class LinearFA(nn.Linear):
    """An ``nn.Linear`` trained by FA while ``feedback_alignment`` is on (see :func:`to_feedback_alignment`)."""
    feedback_alignment = True

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.feedback_alignment:
            return F.linear(h, self.weight, self.bias)
        return _LinearFA.apply(h, self.weight, self.bias, self.fa_feedback)


class Conv2dFA(nn.Conv2d):
    """An ``nn.Conv2d`` trained by FA while ``feedback_alignment`` is on (see :func:`to_feedback_alignment`)."""
    feedback_alignment = True

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.feedback_alignment:
            return self._conv_forward(h, self.weight, self.bias)
        return _Conv2dFA.apply(h, self.weight, self.bias, self.fa_feedback, self.stride, self.padding,
                               self.dilation, self.groups)


FA_LAYERS = {nn.Linear: LinearFA, nn.Conv2d: Conv2dFA}
NO_OWN_WEIGHTS = (Point, Output)


def _conv_problem(layer: nn.Conv2d) -> str | None:
    if layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r}"
    if isinstance(layer.padding, str) and layer.padding != "valid":
        return f"padding={layer.padding!r}"
    return None


def fa_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained by FA here, one sentence without its full stop (None: it can)."""
    for name, module in model.named_modules():
        where = name or type(model).__name__
        if type(module) in FA_LAYERS or type(module) in FA_LAYERS.values() or isinstance(module, NO_OWN_WEIGHTS):
            problem = _conv_problem(module) if isinstance(module, nn.Conv2d) else None
            if problem:
                return (f"FA here needs a plain zero-padded nn.Conv2d, but {where} has {problem}; use "
                        f"integer padding, or rule dfa or bp")
            continue
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if own:
            return (f"FA here replaces nn.Linear and nn.Conv2d layers only, but {where} "
                    f"({type(module).__name__}) has weights of its own ({', '.join(own)}) whose error would "
                    f"still travel back as in BP; use rule dfa or bp for this model")
    return None


def to_feedback_alignment(model: nn.Module) -> None:
    """Make every plain ``nn.Linear``/``nn.Conv2d`` of ``model`` an FA layer (``B`` = a copy of its weights now).

    Layers already made FA keep their ``B``; raises :class:`FeedbackError` (and changes nothing) when
    ``model`` holds weights FA cannot cover (see :func:`fa_refusal`).
    """
    problem = fa_refusal(model)
    if problem:
        raise FeedbackError(problem + ".")
    for module in model.modules():
        if type(module) in FA_LAYERS:
            module.__class__ = FA_LAYERS[type(module)]
            if isinstance(module, nn.Conv2d) and module.padding == "valid":
                module.padding = (0, 0)
            module.register_buffer("fa_feedback", module.weight.detach().clone())


def set_feedback_alignment(model: nn.Module, on: bool) -> None:
    """Switch every FA layer of ``model`` between FA (``on``) and plain autograd."""
    for module in model.modules():
        if isinstance(module, (LinearFA, Conv2dFA)):
            module.feedback_alignment = on
