"""The every-rule table's findings, for scripts/reproduction.py: prose written by hand in
``reproduction_findings.md`` (a Jinja template beside this file), every number in it filled from
the records by the functions below, so a finding can never disagree with the runs it cites.

A finding may cite only a cell that has all the seeds the plan gives it (``dfa_cli.campaign.plans.
RULE_NETS``), and states its claims in words the template checks with ``holds(condition, claim)``
("FA's interval lies above BP's"). A cell still filling up, or a claim the records no longer bear,
stops the block with one sentence naming it.
Nets are named by their shape (``"2x800"``, ``"7x240"``, ``"3x1000"``), rules by the table's labels
(``"dfa"``, ``"dfa-binary"``, …)."""
from __future__ import annotations

import functools
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]   # the package, and the sibling reproduction_tables and _experiments

import jinja2  # noqa: E402

from dfa_cli.campaign.plans import RULE_NETS  # noqa: E402
from dfa_cli.report import rules as every_rule  # noqa: E402
from dfa_cli.report.cells import t_interval  # noqa: E402
from dfa_cli.report.collect import read_metrics  # noqa: E402
from dfa_cli.report.spec import METRICS, SUMMARY  # noqa: E402
from reproduction_experiments import RULE_FOLDERS  # noqa: E402
from reproduction_tables import TABLE1, cells_frame, row_name  # noqa: E402

TEMPLATE = Path(__file__).with_suffix(".md")
MINUS = "\u2212"   # prose's minus sign (the tables print ASCII '-')


class FindingUnsupported(ValueError):
    """A finding cites a cell that is not whole (or does not exist), or claims what its records do not bear."""


class Quoted(str):
    """A number as the prose prints it (``"2.71 ± 0.25"``), with the value it stands for (there the
    mean; each function says which), for ``holds``."""

    def __new__(cls, text: str, value: float):
        quoted = super().__new__(cls, text)
        quoted.value = value
        return quoted


def holds(condition: bool, claim: str) -> str:
    """Nothing, where the records bear ``claim``; otherwise the block stops, naming it."""
    if not condition:
        raise FindingUnsupported(f"the findings claim that {claim}, which the records no longer bear")
    return ""


def _summary(path) -> dict:
    return json.loads((Path(path) / SUMMARY).read_text())


def _training_rises(path) -> list[float]:
    """A run's online training error % minus the epoch before's, from its second epoch on."""
    train = [float(r["train_error"]) for r in read_metrics(Path(path) / METRICS)[0]]
    return [b - a for a, b in zip(train, train[1:])]


def signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}".replace("-", MINUS)


def span(values: list[float], digits: int) -> str:
    """``low–high`` at ``digits`` decimals; one number when both read the same."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}–{high}"


class Paired:
    """One rule's test error minus another's over the seeds both ran: mean and 95 % t-interval."""

    def __init__(self, diffs: list[float]):
        self.n = len(diffs)
        self.mean, self.low, self.high = t_interval(diffs)
        self.signed = signed(self.mean)
        self.interval = f"[{signed(self.low)}, {signed(self.high)}]"
        self.higher, self.lower = self.low > 0, self.high < 0   # the interval excludes 0 (NaN: never)


class RuleFacts:
    """What the findings may say of the every-rule records under ``records``."""

    def __init__(self, records: Path, folders: tuple[str, ...]):
        self.records = records
        self.runs = every_rule.collect_rules([records / f for f in folders if (records / f).is_dir()])
        self.planned = {name: RULE_NETS["_".join(key)][1] for key, name in every_rule.NETS.items()}
        self.nets = {name.split()[-2]: name for name in every_rule.NETS.values()}   # "2x800" → "MNIST 2x800 tanh"

    def _cell(self, net: str, rule: str):
        """The runs of a whole cell; :class:`FindingUnsupported` if it is not whole."""
        name = self.nets.get(net)
        if name is None or rule not in every_rule.RULES:
            raise FindingUnsupported(f"the findings cite {net} {rule}, which the every-rule table does not have "
                                     f"(nets {', '.join(self.nets)}; rules {', '.join(every_rule.RULES)})")
        runs = self.runs[(self.runs["net"] == name) & (self.runs["rule"] == rule)]
        missing = sorted(set(self.planned[name]) - set(runs["seed"]))
        if missing:
            raise FindingUnsupported(f"the findings cite {name} {every_rule.RULE_NAMES[rule]}, which still lacks "
                                     f"seed(s) {', '.join(map(str, missing))}: a finding waits for all its seeds")
        return runs

    def errors(self, net: str, rule: str) -> list[float]:
        return [e for e in self._cell(net, rule)["test_error"] if e == e]   # (diverged runs left out)

    def cell(self, net: str, rule: str) -> Quoted:
        """Test error %: ``mean ± sample std`` over the cell's seeds."""
        errors = self.errors(net, rule)
        mean = statistics.fmean(errors)
        return Quoted(f"{mean:.2f}" + (f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else ""), mean)

    def diff(self, net: str, rule: str, baseline: str) -> Paired:
        """``rule`` − ``baseline`` over the seeds both ran, neither diverged."""
        base, mine = self._cell(net, baseline), self._cell(net, rule)
        theirs = dict(zip(base["seed"], base["test_error"]))
        return Paired([e - theirs[s] for s, e in zip(mine["seed"], mine["test_error"])
                       if s in theirs and e == e and theirs[s] == theirs[s]])

    def seeds(self, net: str, rule: str) -> str:
        return span([float(s) for s in self._cell(net, rule)["seed"]], 0)

    def train(self, net: str, rule: str, digits: int = 2) -> str:
        """The online training error % at the last epoch, lowest–highest over the seeds."""
        return span(list(self._cell(net, rule)["train_error"]), digits)

    def train_mean(self, net: str, rule: str, digits: int = 2) -> Quoted:
        """The online training error % at the last epoch, mean over the seeds (the table's parentheses)."""
        mean = statistics.fmean(self._cell(net, rule)["train_error"])
        return Quoted(f"{mean:.{digits}f}", mean)

    def converged(self, net: str, rule: str) -> int:
        """How many of the cell's seeds met the stopping rule (the others ran out of epochs or diverged)."""
        return sum(_summary(p).get("stop_reason") == "converged" for p in self._cell(net, rule)["path"])

    def setbacks(self, net: str, rule: str, points: float = 2.0) -> Quoted:
        """Per seed, the epochs whose online training error is more than ``points`` above the epoch
        before's: fewest–most over the seeds (``.value``: the most)."""
        counts = [sum(rise > points for rise in _training_rises(path)) for path in self._cell(net, rule)["path"]]
        return Quoted(span([float(c) for c in counts], 0), max(counts))

    def largest_setback(self, net: str, rule: str) -> Quoted:
        """The largest rise of the online training error from one epoch to the next, points, over the seeds."""
        largest = max(max(_training_rises(path)) for path in self._cell(net, rule)["path"])
        return Quoted(f"{largest:.0f}", largest)

    def epochs(self, net: str, rule) -> str:
        """How many epochs the seeds trained, fewest–most; ``rule`` may be a list, over all their seeds."""
        rules = [rule] if isinstance(rule, str) else list(rule)
        return span([float(_summary(p)["epochs"]) for r in rules for p in self._cell(net, r)["path"]], 0)

    def angles(self, net: str, rule: str, seed: int = 0) -> list[int]:
        """Per hidden layer, the angle (°) between the rule's δa and BP's at seed ``seed``'s last epoch."""
        runs = self._cell(net, rule)
        path = runs.loc[runs["seed"] == seed, "path"]
        angles = every_rule.last_alignment(path.iloc[0]) if len(path) else None
        if not angles:
            raise FindingUnsupported(f"the findings cite the alignment of {net} {rule} seed {seed}, which its "
                                     "record did not measure (diagnostics.alignment=true)")
        return [round(a) if a is not None else None for a in angles]

    def table1(self, model: str, rule: str) -> Quoted:
        """Table 1's committed cell (the batch-mean step): ``mean ± std, n=N``."""
        row = self._table1_row(model, rule)
        return Quoted(f"{row['ours_display'].split(' (')[0]}, n={int(row['n'])}", float(row["ours_mean"]))

    def paper1(self, model: str, rule: str) -> Quoted:
        """The paper's Table 1 cell: test error ``mean ± std`` as the paper prints it."""
        row = self._table1_row(model, rule)
        return Quoted(row["paper_text"].split(" (")[0], float(row["paper_mean"]))

    @functools.cached_property
    def _table1(self):
        return cells_frame(self.records, TABLE1)

    def _table1_row(self, model: str, rule: str):
        frame = self._table1
        rows = frame[(frame["row"] == row_name(model)) & (frame["method"] == rule)]
        if not len(rows) or not rows.iloc[0]["n"]:
            raise FindingUnsupported(f"the findings cite Table 1's {model} {rule}, which has no record")
        return rows.iloc[0]


def render(template: Path, **names) -> str:
    """``template`` (Jinja) rendered with ``names`` and ``holds``; a claim or cell the records do not
    bear stops it with :class:`FindingUnsupported`, naming the template that made it."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=False)
    try:
        return environment.from_string(template.read_text()).render(holds=holds, **names).strip()
    except FindingUnsupported as e:
        shown = template.relative_to(REPO) if template.is_relative_to(REPO) else template
        raise FindingUnsupported(f"{e} (the prose: {shown})") from None


def findings_block(records: Path, figure_files: list[Path], page: Path) -> str:
    """The README's findings under the every-rule table: the template rendered with the records' facts
    (``cell``, ``diff`` and the rest: :class:`RuleFacts`)."""
    facts = RuleFacts(records, RULE_FOLDERS)
    names = {name: getattr(facts, name) for name in ("cell", "diff", "seeds", "train", "train_mean", "epochs",
                                                     "converged", "setbacks", "largest_setback", "angles", "table1",
                                                     "paper1")}
    return render(TEMPLATE, **names)
