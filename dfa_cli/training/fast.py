"""A hand-written training step for the fully connected nets, for the CPU.

On two CPU cores a step of the paper's nets is a handful of matrix products, and everything else
(autograd's bookkeeping, fresh tensors per step, one gradient pass per layer for the activation and
one for the dropout mask) cost as much again, on the 100-layer net more. :class:`FastFCStep`
computes the same update as autograd through :mod:`dfa_cli.nets.rules` does, written out:

- forward: ``a_i = h_{i-1} W_i + b_i``, ``h_i = f(a_i) ⊙ m_i`` (``m_i`` the dropout mask, drawn by
  the same calls in the same order as the model's forward, so the masks are the same);
- output error ``e = ∂loss/∂a_y`` (sigmoid or softmax minus the one-hot target; divided by the
  batch size only under ``loss.reduction=mean``, :mod:`dfa_cli.training.losses`);
- hidden signal ``g_i``: DFA ``(e B)`` sliced per layer, from one matmul (DRTP: ``y* B``); BP
  ``δ_{i+1} W_{i+1}ᵀ``; FA ``δ_{i+1} B_{i+1}ᵀ`` (sign symmetry: ``B`` from ``sign(W_{i+1})``, made
  in the forward pass where the model makes it, so brSF draws the same magnitudes); IFA, bottom up,
  ``e B_1`` for the first layer and ``δ_{i-1} W_i`` above it; then
  ``δ_i = g_i ⊙ m_i ⊙ f′(a_i)``; shallow: none, and the hidden layers get no ``.grad`` (autograd's None);
- gradients ``h_{i-1}ᵀ δ_i`` and ``Σ_batch δ_i`` written into the parameters' ``.grad`` in place.

``input_gradient`` is FGSM's true-BP ``∂L/∂x`` written out the same way. Then any ``torch.optim``
optimizer steps as usual. Buffers live as long as the step, so a step
allocates nothing. The conv net uses the autograd path. A test holds the two paths equal to
float rounding for every rule, activation, dropout and stacked seeds.
"""
from __future__ import annotations

import torch

from .losses import per_replica_loss
from ..nets.fc import FCNet, activation_derivative, dropout_mask
from ..nets.rules import SIGN_RULES, scaled_targets, sign_feedback

RULES = ("bp", "fa", "dfa", "ifa", "drtp", "shallow", *SIGN_RULES)


def tanh_(a: torch.Tensor) -> torch.Tensor:
    """tanh in place as 2σ(2a) − 1: torch's CPU tanh kernel takes 3× as long as its sigmoid; this
    agrees with it to 2·10⁻⁷ (two units in the last place at 1)."""
    return torch.sigmoid(a.mul_(2), out=a).mul_(2).sub_(1)


def supported(model) -> bool:
    return isinstance(model, FCNet) and model.method in RULES


class FastFCStep:
    """``step(x, y)`` → per-replica mean loss ``(R,)`` and wrong answers ``(R,)``; fills ``.grad``."""

    def __init__(self, model: FCNet, loss: str = "bce", reduction: str = "mean"):
        if not supported(model):
            raise ValueError(f"no fast step for {type(model).__name__} with method {model.method}")
        self.model, self.loss = model, loss
        self.reduction = reduction   # mean: e over the batch size; sum: the author's e, as it is
        self.buffers: dict[tuple, list[torch.Tensor]] = {}

    def _grads(self) -> None:
        """Persistent ``.grad`` tensors, (re)made when the parameters change (a stacked seed stops).
        Under shallow the hidden layers get none, as from autograd: a zero gradient would still let
        weight decay (or momentum) move them."""
        net = self.model
        frozen = {id(p) for layer in net.layers()[:-1] for p in layer} if net.method == "shallow" else set()
        for p in net.parameters():
            if id(p) in frozen:
                p.grad = None
            elif p.grad is None or p.grad.shape != p.shape:
                p.grad = torch.zeros_like(p)

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One buffer per layer's output, kept for the next step of the same shape. One set per batch
        shape: a captured CUDA graph writes into the full batch's at every replay, with an eager
        partial batch between replays. Sets for another replica count go (a stacked seed has
        stopped, and the graph that used them with it)."""
        key = (x.shape[0], x.shape[1], x.dtype, x.device)
        if key not in self.buffers:
            self.buffers = {k: v for k, v in self.buffers.items() if k[0] == x.shape[0]}
            self.buffers[key] = [x.new_empty(x.shape[0], x.shape[1], n) for n in self.model.sizes[1:]]
        return self.buffers[key]

    def _forward(self, x: torch.Tensor, rule: bool):
        """The forward pass, keeping the input's dropout mask and each layer's input ``h_{i-1}``, its
        ``f(a_i)`` and its mask; with ``rule``, also what each layer sends its δ down through, made
        where the model's forward makes it (sign rules draw there)."""
        net = self.model
        weights, biases = list(net.weights), list(net.biases)
        n_hidden = len(weights) - 1
        outs = self._activations(x)
        f = {"tanh": tanh_, "logistic": torch.sigmoid_, "relu": torch.relu_}[net.activation]
        input_mask = dropout_mask(x, net.dropout_input) if net.dropout_input > 0 else None
        h = x * input_mask if input_mask is not None else x
        inputs, acts, masks, downs = [h], [], [], {}
        for i in range(n_hidden):
            if rule and i > 0:
                downs[i] = self._down(i)
            act = f(torch.baddbmm(biases[i], h, weights[i], out=outs[i]))
            mask = dropout_mask(act, net.dropout_hidden) if net.dropout_hidden > 0 else None
            h = act * mask if mask is not None else act
            acts.append(act)
            masks.append(mask)
            inputs.append(h)
        if rule:
            downs[n_hidden] = self._down(n_hidden)
        logits = torch.baddbmm(biases[-1], h, weights[-1], out=outs[-1])
        return input_mask, inputs, acts, masks, downs, logits

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.model
        self._grads()
        n_hidden = len(net.weights) - 1
        if x.dim() == 2:
            x = x.expand(net.replicas, *x.shape)
        _, inputs, acts, masks, downs, logits = self._forward(x, rule=True)
        losses = per_replica_loss(logits, y, self.loss)
        wrong = (logits.argmax(-1) != y).sum(-1)
        # the output error and the top layer's gradients
        delta = self._output_error(logits, y)
        self._weight_grads(n_hidden, inputs[n_hidden], delta)
        if net.method != "shallow":
            self._hidden_grads(logits, y, delta, inputs, acts, masks, downs)
        return losses, wrong

    def _hidden_grads(self, logits, y, delta, inputs, acts, masks, downs) -> None:
        """Every hidden layer's gradients from the output error ``delta``: top down (IFA: bottom up)."""
        net = self.model
        if net.method == "ifa":
            return self._indirect_grads(delta, inputs, acts, masks)
        if net.method in ("dfa", "drtp"):   # every hidden layer's signal from one matmul
            source = delta if net.method == "dfa" else scaled_targets(logits, y, net.feedback_scale, self.reduction)
            signals = torch.bmm(source, net.feedback).split(net.hidden_widths, dim=-1)
        for i in range(len(acts) - 1, -1, -1):
            if net.method in ("dfa", "drtp"):
                g = signals[i]
            else:   # the layer above's W (BP), its fixed B (FA) or sign-made B, shaped (R, n_i, n_{i+1})
                g = torch.bmm(delta, downs[i + 1].transpose(1, 2))
            if masks[i] is not None:
                g = g * masks[i]
            delta = g * activation_derivative(net.activation, acts[i])
            self._weight_grads(i, inputs[i], delta)

    def _indirect_grads(self, delta, inputs, acts, masks) -> None:
        """IFA, bottom up: the output error through ``B_1`` to the first hidden layer, then each
        layer's δ forward through the weights of the layer above (as they were in this forward pass)."""
        net = self.model
        g = torch.bmm(delta, net.feedback)
        for i in range(len(acts)):
            if i > 0:
                g = torch.bmm(delta, net.weights[i])
            if masks[i] is not None:
                g = g * masks[i]
            delta = g * activation_derivative(net.activation, acts[i])
            self._weight_grads(i, inputs[i], delta)

    @torch.no_grad()
    def input_gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``∂L/∂x`` by true back-propagation through the current weights, whatever the rule (FGSM's
        gradient, ``L`` the replicas' mean losses summed): what :func:`dfa_cli.training.adversarial.input_gradient`
        gets from autograd, dropout masks drawn by the same calls in the same order."""
        net = self.model
        input_mask, _, acts, masks, _, logits = self._forward(x, rule=False)
        delta = self._output_error(logits, y)
        for i in range(len(acts) - 1, -1, -1):
            g = torch.bmm(delta, net.weights[i + 1].transpose(1, 2))
            if masks[i] is not None:
                g = g * masks[i]
            delta = g * activation_derivative(net.activation, acts[i])
        grad = torch.bmm(delta, net.weights[0].transpose(1, 2))
        return grad * input_mask if input_mask is not None else grad

    def _down(self, i: int) -> torch.Tensor | None:
        """What layer ``i`` sends its δ down through (``None`` where no rule needs it)."""
        net = self.model
        if net.method == "bp":
            return net.weights[i]
        if net.method == "fa":
            return getattr(net, f"fa_feedback{i}")
        if net.method in SIGN_RULES:
            return sign_feedback(net.weights[i], net.method, getattr(net, f"sign_magnitudes{i}", None))
        return None

    def _output_error(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``∂loss/∂logits``: sigmoid or softmax − one-hot, summed over the batch's examples
        (``reduction=sum``) or divided by the batch size (``mean``)."""
        onehot = torch.zeros_like(logits).scatter_(-1, y.unsqueeze(-1), 1.0)
        probs = torch.sigmoid(logits) if self.loss == "bce" else torch.softmax(logits, dim=-1)
        e = probs.sub_(onehot)
        return e.div_(logits.shape[1]) if self.reduction == "mean" else e

    def _weight_grads(self, i: int, h: torch.Tensor, delta: torch.Tensor) -> None:
        w, b = self.model.weights[i], self.model.biases[i]
        torch.bmm(h.transpose(1, 2), delta, out=w.grad)
        torch.sum(delta, dim=1, keepdim=True, out=b.grad)
