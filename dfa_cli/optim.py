"""Optimizers from config. All are element-wise, so stacked replicas stay independent.

On the CPU, torch's RMSprop makes five passes over every weight per step and allocates its
denominator each time; for the paper's small batches that costs about a third of a step.
:class:`FusedRMSprop` does the same update in one compiled pass over all parameters
(``optim.fused``), with torch's state layout, so checkpoints move freely between the two.
"""
from __future__ import annotations

import logging

import torch

OPTIMIZERS = ("rmsprop", "sgd", "adam")
FUSED_AUTO_MIN_EXAMPLES = 2_000_000   # optim.fused=auto: compile only when the run will see this many examples

log = logging.getLogger(__name__)


def _rmsprop_update(params, grads, square_avgs, lr, alpha: float, eps: float) -> None:
    """torch's RMSprop without momentum, written out: v ← αv + (1−α)g², p ← p − lr·g/(√v + ε)."""
    for p, g, v in zip(params, grads, square_avgs):
        v.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        p.sub_(lr * (g / (v.sqrt() + eps)))


_compiled_update = None


def _update_function():
    global _compiled_update
    if _compiled_update is None:
        _compiled_update = torch.compile(_rmsprop_update, dynamic=False, fullgraph=True)
    return _compiled_update


class FusedRMSprop(torch.optim.RMSprop):
    """RMSprop (no momentum, not centered, no weight decay) as one compiled kernel per step.

    The state (``step``, ``square_avg``) is torch's, so ``state_dict``/``load_state_dict`` and
    :func:`keep_replicas` work unchanged. When compiling fails (no C++ compiler), it says so once
    and steps as torch's RMSprop does.
    """

    def __init__(self, params, lr: float, alpha: float, eps: float):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps)
        self._lr = torch.zeros(())   # a tensor, so that an LR schedule never triggers a recompile
        self._fallback = False

    @torch.no_grad()
    def step(self, closure=None):
        if self._fallback:
            return super().step(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            self._lr.fill_(group["lr"])
            try:
                _update_function()(params, [p.grad for p in params],
                                   [self.state[p]["square_avg"] for p in params],
                                   self._lr, group["alpha"], group["eps"])
            except Exception as err:  # inductor needs a working C++ compiler
                log.warning(f"optim.fused: compiling the RMSprop step failed ({type(err).__name__}); "
                            f"using torch's RMSprop instead (same numbers, slower).")
                self._fallback = True
                for p in params:
                    self.state[p]["step"] -= 1
                return super().step(closure)
        return None


def use_fused(cfg, device: torch.device, examples: int) -> bool:
    """``optim.fused``: true | false | auto (on the CPU, for RMSprop runs long enough to repay the
    few seconds of compiling: at least ``FUSED_AUTO_MIN_EXAMPLES`` training examples seen)."""
    fused = cfg.get("fused", "auto")
    plain = cfg.name == "rmsprop" and not cfg.get("momentum") and not cfg.get("weight_decay")
    if fused == "auto":
        return plain and device.type == "cpu" and examples >= FUSED_AUTO_MIN_EXAMPLES
    return bool(fused) and plain


def build_optimizer(params, cfg, capturable: bool = False, fused: bool = False) -> torch.optim.Optimizer:
    """RMSprop is the paper's (author's defaults: lr 1e-4, alpha 0.99, eps 1e-8, no momentum)."""
    wd = cfg.get("weight_decay", 0.0)
    if cfg.name == "rmsprop":
        if fused and not capturable:
            return FusedRMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps)
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps,
                                   momentum=cfg.momentum, weight_decay=wd, capturable=capturable)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=wd, capturable=capturable)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd,
                           nesterov=cfg.get("nesterov", False))


@torch.no_grad()
def keep_replicas(optimizer: torch.optim.Optimizer, keep: torch.Tensor) -> None:
    """Slice per-parameter state (running averages, momenta) to the kept replicas.

    Call before the parameters themselves are sliced: state is matched by the parameter's shape.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    state[key] = value[keep]
