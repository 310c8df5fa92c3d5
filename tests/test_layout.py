"""walship's package layout: the import graph is acyclic and dependencies point one way.

The graph is read from the source with ``ast``: every import statement counts,
at module level, inside functions (the lazy imports of the hot path) and under
``if TYPE_CHECKING:``. docs/architecture.md describes the same layering.
"""

from __future__ import annotations

import ast
from pathlib import Path

import walship

ROOT = Path(walship.__file__).parent

#: Known cycles, each to be removed with the code that makes it (none left: the
#: storage/base.py <-> _protocols.py split went with the typing workarounds).
KNOWN_CYCLES: set[frozenset[str]] = set()

#: Files that may import a walship module by computed name (importlib): storage
#: backends by URL scheme and entry point. Nothing else: cli.py's command table
#: imports each command by name, in a function, so that the graph here sees it.
IMPORTLIB_ALLOWED = {"storage/registry.py"}

BASE = {"__init__", "errors", "log", "config", "proc"}
LOWER = BASE | {"pg", "storage", "codec", "repository", "manifest", "pgsql"}

#: top-level unit (package or module of walship) -> units it may import
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    "log": {"__init__", "errors"},
    "proc": {"__init__", "errors", "log"},
    "config": {"__init__", "errors", "log"},
    # PostgreSQL knowledge: nothing of walship's but its errors
    "pg": {"errors"},
    # stores know nothing about what they store
    "storage": BASE,
    # object encoding; codec/objects.py puts and opens envelopes on a backend
    "codec": BASE | {"storage"},
    # where things live in a repository, and its identity record
    "repository": BASE | {"pg", "storage", "codec"},
    # base-backup manifests and keys (pure): read by restore, written by backup
    "manifest": {"errors", "pg"},
    # the SQL session (psycopg's only importer)
    "pgsql": BASE,
    # the segment index reads archived segments through repository, not archive
    "index": LOWER,
    "restore": LOWER | {"index"},
    # push may index what it archived (index_on_push)
    "archive": LOWER | {"index"},
    "background": LOWER | {"index", "archive"},
    # backup-push/fetch, the catalog, retention: the planner chooses backups
    "backup": LOWER | {"index", "restore"},
    # check, status, metrics, drill
    "ops": LOWER | {"index", "archive", "restore", "backup"},
    "commands": LOWER | {"index", "archive", "restore", "background", "backup", "ops"},
    # cli -> commands only: the background process is started by commands/push.py
    "cli": BASE | {"commands"},
    "__main__": {"cli"},
}


def _doc_table() -> dict[str, set[str]]:
    """The "may import" column of docs/architecture.md's layout table, per unit."""
    doc = ROOT.parent / "docs" / "architecture.md"
    words = {"base": BASE, "lower": LOWER, "nothing": set()}
    table: dict[str, set[str]] = {}
    for line in doc.read_text().splitlines():
        if not line.startswith("| `walship/"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        path = cells[0].strip("`").removeprefix("walship/").rstrip("/")
        unit = path.removesuffix(".py")
        allowed: set[str] = set()
        for word in cells[-1].split(","):
            word = word.strip().strip("`")
            allowed |= words.get(word, {word})
        table[unit] = allowed
    return table


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("walship", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".")
            if path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
    out: set[str] = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _targets(module, path, node)
        graph[module] = edges
    return graph


GRAPH = _graph()


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _without_known(graph: dict[str, set[str]], known: set[frozenset[str]]) -> dict[str, set[str]]:
    return {a: {b for b in bs if frozenset({a, b}) not in known} for a, bs in graph.items()}


def test_graph_sees_every_kind_of_import() -> None:
    # module level, relative
    assert "walship.pg" in GRAPH["walship.archive.push"]
    # inside a function (the index_on_push hook is imported lazily)
    assert "walship.index.build" in GRAPH["walship.archive.push"]
    # under TYPE_CHECKING
    assert "walship.storage.base" in GRAPH["walship.codec.objects"]
    # ``from . import name`` of a submodule, and ``from .. import repository``
    assert "walship.codec.envelope" in GRAPH["walship.codec.objects"]
    assert "walship.repository" in GRAPH["walship.index.build"]


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles(_without_known(graph, {frozenset({"c", "a"})})) == []


def test_module_graph_is_acyclic() -> None:
    assert _cycles(_without_known(GRAPH, KNOWN_CYCLES)) == []
    # the exemption covers a cycle that is still there: drop it when it goes
    for pair in KNOWN_CYCLES:
        a, b = sorted(pair)
        still = b in GRAPH.get(a, set()) and a in GRAPH.get(b, set())
        assert still, f"{a} <-> {b} is gone: remove it from KNOWN_CYCLES"


def test_package_graph_is_acyclic() -> None:
    units: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        edges = units.setdefault(_unit(module), set())
        for target in targets:
            if frozenset({module, target}) in KNOWN_CYCLES:
                continue
            edges.add(_unit(target))
    units = {u: e - {u} for u, e in units.items()}
    assert _cycles(units) == []


def test_dependencies_point_one_way() -> None:
    unplaced = sorted({_unit(m) for m in GRAPH} - set(ALLOWED))
    assert not unplaced, f"add {unplaced} to ALLOWED (and docs/architecture.md)"
    wrong = []
    for module, targets in sorted(GRAPH.items()):
        for target in sorted(targets):
            a, b = _unit(module), _unit(target)
            if a == b:
                continue
            if frozenset({module, target}) in KNOWN_CYCLES:
                continue
            if b not in ALLOWED[a]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_architecture_doc_lists_the_same_layers() -> None:
    """docs/architecture.md's table says what each package may import: the same as ALLOWED."""
    assert _doc_table() == ALLOWED


def test_pg_does_no_io() -> None:
    io_modules = {"os", "io", "socket", "subprocess", "shutil", "tempfile", "pathlib", "threading"}
    for module, path in MODULES.items():
        if _unit(module) != "pg":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            assert not names & io_modules, f"{module} imports {names & io_modules}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", f"{module} opens a file (line {node.lineno})"


def test_walship_modules_are_imported_by_name() -> None:
    """No walship module is reached through importlib, except backends by scheme/entry point."""
    found: dict[str, list[int]] = {}
    for path in MODULES.values():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in ("import_module", "__import__"):
                continue
            arg = node.args[0] if node.args else None
            if (
                isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and not arg.value.startswith("walship")
            ):
                continue  # a third-party module (google_crc32c.cext)
            found.setdefault(rel, []).append(node.lineno)
    assert set(found) == IMPORTLIB_ALLOWED, found


def _defined(path: Path) -> set[str]:
    """Names a file defines: functions, classes, ``Class.method`` and module constants."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(f"{node.name}.{item.name}")
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_rule_map_names_what_each_file_defines() -> None:
    """docs/architecture.md names the file enforcing each rule: its functions exist there."""
    import re

    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    section = doc.split("## Where each rule of docs/push-fetch.md is enforced", 1)[1]
    section = section.split("\n## ", 1)[0]
    checked = 0
    missing = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| rule") or line.startswith("|---"):
            continue
        where = line.rstrip(" |").rsplit(" | ", 1)[1]
        current: Path | None = None
        for token in re.findall(r"`([^`]+)`", where):
            if token.endswith(".py"):
                current = ROOT / token
                assert current.is_file(), f"{token} does not exist"
                continue
            if current is None or not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)?", token):
                continue
            head, _, tail = token.partition(".")
            if tail and (ROOT / f"{head}.py").is_file():  # module.function
                found = tail in _defined(ROOT / f"{head}.py")
            elif head == "os":
                continue  # the system call a rule rests on
            else:
                found = token in _defined(current)
            checked += 1
            if not found:
                missing.append(f"{token} in {current.relative_to(ROOT)}")
    assert checked > 50 and not missing, missing
