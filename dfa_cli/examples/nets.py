"""Two models that are not in the paper, written as a user would, with feedback points
(docs/custom-models.md). Both train under ``dfa-run model=custom model.target=dfa_cli.examples.nets:…``.

- :class:`ResMLP`: an input layer, then residual blocks ``h ← h + f(W h + b)``, then the output.
  A point after the input layer and after each block: under DFA every block's ``δa = (B_i e) ⊙ f′(a)``
  exactly, since a block holds one weight layer and its skip path ends at the detached input.
- :class:`LeNet`: LeCun et al.'s LeNet-5 shape (two conv → tanh → max-pool blocks, three fully
  connected layers), built with :func:`dfa_cli.feedback.sequential`: a point after each pool (dense
  ``B`` over the pooled map C·H·W) and after each hidden fully connected layer.

Both take ``input_shape`` (C, H, W) and ``n_classes``; dfa-run passes its data set's values.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import feedback

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class ResMLP(nn.Module):
    """``input → width`` then ``blocks`` residual blocks of ``width`` units, then ``n_classes`` logits."""

    def __init__(self, width: int = 256, blocks: int = 3, activation: str = "tanh",
                 input_shape=(1, 28, 28), n_classes: int = 10):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.f = ACTIVATIONS[activation]
        self.inp = nn.Linear(math.prod(input_shape), width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.head = nn.Linear(width, n_classes)
        self.points = nn.ModuleList(feedback.Point() for _ in range(blocks + 1))
        self.out = feedback.Output(self.points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.points[0](self.f(self.inp(x.flatten(1))))
        for block, point in zip(self.blocks, self.points[1:]):
            h = point(h + self.f(block(h)))
        return self.out(self.head(h))


def LeNet(input_shape=(1, 28, 28), n_classes: int = 10, channels=(6, 16), fc=(120, 84)) -> nn.Sequential:
    """conv5×5 (padding 2) → tanh → max-pool 2 → conv5×5 → tanh → max-pool 2 → FC → FC → logits."""
    c, h, w = input_shape
    layers = []
    for i, out_channels in enumerate(channels):
        layers += [nn.Conv2d(c, out_channels, 5, padding=2 if i == 0 else 0), nn.Tanh(), nn.MaxPool2d(2)]
        h, w = (h + (4 if i == 0 else 0) - 4) // 2, (w + (4 if i == 0 else 0) - 4) // 2
        c = out_channels
    layers.append(nn.Flatten())
    n = c * h * w
    for width in fc:
        layers += [nn.Linear(n, width), nn.Tanh()]
        n = width
    layers.append(nn.Linear(n, n_classes))
    return feedback.sequential(*layers)
