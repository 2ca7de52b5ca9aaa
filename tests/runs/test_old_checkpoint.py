"""A checkpoint written by an older layout of the code still resumes: the fixture was written (by
tests/fixtures/make_checkpoint.py) before dfa_cli's modules moved into rooms (issue 49). Checkpoints
hold tensors and plain data only (torch.load(weights_only=True)), no class paths, so moving modules
cannot break them; this holds it."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from dfa_cli.run import train

from conftest import REPO, compose_config, write_fake_mnist
from survive import one_thread, overrides, records

FIXTURES = REPO / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_checkpoint import EPOCHS, OVERRIDES  # noqa: E402


def _close(a, b):
    """Records equal but for float rounding (the fixture may come from another CPU's kernels)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4, abs=1e-6)
    return a == b


@pytest.mark.parametrize("name", ["before-rooms"])
def test_a_checkpoint_from_an_older_layout_resumes_to_the_uninterrupted_records(tmp_path, name):
    data = write_fake_mnist(tmp_path / "data")
    cfg = compose_config(*overrides(data, *OVERRIDES, epochs=EPOCHS))
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / f"checkpoint-{name}", run)
    with one_thread():
        train(cfg, tmp_path / "ref")
        train(cfg, run, resume=True)
    resumed, reference = records(run), records(tmp_path / "ref")
    assert len(json.loads(json.dumps(list(resumed.values())))[0][0]) == EPOCHS   # every epoch, one row each
    assert _close(resumed, reference), (resumed, reference)
    assert not (run / "checkpoint.pt").exists()
