"""``dfa-run`` end to end: composition, records on disk, sweeps, bad input as one sentence."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dfa_cli.config import validate
from dfa_cli.runs.errors import UserError
from dfa_cli.run import CONFIG_PATH, seed_tag

from conftest import compose_config, run_cli

GROUPS = ["data", "model", "method", "optim", "init", "dropout", "loss"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_PATH) / group).glob("*.yaml"))


def summaries(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))]


def tiny(fake_mnist, results, *args):
    return ("model=fc800x1", "model.width=16", "trainer.max_epochs=1", f"data.root={fake_mnist}",
            "data.download=false", f"results_dir={results}", *args)


def test_the_interface_groups_have_the_issue_options():
    assert options("method") == ["bp", "brsf", "dfa", "drtp", "fa", "frsf", "ifa", "shallow", "usf"]
    assert options("data") == ["cifar10", "cifar100", "mnist"]
    assert set(options("model")) >= {"fc240x7", "fc240x100", "deep100", "fc400x3", "fc800x1", "fc800x2",
                                      "fc800x3", "fc800x4", "fc1000x1", "fc1000x3"}
    assert options("optim") == ["adam", "rmsprop", "sgd"]
    assert options("init") == ["paper", "uniform", "zero"]
    assert options("dropout") == ["none", "paper"]
    assert options("loss") == ["bce", "ce"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes_and_validates(group):
    for option in options(group):
        cfg = compose_config(f"{group}={option}")
        validate(cfg)
        assert cfg[group].name is not None


@pytest.mark.parametrize("activation", ["tanh", "logistic", "relu"])
def test_activations_compose(activation):
    validate(compose_config(f"model.activation={activation}"))


def test_model_names_follow_width_and_depth():
    assert compose_config("model=deep100").model.name == "fc240x100"
    assert compose_config("model=fc800x3", "model.depth=5").model.name == "fc800x5"
    assert compose_config("model.hidden=[800,400]").model.name == "fc800-400"


def test_seed_tags_name_stacked_runs():
    assert (seed_tag(3, None), seed_tag(0, [0, 1, 2, 3, 4]), seed_tag(0, [0, 2, 7])) == ("s3", "s0-4", "s0+2+7")


def test_defaults_are_the_paper_protocol():
    cfg = compose_config()
    assert (cfg.method.name, cfg.model.name, cfg.data.name, cfg.loss.name) == ("dfa", "fc800x2", "mnist", "bce")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.alpha, cfg.optim.eps, cfg.optim.momentum) == \
        ("rmsprop", 1e-4, 0.99, 1e-8, 0.0)
    assert (cfg.trainer.batch_size, cfg.trainer.max_epochs, cfg.trainer.stop_train_error) == (64, 300, 0.01)


@pytest.mark.parametrize("override, words", [
    ("optim.lr=0", "optim.lr must be a number in (0"),
    ("optim.lr=-1e-4", "optim.lr must be a number"),
    ("optim.lr=fast", "optim.lr must be a number"),
    ("trainer.batch_size=0", "trainer.batch_size must be a positive integer"),
    ("trainer.max_epochs=1.5", "trainer.max_epochs must be a positive integer"),
    ("dropout.hidden=1.0", "dropout.hidden must be a number in [0, 1)"),
    ("model.activation=swish", "model.activation='swish' is not supported"),
    ("seeds=[1,1]", "seeds must not repeat"),
    ("data.subset=0", "data.subset must be a positive integer"),
])
def test_impossible_values_are_one_sentence(override, words):
    with pytest.raises(UserError, match=None) as err:
        validate(compose_config(override))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_dfa_run_writes_one_record(fake_mnist, tmp_path):
    out = run_cli("run", *tiny(fake_mnist, tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    (summary,) = summaries(tmp_path / "res")
    assert summary["method"] == "dfa" and summary["epochs"] == 1
    run_dir = next((tmp_path / "res").rglob("summary.json")).parent
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()


def test_multirun_gives_one_record_per_job(fake_mnist, tmp_path):
    out = run_cli("run", "-m", "method=bp,dfa", "seed=0,1", *tiny(fake_mnist, tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    got = sorted((s["method"], s["seed"]) for s in summaries(tmp_path / "res"))
    assert got == [("bp", 0), ("bp", 1), ("dfa", 0), ("dfa", 1)]
    dirs = sorted(p.parent.name for p in (tmp_path / "res").rglob("summary.json"))
    assert dirs == ["0_mnist_fc16x1_tanh_none_bp_s0", "1_mnist_fc16x1_tanh_none_bp_s1",
                    "2_mnist_fc16x1_tanh_none_dfa_s0", "3_mnist_fc16x1_tanh_none_dfa_s1"]


def test_stacked_seeds_write_ordinary_records(fake_mnist, tmp_path):
    out = run_cli("run", "seeds=[3,4]", *tiny(fake_mnist, tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    for seed in (3, 4):
        (record,) = list((tmp_path / "res").rglob(f"seed{seed}"))
        config = yaml.safe_load((record / ".hydra" / "config.yaml").read_text())
        assert config["seed"] == seed and config["seeds"] is None
        assert json.loads((record / "summary.json").read_text())["seed"] == seed


def assert_one_sentence(out, *words):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    for w in words:
        assert w in out.stderr, out.stderr


def test_unknown_group_option_is_reported(tmp_path):
    out = run_cli("run", "method=backprop", f"results_dir={tmp_path}")
    assert_one_sentence(out, "Could not find 'method/backprop'", "bp")


def test_bad_value_is_reported_before_anything_is_written(fake_mnist, tmp_path):
    out = run_cli("run", *tiny(fake_mnist, tmp_path / "res"), "trainer.batch_size=0")
    assert_one_sentence(out, "trainer.batch_size must be a positive integer")
    assert not any(p.is_file() for p in (tmp_path / "res").rglob("*"))   # no half-made run left behind


def test_missing_data_is_reported(tmp_path):
    out = run_cli("run", f"data.root={tmp_path / 'none'}", "data.download=false", f"results_dir={tmp_path}/res")
    assert_one_sentence(out, "Data set 'mnist' not found", str(tmp_path / "none"))
    assert not any(p.is_file() for p in (tmp_path / "res").rglob("*"))


def test_results_path_that_is_a_file_is_reported(fake_mnist, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    out = run_cli("run", *tiny(fake_mnist, blocker))
    assert_one_sentence(out, "is a file, not a folder")
    assert blocker.read_text() == "not a folder"


def test_unwritable_results_path_is_reported(fake_mnist):
    out = run_cli("run", *tiny(fake_mnist, "/proc/dfa-results"))
    assert_one_sentence(out, "cannot write results under /proc/dfa-results")


def test_cuda_without_a_gpu_is_reported(fake_mnist, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = run_cli("run", *tiny(fake_mnist, tmp_path), "device=cuda")
    assert_one_sentence(out, "no usable CUDA GPU")


def test_help_lists_groups_and_options():
    out = run_cli("run", "--help")
    assert out.returncode == 0
    for line in ("method: bp, brsf, dfa, drtp, fa, frsf, ifa, shallow, usf", "data: cifar10, cifar100, mnist", "loss: bce, ce"):
        assert line in out.stdout


def test_real_mnist_short_run_learns(real_data, tmp_path):
    out = run_cli("run", "model=fc800x1", "trainer.max_epochs=1", "data.subset=10000",
                  f"data.root={real_data}", "data.download=false", f"results_dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    (summary,) = summaries(tmp_path)
    assert summary["n_train"] == 10000 and summary["n_test"] == 10000
    assert summary["test_error"] < 50, summary      # chance is 90%; 157 steps of lr 1e-4 give ~26%


# ---- a first run (issue 12, item 8) ------------------------------------------------------------
def test_dfa_run_says_where_it_writes_and_what_it_trains(fake_mnist, tmp_path):
    out = run_cli("run", *tiny(fake_mnist, tmp_path / "res"), "trainer.progress=false")
    assert out.returncode == 0, out.stderr
    (run_dir,) = [p.parent for p in (tmp_path / "res").rglob("summary.json")]
    start = next(line for line in (out.stdout + out.stderr).splitlines() if "training DFA" in line)
    assert "training DFA, 1x16 tanh (fc16x1) on MNIST, seed 0, up to 1 epoch on cpu; records in" in start
    assert start.endswith(str(run_dir))


def test_a_run_refused_for_missing_data_leaves_no_empty_folders(tmp_path):
    out = run_cli("run", f"data.root={tmp_path / 'none'}", "data.download=false", f"results_dir={tmp_path}/res")
    assert_one_sentence(out, "Data set 'mnist' not found")
    assert list((tmp_path / "res").rglob("*")) == []          # no results/runs/<date> left behind
    assert not (tmp_path / "none").exists()


# ---- an explicit seed= wins over a preset's seeds list (issue 24) ------------------------------
PRESET = "experiment=table1/fc800x1_tanh"


def test_one_seed_of_a_preset_cell_is_one_ordinary_run(fake_mnist, tmp_path):
    out = run_cli("run", PRESET, "method=dfa", "seed=1", *tiny(fake_mnist, tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    assert [(s["method"], s["seed"]) for s in summaries(tmp_path / "res")] == [("dfa", 1)]
    (record,) = [p.parent for p in (tmp_path / "res").rglob("summary.json")]
    assert record.relative_to(tmp_path / "res").parts[0] == "runs"      # not a one-job multirun
    assert record.name.endswith("_dfa_s1")


def test_a_seed_sweep_over_a_preset_trains_one_seed_per_job(fake_mnist, tmp_path):
    out = run_cli("run", "-m", PRESET, "method=bp,dfa", "seed=0,2", *tiny(fake_mnist, tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    got = sorted((s["method"], s["seed"]) for s in summaries(tmp_path / "res"))
    assert got == [("bp", 0), ("bp", 2), ("dfa", 0), ("dfa", 2)]


def test_one_seed_of_a_preset_row_still_trains_the_rows_methods(fake_mnist, tmp_path):
    out = run_cli("run", PRESET, "method=bp,fa", "seed=1", *tiny(fake_mnist, tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    assert sorted((s["method"], s["seed"]) for s in summaries(tmp_path / "res")) == [("bp", 1), ("fa", 1)]


def test_seed_and_a_seeds_list_together_are_one_sentence(fake_mnist, tmp_path):
    out = run_cli("run", "seeds=[0,1]", "seed=3", *tiny(fake_mnist, tmp_path / "res"))
    assert_one_sentence(out, "seed=3", "seeds=[0,1]", "seeds=null seed=3")
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").rglob("*"))


def test_the_campaigns_command_form_still_trains_its_one_seed(fake_mnist, tmp_path):
    run = tmp_path / "res" / "cell"
    out = run_cli("run", PRESET, "method=fa", "hydra.mode=RUN", f"hydra.run.dir={run}", "seeds=null", "seed=2",
                  *tiny(fake_mnist, tmp_path / "res"))
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "summary.json").read_text())["seed"] == 2
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert overrides.count("seeds=null") == 1 and "hydra.mode=RUN" not in overrides


def test_cfg_job_shows_the_seed_that_would_train():
    out = run_cli("run", PRESET, "method=dfa", "seed=1", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert (config["seed"], config["seeds"]) == (1, None)
