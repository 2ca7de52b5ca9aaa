"""Optimizers from config. All are element-wise, so stacked replicas stay independent."""
from __future__ import annotations

import torch

OPTIMIZERS = ("rmsprop", "sgd", "adam")


def build_optimizer(params, cfg, capturable: bool = False) -> torch.optim.Optimizer:
    """RMSprop is the paper's (author's defaults: lr 1e-4, alpha 0.99, eps 1e-8, no momentum)."""
    wd = cfg.get("weight_decay", 0.0)
    if cfg.name == "rmsprop":
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
