"""The package's shape (docs/architecture.md): a few entry points on top of rooms, imports running
one way down the rooms, no cycle between modules, and each room saying what it is."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "dfa_cli"
# lowest first: a module may import its own room and the rooms before it, never one after it
ORDER = ["runs", "data", "nets", "feedback", "training", "campaign", "<top>"]
APART = {"report": {"report"}, "examples": {"feedback", "nets", "examples"}}   # rooms with their own rule
TOP_LEVEL_AT_MOST = 6


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else "<top>"


def imports(path: Path) -> set[str]:
    """The dfa_cli modules ``path`` imports, anywhere in it (function-level imports too)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("dfa_cli"):
                for alias in node.names:   # from . import x: x may be a module
                    candidate = f"{target}.{alias.name}"
                    is_module = (REPO / Path(*candidate.split("."))).with_suffix(".py").is_file() or \
                        (REPO / Path(*candidate.split(".")) / "__init__.py").is_file()
                    found.add(candidate if is_module else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dfa_cli")}
    return found - {here}


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_a_few_entry_points_sit_on_top_of_the_rooms():
    top = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    rooms = [d.name for d in PACKAGE.iterdir() if (d / "__init__.py").is_file()]
    assert len(top) <= TOP_LEVEL_AT_MOST, top
    assert len(rooms) >= 4 and set(ORDER[:-1]) <= set(rooms), rooms


def test_imports_run_one_way_down_the_rooms():
    upward = []
    for module, targets in GRAPH.items():
        mine = room(module)
        for target in targets:
            theirs = room(target)
            if target == "dfa_cli" or theirs == mine:
                continue
            if mine in APART:
                ok = theirs in APART[mine]
            elif theirs in APART:
                ok = False   # nothing imports the report or the examples
            else:
                ok = ORDER.index(theirs) < ORDER.index(mine)
            if not ok:
                upward.append(f"{module} → {target}")
    assert upward == []


def test_no_module_imports_itself_through_a_cycle():
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in GRAPH.get(module, ()):
            target = target if target in GRAPH else target.rsplit(".", 1)[0]
            if state.get(target) == "open":
                cycles.append(path + [target])
            elif target in GRAPH and target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_each_room_opens_with_one_line_that_says_what_it_is():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and doc.splitlines()[0].endswith("."), init


def test_the_tests_mirror_the_rooms():
    rooms = {d.name for d in PACKAGE.iterdir() if (d / "__init__.py").is_file()} - {"examples"}
    assert rooms <= {d.name for d in (REPO / "tests").iterdir() if d.is_dir()}
