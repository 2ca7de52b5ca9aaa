"""Optimizers from config. All are element-wise, so stacked replicas stay independent.

On the CPU, torch's RMSprop makes five passes over every weight per step and allocates its
denominator each time; for the paper's small batches that costs about a third of a step.
:class:`FusedRMSprop` does the same update in one compiled pass over all parameters
(``optim.fused``), with torch's state layout, so checkpoints move freely between the two.
"""
from __future__ import annotations

import logging
import re
import warnings

import torch

OPTIMIZERS = ("rmsprop", "sgd", "adam")
FUSED_AUTO_MIN_EXAMPLES = 2_000_000   # optim.fused=auto: compile only when the run will see this many examples

log = logging.getLogger(__name__)


class _NoCudaHomeNotice(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=…": compiling the fused step imports
    torch.utils.cpp_extension, which says it on any machine with a CUDA toolkit but no GPU. A CPU
    run cannot act on it; every other message of that logger still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


logging.getLogger("torch.utils.cpp_extension").addFilter(_NoCudaHomeNotice())

# torch/optim/optimizer.py, once per optimizer that steps outside a graph capture with capturable=True.
CAPTURABLE_NOTICE = ("This instance was constructed with capturable=True or some of all the param_groups "
                     "came with capturable=True")


def quiet_capturable_notice() -> None:
    """Drops torch's advice to set capturable=False: the CUDA-graph path runs its warm-up steps and
    each epoch's last partial batch outside the graph on purpose, with the optimizer the graph
    replays. Every other warning still shows."""
    warnings.filterwarnings("ignore", message=re.escape(CAPTURABLE_NOTICE), category=UserWarning)


quiet_capturable_notice()


def _rmsprop_update(param, grad, square_avg, lr, alpha: float, eps: float) -> None:
    """torch's RMSprop without momentum, written out: v ← αv + (1−α)g², p ← p − lr·g/(√v + ε)."""
    square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
    param.sub_(lr * (grad / (square_avg.sqrt() + eps)))


_compiled_update = None


def _update_function():
    global _compiled_update
    if _compiled_update is None:
        _compiled_update = torch.compile(_rmsprop_update, dynamic=False, fullgraph=True)
    return _compiled_update


class FusedRMSprop(torch.optim.RMSprop):
    """RMSprop (no momentum, not centered, no weight decay) as one compiled kernel per step.

    The parameters, their gradients and the running averages are views into three flat buffers,
    so a step is one pass over three tensors, whatever the number of layers. A gradient that is not
    its view (autograd made a new one) is copied in first. The state (``step``, ``square_avg``) is
    torch's, so ``state_dict``/``load_state_dict`` and :func:`keep_replicas` work unchanged (the
    views are rebuilt when they no longer hold). When compiling fails (no C++ compiler), it says so
    once and steps as torch's RMSprop does.
    """

    def __init__(self, params, lr: float, alpha: float, eps: float):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps)
        self._lr = torch.zeros(())   # a tensor, so that an LR schedule never triggers a recompile
                                     # (moved to the parameters' device by _flatten)
        self._fallback = False
        self._flat = None            # (param ids, flat p, flat g, flat v, steps, grad views) once built

    def _flatten(self, params: list) -> None:
        """Make ``params``, their grads and square averages views of three flat buffers."""
        for p in params:   # step counts and LR live beside the parameters: no host work per step
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0, device=p.device)
                state["square_avg"] = torch.zeros_like(p)
            state["step"] = state["step"].to(p.device)
        flat = [torch.cat([t.detach().reshape(-1) for t in ts])
                for ts in (params, [p.grad for p in params], [self.state[p]["square_avg"] for p in params])]
        offset, grads = 0, []
        for p in params:
            n = p.numel()
            p.data = flat[0][offset:offset + n].view_as(p)
            p.grad = flat[1][offset:offset + n].view_as(p)
            self.state[p]["square_avg"] = flat[2][offset:offset + n].view_as(p)
            grads.append(p.grad)
            offset += n
        self._flat = ([id(p) for p in params], *flat, [self.state[p]["step"] for p in params], grads)
        self._lr = self._lr.to(flat[0].device)

    def _views_hold(self, params: list) -> bool:
        if self._flat is None or self._flat[0] != [id(p) for p in params]:
            return False
        flat_p, flat_v = self._flat[1], self._flat[3]
        return all(p.data_ptr() - flat_p.data_ptr() == self.state[p]["square_avg"].data_ptr() - flat_v.data_ptr()
                   and p.data.untyped_storage().data_ptr() == flat_p.untyped_storage().data_ptr()
                   for p in (params[0], params[-1]))

    @torch.no_grad()
    def step(self, closure=None):
        if self._fallback:
            return super().step(closure)
        group = self.param_groups[0]
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if len(self.param_groups) > 1 or not params:
            return super().step(closure)
        if not self._views_hold(params):
            self._flatten(params)
        _, flat_p, flat_g, flat_v, steps, grads = self._flat
        for p, view in zip(params, grads):   # autograd's fresh gradients are copied into their views
            if p.grad is not view:
                view.copy_(p.grad)
                p.grad = view
        torch._foreach_add_(steps, 1)
        self._lr.fill_(group["lr"])
        try:
            _update_function()(flat_p, flat_g, flat_v, self._lr, group["alpha"], group["eps"])
        except Exception as err:  # inductor needs a working C++ compiler
            log.warning(f"optim.fused: compiling the RMSprop step failed ({type(err).__name__}); "
                        f"using torch's RMSprop instead (same numbers, slower).")
            self._fallback = True
            torch._foreach_add_(steps, -1)
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
            optimizer = FusedRMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps)
        else:
            optimizer = torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps,
                                            momentum=cfg.momentum, weight_decay=wd, capturable=capturable)
        if cfg.get("initial_mean", 0.0):
            start_square_average(optimizer, cfg.initial_mean, capturable)
        return optimizer
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=wd, capturable=capturable)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd,
                           nesterov=cfg.get("nesterov", False))


@torch.no_grad()
def start_square_average(optimizer: torch.optim.RMSprop, value: float, capturable: bool = False) -> None:
    """RMSprop's running mean of g² starts at ``value`` instead of 0 (``optim.initial_mean``): torch/optim's
    ``initialMean``, which its rmsprop.lua filled with 1 from 2016-06-08 to 2016-09-06. Written as torch
    writes its first state, so torch's step, the fused step and checkpoints take it as their own."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            state["step"] = torch.zeros((), dtype=torch.float64 if torch.get_default_dtype() == torch.float64
                                        else torch.float32, device=p.device if capturable else None)
            state["square_avg"] = torch.full_like(p, value, memory_format=torch.preserve_format)
            if group.get("momentum", 0) > 0:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


@torch.no_grad()
def match_capturable(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """After ``load_state_dict``, which brings back the saved run's ``capturable``: this run's
    (``capturable``: it replays a CUDA graph), and each ``step`` tensor where torch keeps it then
    (capturable or fused: float32 on the parameter's device; else a CPU scalar; FusedRMSprop keeps
    its own beside the parameters). A GPU run's checkpoint then resumes on a CPU, and a CPU run's
    is captured on a GPU."""
    for group in optimizer.param_groups:
        if "capturable" not in group:   # (SGD: no per-step state to place)
            continue
        group["capturable"] = capturable
        on_device = capturable or group.get("fused") or isinstance(optimizer, FusedRMSprop)
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if torch.is_tensor(state.get("step")):
                step = state["step"]
                state["step"] = step.to(device=p.device, dtype=torch.float32) if on_device else step.to("cpu")


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
