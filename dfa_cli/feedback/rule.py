"""Choosing the learning rule of a whole model, and points placed for an ``nn.Sequential``."""
from __future__ import annotations

from torch import nn

from .layers import fa_refusal, set_feedback_alignment, to_feedback_alignment
from .points import CUT_RULES, FeedbackError, Output, Point

RULES = ("bp", "fa", *CUT_RULES)
# Rules of dfa-cli that this API does not offer, and why (one sentence each).
NOT_OFFERED = {
    "ifa": "IFA carries the error forward through the weights between points, which a block of "
           "arbitrary layers does not define",
    "usf": "the sign-symmetric rules are defined here for the built-in fully connected nets only",
    "brsf": "the sign-symmetric rules are defined here for the built-in fully connected nets only",
    "frsf": "the sign-symmetric rules are defined here for the built-in fully connected nets only",
}


def rule_refusal(rule: str) -> str | None:
    """Why the feedback API cannot train by ``rule`` (None: it can)."""
    if rule in RULES:
        return None
    if rule in NOT_OFFERED:
        return f"rule {rule} is not offered for a model of your own: {NOT_OFFERED[rule]}"
    return f"unknown rule {rule!r}; choose one of {', '.join(RULES)}"


def output_of(model: nn.Module) -> Output | None:
    """The model's one :class:`Output` (None without one); more than one is refused."""
    outputs = [m for m in model.modules() if isinstance(m, Output)]
    if len(outputs) > 1:
        raise FeedbackError(f"the model has {len(outputs)} feedback.Output modules; one output error "
                            f"trains one model, so give it one Output.")
    return outputs[0] if outputs else None


def structure_refusal(model: nn.Module, rule: str) -> str | None:
    """Why ``model`` cannot train by ``rule`` as built (no points for DFA, stray points, FA's layers)."""
    problem = rule_refusal(rule)
    if problem:
        return problem
    output = output_of(model)
    points = [m for m in model.modules() if isinstance(m, Point)]
    if rule in CUT_RULES and output is None:
        if type(model) is nn.Sequential and not points and sum(map(has_weights, model)) >= 2:
            # the newcomer's first model: the fix is one line
            return (f"rule {rule} needs feedback points, and the model is a plain nn.Sequential: build it with "
                    f"feedback.sequential(*layers) in place of nn.Sequential(*layers) (from dfa_cli import "
                    f"feedback), which puts a feedback.Point after each hidden block and an Output on the logits")
        return (f"rule {rule} needs feedback points, and the model has no feedback.Output (place a "
                f"feedback.Point after each hidden block and an Output on the logits)")
    stray = [p for p in points if output is None or p._output is not output]
    if stray:
        return "the model has a feedback.Point that is not listed in its feedback.Output"
    if output is not None and not all(any(p is q for q in points) for p in output.points):
        return "the model's feedback.Output lists a point that is not a submodule of the model"
    return fa_refusal(model) if rule == "fa" else None


def set_rule(model: nn.Module, rule: str) -> nn.Module:
    """Train ``model`` by ``rule`` from now on: ``bp``, ``fa``, ``dfa``, ``shallow`` or ``drtp``.

    ``dfa`` (every Output's default), ``shallow`` (only the block above the last point learns) and
    ``drtp`` (the scaled one-hot target in place of ``e``; give the labels with
    ``Output.set_targets``) use the model's points. ``fa`` makes its ``nn.Linear``/``nn.Conv2d``
    layers FA layers, ``B`` a copy of their weights now, so call it before training; switching back
    to another rule keeps those copies for later. Raises :class:`FeedbackError` (and changes
    nothing) when the model cannot train by ``rule``. Returns ``model``.
    """
    problem = structure_refusal(model, rule)
    if problem:
        raise FeedbackError(problem + ".")
    if rule == "fa":
        to_feedback_alignment(model)
    set_feedback_alignment(model, rule == "fa")
    output = output_of(model)
    if output is not None:
        output.rule = rule
        output.reset()
    return model


def has_weights(layer: nn.Module) -> bool:
    """Whether ``layer`` holds a weight matrix or kernel (not merely a norm layer's vectors)."""
    return any(p.dim() >= 2 for p in layer.parameters())


def sequential(*layers: nn.Module, seed: int | None = None) -> nn.Sequential:
    """``nn.Sequential(*layers)`` with a :class:`Point` before every layer with weights but the first,
    i.e. after each hidden block (after its activation, dropout, pooling), and an :class:`Output` last.

    A single ``nn.Sequential`` argument is taken apart. Group layers into ``nn.Sequential`` blocks to
    put several weight layers in one block (autograd back-propagates inside a block).
    """
    if len(layers) == 1 and isinstance(layers[0], nn.Sequential):
        layers = tuple(layers[0])
    weighted = [i for i, layer in enumerate(layers) if has_weights(layer)]
    if len(weighted) < 2:
        raise FeedbackError("feedback.sequential needs at least two layers with weights: a hidden block "
                            "and the output layer.")
    points, out = [], []
    for i, layer in enumerate(layers):
        if i in weighted[1:]:
            points.append(Point())
            out.append(points[-1])
        out.append(layer)
    return nn.Sequential(*out, Output(points, seed=seed))
