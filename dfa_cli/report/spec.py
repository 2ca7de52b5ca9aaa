"""What the report knows without reading a record: the record contract, the methods, the paper's
tables and the paper's protocol (DESIGN §2 and §5).

Nothing here imports torch or the training code: the report reads files only. The one rule it
shares with the training code, the paper's initial condition, is restated in :func:`paper_init`
(a test checks that it agrees with ``dfa_cli.nets.fc.resolve_init``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

# ---- the record contract (dfa_cli.runs.records imports torch, so it is not imported here) ----------
SUMMARY, METRICS, HYDRA_DIR, FEATURES = "summary.json", "metrics.jsonl", ".hydra", "features.npz"

PAPER_METHODS = ("bp", "fa", "dfa")
EXTRA_METHODS = ("ifa", "shallow", "drtp", "usf", "brsf", "frsf")
METHODS = PAPER_METHODS + EXTRA_METHODS          # column order in every table
# How the literature writes each rule's name (Liao et al. 2016 for the sign-symmetric ones).
METHOD_LABELS = {"bp": "BP", "fa": "FA", "dfa": "DFA", "ifa": "IFA", "shallow": "Shallow", "drtp": "DRTP",
                 "usf": "uSF", "brsf": "brSF", "frsf": "frSF"}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method.upper())
STOP_REASONS = ("converged", "max_epochs", "diverged", "lr_halvings")
SCHEDULES = ("constant", "step", "auto")
SPLITS = ("test", "validation")
# How a run's batch made one step (dfa_cli.training.losses): the author's summed error, or the batch mean that
# every record made before summary.json said (2026-12-07). The two never share a cell.
REDUCTIONS = ("sum", "mean")
PROTOCOL_REDUCTION, REDUCTION_BEFORE_THE_KEY = "sum", "mean"

TABLES = {  # data set → (file stem, title)
    "mnist": ("table1_mnist", "Table 1 — MNIST"),
    "cifar10": ("table2_cifar10", "Table 2 — CIFAR-10"),
    "cifar100": ("table3_cifar100", "Table 3 — CIFAR-100"),
}
TABLE_ALIASES = {"1": "mnist", "table1": "mnist", "2": "cifar10", "table2": "cifar10",
                 "3": "cifar100", "table3": "cifar100"}
FULL_SIZES = {"mnist": (60_000, 10_000), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}
METRIC_NAMES = {"test_error": "test error % at the last epoch",
                "best_test_error": "best test error % over the epochs"}
ROW_KEY = ["data", "model", "activation", "variant"]

FLAG, NONE = "⚑", "—"
FLAG_FLOOR = 0.05  # percent: a smaller difference is never flagged, whatever the stds say
SHORTENED_MARKS = ("†", "‡", "§", "¶")  # one per distinct shortened setting of a table; then †5, †6 …


def shortened_mark(i: int) -> str:
    return SHORTENED_MARKS[i] if i < len(SHORTENED_MARKS) else f"†{i + 1}"


# ---- the paper's protocol ----------------------------------------------------------------------
PROTOCOL = {  # summary key → (dfa-run override, .hydra/config.yaml key, the paper's value)
    "optimizer": ("optim", "optim.name", "rmsprop"), "loss": ("loss", "loss.name", "bce"),
    "batch_size": ("trainer.batch_size", "trainer.batch_size", 64),
    "matmul_precision": ("trainer.matmul_precision", "trainer.matmul_precision", "highest"),
    "stop_train_error": ("trainer.stop_train_error", "trainer.stop_train_error", 0.01),
}
PROTOCOL_OPTIM_EPS = 1e-8   # RMSprop's, the author's (optim.rmsprop's default)
PROTOCOL_LR = {("cifar10", "conv"): 5e-5, ("cifar100", "conv"): 2.5e-5}
# ZCA for the conv rows (the author's README); else inputs in [0, 1] (the MLP rows' whitening is our
# choice where the sources leave it open: see the README)
PROTOCOL_PREPROCESS = {("cifar10", "conv"): "zca", ("cifar100", "conv"): "zca"}
DEFAULT_LR, DEFAULT_EPOCHS = 1e-4, 300
PAPER_DROPOUT = {"input": 0.1, "hidden": 0.5, "conv": [0.25, 0.25, 0.5]}  # the dropout rows
PAPER_ADVERSARIAL_EPS = 0.08   # FGSM of the "+ adversarial" row, inputs unclipped
# Rows whose protocol is not the default one: the paper chose the dropout row's LR schedule and
# training time on a validation set; its preset says what that choice is, once made.
PRESET_ROWS = {("mnist", "fc800x2", "tanh", "dropout"): "table1/fc800x2_tanh_dropout",
               ("cifar10", "fc1000x3", "tanh", "dropout"): "table2/fc1000x3_tanh_dropout",
               ("cifar100", "fc1000x3", "tanh", "dropout"): "table3/fc1000x3_tanh_dropout"}


def paper_init(method: str, activation: str, model: str) -> str:
    """The resolved start the paper's rule gives (``init=paper``; see dfa_cli.nets.fc.resolve_init)."""
    if activation not in ("tanh", "logistic") or method not in ("fa", "dfa"):
        return "uniform"
    return "zero_above_first" if method == "fa" and model != "conv" else "zero"


@dataclass(frozen=True)
class Protocol:
    """How a paper row is trained: the LR schedule, its parameters, the epochs and the LR."""
    lr_schedule: str = "constant"
    lr_step_epochs: int | None = None     # step only
    lr_max_halvings: int | None = None    # auto only
    max_epochs: int = DEFAULT_EPOCHS
    lr: float = DEFAULT_LR
    preprocess: str = "none"
    source: str = ""                      # where a row's own protocol comes from (its preset)


def conf_dir():
    """The Hydra configs: ``conf/`` of a source checkout, else the installed ``dfa_cli.conf``
    (as dfa_cli.config finds them, without importing it: it imports torch).
    A plain function over a cached one, so tests can replace it and reread_presets still clears."""
    return _found_conf_dir()


@lru_cache(maxsize=None)
def _found_conf_dir():   # once per report (reread_presets): resolve() costs a system call per path part
    source = Path(__file__).resolve().parents[2] / "conf"
    if (source / "config.yaml").is_file():
        return source
    return resources.files("dfa_cli.conf")


def load_yaml(text: str):
    """YAML → Python, with libyaml's C loader when installed (about 10× faster)."""
    import yaml
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _read_yaml(path) -> dict:
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except Exception:   # absent or unreadable: the defaults hold (a missing preset cannot be a protocol)
        return {}
    return data if isinstance(data, dict) else {}


MISSING = object()   # a key a file does not have (unlike null, which it has)


def _get(tree, dotted: str, default=None):
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


@lru_cache(maxsize=None)
def _row_protocol(data: str, model: str, activation: str, variant: str, conf) -> Protocol:
    lr = PROTOCOL_LR.get((data, model), DEFAULT_LR)
    preprocess = PROTOCOL_PREPROCESS.get((data, model), "none")
    preset = PRESET_ROWS.get((data, model, activation, variant))
    if preset is None:
        return Protocol(lr=lr, preprocess=preprocess)
    file = conf / "experiment" / f"{preset}.yaml"
    chosen = _read_yaml(file)
    schedule = _get(chosen, "trainer.lr_schedule")
    if schedule is None:   # not chosen yet: the row runs as every other row
        return Protocol(lr=lr, preprocess=preprocess)
    defaults = _get(_read_yaml(conf / "config.yaml"), "trainer") or {}

    def pick(key):
        value = _get(chosen, f"trainer.{key}")
        return defaults.get(key) if value is None else value
    return Protocol(lr_schedule=str(schedule),
                    lr_step_epochs=pick("lr_step_epochs") if schedule == "step" else None,
                    lr_max_halvings=pick("lr_max_halvings") if schedule == "auto" else None,
                    max_epochs=_get(chosen, "trainer.max_epochs") or DEFAULT_EPOCHS,
                    lr=_get(chosen, "optim.lr") or lr, preprocess=preprocess,
                    source=f"conf/experiment/{preset}.yaml")


def row_protocol(data: str, model: str, activation: str, variant: str) -> Protocol:
    """The protocol of a paper row (the default one for rows without a preset that says otherwise)."""
    return _row_protocol(data, model, activation, variant, conf_dir())


def reread_presets() -> None:
    """Read the presets afresh (once per report: they change when a validation search ends)."""
    _row_protocol.cache_clear()
    _found_conf_dir.cache_clear()


# ---- the paper's values ------------------------------------------------------------------------
def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def load_paper():
    """The paper's reference values (``paper_tables.csv``), in the paper's row order.

    The numbers are kept as the paper prints them (``*_text``) beside their float values, so that
    they are shown at the paper's own precision.
    """
    import pandas as pd
    text_columns = ["test_error", "test_std", "train_error"]
    with resources.files("dfa_cli").joinpath("paper_tables.csv").open(encoding="utf-8") as f:
        paper = pd.read_csv(f, comment="#", dtype={"table": int, **{c: str for c in text_columns}},
                            keep_default_na=False)
    for column in text_columns:
        paper[f"{column}_text"] = paper[column].str.strip()
        paper[column] = [float(v) if v else math.nan for v in paper[f"{column}_text"]]
    return paper
