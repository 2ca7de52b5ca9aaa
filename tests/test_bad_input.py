"""Bad input of every kind: one sentence, a non-zero exit, no traceback, existing records untouched.

(Unknown group options, missing/corrupt data, results paths that are files or unwritable, NaN
losses and cuda without a GPU are tested in test_run.py, test_data.py and test_engine.py; a
checkpoint from another config in test_resume.py.)
"""
from __future__ import annotations

import errno
import json
import os
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import CompactHydraException

from dfa_cli.runs import checkpoint as ckpt
from dfa_cli.config import resolve_device, validate
from dfa_cli.runs.errors import UserError
from dfa_cli.runs.records import METRICS, SUMMARY
from dfa_cli.cli import hydra_sentence
from dfa_cli.run import CONFIG_PATH, train

from conftest import REPO, compose_config, run_cli
from survive import ENV, one_thread, overrides, records


@pytest.mark.parametrize("override, words", [
    ("seed=abc", "seed must be an integer, got 'abc'"),
    ("seed=1.5", "seed must be an integer"),
    ("seed=-1", "seeds must be a list of non-negative integers"),
    ("seeds=abc", "seeds must be a list of non-negative integers"),
    ("seeds=[0,x]", "seeds must be a list of non-negative integers"),
    ("resume=maybe", "resume must be true, false or resume=<run dir>"),
    ("trainer.max_epochs=ten", "trainer.max_epochs must be a positive integer, got 'ten'"),
    ("trainer.max_epochs=true", "trainer.max_epochs must be a positive integer, got True"),
    ("trainer.batch_size=[64]", "trainer.batch_size must be a positive integer"),
    ("trainer.eval_batch_size=-1", "trainer.eval_batch_size must be a positive integer"),
    ("trainer.replicas=0", "trainer.replicas must be a positive integer"),
    ("seeds=[0,1] trainer.replicas=3", "trainer.replicas=3 counts seeds up from seed=, but seeds=[0, 1] names"),
    ("experiment=table1/fc800x1_tanh trainer.replicas=2", "write seeds=null seed=… trainer.replicas=2"),
    ("trainer.stop_train_error=low", "trainer.stop_train_error must be a number in [0, 100]"),
    ("trainer.stop_train_error=101", "trainer.stop_train_error must be a number in [0, 100]"),
    ("trainer.ema_decay=abc", "trainer.ema_decay must be a number in [0, 1)"),
    ("trainer.ema_decay=1", "trainer.ema_decay must be a number in [0, 1)"),
    ("trainer.cuda_graph=maybe", "trainer.cuda_graph='maybe' is not supported"),
    ("trainer.progress=maybe", "trainer.progress must be auto, true or false"),
    ("trainer.progress=1", "trainer.progress must be auto, true or false"),
    ("data.subset=1.5", "data.subset must be a positive integer"),
    ("data.test_subset=abc", "data.test_subset must be a positive integer"),
    ("data.download=maybe", "data.download must be true or false"),
    ("model.width=abc", "model.width must be a positive integer"),
    ("model.depth=0", "model.depth must be a positive integer"),
    ("model.hidden=[]", "model.hidden must be a non-empty list of positive layer widths"),
    ("model.hidden=[800,x]", "model.hidden must be a non-empty list of positive layer widths"),
    ("model.hidden=800", "model.hidden must be a non-empty list of positive layer widths"),
    ("model.activation=3", "model.activation=3 is not supported"),
    ("method.name=dfa2", "method.name='dfa2' is not supported"),
    ("init.name=ones", "init.name='ones' is not supported"),
    ("loss.name=mse", "loss.name='mse' is not supported"),
    ("optim.name=lbfgs", "optim.name='lbfgs' is not supported"),
    ("dropout.input=abc", "dropout.input must be a number in [0, 1)"),
    ("dropout.hidden=-0.1", "dropout.hidden must be a number in [0, 1)"),
    ("optim.lr=[1]", "optim.lr must be a number"),
    ("optim.alpha=abc", "optim.alpha must be a number in [0, 1]"),
    ("optim.alpha=1.5", "optim.alpha must be a number in [0, 1]"),
    ("optim.eps=0", "optim.eps must be a number in (0, inf)"),
    ("optim.initial_mean=-1", "optim.initial_mean must be a number in [0, inf)"),
    ("optim.momentum=-1", "optim.momentum must be a number in [0, inf)"),
    ("optim.weight_decay=abc", "optim.weight_decay must be a number in [0, inf)"),
    ("optim=sgd optim.nesterov=maybe", "optim.nesterov must be true or false"),
    ("optim=sgd optim.nesterov=true optim.momentum=0", "optim.nesterov=true needs a momentum above 0"),
    ("optim=adam optim.betas=[0.9]", "optim.betas must be a list of two numbers in [0, 1)"),
    ("optim=adam optim.betas=[0.9,1.0]", "optim.betas must be a list of two numbers in [0, 1)"),
    ("optim=adam optim.betas=abc", "optim.betas must be a list of two numbers in [0, 1)"),
])
def test_wrong_types_and_impossible_values_are_one_sentence(override, words):
    with pytest.raises(UserError) as err:
        validate(compose_config(*override.split()))
    assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("name", ["tpu", "[1]", "5"])
def test_a_device_that_is_not_one_is_one_sentence(name):
    with pytest.raises(UserError, match="is not a device|is not supported"):
        resolve_device(name)


def composition_error(*overrides_: str) -> CompactHydraException:
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        with pytest.raises(CompactHydraException) as err:
            compose(config_name="config", overrides=list(overrides_))
    return err.value


@pytest.mark.parametrize("override, sentence", [
    ("trainer.max_epoch=3", "trainer.max_epoch is not a setting (did you mean trainer.max_epochs?); "
                            "dfa-run --help lists every setting."),
    ("optim.learning_rate=1", "optim.learning_rate is not a setting; dfa-run --help lists every setting."),
    ("data=svhn", "Could not find 'data/svhn'; choose one of: cifar10, cifar100, mnist."),
    ("model=fc800", "Could not find 'model/fc800'; choose one of: conv, custom, deep100, fc1000x1, fc1000x3, fc240x100, "
                    "fc240x7, fc400x3, fc800x1, fc800x2, fc800x3, fc800x4."),
    ("trainer.max_epochs=[1", "cannot read the override 'trainer.max_epochs=[1': no viable alternative at "
                              "input '[1'."),
    ("seed", "Error parsing override 'seed'; missing EQUAL at '<EOF>'."),
    ("hydra/launcher=slurmm", "Could not find 'hydra/launcher/slurmm'; choose one of: basic, "),
])
def test_hydra_errors_read_as_one_sentence(override, sentence):
    got = hydra_sentence(composition_error(override))
    assert got == sentence or (sentence.endswith(", ") and got.startswith(sentence) and "\n" not in got), got


def test_a_diverging_run_keeps_its_records_and_says_so_in_one_line(fake_mnist, tmp_path):
    run = tmp_path / "run"
    out = run_cli("run", *overrides(fake_mnist, "method=bp", "optim=sgd", "optim.lr=1e38", f"hydra.run.dir={run}"),
                  env=ENV)
    assert out.returncode == 3 and "Traceback" not in out.stderr + out.stdout
    assert out.stderr == (f"dfa-run: the loss became NaN or inf (seed 0 in epoch 1); the records in {run} say "
                          f"stop_reason 'diverged'; a smaller optim.lr may help.\n")
    assert json.loads((run / SUMMARY).read_text())["stop_reason"] == "diverged"
    assert len((run / METRICS).read_text().splitlines()) == 1


def test_a_typo_on_the_command_line_is_one_line_with_a_suggestion(tmp_path):
    out = run_cli("run", "trainer.batch_sise=32", f"results_dir={tmp_path}", env=ENV)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    assert out.stderr == ("dfa-run: trainer.batch_sise is not a setting (did you mean trainer.batch_size?); "
                          "dfa-run --help lists every setting.\n")
    assert not list(tmp_path.iterdir())


# ---- a full disk while writing records (simulated: os.write fails with ENOSPC) ----------------
class FullDisk:
    """``os.write`` into ``name`` under ``root`` fails from its ``after``-th call on: the first failing
    call writes half of its data, as a disk filling up does, the next ones nothing."""

    def __init__(self, root, name: str, after: int):
        self.root, self.name, self.after, self.calls, self.full = str(root), name, after, 0, False
        self.real = os.write

    def __call__(self, fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(self.root) and os.path.basename(target).lstrip(".").startswith(self.name):
            self.calls += 1
            if self.calls >= self.after:
                if not self.full:
                    self.full = True
                    return self.real(fd, bytes(data)[:max(1, len(data) // 2)])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real(fd, data)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def small(fake_mnist):
    return compose_config(*overrides(fake_mnist, "trainer.batch_size=32", epochs=3))


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="finds the written file through /proc")
@pytest.mark.parametrize("name, after, epochs_on_disk, checkpoint_epoch", [
    (METRICS, 2, 1, 2),          # epoch 2's line: half written, then the disk is full
    (ckpt.CHECKPOINT, 2, 2, 2),  # epoch 2's checkpoint (its metrics line is already written)
    (SUMMARY, 1, 3, 3),          # the summary, after the last epoch
])
def test_a_full_disk_is_one_sentence_and_the_run_resumes_once_there_is_space(fake_mnist, tmp_path, monkeypatch, name,
                                                                           after, epochs_on_disk, checkpoint_epoch):
    train(small(fake_mnist), tmp_path / "ref")
    run = tmp_path / "run"
    monkeypatch.setattr(os, "write", FullDisk(run, name, after))
    with pytest.raises(UserError) as err:
        train(small(fake_mnist), run)
    monkeypatch.undo()
    message = str(err.value)
    assert message.startswith(f"could not write {run / name} (No space left on device); the records of "
                              f"finished epochs are intact") and "\n" not in message
    lines = (run / METRICS).read_text().splitlines(keepends=True)
    assert len(lines) == epochs_on_disk and all(line.endswith("}\n") for line in lines)  # no partial line
    assert ckpt.load(run / ckpt.CHECKPOINT)["epoch"] == checkpoint_epoch  # the last good one
    assert not list(run.glob(".*.tmp")) and not (run / SUMMARY).exists()
    train(small(fake_mnist), run, resume=True)  # space again: it continues
    assert records(run) == records(tmp_path / "ref")


FULL_DISK_CLI = """
import errno, os, sys
real = os.write
def write(fd, data):
    if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl") and os.fstat(fd).st_size > 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd, data)
os.write = write
sys.argv = ["dfa-run", *sys.argv[1:]]
from dfa_cli.run import main
main()
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="finds the written file through /proc")
def test_a_full_disk_on_the_command_line_is_one_line_and_keeps_the_records(fake_mnist, tmp_path):
    import subprocess
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", FULL_DISK_CLI, *overrides(fake_mnist, f"hydra.run.dir={run}")],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **ENV},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    assert out.stderr == (f"dfa-run: could not write {run / METRICS} (No space left on device); the records of "
                          f"finished epochs are intact: free some space or fix the folder, then resume the run "
                          f"with resume={run}.\n")
    assert len((run / METRICS).read_text().splitlines()) == 1
    assert ckpt.load(run / ckpt.CHECKPOINT)["epoch"] == 2


# ---- a subset larger than the set it cuts (issue 24) -------------------------------------------
@pytest.mark.parametrize("setting, split, words", [
    ({"subset": 257}, "test", "data.subset=257 is more than the 256 training images"),
    ({"test_subset": 129}, "test", "data.test_subset=129 is more than the 128 test images"),
    ({"subset": 51}, "validation", "data.subset=51 is more than the 50 training images"),
    ({"test_subset": 10_001}, "validation", "data.test_subset=10001 is more than the 10000 validation images"),
])
def test_a_subset_larger_than_its_set_is_one_sentence(tmp_path, setting, split, words):
    from conftest import write_fake_mnist
    from dfa_cli.data.datasets import load_dataset
    root = write_fake_mnist(tmp_path, n_train=256 if split == "test" else 10_050)
    with pytest.raises(UserError) as err:
        load_dataset("mnist", root, download=False, split=split, **setting)
    assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
    exact = {key: value - 1 for key, value in setting.items()}    # the whole set is allowed
    assert len(load_dataset("mnist", root, download=False, split=split, **exact).x_train) > 0


def test_a_subset_larger_than_the_set_leaves_no_run_folder(fake_mnist, tmp_path):
    out = run_cli("run", *overrides(fake_mnist, "data.subset=10000000", f"results_dir={tmp_path / 'res'}"),
                  env=ENV)
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    assert out.stderr.startswith("dfa-run: data.subset=10000000 is more than the 256 training images")
    assert list((tmp_path / "res").rglob("*")) == []
