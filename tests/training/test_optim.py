"""The fused RMSprop step: torch's update to float rounding, torch's state, and when it is used."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dfa_cli.training.losses import per_replica_loss
from dfa_cli.nets.fc import FCNet
from dfa_cli.training.optim import FusedRMSprop, keep_replicas, use_fused
from dfa_cli.run import train

from test_engine import quick


def _steps(optimizer_cls, method: str, steps: int = 12, **kw):
    net = FCNet([20, 16, 12, 4], "tanh", method, [0, 1], init="uniform")
    opt = optimizer_cls(net.parameters(), lr=1e-3, alpha=0.99, eps=1e-8, **kw)
    g = torch.Generator().manual_seed(3)
    for s in range(steps):
        x = torch.rand(2, 8, 20, generator=g)
        y = torch.randint(0, 4, (2, 8), generator=g)
        opt.zero_grad(set_to_none=True)
        per_replica_loss(net(x), y, "bce").sum().backward()
        if s == steps // 2:
            for group in opt.param_groups:   # a schedule's halving takes effect at once
                group["lr"] /= 2
        opt.step()
    return net, opt


@pytest.mark.parametrize("method", ["bp", "dfa"])
def test_fused_rmsprop_equals_torch_rmsprop_to_float_rounding(method):
    fused, fused_opt = _steps(FusedRMSprop, method)
    plain, plain_opt = _steps(torch.optim.RMSprop, method)
    for a, b in zip(fused.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert not torch.equal(a, torch.zeros_like(a))
    for a, b in zip(fused.parameters(), plain.parameters()):
        sa, sb = fused_opt.state[a], plain_opt.state[b]
        torch.testing.assert_close(sa["square_avg"], sb["square_avg"], rtol=1e-5, atol=1e-12)
        assert float(sa["step"]) == float(sb["step"]) == 12
    # torch's state layout: the checkpoint of one loads into the other
    plain_opt.load_state_dict(fused_opt.state_dict())
    keep_replicas(fused_opt, torch.tensor([1]))
    assert next(iter(fused_opt.state.values()))["square_avg"].shape[0] == 1


def test_auto_uses_it_only_for_long_cpu_rmsprop_runs():
    rms = OmegaConf.create({"name": "rmsprop", "momentum": 0.0, "weight_decay": 0.0, "fused": "auto"})
    cpu = torch.device("cpu")
    assert use_fused(rms, cpu, 60000 * 300) and not use_fused(rms, cpu, 256 * 2)
    assert not use_fused(rms, torch.device("cuda"), 60000 * 300)
    assert use_fused(OmegaConf.merge(rms, {"fused": True}), cpu, 10)
    assert not use_fused(OmegaConf.merge(rms, {"momentum": 0.9}), cpu, 60000 * 300)
    assert not use_fused(OmegaConf.create({"name": "sgd", "fused": True}), cpu, 10)


def test_a_fused_run_records_what_a_plain_run_records(fake_mnist, tmp_path):
    fused = train(quick(fake_mnist, "optim.fused=true", "method=dfa"), tmp_path / "f")[0]
    plain = train(quick(fake_mnist, "optim.fused=false", "method=dfa"), tmp_path / "p")[0]
    assert fused["fused_optimizer"] is True and plain["fused_optimizer"] is False
    for key in ("train_loss", "test_loss"):
        assert fused[key] == pytest.approx(plain[key], rel=1e-5)


def test_fused_rmsprop_survives_a_stacked_seed_stopping_and_a_state_reload():
    """The flat views are rebuilt when the parameters are sliced or the state is replaced."""
    net, opt = _steps(FusedRMSprop, "dfa", steps=3)
    plain, plain_opt = _steps(torch.optim.RMSprop, "dfa", steps=3)
    keep = torch.tensor([1])
    for o, n in ((opt, net), (plain_opt, plain)):
        keep_replicas(o, keep)
        n.keep_replicas(keep)
    opt.load_state_dict(opt.state_dict())          # a resume: fresh state tensors
    g = torch.Generator().manual_seed(9)
    x, y = torch.rand(1, 8, 20, generator=g), torch.randint(0, 4, (1, 8), generator=g)
    for n, o in ((net, opt), (plain, plain_opt)):
        o.zero_grad(set_to_none=True)
        per_replica_loss(n(x), y, "bce").sum().backward()
        o.step()
    for a, b in zip(net.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---- torch's notice about CUDA_HOME while compiling on a CPU (issue 24) ------------------------
QUIET = "import logging, sys; logging.basicConfig(stream=sys.stderr); import dfa_cli.training.optim, torch.utils.cpp_extension"


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch build never looks for CUDA_HOME")
def test_compiling_on_a_cpu_does_not_print_torchs_cuda_home_notice(tmp_path):
    """Inductor imports torch.utils.cpp_extension, which warns 'No CUDA runtime is found, using
    CUDA_HOME=…' on a machine with a CUDA toolkit but no GPU: nothing a user of a CPU run can act on."""
    import os
    import subprocess
    import sys
    from conftest import REPO
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", QUIET + "; logging.getLogger('torch.utils.cpp_extension')"
                          ".warning('another warning still shows')"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "No CUDA runtime is found" not in out.stderr
    assert "another warning still shows" in out.stderr          # only that notice is dropped


def test_eps_over_the_batch_size_is_rmsprop_on_the_authors_summed_output_error():
    """The author's output error, sigmoid(a) − y, is summed over the batch; ours is averaged. RMSprop
    is blind to that factor but for eps: eps / batch on our mean is the author's update exactly
    (float64; the plans' EPS_OF_SUMMED experiment)."""
    from dfa_cli.campaign.plans import EPS_OF_SUMMED
    batch = 64
    assert EPS_OF_SUMMED * batch == pytest.approx(1e-8, rel=1e-15)

    def trained(reduce, eps, scale=1e-6):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64) * 1e-3)
        opt = torch.optim.RMSprop([w], lr=1e-4, alpha=0.99, eps=eps)
        g = torch.Generator().manual_seed(1)
        for _ in range(20):   # tiny inputs: gradients near eps, where it matters
            x = torch.randn(batch, 5, dtype=torch.float64, generator=g) * scale
            y = torch.randint(0, 3, (batch,), generator=g)
            target = torch.nn.functional.one_hot(y, 3).double()
            per_example = torch.nn.functional.binary_cross_entropy_with_logits(
                x @ w, target, reduction="none").sum(-1)
            opt.zero_grad()
            reduce(per_example).backward()
            opt.step()
        return w.detach()

    authors = trained(torch.sum, 1e-8)
    ours_matched = trained(torch.mean, EPS_OF_SUMMED)
    ours = trained(torch.mean, 1e-8)
    torch.testing.assert_close(ours_matched, authors, rtol=1e-12, atol=0)
    assert not torch.allclose(ours, authors, rtol=1e-3, atol=0)   # where gradients are tiny, eps differs


@pytest.mark.parametrize("path", ["torch", "fused", pytest.param("capturable", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA-graph path's optimizer needs a CUDA GPU"))])
def test_initial_mean_on_our_mean_is_torch_optims_initialMean_on_the_authors_sums(path):
    """The plans' summed-m1 experiment: torch/optim as in June-Sept 2016 (initialMean 1, eps 1e-8) on the
    author's batch-summed output error is ours on the batch mean with eps / 64 and initial_mean / 64²
    (float64 by hand; the fused step in float32 to rounding; the CUDA-graph path's capturable step on
    the GPU in float64)."""
    from dfa_cli.training.optim import build_optimizer
    from dfa_cli.campaign.plans import EPS_OF_SUMMED, INITIAL_MEAN_OF_SUMMED
    fused, device = path == "fused", "cuda" if path == "capturable" else "cpu"
    batch, dtype = 64, torch.float32 if fused else torch.float64
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(batch, 5, dtype=torch.float64, generator=g) * 1e-3 for _ in range(30)]
    ys = [torch.nn.functional.one_hot(torch.randint(0, 3, (batch,), generator=g), 3).double() for _ in range(30)]
    w0 = torch.randn(5, 3, dtype=torch.float64, generator=g) * 1e-2

    def summed_gradient(w, x, y):   # the author's BCECriterion: the error summed over the batch
        w = w.detach().clone().requires_grad_(True)
        torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y, reduction="sum").backward()
        return w.grad

    def authors(initial_mean):   # torch/optim's rmsprop.lua, written out, on the batch's sum
        w, m = w0.clone(), torch.full_like(w0, initial_mean)
        for x, y in zip(xs, ys):
            gs = summed_gradient(w, x, y)
            m = 0.99 * m + 0.01 * gs * gs
            w = w - 1e-4 * gs / (m.sqrt() + 1e-8)
        return w

    cfg = OmegaConf.create({"name": "rmsprop", "lr": 1e-4, "alpha": 0.99, "eps": EPS_OF_SUMMED, "momentum": 0.0,
                            "initial_mean": INITIAL_MEAN_OF_SUMMED})
    w = torch.nn.Parameter(w0.clone().to(device, dtype))
    opt = build_optimizer([w], cfg, capturable=path == "capturable", fused=fused)
    assert isinstance(opt, FusedRMSprop) == fused
    for x, y in zip(xs, ys):
        opt.zero_grad(set_to_none=True)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(x.to(device, dtype) @ w, y.to(device, dtype),
                                                                   reduction="none")
        bce.sum(-1).mean().backward()
        opt.step()
    started_at_one, started_at_zero = authors(1.0), authors(0.0)
    tol = dict(rtol=1e-5, atol=1e-8) if fused else dict(rtol=1e-12, atol=0)
    torch.testing.assert_close(w.detach().double().cpu(), started_at_one, **tol)
    assert not torch.allclose(started_at_one, started_at_zero, rtol=1e-2)   # the start matters here
