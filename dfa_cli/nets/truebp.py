"""The true back-propagation gradient of a network trained with any rule.

FGSM (:mod:`dfa_cli.training.adversarial`) needs the true input gradient ∂L/∂x, and the alignment angles
(:mod:`dfa_cli.training.diagnostics`) need the true hidden gradients δa_i, of the *same* network — same
weights, same dropout masks — even when it is trained with FA, DFA or IFA. The models choose their
rule at call time from ``model.method`` (FA's ``LinearFA``, the cut between DFA/IFA blocks and their
feedback Functions all hang on it), so evaluating the network with ``model.method = "bp"`` is plain
autograd through the very same parameters: nothing is copied or duplicated.
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def true_bp(model):
    """Within the block, ``model`` runs with back-propagation semantics (``model.method == "bp"``).

    Only Python state changes (no tensor op, no host sync), so it may be used inside a step that a
    CUDA graph captures: the forward traced there is the BP forward. The rule is restored on exit,
    also when the block raises.
    """
    method = model.method
    model.method = "bp"
    try:
        yield model
    finally:
        model.method = method
