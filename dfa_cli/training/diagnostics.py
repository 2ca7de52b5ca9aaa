"""Alignment diagnostics: how far each layer's update under the rule is from the true BP gradient.

The paper's argument is that the network "learns to make the feedback useful": the forward weights
come into alignment with the fixed random feedback, so the rule's update direction turns toward
back-propagation's. With ``diagnostics.alignment=true`` the trainer measures, every
``diagnostics.every`` steps of each epoch (its first step included), on the batch the step is about
to train on and before the update:

- ``delta_angle[i]``: per hidden layer, the angle between the rule's δa_i and BP's δa_i (the
  gradients w.r.t. the pre-activations a_i), per example, averaged over the batch;
- ``weight_angle[i]``: the angle between the rule's ΔW_i and BP's ΔW_i (flattened weight gradients
  of the layer's incoming weights);
- ``fa_feedback_angle[i]`` (FA only): the angle between the forward weights that carry the error
  to hidden layer i under BP, ``W_{i+1}``, and the fixed ``B_{i+1}`` that carries it under FA.

Angles are in degrees; an angle with a zero vector (e.g. BP's δa in a zero-initialised DFA network
before its output weights move) is undefined and left out, and a layer with no defined angle in an
epoch is recorded as null. Each epoch's row in ``metrics.jsonl`` gets the epoch's means (over the
measurements), per layer, for its replica: ``"alignment": {"delta_angle": [...], "weight_angle":
[...], ("fa_feedback_angle": [...],) "measurements": n}``.

How the two gradients are made comparable:

- **Same network**: BP's gradients come from the same model evaluated under
  :func:`dfa_cli.nets.truebp.true_bp` (the rule switched to ``bp`` for one forward), not from a copy.
- **Same batch, same dropout masks**: the random generators (CPU, and the CUDA device when
  training there) are forked before the rule's pass and again before BP's pass, so both passes
  draw exactly the masks — and, in adversarial training, the FGSM perturbation — that the training
  step itself draws next; on leaving, the generators are restored, so the run trains exactly as it
  would without the diagnostics (a test checks the records are identical).
- δa_i are gradients w.r.t. the pre-activations that the model's forward exposes
  (``pre_activations=``), taken with :func:`torch.autograd.grad` — no module hooks, and the
  parameters' ``.grad`` and the optimizer are untouched.

Cost: free when off (the trainer makes no call). When on, a measurement is two forward/backward
passes, run eagerly outside the (possibly CUDA-graph-captured) step; sums accumulate on the device
and are read once per epoch. The angles need the pre-activations, so they are implemented for the
fully connected models (``model.kind=fc``); ``dfa-run`` refuses them for other models.
"""
from __future__ import annotations

import math

import torch

from .losses import per_replica_loss
from ..nets.fc import ACTIVATIONS
from ..nets.truebp import true_bp

KEYS = ("delta_angle", "weight_angle", "fa_feedback_angle")


# ---- the angle ------------------------------------------------------------------------------
def angle_degrees(u: torch.Tensor, v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The angle in degrees between ``u`` and ``v`` along ``dim``; NaN where either is zero or not finite.

    ``degrees(arccos(<u,v>/(|u||v|)))``, computed as ``2·atan2(|û − v̂|, |û + v̂|)`` on the unit
    vectors (Kahan), which stays exact near 0° and 180° where arccos loses half the digits: identical
    vectors give exactly 0. Each vector is scaled by its largest entry first, so vanishing gradients
    (deep tanh nets under BP) still give their angle instead of underflowing.
    """
    su, sv = u.abs().amax(dim, keepdim=True), v.abs().amax(dim, keepdim=True)
    a = u / torch.where(su > 0, su, torch.ones_like(su))
    b = v / torch.where(sv > 0, sv, torch.ones_like(sv))
    na, nb = a.norm(dim=dim, keepdim=True), b.norm(dim=dim, keepdim=True)
    a = a / torch.where(na > 0, na, torch.ones_like(na))
    b = b / torch.where(nb > 0, nb, torch.ones_like(nb))
    angle = torch.rad2deg(2 * torch.atan2((a - b).norm(dim=dim), (a + b).norm(dim=dim)))
    valid = (su > 0).squeeze(dim) & (sv > 0).squeeze(dim) & torch.isfinite(angle)
    return torch.where(valid, angle, torch.full_like(angle, math.nan))


def to_json(values) -> list:
    """A host sequence of angles → a JSON list, null for NaN (undefined)."""
    return [None if v is None or not math.isfinite(v) else float(v) for v in values]


# ---- gradients of the rule and of BP on one batch -------------------------------------------
def _gradients(model, x, y, loss: str, adversarial=None, pre: list | None = None):
    """(δa_i, ΔW_i) per hidden layer of the loss summed over replicas, by the model's current rule;
    ``pre`` receives the pre-activations a_i."""
    if adversarial is not None:
        x = adversarial(model, x, y)
    pre = [] if pre is None else pre
    logits = model(x, pre_activations=pre, targets=y)
    total = per_replica_loss(logits, y, loss).sum()
    n = len(pre)
    weights = list(model.weights)[:n]
    grads = torch.autograd.grad(total, [*pre, *weights], allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, [*pre, *weights])]
    return grads[:n], grads[n:]


def _fork(x: torch.Tensor):
    """Fork the generators that dropout (and FGSM's forward) draw from: the CPU's and x's CUDA device's."""
    devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] \
        if x.device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def alignment_angles(model, x: torch.Tensor, y: torch.Tensor, loss: str = "bce",
                     adversarial=None) -> tuple[torch.Tensor, tuple[str, ...]]:
    """One measurement: ``(R, K, L)`` angles in degrees (NaN = undefined) and the K keys measured.

    ``x``, ``y``: the batch ``(R, B, D)``, ``(R, B)`` the next step trains on. Both passes start from
    the same random state (same dropout masks, same FGSM perturbation as the step) and leave it as
    it was.
    """
    with torch.enable_grad():
        with _fork(x):
            rule_delta, rule_w = _gradients(model, x, y, loss, adversarial)
        with _fork(x), true_bp(model):
            bp_delta, bp_w = _gradients(model, x, y, loss, adversarial)
    rows = [
        torch.stack([angle_degrees(r, b).nanmean(-1) for r, b in zip(rule_delta, bp_delta)], -1),
        torch.stack([angle_degrees(r.flatten(1), b.flatten(1)) for r, b in zip(rule_w, bp_w)], -1),
    ]
    keys = KEYS[:2]
    if model.method == "fa":
        n = len(rule_delta)
        rows.append(torch.stack([angle_degrees(model.weights[i + 1].detach().flatten(1),
                                               getattr(model, f"fa_feedback{i + 1}").flatten(1))
                                 for i in range(n)], -1))
        keys = KEYS
    return torch.stack(rows, 1), keys


def signal_reach(model, x: torch.Tensor, y: torch.Tensor, loss: str = "bce") -> dict[str, torch.Tensor]:
    """How much of the input and of the error reaches each hidden layer, by the model's rule: ``(R, L)``.

    ``x``, ``y``: one batch, ``(B, D)`` and ``(B,)`` shared by the replicas, or ``(R, B, D)``, ``(R, B)``.

    - ``input_trace``: the std over the batch of layer i's output, averaged over its units — what is
      left of the image at that layer (0 when the layer's output is the same for every image);
    - ``error_norm``: the norm over the batch of δa_i, the error signal the rule delivers to layer
      i's pre-activations, in float64 (0 where none arrives).

    In a deep tanh net both fade geometrically under BP and FA, which is why they cannot train the
    paper's 100x240 net; DFA's δa_i comes straight from the output error at every depth.
    """
    if not model.training:   # in eval mode every rule's forward is plain BP's
        raise ValueError("signal_reach measures the rule, which applies in training mode: call model.train() first")
    pre: list[torch.Tensor] = []
    with torch.enable_grad():
        delta, _ = _gradients(model, x, y.expand(model.replicas, -1) if y.dim() == 1 else y, loss, pre=pre)
    f = ACTIVATIONS[model.activation]
    trace = torch.stack([f(a.detach()).std(1).mean(-1) for a in pre], -1)
    # in float64: BP's δa in a deep tanh net is ~1e-26, whose squares a float32 norm flushes to 0
    return {"input_trace": trace, "error_norm": torch.stack([d.double().flatten(1).norm(dim=1) for d in delta], -1)}


class AlignmentProbe:
    """Measures the angles every ``every`` steps of each epoch; per-epoch means, read once per epoch."""

    def __init__(self, every: int = 100, loss: str = "bce", adversarial=None):
        if every < 1:
            raise ValueError("every must be a positive number of steps")
        self.every, self.loss, self.adversarial = int(every), loss, adversarial
        self._reset()

    def _reset(self) -> None:
        self.step, self.measured = 0, 0
        self.sums = self.counts = None
        self.keys: tuple[str, ...] = ()

    def on_step(self, model, data, idx: torch.Tensor) -> None:
        """Called before each full step of an epoch with the step's batch indices ``(R, B)``."""
        if self.step % self.every == 0:
            self.measure(model, data.x_train[idx], data.y_train[idx])
        self.step += 1

    def measure(self, model, x: torch.Tensor, y: torch.Tensor) -> None:
        values, self.keys = alignment_angles(model, x, y, self.loss, self.adversarial)
        values = values.detach()
        ok = ~torch.isnan(values)
        if self.sums is None or self.sums.shape != values.shape:
            self.sums = torch.zeros_like(values)
            self.counts = torch.zeros(values.shape, dtype=torch.int32, device=values.device)
        self.sums += torch.where(ok, values, torch.zeros_like(values))
        self.counts += ok
        self.measured += 1

    def collect(self, n_replicas: int) -> list[dict | None]:
        """Per replica: ``{key: [mean angle per hidden layer or None], "measurements": n}``; resets.

        One host read. ``None`` for every replica when the epoch had no measurement (an epoch of
        fewer examples than one batch).
        """
        if self.sums is None:
            self._reset()
            return [None] * n_replicas
        host = torch.stack([self.sums.double(), self.counts.double()]).cpu()
        sums, counts = host[0], host[1]
        means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, math.nan))
        out = []
        for r in range(means.shape[0]):
            row = {key: to_json(means[r, k].tolist()) for k, key in enumerate(self.keys)}
            row["measurements"] = self.measured
            out.append(row)
        self._reset()
        return out


def trainer_options(cfg) -> dict:
    """The :class:`~dfa_cli.training.engine.Trainer` keyword arguments of issue 6, from a composed config.

    Everything is off by default (``adversarial.eps=0``, ``diagnostics.alignment=false``,
    ``diagnostics.features=false``, ``trainer.eval_train=false``), and then the trainer does nothing
    extra.
    """
    from .adversarial import FGSM
    from .features import FeatureDump
    adv, diag = cfg.get("adversarial") or {}, cfg.get("diagnostics") or {}
    loss = cfg.loss.name
    adversarial = FGSM(adv.get("eps"), adv.get("clip", False), loss) if (adv.get("eps") or 0) > 0 else None
    alignment = AlignmentProbe(diag.get("every", 100), loss, adversarial) if diag.get("alignment") else None
    features = FeatureDump(diag.get("feature_examples", 2000)) if diag.get("features") else None
    return {"adversarial": adversarial, "alignment": alignment, "features": features,
            "eval_train": bool(cfg.trainer.get("eval_train", False))}
