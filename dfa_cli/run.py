"""``dfa-run``: compose the config with Hydra, train, write the records. Thin on purpose."""
from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config import resolve_device, resolve_seeds, validate
from .data import load_dataset, preprocess
from .engine import Trainer
from .errors import UserError
from .models import build_model, hidden_sizes
from .optim import build_optimizer
from .records import RunRecord, environment, replica_dirs

log = logging.getLogger("dfa_cli")

# Configs live in conf/ of a source checkout (the one beside this package wins, so a worktree
# uses its own); an installed wheel carries them as the package dfa_cli.conf.
_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"
CONFIG_PATH = str(_SOURCE_CONF) if (_SOURCE_CONF / "config.yaml").is_file() else "pkg://dfa_cli.conf"

# A short random tag in run directory names: runs started in the same second never collide.
# Cached, so a sweep's jobs share their sweep directory.
OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)


def variant(cfg: DictConfig) -> str:
    """The paper's row variant of a run: ``none`` or ``dropout``."""
    conv_rates = list(cfg.dropout.get("conv") or [])
    return "dropout" if max([cfg.dropout.input, cfg.dropout.hidden, *conv_rates]) > 0 else "none"


def describe(cfg: DictConfig, model, data, device) -> dict:
    """What a run is: the fields ``dfa-report`` groups and filters by, and where it ran."""
    return {
        "method": cfg.method.name, "model": cfg.model.name, "activation": cfg.model.activation,
        "data": cfg.data.name, "preprocess": data.preprocess, "dropout": cfg.dropout.name,
        "variant": variant(cfg),
        "hidden": hidden_sizes(cfg.model), "loss": cfg.loss.name, "init": model.init,
        "optimizer": cfg.optim.name, "lr": cfg.optim.lr, "batch_size": cfg.trainer.batch_size,
        "max_epochs": cfg.trainer.max_epochs, "subset": cfg.data.subset,
        "n_train": len(data.x_train), "n_test": len(data.x_test), **environment(device),
    }


def train(cfg: DictConfig, run_dir) -> list[dict]:
    """Train what ``cfg`` describes and write one record per seed under ``run_dir``."""
    validate(cfg)
    seeds = resolve_seeds(cfg)
    device = resolve_device(cfg.device)
    if cfg.trainer.cuda_graph == "on" and device.type != "cuda":
        raise UserError("trainer.cuda_graph=on needs a CUDA device; use auto or off on this machine.")
    use_graph = device.type == "cuda" and cfg.trainer.cuda_graph != "off"
    d = cfg.data
    data = load_dataset(d.name, d.root, d.download, d.subset, d.test_subset).to(device)
    data = preprocess(data, d.get("preprocess", "none"), d.get("zca_eps", 1e-5), d.get("cache_dir"))
    if device.type == "cuda" and cfg.model.get("kind") == "conv":
        torch.backends.cudnn.benchmark = True   # fixed shapes every step: let cuDNN pick its fastest kernels
    model = build_model(cfg, data.input_shape, data.n_classes, seeds).to(device)
    optimizer = build_optimizer(model.parameters(), cfg.optim, capturable=use_graph)
    records = [RunRecord(p) for p in replica_dirs(run_dir, seeds)]
    t = cfg.trainer
    trainer = Trainer(model, optimizer, data, records, seeds, loss=cfg.loss.name,
                      batch_size=t.batch_size, max_epochs=t.max_epochs,
                      stop_train_error=t.stop_train_error, ema_decay=t.ema_decay,
                      eval_batch_size=t.eval_batch_size, cuda_graph=use_graph,
                      describe=describe(cfg, model, data, device), progress=t.progress)
    summaries = trainer.fit()
    for s, rec in zip(summaries, records):
        if s["stop_reason"] == "diverged":
            log.warning(f"seed {s['seed']} diverged (loss became NaN or inf) in epoch {s['epochs']}; "
                        f"its records are in {rec.directory} with stop_reason 'diverged'.")
    return summaries


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg, HydraConfig.get().runtime.output_dir)
    except UserError as err:
        sys.stderr.write(f"dfa-run: {err}\n")
        sys.exit(2)


def _output_root(argv: list[str]) -> Path:
    """The results folder this command line will write under (checked before Hydra creates it)."""
    root = os.environ.get("DFA_RESULTS_DIR") or "results"
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") in ("results_dir", "hydra.run.dir", "hydra.sweep.dir"):
            root = value
    return Path(root)


def check_writable(root: Path) -> str | None:
    """One sentence if ``root`` cannot hold run records, else None. Creates nothing that stays."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot write results under {root}: {probe} is a file, not a folder; choose another results_dir=."
    try:
        with open(probe / f".dfa-write-test-{os.getpid()}", "w") as f:
            f.write("")
        os.unlink(f.name)
    except OSError as err:
        return (f"cannot write results under {root}: {probe} is not writable "
                f"({err.strerror or err}); choose another results_dir=.")
    return None


def main() -> None:
    argv = sys.argv[1:]
    if not any(a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c") for a in argv):
        problem = check_writable(_output_root(argv))
        if problem:
            sys.stderr.write(f"dfa-run: {problem}\n")
            sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
