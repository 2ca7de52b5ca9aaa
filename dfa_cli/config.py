"""Checks on a composed config, and the settings derived from it (seeds, device).

Hydra rejects unknown group options itself; everything that composes but cannot run is caught
here, before any data is loaded or file written, as one sentence.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig

from .runs import logger
from .data.datasets import INPUT_SHAPES, PREPROCESS, SPLITS
from .runs.errors import UserError
from .training.losses import LOSSES, REDUCTIONS
from .nets.conv import IFA_ON_CONV, STACKING, conv_map_shapes, rule_on_conv
from .nets.fc import ACTIVATIONS, LATER_RULES, METHODS
from .nets.rules import FEEDBACK_KINDS, FEEDBACK_SCALES
from .training.optim import OPTIMIZERS
from .training.schedule import SCHEDULES

# Configs live in conf/ of a source checkout (the one beside this package wins, so a worktree
# uses its own); an installed wheel carries them as the package dfa_cli.conf.
_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"
CONFIG_PATH = str(_SOURCE_CONF) if (_SOURCE_CONF / "config.yaml").is_file() else "pkg://dfa_cli.conf"

INITS = ("paper", "uniform", "zero")
MODEL_KINDS = ("fc", "conv", "custom")   # custom: a model you write (dfa_cli.feedback.custom)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _choice(key: str, value, options) -> None:
    if value not in options:
        raise UserError(f"{key}={value!r} is not supported; choose one of: {', '.join(options)}.")


def _positive_int(key: str, value, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if not _is_int(value) or value < 1:
        raise UserError(f"{key} must be a positive integer, got {value!r}.")


def _number(key: str, value, low: float, high: float | None = None, low_open: bool = False,
            high_open: bool = False) -> None:
    ok = _is_number(value) and (value > low if low_open else value >= low)
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(" if low_open else "["
        hi = ("inf)" if high is None else (f"{high})" if high_open else f"{high}]"))
        raise UserError(f"{key} must be a number in {lo}{low}, {hi}, got {value!r}.")


def _int_list(key: str, value, allow_empty: bool = False) -> None:
    if (not isinstance(value, ListConfig) or (not value and not allow_empty)
            or not all(_is_int(n) and n > 0 for n in value)):
        what = "a list" if allow_empty else "a non-empty list"
        raise UserError(f"{key} must be {what} of positive integers, got {value!r}.")


def _validate_conv(cfg: DictConfig) -> None:
    """The conv net: its shape parameters, its rules, its dropout rates, and that it fits the data."""
    m = cfg.model
    if cfg.method.name == "ifa":
        raise UserError(IFA_ON_CONV)
    if cfg.method.name in LATER_RULES:
        raise UserError(rule_on_conv(cfg.method.name))
    _choice("model.stack", m.get("stack", "loop"), STACKING)
    _int_list("model.channels", m.get("channels"))
    _int_list("model.fc", m.get("fc"), allow_empty=True)
    for key in ("kernel", "pool", "pool_stride"):
        _positive_int(f"model.{key}", m.get(key))
    if not _is_int(m.get("padding")) or m.padding < 0:
        raise UserError(f"model.padding must be a non-negative integer, got {m.get('padding')!r}.")
    rates = cfg.dropout.get("conv")
    if rates is not None:
        if not isinstance(rates, ListConfig) or len(rates) != len(m.channels):
            raise UserError(f"dropout.conv must be null or a list of one rate per conv layer "
                            f"({len(m.channels)} for model.channels={list(m.channels)}), got {rates!r}.")
        for i, rate in enumerate(rates):
            _number(f"dropout.conv[{i}]", rate, 0, 1, high_open=True)
    if cfg.data.name in INPUT_SHAPES:
        conv_map_shapes(INPUT_SHAPES[cfg.data.name], m.channels, m.kernel, m.padding, m.pool, m.pool_stride)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`UserError` for the first setting that cannot run."""
    _choice("method.name", cfg.method.name, METHODS)
    _validate_feedback(cfg)
    kind = cfg.model.get("kind", "fc")
    _choice("model.kind", kind, MODEL_KINDS)
    if kind != "custom":
        _choice("model.activation", cfg.model.activation, tuple(ACTIVATIONS))
    hidden = cfg.model.get("hidden")
    if kind == "conv":
        _validate_conv(cfg)
    elif kind == "custom":
        pass   # built and tried last, once every other setting is known to be sound
    elif hidden is None:
        _positive_int("model.width", cfg.model.get("width"))
        _positive_int("model.depth", cfg.model.get("depth"))
    elif not isinstance(hidden, ListConfig) or not hidden or not all(_is_int(n) and n > 0 for n in hidden):
        raise UserError(f"model.hidden must be a non-empty list of positive layer widths, got {hidden!r}.")
    _choice("init.name", cfg.init.name, INITS)
    _choice("loss.name", cfg.loss.name, LOSSES)
    _choice("loss.reduction", cfg.loss.get("reduction", "mean"), REDUCTIONS)
    _choice("optim.name", cfg.optim.name, OPTIMIZERS)
    _number("optim.lr", cfg.optim.lr, 0, low_open=True)
    for key in ("input", "hidden"):
        _number(f"dropout.{key}", cfg.dropout[key], 0, 1, high_open=True)
    t = cfg.trainer
    _positive_int("trainer.max_epochs", t.max_epochs)
    _positive_int("trainer.batch_size", t.batch_size)
    _positive_int("trainer.eval_batch_size", t.eval_batch_size)
    _positive_int("trainer.replicas", t.replicas)
    _number("trainer.stop_train_error", t.stop_train_error, 0, 100)
    _choice("trainer.cuda_graph", t.cuda_graph, ("auto", "on", "off"))
    _choice("trainer.matmul_precision", t.matmul_precision, ("highest", "high", "medium"))
    _number("trainer.ema_decay", t.ema_decay, 0, 1, high_open=True)
    if not (_is_int(t.checkpoint_every) and t.checkpoint_every >= 0):
        raise UserError(f"trainer.checkpoint_every must be a whole number of epochs (0: only on signals), "
                        f"got {t.checkpoint_every!r}.")
    _positive_int("trainer.threads", t.get("threads"), allow_none=True)
    if not (t.get("fast_step", "auto") == "auto" or isinstance(t.get("fast_step"), bool)):
        raise UserError(f"trainer.fast_step must be auto, true or false, got {t.get('fast_step')!r}.")
    _validate_schedule(cfg)
    if not (t.progress == "auto" or isinstance(t.progress, bool)):
        raise UserError(f"trainer.progress must be auto, true or false, got {t.progress!r}.")
    _positive_int("data.subset", cfg.data.subset, allow_none=True)
    _positive_int("data.test_subset", cfg.data.test_subset, allow_none=True)
    _choice("data.preprocess", cfg.data.get("preprocess", "none"), PREPROCESS)
    _choice("data.split", cfg.data.get("split", "test"), SPLITS)
    _number("data.zca_eps", cfg.data.get("zca_eps", 1e-5), 0, low_open=True)
    _boolean("data.download", cfg.data.download)
    _boolean("resume", cfg.get("resume", False), "true, false or resume=<run dir> on the command line")
    _optimizer_settings(cfg.optim)
    _validate_diagnostics(cfg)
    logger.check(cfg.get("logger"))
    seeds = resolve_seeds(cfg)
    if kind == "custom":
        from .feedback.custom import check   # (imports the user's model: only for model=custom)
        check(cfg, seeds)


def _validate_feedback(cfg: DictConfig) -> None:
    """method.feedback, method.density (DFA's fixed random matrices, so DFA only), method.feedback_scale."""
    kind, density = cfg.method.get("feedback", "uniform"), cfg.method.get("density", 1.0)
    _choice("method.feedback", kind, FEEDBACK_KINDS)
    _number("method.density", density, 0, 1, low_open=True)
    name = cfg.method.name
    if name != "dfa" and (kind != "uniform" or density != 1):
        what = f"method.feedback={kind}" if kind != "uniform" else f"method.density={density}"
        raise UserError(f"{what} sets how DFA's feedback matrices are drawn, so it applies to method=dfa "
                        f"only, not method={name}.")
    _feedback_scale(cfg, name, density)
    if cfg.init.name == "zero" and name in ("shallow", "usf", "brsf", "frsf"):
        why = ("its hidden layers never learn" if name == "shallow" else "sign(0) = 0 gives it no feedback")
        raise UserError(f"init=zero cannot train method={name}: {why}; use init=paper or uniform.")


def _feedback_scale(cfg: DictConfig, name: str, density: float) -> None:
    """method.feedback_scale=source: DRTP's and sparse DFA's scale as their code has it; refused where
    the source's scale is the paper's or where the source does not define it."""
    scale = cfg.method.get("feedback_scale", "paper")
    _choice("method.feedback_scale", scale, FEEDBACK_SCALES)
    if scale == "paper":
        return
    if name not in ("dfa", "drtp"):
        raise UserError(f"method.feedback_scale=source sets DRTP's and sparse DFA's feedback scale to their "
                        f"code's, so it applies to method=drtp or dfa only, not method={name}.")
    if name == "dfa" and density == 1:
        raise UserError("method.feedback_scale=source changes DFA's feedback only when it is sparse "
                        "(method.density < 1): the sparse-DFA code draws a dense B at the paper's scale.")
    if cfg.model.get("kind", "fc") == "custom":
        raise UserError("method.feedback_scale=source is implemented for the built-in models "
                        "(model.kind=fc or conv), not model=custom.")


def _validate_schedule(cfg: DictConfig) -> None:
    """trainer.lr_schedule and its parameters; ``auto`` halves each seed's LR at its own epochs,
    which one optimizer shared by stacked seeds cannot do."""
    t = cfg.trainer
    kind = t.get("lr_schedule", "constant")
    _choice("trainer.lr_schedule", kind, SCHEDULES)
    _positive_int("trainer.lr_step_epochs", t.get("lr_step_epochs", 50))
    _positive_int("trainer.lr_max_halvings", t.get("lr_max_halvings", 8))
    if kind == "auto" and len(resolve_seeds(cfg)) > 1:
        raise UserError("trainer.lr_schedule=auto halves each seed's learning rate at its own epochs, "
                        "so it cannot train stacked seeds; run them as separate jobs "
                        "(-m seeds=null seed=0,1,2,3,4).")


def _boolean(key: str, value, options: str = "true or false") -> None:
    if not isinstance(value, bool):
        raise UserError(f"{key} must be {options}, got {value!r}.")


def _optimizer_settings(o) -> None:
    """The optimizer's own keys (each optimizer config has its own set)."""
    if "alpha" in o:
        _number("optim.alpha", o.alpha, 0, 1)
    if "eps" in o:
        _number("optim.eps", o.eps, 0, low_open=True)
    if "initial_mean" in o:
        _number("optim.initial_mean", o.initial_mean, 0)
    if "momentum" in o:
        _number("optim.momentum", o.momentum, 0)
    _number("optim.weight_decay", o.get("weight_decay", 0.0), 0)
    if "fused" in o and not (o.fused == "auto" or isinstance(o.fused, bool)):
        raise UserError(f"optim.fused must be auto, true or false, got {o.fused!r}.")
    if "nesterov" in o:
        _boolean("optim.nesterov", o.nesterov)
        if o.nesterov and not o.get("momentum"):
            raise UserError("optim.nesterov=true needs a momentum above 0; set optim.momentum=….")
    if "betas" in o:
        betas = o.betas
        if not (isinstance(betas, ListConfig) and len(betas) == 2
                and all(_is_number(b) and 0 <= b < 1 for b in betas)):
            raise UserError(f"optim.betas must be a list of two numbers in [0, 1), got {betas!r}.")


def _validate_diagnostics(cfg: DictConfig) -> None:
    """adversarial.*, diagnostics.*, trainer.eval_train (issue 6)."""
    _number("adversarial.eps", cfg.adversarial.eps, 0, 1)
    for key, value in (("adversarial.clip", cfg.adversarial.clip), ("trainer.eval_train", cfg.trainer.eval_train),
                       ("diagnostics.alignment", cfg.diagnostics.alignment),
                       ("diagnostics.features", cfg.diagnostics.features)):
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}.")
    _positive_int("diagnostics.every", cfg.diagnostics.every)
    _positive_int("diagnostics.feature_examples", cfg.diagnostics.feature_examples)
    kind = cfg.model.get("kind", "fc")
    for key in ("alignment", "features"):
        if cfg.diagnostics[key] and kind != "fc":
            raise UserError(f"diagnostics.{key}=true is implemented for the fully connected models only "
                            f"(model.kind=fc, not {kind}); leave it off for this model.")


def resolve_seeds(cfg: DictConfig) -> list[int]:
    """``seeds=[…]`` if given, else ``trainer.replicas`` consecutive seeds from ``seed``."""
    if cfg.get("seeds") is not None:
        seeds = list(cfg.seeds) if isinstance(cfg.seeds, ListConfig) else [cfg.seeds]
        if cfg.trainer.replicas != 1:   # (it would be ignored without a word)
            raise UserError(f"trainer.replicas={cfg.trainer.replicas} counts seeds up from seed=, but "
                            f"seeds={seeds} names them; write seeds=null seed=… "
                            f"trainer.replicas={cfg.trainer.replicas}, or seeds=[…] alone.")
    else:
        if not _is_int(cfg.seed):
            raise UserError(f"seed must be an integer, got {cfg.seed!r}.")
        seeds = list(range(cfg.seed, cfg.seed + cfg.trainer.replicas))
    if not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
        raise UserError(f"seeds must be a list of non-negative integers, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must not repeat (each seed gets its own record), got {seeds!r}.")
    return [int(s) for s in seeds]


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an explicit CUDA request without CUDA is an error."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device; use auto, cpu or cuda[:N].") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} was asked for but this machine has no usable CUDA GPU; "
                        f"use device=cpu or device=auto.")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device={name!r} is not supported; use auto, cpu or cuda[:N].")
    return device
