"""Small models of one's own for the feedback API tests, importable by ``model.target=custom_nets:…``
(tests/ is on the path when pytest runs)."""
from __future__ import annotations

import torch
from torch import nn

from dfa_cli import feedback


class MLP(nn.Module):
    """``sizes[0] → … → sizes[-1]``, tanh, a point after every hidden layer."""

    def __init__(self, sizes=(784, 16, 16, 10), input_shape=None, n_classes=None):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.points = nn.ModuleList(feedback.Point() for _ in sizes[2:])
        self.out = feedback.Output(self.points)

    def forward(self, x):
        h = x.flatten(1)
        for layer, point in zip(self.layers, self.points):
            h = point(torch.tanh(layer(h)))
        return self.out(self.layers[-1](h))


class NoPoints(nn.Module):
    """A plain model: BP and FA train it; the direct rules have nothing to feed."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh(), nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)


class WrongOutput(MLP):
    """Returns 5 logits where MNIST has 10 classes."""

    def __init__(self):
        super().__init__(sizes=(784, 16, 5))


class TimeFirst(nn.Module):
    """A point on a (time, batch, channels) map: the batch is not first."""

    def __init__(self):
        super().__init__()
        self.inp, self.head = nn.Linear(28, 8), nn.Linear(8 * 28, 10)
        self.point = feedback.Point()
        self.out = feedback.Output([self.point])

    def forward(self, x):
        tokens = x.reshape(x.shape[0], 28, 28).transpose(0, 1)          # (28, batch, 28)
        h = self.point(torch.tanh(self.inp(tokens)))                  # (28, batch, 8)
        return self.out(self.head(h.transpose(0, 1).flatten(1)))


class WithLayerNorm(MLP):
    """A norm layer FA here does not cover."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(16)

    def forward(self, x):
        h = self.points[0](torch.tanh(self.norm(self.layers[0](x.flatten(1)))))
        h = self.points[1](torch.tanh(self.layers[1](h)))
        return self.out(self.layers[2](h))


class Detached(nn.Module):
    """Cuts its first layer off the output without a point: that layer would never learn."""

    def __init__(self):
        super().__init__()
        self.l0, self.l1, self.l2 = nn.Linear(784, 16), nn.Linear(16, 16), nn.Linear(16, 10)
        self.point = feedback.Point()
        self.out = feedback.Output([self.point])

    def forward(self, x):
        h = torch.tanh(self.l0(x.flatten(1))).detach()
        return self.out(self.l2(self.point(torch.tanh(self.l1(h)))))


def not_a_module():
    return "a string"


def plain_sequential():
    """A newcomer's first model: a plain ``nn.Sequential`` (BP and FA train it; DFA needs its points)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh(), nn.Linear(16, 10))


def sequential_of_one_layer():
    """A plain ``nn.Sequential`` with one weight layer: no hidden block, so nothing for a point to follow."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
