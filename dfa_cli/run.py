"""``dfa-run``: compose the config with Hydra, train, write the records. Thin on purpose."""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .runs import checkpoint as ckpt
from . import cli
from .feedback import custom
from .runs import logger
from .config import CONFIG_PATH, resolve_device, resolve_seeds, validate
from .data.datasets import load_dataset, preprocess
from .training.diagnostics import trainer_options
from .training.engine import Trainer
from .training.fast import supported as fast_step_supported
from .runs.errors import UserError
from .network import build_model, hidden_sizes
from .training.optim import build_optimizer, use_fused
from .runs.records import METRICS, SUMMARY, RunRecord, environment, replica_dirs
from .training.schedule import LRSchedule
from .runs.signals import Interrupted

log = logging.getLogger("dfa_cli")


def fc_name(width, depth, hidden) -> str:
    """``fc800x2`` for ``depth`` layers of ``width``; ``fc800-400`` for an explicit ``hidden`` list."""
    if hidden:
        return "fc" + "-".join(str(n) for n in hidden)
    return f"fc{width}x{depth}"


def seed_tag(seed, seeds) -> str:
    """``s3`` for one seed, ``s0-4`` for stacked consecutive seeds, ``s0+2+7`` otherwise."""
    if not seeds:
        return f"s{seed}"
    seeds = list(seeds)
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 1:
        return f"s{seeds[0]}-{seeds[-1]}"
    return "s" + "+".join(str(s) for s in seeds)


# A short random tag in run directory names: runs started in the same second never collide.
# Cached, so a sweep's jobs share their sweep directory.
OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True, replace=True)
OmegaConf.register_new_resolver("fc_name", fc_name, replace=True)
OmegaConf.register_new_resolver("seed_tag", seed_tag, replace=True)
OmegaConf.register_new_resolver("custom_name", custom.custom_name, replace=True)


def variant(cfg: DictConfig) -> str:
    """The paper's row variant of a run: ``none``, ``dropout``, ``adversarial`` or ``dropout+adversarial``."""
    dropout = max([cfg.dropout.input, cfg.dropout.hidden, *(cfg.dropout.get("conv") or [])]) > 0
    parts = [name for name, on in (("dropout", dropout), ("adversarial", cfg.adversarial.eps > 0)) if on]
    return "+".join(parts) or "none"


def schedule(cfg: DictConfig) -> LRSchedule:
    t = cfg.trainer
    return LRSchedule(t.get("lr_schedule", "constant"), t.get("lr_step_epochs", 0), t.get("lr_max_halvings", 8))


def set_precision(precision: str) -> None:
    """``highest`` is true fp32 everywhere: matmuls and cuDNN convolutions (whose TF32 is on by
    default); ``high``/``medium`` allow TF32 for both."""
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = precision != "highest"


def sweep_threads(hydra_cfg) -> int | None:
    """A job of a joblib sweep of n_jobs workers gets cores ÷ n_jobs threads (at least 1): two
    1-thread jobs on two cores finish more epochs per hour than one 2-thread job."""
    if "joblib" not in str(hydra_cfg.launcher.get("_target_", "")):
        return None
    cores = os.cpu_count() or 1
    n_jobs = hydra_cfg.launcher.get("n_jobs") or 1
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))


def use_fast_step(setting, model, device: torch.device) -> bool:
    """``trainer.fast_step``: the hand-written step of :mod:`dfa_cli.training.fast` (auto: on the CPU)."""
    if setting is True and not fast_step_supported(model):
        raise UserError("trainer.fast_step=true needs a fully connected model (model.kind=fc); "
                        "use trainer.fast_step=auto or false here.")
    return fast_step_supported(model) and (setting is True or (setting == "auto" and device.type == "cpu"))


def describe(cfg: DictConfig, model, data, device, fused: bool = False) -> dict:
    """What a run is: the fields ``dfa-report`` groups and filters by, and where it ran."""
    return {
        "method": cfg.method.name, "model": cfg.model.name, "activation": cfg.model.activation,
        "data": cfg.data.name, "preprocess": data.preprocess, "dropout": cfg.dropout.name,
        "variant": variant(cfg),
        "dropout_input": cfg.dropout.input, "dropout_hidden": cfg.dropout.hidden,
        "dropout_conv": list(cfg.dropout.get("conv") or []) or None,
        "hidden": hidden_sizes(cfg.model), "loss": cfg.loss.name,
        "loss_reduction": cfg.loss.get("reduction", "mean"),
        "feedback": cfg.method.get("feedback", "uniform"), "density": cfg.method.get("density", 1.0),
        "feedback_scale": cfg.method.get("feedback_scale", "paper"),
        "init": model.init, "init_config": cfg.init.name,
        "optimizer": cfg.optim.name, "lr": cfg.optim.lr, "optim_eps": cfg.optim.get("eps"),
        "batch_size": cfg.trainer.batch_size,
        "max_epochs": cfg.trainer.max_epochs, "stop_train_error": cfg.trainer.stop_train_error,
        "subset": cfg.data.subset, "test_subset": cfg.data.test_subset,
        "matmul_precision": cfg.trainer.matmul_precision,
        "adversarial_eps": cfg.adversarial.eps, "adversarial_clip": cfg.adversarial.clip,
        "eval_train": cfg.trainer.eval_train,
        **schedule(cfg).describe(), "eval_split": data.eval_split, "threads": torch.get_num_threads(),
        "fused_optimizer": fused,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "alignment_every": cfg.diagnostics.every if cfg.diagnostics.alignment else None,
        "n_train": len(data.x_train), "n_test": len(data.x_test), **environment(device),
        **(custom.describe(cfg, model) if isinstance(model, custom.CustomNet) else {}),
    }


def what_it_trains(cfg: DictConfig, seeds: list[int]) -> str:
    """``DFA, 2x800 tanh (fc800x2) on MNIST, seeds 0-4, up to 300 epochs``: the run in one line."""
    hidden = hidden_sizes(cfg.model)
    shape = f"{len(hidden)}x{hidden[0]}" if hidden and len(set(hidden)) == 1 else cfg.model.name
    extra = "" if variant(cfg) == "none" else f" + {variant(cfg)}"
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seed_tag(None, seeds)[1:].replace('+', ',')}"
    name = "" if shape == cfg.model.name else f" ({cfg.model.name})"
    activation = f" {cfg.model.activation}"
    if cfg.model.get("kind") == "custom":   # named by its target; its activations are its own
        shape, activation, name = custom.label(cfg.model), "", ""
    return (f"{cfg.method.name.upper()}, {shape}{activation}{extra}{name} on "
            f"{cfg.data.name.upper()}, {which}, up to {cfg.trainer.max_epochs} epoch{'s' * (cfg.trainer.max_epochs != 1)}")


def gpu_for_job(device: torch.device, job_num: int | None, n_gpus: int) -> torch.device:
    """One GPU per job of a parallel sweep: ``cuda`` (no index) becomes ``cuda:{job_num % n_gpus}``.

    A device index rather than ``CUDA_VISIBLE_DEVICES``: joblib's workers are reused across jobs,
    and CUDA reads that variable only once per process.
    """
    if device.type != "cuda" or device.index is not None or job_num is None or n_gpus < 2:
        return device
    return torch.device("cuda", job_num % n_gpus)


def train(cfg: DictConfig, run_dir, resume: bool | None = None, job_num: int | None = None) -> list[dict]:
    """Train what ``cfg`` describes and write one record per seed under ``run_dir``.

    ``resume`` (default: ``cfg.resume``): continue the run whose records are in ``run_dir`` from
    its checkpoint, or leave it as it is when it is complete; without it a directory that holds
    records is refused. ``job_num``: the job's number in a parallel sweep (one GPU per job).
    """
    validate(cfg)
    if cfg.trainer.get("threads") is not None:
        torch.set_num_threads(cfg.trainer.threads)
    seeds = resolve_seeds(cfg)
    run_dir = Path(run_dir)
    config = ckpt.plain_config(cfg)
    plan = ckpt.plan(run_dir, seeds, config, bool(cfg.get("resume", False) if resume is None else resume))
    if plan.action == "done":
        log.info(f"{run_dir} is complete ({len(seeds)} record{'s' * (len(seeds) > 1)}); "
                 f"skipped, not retrained.")
        return plan.summaries
    device = resolve_device(cfg.device)
    if cfg.device in ("auto", "cuda") and device.type == "cuda":
        device = gpu_for_job(device, job_num, torch.cuda.device_count())
    if cfg.trainer.cuda_graph == "on" and device.type != "cuda":
        raise UserError("trainer.cuda_graph=on needs a CUDA device; use auto or off on this machine.")
    use_graph = device.type == "cuda" and cfg.trainer.cuda_graph != "off"
    if cfg.model.get("kind") == "custom" and cfg.trainer.cuda_graph == "auto":
        use_graph = False   # a model of your own may sync the host in forward, which a graph cannot capture
    if plan.action != "resume":
        log.info(f"training {what_it_trains(cfg, seeds)} on {device}; records in {run_dir}")
    set_precision(cfg.trainer.matmul_precision)
    d = cfg.data
    data = load_dataset(d.name, d.root, d.download, d.subset, d.test_subset,
                        d.get("split", "test")).to(device)
    data = preprocess(data, d.get("preprocess", "none"), d.get("zca_eps", 1e-5), d.get("cache_dir"))
    if device.type == "cuda" and cfg.model.get("kind") == "conv":
        torch.backends.cudnn.benchmark = True   # fixed shapes every step: let cuDNN pick its fastest kernels
    model = build_model(cfg, data.input_shape, data.n_classes, seeds).to(device)
    fused = use_fused(cfg.optim, device, len(data.x_train) * cfg.trainer.max_epochs) and not use_graph
    fast = use_fast_step(cfg.trainer.get("fast_step", "auto"), model, device)
    optimizer = build_optimizer(model.parameters(), cfg.optim, capturable=use_graph, fused=fused)
    records = [RunRecord(p, logger.mirror(cfg.get("logger"), p)) for p in replica_dirs(run_dir, seeds)]
    t = cfg.trainer
    trainer = Trainer(model, optimizer, data, records, seeds, loss=cfg.loss.name,
                      reduction=cfg.loss.get("reduction", "mean"),
                      batch_size=t.batch_size, max_epochs=t.max_epochs,
                      stop_train_error=t.stop_train_error, ema_decay=t.ema_decay,
                      eval_batch_size=t.eval_batch_size, cuda_graph=use_graph,
                      describe={**describe(cfg, model, data, device, fused), "fast_step": fast},
                      progress=t.progress, fast_step=fast,
                      checkpoint=run_dir / ckpt.CHECKPOINT, checkpoint_every=t.checkpoint_every,
                      meta={"config": config}, schedule=schedule(cfg), eval_split=data.eval_split,
                      **trainer_options(cfg))
    if plan.action == "resume":
        log.info(f"resuming {run_dir} at epoch {plan.state['epoch']}"
                 + (f" step {plan.state['step']}" if plan.state["step"] else ""))
    summaries = trainer.fit(resume=plan.state)
    for s, rec in zip(summaries, records):
        if s["stop_reason"] == "diverged":
            log.warning(f"seed {s['seed']} diverged (loss became NaN or inf) in epoch {s['epochs']}; "
                        f"its records are in {rec.directory} with stop_reason 'diverged'.")
    return summaries


def _under_submitit(hydra_cfg) -> bool:
    """A job of Hydra's submitit launcher: a requeued job (preemption, timeout) resumes by itself."""
    return "submitit" in str(hydra_cfg.launcher.get("_target_", ""))


def _write_hydra_files(hydra_cfg, cfg: DictConfig, run_dir: Path) -> None:
    """Hydra's ``.hydra/`` for a job started by a resume command (which keeps existing ones as they were)."""
    target = run_dir / ".hydra"
    if hydra_cfg.output_subdir is not None or (target / "config.yaml").exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, target / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)}), target / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, target / "overrides.yaml")


def _discard_unstarted(run_dir: Path, results_dir) -> None:
    """A new run refused before training holds only Hydra's files: remove them, and the date folders
    above them that are left empty, so that bad input leaves no half-made run behind."""
    if not any(next(run_dir.rglob(name), None) for name in (METRICS, SUMMARY, ckpt.CHECKPOINT)):
        shutil.rmtree(run_dir, ignore_errors=True)
        results, folder = Path(results_dir).resolve(), run_dir.resolve().parent
        while folder != results and results in folder.parents:
            try:
                folder.rmdir()   # only an empty one
            except OSError:
                break
            folder = folder.parent


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    launcher = str(hydra_cfg.launcher.get("_target_", ""))
    resume = cfg.get("resume") is True or _under_submitit(hydra_cfg)
    try:
        if cfg.trainer.get("threads") is None and sweep_threads(hydra_cfg):
            torch.set_num_threads(sweep_threads(hydra_cfg))
        _write_hydra_files(hydra_cfg, cfg, run_dir)
        summaries = train(cfg, run_dir, resume=resume,
                          job_num=hydra_cfg.job.get("num") if "joblib" in launcher else None)
    except UserError as err:
        if not resume:
            _discard_unstarted(run_dir, cfg.results_dir)
        sys.stderr.write(f"dfa-run: {err}\n")
        sys.exit(2)
    except Interrupted as stop:
        hint = f"; rerun with resume={run_dir} to continue" if stop.checkpoint else ""
        sys.stderr.write(f"dfa-run: {stop}{hint}.\n")
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write(f"dfa-run: interrupted by a second Ctrl-C (or before training began), without a "
                         f"checkpoint of the current step; resume={run_dir} continues from the last one.\n")
        sys.exit(130)
    diverged = [s for s in summaries if s["stop_reason"] == "diverged"]
    if diverged and hydra_cfg.mode == RunMode.RUN:  # (in a sweep it is one outcome among others)
        which = ", ".join(f"seed {s['seed']} in epoch {s['epochs']}" for s in diverged)
        sys.stderr.write(f"dfa-run: the loss became NaN or inf ({which}); the records in {run_dir} say "
                         f"stop_reason 'diverged'; a smaller optim.lr may help.\n")
        sys.exit(3)


def main() -> None:
    sys.argv = [sys.argv[0], *cli.prepare(sys.argv[1:])]
    with cli.hydra_errors_as_sentences():
        _hydra_main()


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: launchers (joblib, submitit) then
    # pickle the task function by reference, as they do for the dfa-run script.
    from dfa_cli.run import main as _main
    _main()
