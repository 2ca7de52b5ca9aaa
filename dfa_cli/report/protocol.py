"""How a run departs from its paper row's protocol, read from its ``summary.json`` first and from
``.hydra/config.yaml`` only for a field the summary lacks.

The answer is two lists of dfa-run overrides: *shortcuts* (fewer training or test examples, fewer
epochs of the same schedule) make a quick version of a paper cell, marked †; *changes* (another
optimizer, LR, schedule, init, stop threshold, dropout rate, input whitening …) make a different
experiment. A setting that neither file records is a change written ``key=?``: a paper cell is
claimed only for runs known to follow the protocol.
"""
from __future__ import annotations

import math
import re

from .spec import (FULL_SIZES, MISSING, PAPER_ADVERSARIAL_EPS, PAPER_DROPOUT, PROTOCOL, PROTOCOL_OPTIM_EPS,
                   paper_init, row_protocol)


def _close(a, b) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6,
                                                                                           abs_tol=1e-12)


def _implied_hidden(model: str) -> list[int] | None:
    """``fc800x2`` → ``[800, 800]``; None for names that do not say."""
    match = re.fullmatch(r"fc(\d+)x(\d+)", model)
    return [int(match[1])] * int(match[2]) if match else None


def _rates(value) -> list[float] | None:
    """Conv dropout rates, with "none" written one way (null, [] and all zeros alike)."""
    if value is MISSING:
        return value
    rates = [float(v) for v in value or []]
    return rates if any(rates) else None


def departures(s: dict, config) -> tuple[list[str], list[str]]:
    """``(shortcuts, changes)`` of a checked summary ``s``; ``config.get(key, MISSING)`` fills gaps."""
    def value(key, dotted):
        return s[key] if key in s else config.get(dotted, MISSING)

    data, model, method, activation, variant = (s["data"], s["model"], s["method"],
                                                s.get("activation") or "?", s["variant"])
    protocol = row_protocol(data, model, activation, variant)
    parts = variant.split("+")   # e.g. dropout+adversarial
    shortcuts, changes = [], []

    # the data: the first N examples of the training or test set
    full_train, full_test = FULL_SIZES[data]
    for key, n_key, full, override in (("subset", "n_train", full_train, "data.subset"),
                                       ("test_subset", "n_test", full_test, "data.test_subset")):
        cut = value(key, override)
        if cut is MISSING:   # older records: the sizes say it
            n = s.get(n_key)
            cut = n if isinstance(n, int) and n < full and s.get("eval_split", "test") == "test" else None
        if cut is not None:
            shortcuts.append(f"{override}={cut}")

    # the LR schedule and the training time (the dropout row's come from its preset)
    schedule = value("lr_schedule", "trainer.lr_schedule")
    schedule = "constant" if schedule is MISSING else schedule   # older dfa-run had only a constant LR
    detail = {"step": ("lr_step_epochs", protocol.lr_step_epochs),
              "auto": ("lr_max_halvings", protocol.lr_max_halvings)}.get(schedule)
    same_schedule = schedule == protocol.lr_schedule
    if schedule != protocol.lr_schedule:
        changes.append(f"trainer.lr_schedule={schedule}")
    if detail:
        got = value(detail[0], f"trainer.{detail[0]}")
        if not same_schedule or got != detail[1]:
            changes.append(f"trainer.{detail[0]}={'?' if got is MISSING else got}")
            same_schedule = False
    epochs = value("max_epochs", "trainer.max_epochs")
    if epochs is MISSING:
        changes.append("trainer.max_epochs=?")
    elif epochs != protocol.max_epochs:
        fewer = isinstance(epochs, int) and epochs < protocol.max_epochs and same_schedule
        (shortcuts if fewer else changes).append(f"trainer.max_epochs={epochs}")

    # the optimizer, its LR, the loss, the batch, the precision, the stop threshold
    for key, (override, dotted, expected) in PROTOCOL.items():
        got = value(key, dotted)
        if got is MISSING:
            changes.append(f"{override}=?")
        elif got != expected and not _close(got, expected):
            changes.append(f"{override}={got}")
    tf32 = [k for k in ("cuda_matmul_allow_tf32", "cudnn_allow_tf32") if s.get(k) is True]
    if tf32 and str(s.get("device", "")).startswith("cuda"):   # TF32 rounds products: not fp32
        changes.append("tf32=on")
    lr = value("lr", "optim.lr")
    if lr is MISSING or not _close(lr, protocol.lr):
        changes.append(f"optim.lr={'?' if lr is MISSING else format(lr, 'g')}")

    # RMSprop's eps, from the summary only: records from before it was recorded (2026-12-05) ran the
    # default, 1e-8, and reading every old record's .hydra config for it would slow dfa-report down
    optim_eps = s.get("optim_eps")
    if optim_eps is not None and not _close(optim_eps, PROTOCOL_OPTIM_EPS):
        changes.append(f"optim.eps={optim_eps:g}")

    # DFA's feedback: the paper draws it dense, uniform, at its own scale (records from before these
    # options existed say nothing, and drew it so)
    for key, default in (("feedback", "uniform"), ("density", 1.0), ("feedback_scale", "paper")):
        got = s.get(key, default)
        if got != default and not _close(got, default):
            changes.append(f"method.{key}={got:g}" if isinstance(got, float) else f"method.{key}={got}")

    # the inputs (records from before ZCA existed say nothing, and were in [0, 1])
    preprocess = value("preprocess", "data.preprocess")
    preprocess = "none" if preprocess is MISSING else preprocess
    if preprocess != protocol.preprocess:
        changes.append(f"data.preprocess={preprocess}")

    # the initial condition: the requested option, else the resolved start against the paper's rule
    if s.get("init_config") is not None:
        if s["init_config"] != "paper":
            changes.append(f"init={s['init_config']}")
    elif s.get("init") is not None:
        if s["init"] != "paper" and s["init"] != paper_init(method, activation, model):
            changes.append(f"init={s['init']}")
    else:
        name = config.get("init.name", MISSING)
        if name != "paper":
            changes.append(f"init={'?' if name is MISSING else name}")

    # dropout rates: the paper's in the dropout rows, none elsewhere
    dropout = "dropout" in parts
    for key in ("input", "hidden"):
        rate, expected = value(f"dropout_{key}", f"dropout.{key}"), PAPER_DROPOUT[key] if dropout else 0.0
        if rate is MISSING:
            changes.append(f"dropout.{key}=?")
        elif not _close(rate, expected):
            changes.append(f"dropout.{key}={rate:g}")
    if model == "conv":
        rates, expected = _rates(value("dropout_conv", "dropout.conv")), PAPER_DROPOUT["conv"] if dropout else None
        if rates is MISSING:
            changes.append("dropout.conv=?")
        elif rates != expected:
            changes.append(f"dropout.conv=[{','.join(f'{r:g}' for r in rates or [])}]")

    # FGSM of the adversarial row
    if "adversarial" in parts:
        eps = value("adversarial_eps", "adversarial.eps")
        if eps is MISSING or not _close(eps, PAPER_ADVERSARIAL_EPS):
            changes.append(f"adversarial.eps={'?' if eps is MISSING else format(eps, 'g')}")
        if value("adversarial_clip", "adversarial.clip") is True:
            changes.append("adversarial.clip=true")

    implied, hidden = _implied_hidden(model), s.get("hidden")
    if implied and isinstance(hidden, list) and hidden != implied:
        changes.append(f"model.hidden=[{','.join(map(str, hidden))}]")
    return shortcuts, changes
