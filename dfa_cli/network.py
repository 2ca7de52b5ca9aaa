"""Networks from config: the fully connected nets (:mod:`dfa_cli.nets.fc`), the conv net
(:mod:`dfa_cli.nets.conv`) or a model of your own (:mod:`dfa_cli.feedback.custom`), as ``cfg.model``,
``cfg.method``, ``cfg.init`` and ``cfg.dropout`` describe."""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from .nets.conv import ConvNet
from .feedback.custom import build as build_custom
from .nets.fc import FCNet

def hidden_sizes(model_cfg) -> list[int]:
    """``model.hidden`` when given, else ``model.depth`` layers of ``model.width``.

    For the conv net: its channels, then its FC widths.
    """
    if model_cfg.get("kind") == "conv":
        return [int(c) for c in model_cfg.channels] + [int(n) for n in model_cfg.fc]
    if model_cfg.get("kind") == "custom":
        return []   # its feedback points' sizes are known once it is built (dfa_cli.feedback.custom.describe)
    if model_cfg.get("hidden"):
        return list(model_cfg.hidden)
    return [model_cfg.width] * model_cfg.depth


def build_model(cfg, input_shape: Sequence[int], n_classes: int, seeds: Sequence[int]) -> nn.Module:
    """The network that ``cfg.model``/``cfg.method``/``cfg.init``/``cfg.dropout`` describe."""
    m = cfg.model
    if m.get("kind") == "custom":
        return build_custom(cfg, seeds[0])
    feedback = {"feedback": cfg.method.get("feedback", "uniform"), "density": cfg.method.get("density", 1.0),
                "feedback_scale": cfg.method.get("feedback_scale", "paper")}
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
                 dropout_input=cfg.dropout.input, dropout_hidden=cfg.dropout.hidden,
                 reduction=cfg.loss.get("reduction", "mean"), **feedback)
