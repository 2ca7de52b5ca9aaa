"""The training step as a CUDA graph: a few eager warm-up steps, one capture, then replays
(the GPU path of :mod:`dfa_cli.training.engine`).

- Warm-up and capture run with the run's device current (``torch.cuda.device``) and on a side
  stream of that device. Without it a run on ``cuda:1`` captures on the stream torch makes once per
  process on whatever device is current then (GPU 0): the capture fails at its first allocation or
  records an empty graph whose replays do nothing. A replay needs no such care: torch replays on
  the device it captured on.
- Every kernel argument is fixed at capture, a Python-float learning rate among them (capturable
  RMSprop passes it as ``value=-lr``). Whoever changes such a value, or the tensors the step
  reads (a stacked seed sliced away, a checkpoint loaded), calls :meth:`CapturedStep.reset`; the
  next steps then warm up and capture again.
- :data:`CHECK_INPUT_LIVENESS`: the device check (``scripts/graph_vs_eager.py``) turns on torch's
  check that every tensor the graph reads from outside its own memory pool is still alive at
  each replay (``torch.cuda.graph(..., check_input_liveness=True)``, as torch 2.14 has it; the
  replays then check by themselves, ``CUDAGraph.replay`` takes no such argument).
"""
from __future__ import annotations

from typing import Callable

import torch

WARMUP_STEPS = 3              # eager steps (real training steps) before capturing
CHECK_INPUT_LIVENESS = False  # debugging aid, slower captures and replays: off in training runs


class CapturedStep:
    """``step(idx)`` captured once and replayed with ``idx`` copied into its static input.

    ``step``: one training step on the batch indices ``idx``; ``before_capture``: called right
    before the capture (the optimizer's ``zero_grad(set_to_none=True)``, so that the gradients
    are allocated inside the graph's memory pool).
    """

    def __init__(self, step: Callable[[torch.Tensor], None], before_capture: Callable[[], None]):
        self.step, self.before_capture = step, before_capture
        self.device, self.stream = None, None
        self.reset()

    def reset(self) -> None:
        """Drop the captured graph; the next steps warm up and capture again."""
        self.graph, self.warmup_left, self.static_idx = None, WARMUP_STEPS, None

    def __call__(self, idx: torch.Tensor, device: torch.device) -> None:
        if self.graph is None:
            with torch.cuda.device(device):
                if self.device != device or self.stream is None:
                    self.device, self.stream = device, torch.cuda.Stream(device)
                if self.warmup_left > 0:
                    self.warmup_left -= 1
                    return self._warm_up(idx)
                self._capture(idx)
        self.static_idx.copy_(idx)
        self.graph.replay()

    def _warm_up(self, idx: torch.Tensor) -> None:
        """An eager step on the side stream (what torch asks before a capture)."""
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            self.step(idx)
        current.wait_stream(self.stream)

    def _capture(self, idx: torch.Tensor) -> None:
        self.static_idx = torch.zeros(idx.shape, dtype=idx.dtype, device=idx.device)
        self.before_capture()
        self.graph = torch.cuda.CUDAGraph()
        options = {"check_input_liveness": True} if CHECK_INPUT_LIVENESS else {}
        with torch.cuda.graph(self.graph, stream=self.stream, **options):
            self.step(self.static_idx)
