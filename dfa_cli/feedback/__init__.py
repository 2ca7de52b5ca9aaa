"""BP, FA and DFA for a PyTorch model you write (docs/custom-models.md).

    import torch
    from torch import nn
    from dfa_cli import feedback

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, 10)
            self.p1, self.p2 = feedback.Point(), feedback.Point()
            self.out = feedback.Output([self.p1, self.p2])     # B_1, B_2: independent, one matmul

        def forward(self, x):
            h = self.p1(torch.tanh(self.fc1(x)))                # after each hidden block
            h = self.p2(torch.tanh(self.fc2(h)))
            return self.out(self.fc3(h))                        # the logits

    net = feedback.set_rule(Net(), "dfa")                       # or "bp", "fa", "shallow", "drtp"
    loss = nn.functional.cross_entropy(net(x), y)               # any loss: e = ∂loss/∂logits
    loss.backward(); optimizer.step()                           # any torch.optim optimizer

Under DFA each point hands the block above a detached input, so no ``Wᵀδ`` is computed between
points, and the output's backward gives every point ``e @ B_i`` (:mod:`.points`). FA covers
``nn.Linear`` and ``nn.Conv2d`` layers (:mod:`.layers`). IFA and the sign-symmetric rules are not
offered (:data:`NOT_OFFERED`). Autograd Functions only, no module hooks.
"""
from .layers import Conv2dFA, LinearFA, to_feedback_alignment
from .points import DirectFeedback, FeedbackError, Output, Point
from .rule import NOT_OFFERED, RULES, output_of, set_rule, sequential, structure_refusal

__all__ = ["Point", "Output", "set_rule", "sequential", "FeedbackError", "RULES", "NOT_OFFERED",
           "LinearFA", "Conv2dFA", "to_feedback_alignment", "DirectFeedback", "output_of",
           "structure_refusal"]
