"""The ``dfa-run`` command line around Hydra: what happens before it composes and after it fails.

Before: an explicit ``seed=`` wins over a preset's ``seeds`` list, ``resume=<dir>`` becomes the
run's own command, and a results folder that cannot take records or a command that would write
over a run's records is refused in one sentence. After: Hydra's multi-line composition errors
become one sentence.
"""
from __future__ import annotations

import difflib
import os
import re
import secrets
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from .runs import checkpoint as ckpt
from .config import CONFIG_PATH
from .runs.errors import UserError

INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c")


def fail(sentence: str) -> None:
    sys.stderr.write(f"dfa-run: {sentence}\n")
    sys.exit(2)


def prepare(argv: list[str]) -> list[str]:
    """The command line Hydra should see; exits with one sentence when it cannot run."""
    try:
        argv = explicit_seed_wins(argv)   # (--cfg job too shows what would train)
        if any(a in INFO_FLAGS for a in argv):
            return argv
        argv = expand_resume(argv)
    except UserError as err:
        fail(str(err))
    problem = check_writable(_output_root(argv)) or check_resume(argv)
    if problem:
        fail(problem)
    given = _overrides(argv)
    if given.get("resume", "").lower() == "true" and "hydra.output_subdir" not in given:
        argv = [*argv, "hydra.output_subdir=null"]  # keep the run's own .hydra/ as first written
    return argv


@contextmanager
def hydra_errors_as_sentences():
    """Make Hydra raise its composition errors (HYDRA_FULL_ERROR) and report them in one sentence."""
    from hydra.errors import CompactHydraException
    user_wants_traces = bool(os.environ.get("HYDRA_FULL_ERROR"))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except CompactHydraException as err:
        if user_wants_traces:
            raise
        fail(hydra_sentence(err))


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
        with open(probe / f".dfa-write-test-{os.getpid()}-{secrets.token_hex(4)}", "w") as f:
            f.write("")
        os.unlink(f.name)
    except OSError as err:
        return (f"cannot write results under {root}: {probe} is not writable "
                f"({err.strerror or err}); choose another results_dir=.")
    return None


def _overrides(argv: list[str]) -> dict[str, str]:
    """``key → value`` of the command line's overrides (the last one of a key wins)."""
    out = {}
    for arg in _override_args(argv):
        key, _, value = arg.partition("=")
        out[key.lstrip("+~")] = value
    return out


def _override_args(argv: list[str]) -> list[str]:
    """The ``key=value`` arguments (not flags, nor a flag's value such as ``--cfg job``)."""
    return [a for a in argv if "=" in a and not a.startswith("-")]


def _is_multirun(argv: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in argv)


def _quote(value: str) -> str:
    """A path as a Hydra override value (quoted when it holds characters the grammar reserves)."""
    if re.fullmatch(r"[\w/.\-:~]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parsed(argv: list[str]):
    """Hydra's reading of the command line's overrides, or None when Hydra will refuse them itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    try:
        return OverridesParser.create().parse_overrides(_override_args(argv))
    except Exception:
        return None


def explicit_seed_wins(argv: list[str]) -> list[str]:
    """``seed=`` typed on the command line beats the ``seeds`` list a preset sets.

    Without it ``experiment=table1/fc800x1_tanh method=dfa seed=1`` would train the preset's five
    stacked seeds; with it, ``seeds=null`` is added, and when nothing is left for the preset's
    sweep to vary (and no ``-m``), ``hydra.mode=RUN``: one ordinary run of that seed. A ``seed=``
    beside a ``seeds=[…]`` of the command line's own is refused. ``resume=<dir>`` replays its run's
    saved command as it was.
    """
    given = _overrides(argv)
    if "seed" not in given or given.get("resume", "false").lower() not in ("true", "false"):
        return argv
    parsed = _parsed(argv)
    if parsed is None:
        return argv
    seeds = [o for o in parsed if o.key_or_group == "seeds"]
    if seeds:
        if seeds[-1].is_sweep_override() or seeds[-1].value() is not None:
            raise UserError(f"seed={given['seed']} and seeds={given['seeds']} both given, and seeds= would "
                            f"decide alone; write seeds=null seed={given['seed']} for that seed, or drop seed=.")
        return argv
    argv = _add_overrides(argv, "seeds=null")
    if (not _is_multirun(argv) and "hydra.mode" not in given
            and not any(o.is_sweep_override() for o in parsed) and _preset_sweep_is_pinned(argv, given)):
        argv = _add_overrides(argv, "hydra.mode=RUN")
    return argv


def _add_overrides(argv: list[str], *extra: str) -> list[str]:
    """``extra`` right after the last override (Hydra's parser takes none after a flag like --cfg job)."""
    last = max(i for i, a in enumerate(argv) if a in _override_args(argv))
    return [*argv[:last + 1], *extra, *argv[last + 1:]]


def _preset_sweep_is_pinned(argv: list[str], given: dict[str, str]) -> bool:
    """True when the config sets ``hydra.mode: MULTIRUN`` (a preset) and the command line gives every
    key its sweep varies a single value, so that the 'sweep' would be one job."""
    from hydra import compose
    try:
        with _initialized():
            hydra_cfg = compose(config_name="config", overrides=_override_args(argv),
                                return_hydra_config=True).hydra
    except Exception:
        return False   # Hydra reports the problem itself when it composes
    if str(hydra_cfg.get("mode")) != "RunMode.MULTIRUN":
        return False
    swept = {key.lstrip("+~") for key in (hydra_cfg.sweeper.get("params") or {})}
    return swept <= set(given)


@contextmanager
def _initialized():
    """Hydra's compose API over this package's configs."""
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    GlobalHydra.instance().clear()
    init = (initialize_config_module("dfa_cli.conf", version_base="1.3") if CONFIG_PATH.startswith("pkg://")
            else initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"))
    with init:
        yield


def expand_resume(argv: list[str]) -> list[str]:
    """``resume=<run or sweep dir>`` → that run's own overrides + ``resume=true`` + its directory.

    A run's overrides come from its ``.hydra/hydra.yaml``, a sweep's from its ``multirun.yaml``;
    overrides given beside ``resume=`` win over the saved ones.
    """
    value = _overrides(argv).get("resume")
    if value is None or value.lower() in ("true", "false"):
        return argv
    target = Path(value).expanduser()
    if re.fullmatch(r"seed\d+", target.name) and (target.parent / ".hydra" / "hydra.yaml").is_file():
        target = target.parent  # one seed of a stacked run: the run is its parent
    if (target / "multirun.yaml").is_file():
        source, kind = target / "multirun.yaml", "sweep"
    elif (target / ".hydra" / "hydra.yaml").is_file():
        source, kind = target / ".hydra" / "hydra.yaml", "run"
    else:
        raise UserError(f"resume={value}: no run or sweep there (no .hydra/hydra.yaml or multirun.yaml); "
                        f"give the directory of a run or a sweep under your results folder.")
    try:
        saved = OmegaConf.load(source).hydra.overrides
        saved = [str(o) for o in [*saved.hydra, *saved.task]]
    except Exception:
        raise UserError(f"resume={value}: {source} is unreadable; resume with the original command "
                        f"plus resume=true hydra.{kind}.dir={target}.") from None
    given = [a for a in argv if a.partition("=")[0].lstrip("+~") != "resume"]
    mine = set(_overrides(given)) | {"hydra.run.dir", "hydra.sweep.dir", "hydra.output_subdir", "resume"}
    kept = [o for o in saved if o.partition("=")[0].lstrip("+~") not in mine]
    flags = [a for a in given if a.startswith("-") and a not in ("-m", "--multirun")]
    rest = [a for a in given if not a.startswith("-")]
    mode = ["-m"] if kind == "sweep" else []
    return [*mode, *flags, *kept, *rest, "resume=true", f"hydra.{kind}.dir={_quote(str(target))}"]


def check_resume(argv: list[str]) -> str | None:
    """One sentence if the command would overwrite a run's records, or resume without saying where."""
    over = _overrides(argv)
    key = "hydra.sweep.dir" if _is_multirun(argv) else "hydra.run.dir"
    target = over.get(key)
    if str(over.get("resume", "false")).lower() == "true":
        if not target:
            return f"resume=true needs the directory to continue: add {key}=<dir>, or use resume=<dir>."
        return None
    if target and ckpt.holds_records(Path(target.strip("'\""))):
        return (f"{target} already holds the records of a run; add resume=true to continue it "
                f"(finished runs are left as they are), or choose another {key}.")
    return None


def _setting_names() -> list[str]:
    """Every setting of the default config (for 'did you mean')."""
    from hydra import compose
    try:
        with _initialized():
            cfg = OmegaConf.to_container(compose(config_name="config"), resolve=False)
    except Exception:
        return []
    return list(ckpt._flatten(cfg))


def hydra_sentence(err: Exception) -> str:
    """Hydra's multi-line report of a composition or override error, as one sentence."""
    from hydra.errors import MissingConfigException
    text = str(err)
    cause = str(err.__cause__ or "")
    if isinstance(err, MissingConfigException):
        first = text.strip().splitlines()[0]
        first = re.sub(r"^In '[^']*': ", "", first)
        sentence = first + (f"; choose one of: {', '.join(err.options)}" if err.options else "")
        if "submitit" in str(err.missing_cfg_file or ""):  # the slurm preset without the plugin
            sentence += "; install the launcher plugins with pip install -e '.[cluster]'"
        return sentence + "."
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown and "not in struct" in cause:
        key = unknown.group(1)
        close = difflib.get_close_matches(key, _setting_names(), n=1, cutoff=0.7)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{key} is not a setting{hint}; dfa-run --help lists every setting."
    lines = [ln.strip() for ln in (text + "\n" + cause).splitlines()
             if ln.strip() and not ln.strip().startswith(("Set the environment", "full_key", "object_type",
                                                          "reference_type", "See https"))]
    over = getattr(err, "override", None)
    prefix = f"cannot read the override '{over}': " if over and over not in text else ""
    return prefix + "; ".join(dict.fromkeys(ln.rstrip(".") for ln in lines)) + "."
