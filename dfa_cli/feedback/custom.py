"""``model=custom``: dfa-run trains a model you write, with :mod:`dfa_cli.feedback` points in it.

    dfa-run model=custom model.target=mypkg.nets:ResMLP +model.kwargs.width=256 method=dfa

``model.target`` names a class or function (``module:attr`` or ``module.attr``) that returns an
``nn.Module``; ``model.kwargs`` are its keyword arguments, kept apart from dfa-run's own model keys.
A constructor that takes ``input_shape`` or ``n_classes`` gets the data set's (C, H, W) and class
count unless ``model.kwargs`` gives them. The model receives image batches ``(batch, C, H, W)`` and
returns logits ``(batch, n_classes)``.

:func:`check` builds the model on the CPU from the data set's known shape and runs one training
step's forward and backward on a random batch of it (its buffers restored, its gradients dropped),
so a model the API cannot train is one sentence before any data is loaded. :class:`CustomNet` fits
the model to the engine, which trains networks with a leading replica axis: a custom model is
one replica, so stacked seeds are refused (sweep seeds as separate runs).
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

import torch
from torch import nn

from ..data.datasets import INPUT_SHAPES, LAYOUTS
from ..runs.errors import UserError
from . import NOT_OFFERED, RULES, FeedbackError, output_of, set_rule, structure_refusal
from .rule import rule_refusal

INIT = "own"   # what the records say of the starting weights: the model's own initialisation


def custom_name(target, kwargs) -> str:
    """A run-folder-safe name: ``ResMLP`` or ``ResMLP-width256-blocks2`` (``model.name``)."""
    name = re.split(r"[.:]", str(target))[-1] or "custom"
    parts = [f"{k}{v}" for k, v in (kwargs or {}).items()]
    return re.sub(r"[^A-Za-z0-9_.+-]", "", "-".join([name, *parts]))


def label(model_cfg) -> str:
    """How the records and dfa-report name the model: ``mypkg.nets:ResMLP(width=256)``."""
    kwargs = ", ".join(f"{k}={v}" for k, v in _kwargs(model_cfg).items())
    return f"{model_cfg.target}({kwargs})" if kwargs else str(model_cfg.target)


def _kwargs(model_cfg) -> dict:
    from omegaconf import OmegaConf
    kwargs = model_cfg.get("kwargs") or {}
    return dict(OmegaConf.to_container(kwargs, resolve=True) if OmegaConf.is_config(kwargs) else kwargs)


def load_target(target):
    """The callable ``target`` names; one sentence when it cannot be imported."""
    target = str(target or "")
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    if not module_name or not attr:
        raise UserError(f"model.target={target!r} must name a class or function as module:attr "
                        f"(e.g. mypkg.nets:ResMLP).")
    if os.getcwd() not in sys.path:   # a console script's path lacks the folder it runs in
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise UserError(f"model.target={target}: no module named {err.name!r} can be imported from here "
                        f"(install it, or run dfa-run from the folder that holds it).") from None
    except Exception as err:
        raise UserError(f"model.target={target}: importing {module_name} failed "
                        f"({type(err).__name__}: {_first_line(err)}).") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"model.target={target}: {module_name} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"model.target={target} is not a class or function.")
    return obj


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def _arguments(factory, target: str, kwargs: dict, input_shape, n_classes: int) -> dict:
    """``kwargs`` plus the data set's ``input_shape``/``n_classes`` where the constructor takes them."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return kwargs
    params = signature.parameters
    given = dict(kwargs)
    for name, value in (("input_shape", tuple(input_shape)), ("n_classes", n_classes)):
        if name in params and name not in given:
            given[name] = value
    try:
        signature.bind(**given)
    except TypeError as err:
        names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise UserError(f"model.kwargs do not fit model.target={target} ({err}); it takes: "
                        f"{', '.join(names) or 'no keyword arguments'}.") from None
    return given


def settings_refusal(cfg, seeds: list[int]) -> str | None:
    """Why dfa-run cannot train a custom model with these settings (None: it can)."""
    method = cfg.method.name
    if rule_refusal(method):
        why = NOT_OFFERED.get(method, "it is not a rule of the feedback API")
        return f"method={method} cannot train model=custom: {why}; use method={', '.join(RULES[:-1])} or {RULES[-1]}."
    if len(seeds) > 1:
        return ("model=custom trains one seed per run (only the built-in nets stack seeds); sweep them as "
                "separate runs, e.g. dfa-run -m model=custom seeds=null seed=0,1,2.")
    rates = [cfg.dropout.input, cfg.dropout.hidden, *(cfg.dropout.get("conv") or [])]
    if any(r > 0 for r in rates):
        return (f"dropout={cfg.dropout.name} sets the built-in nets' dropout; a model of your own has its own "
                f"dropout layers, so use dropout=none.")
    if cfg.init.name != "paper":
        return (f"init={cfg.init.name} sets the built-in nets' starting weights; a model of your own starts "
                f"from its own initialisation (seeded by seed=), so leave init=paper.")
    if cfg.data.name not in INPUT_SHAPES:
        return f"data.name={cfg.data.name!r} has no known input shape; choose one of {', '.join(INPUT_SHAPES)}."
    return None


class CustomNet(nn.Module):
    """A model of your own as the engine trains it: one replica, flat inputs reshaped to images.

    ``method`` may be reassigned (:func:`dfa_cli.nets.truebp.true_bp` does, for FGSM's true gradient).
    """
    init = INIT
    replicas = 1

    def __init__(self, module: nn.Module, input_shape, rule: str):
        super().__init__()
        self.module, self.input_shape = module, tuple(input_shape)
        self.feedback_widths: list[int] = []   # each feedback point's n_i, as the probe step saw them
        self.method = rule

    @property
    def method(self) -> str:
        return self._rule

    @method.setter
    def method(self, rule: str) -> None:
        set_rule(self.module, rule)
        self._rule = rule

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(1, batch, C·H·W)`` or ``(batch, C·H·W)`` → logits ``(1, batch, n_classes)``."""
        if x.dim() == 3:
            x = x[0]
        if self._rule == "drtp" and self.training and targets is not None:
            output_of(self.module).set_targets(targets.reshape(-1))
        return self.module(x.reshape(x.shape[0], *self.input_shape)).unsqueeze(0)


def build(cfg, seed: int) -> CustomNet:
    """The model ``cfg.model`` names, set to ``cfg.method`` and tried on one batch of the data's
    shape; raises :class:`UserError` with one sentence when it cannot be trained."""
    target, rule, data = str(cfg.model.target), cfg.method.name, cfg.data.name
    input_shape, n_classes = INPUT_SHAPES[data], LAYOUTS[data][4]
    factory = load_target(target)
    arguments = _arguments(factory, target, _kwargs(cfg.model), input_shape, n_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)            # the model's own initialisation, and its B, from the seed
        try:
            module = factory(**arguments)
        except Exception as err:
            raise UserError(f"building model.target={label(cfg.model)} failed "
                            f"({type(err).__name__}: {_first_line(err)}).") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"model.target={target} returned a {type(module).__name__}, not a torch.nn.Module.")
    try:
        problem = structure_refusal(module, rule)
    except FeedbackError as err:
        problem = str(err).rstrip(".")
    if problem:
        raise UserError(f"model.target={target} cannot be trained with method={rule}: {problem}.")
    output = output_of(module)
    if output is not None and output.feedback is None:   # method.feedback/density, where given, win
        if cfg.method.get("feedback", "uniform") != "uniform":
            output.feedback_kind = cfg.method.feedback
        if cfg.method.get("density", 1.0) != 1:
            output.density = cfg.method.density
    if output is not None:
        output.reduction = (cfg.get("loss") or {}).get("reduction", "mean")   # (a bare config: the mean)
    net = CustomNet(module, input_shape, rule)
    _try_one_step(net, cfg, n_classes)
    return net


def _try_one_step(net: CustomNet, cfg, n_classes: int, batch: int = 3) -> None:
    """Forward and backward on a random batch in training mode; then every buffer as it was and no
    ``.grad`` left. The feedback matrices are drawn here, from the output's seed."""
    target, rule = cfg.model.target, net.method
    shape = "x".join(map(str, (batch, *net.input_shape)))
    before = {name: b.detach().clone() for name, b in net.named_buffers()}
    output = output_of(net.module)
    if output is not None:
        output.measure_points()
    with torch.random.fork_rng(devices=[]):
        net.train()
        x = torch.rand(1, batch, *net.input_shape).flatten(2)
        y = torch.arange(batch).remainder(n_classes).unsqueeze(0)
        try:
            logits = net(x, targets=y)
            if logits.shape != (1, batch, n_classes):
                raise UserError(f"model.target={target} returns {tuple(logits.shape[1:])} for a {shape} "
                                f"batch of {cfg.data.name}; dfa-run needs logits of shape (batch, {n_classes}).")
            logits.sum().backward()
        except FeedbackError as err:
            raise UserError(f"model.target={target} cannot be trained with method={rule}: "
                            f"{str(err).rstrip('.')}.") from None
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"model.target={target} fails on a {shape} batch of {cfg.data.name} "
                            f"({type(err).__name__}: {_first_line(err)}).") from None
        finally:
            if output is not None:
                output.reset()
                sizes = output.measure_points(False)
                net.feedback_widths = [sizes[i] for i in sorted(sizes)]
    untrained = [n for n, p in net.module.named_parameters() if p.requires_grad and p.grad is None]
    if untrained and rule != "shallow":
        raise UserError(f"model.target={target}: {', '.join(untrained[:3])}"
                        f"{' …' if len(untrained) > 3 else ''} would get no gradient under method={rule} "
                        f"(cut off from the output without a feedback point, or unused); give that block a "
                        f"point, or set requires_grad=False on weights that are not to learn.")
    net.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in net.named_buffers():
            if name in before:
                b.copy_(before[name])


def check(cfg, seeds: list[int]) -> None:
    """Raise :class:`UserError` when dfa-run cannot train this custom model (builds it on the CPU)."""
    problem = settings_refusal(cfg, seeds)
    if problem:
        raise UserError(problem)
    build(cfg, seeds[0])


def describe(cfg, net: CustomNet) -> dict:
    """The record fields that differ for a custom model: its name by target, its points' sizes."""
    output = output_of(net.module)
    return {"model": label(cfg.model), "activation": INIT, "hidden": net.feedback_widths, "init": INIT,
            "model_target": str(cfg.model.target), "model_kwargs": _kwargs(cfg.model),
            "feedback": output.feedback_kind if output is not None else "uniform",
            "density": output.density if output is not None else 1.0}
