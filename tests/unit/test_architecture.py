"""Architecture rules, read from the source with `ast` (nothing is imported or run):

- the import graph of `edgemaas/` (module-level and function-level imports alike) has no cycle;
- no module imports a `_private` name from another module (`from x import _name`), anywhere in edgemaas/,
  functions/, benchmarks/ and tests/;
- no module imports from a higher layer (LAYERS: the CLI above `build` above `targets` above the packagers above
  `pipeline` above the stages above the foundations), and the AWS names and Lambda limits import no boto3.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "edgemaas"
CHECKED_TREES = ("edgemaas", "functions", "benchmarks", "tests")


# Lowest first. A module may import from its own layer or any lower one; a top-level name not listed is a new
# module that must be placed here. The shipped side (runtime, edge_entry) sits with the foundations.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("edgemaas", "edgemaas.errors", "edgemaas.fsutil", "edgemaas.reuse", "edgemaas.units", "edgemaas.resources",
     "edgemaas.spec", "edgemaas.workspace", "edgemaas.isolate", "edgemaas.tf", "edgemaas.secret_scan",
     "edgemaas.runtime", "edgemaas.edge_entry"),
    ("edgemaas.train", "edgemaas.user_models", "edgemaas.compress", "edgemaas.local", "edgemaas.aws"),
    ("edgemaas.pipeline",),
    ("edgemaas.packaging",),
    ("edgemaas.targets", "edgemaas.bench"),
    ("edgemaas.build",),
    ("edgemaas.commands", "edgemaas.cli", "edgemaas.__main__"),
)


def layer_of(module: str) -> int | None:
    """The layer of a module: that of the longest LAYERS entry it is or lies under."""
    best: tuple[int, int] | None = None
    for rank, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (rank, len(name))
    return best[0] if best else None


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every import of a module from a higher layer, and `a: not in LAYERS` for unplaced modules."""
    found = []
    for module in sorted(edges):
        rank = layer_of(module)
        if rank is None:
            found.append(f"{module}: not in LAYERS (place it in tests/unit/test_architecture.py)")
            continue
        found += [f"{module} (layer {rank}) -> {target} (layer {layer_of(target)})"
                  for target in sorted(edges[module]) if (layer_of(target) or 0) > rank]
    return found


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute non-edgemaas imports in one file (module and function level)."""
    names = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - {"edgemaas", "__future__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(top: Path) -> Iterator[Path]:
    for path in sorted(top.rglob("*.py")):
        if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts):
            yield path


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def imported_names(node: ast.Import | ast.ImportFrom, current: str, is_package: bool) -> list[str]:
    """Every dotted name an import statement may refer to (the module and, for `from`, module.name)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolved against the importing module's package
        base = current.split(".") if is_package else current.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the edgemaas modules it imports anywhere in its body (a package's own submodules excluded)."""
    paths = {module_name(path): path for path in python_files(PACKAGE)}
    edges: dict[str, set[str]] = {name: set() for name in paths}
    for current, path in paths.items():
        for node in ast.walk(parse(path)):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in imported_names(node, current, path.name == "__init__.py"):
                while name and name not in paths:  # `from pkg.mod import func` -> pkg.mod
                    name = name.rpartition(".")[0]
                # A package and its own submodules importing each other is how packages work, not a cycle.
                if name and name != current and not name.startswith(current + ".") \
                        and not current.startswith(name + "."):
                    edges[current].add(name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle (a -> b -> ... -> a) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(start: str) -> None:  # iterative Tarjan: the graph is deep enough to matter for recursion
        work = [(start, iter(sorted(edges[start])))]
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
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return [shortest_cycle(component, edges) for component in components]


def shortest_cycle(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest cycle through the component's first module (breadth-first), as a closed path."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(edges[node] & component):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    return sorted(component)  # unreachable for a strongly connected component


def private_imports() -> list[str]:
    """`file:line: from x import _name` for every private name imported from another module."""
    found = []
    for tree_name in CHECKED_TREES:
        for path in python_files(REPO / tree_name):
            for node in ast.walk(parse(path)):
                if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                    continue
                private = [alias.name for alias in node.names
                           if alias.name.startswith("_") and not alias.name.startswith("__")]
                if private:
                    source = "." * node.level + (node.module or "")
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: from {source} import "
                                 f"{', '.join(private)}")
    return found


def test_the_rules_see_what_they_check() -> None:
    # Guards against a vacuous pass (wrong root, nothing parsed).
    edges = import_graph()
    assert "edgemaas.local.session" in edges and "edgemaas.cli" in edges
    assert "edgemaas.local.process" in edges["edgemaas.local.session"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("edgemaas.packaging.awslambda.target") == 3 and layer_of("edgemaas.build") == 5
    assert upward_imports({"edgemaas.pipeline": {"edgemaas.build"}, "edgemaas.build": set()}) == [
        "edgemaas.pipeline (layer 2) -> edgemaas.build (layer 5)"]


def test_edgemaas_has_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles in edgemaas/ (module-level and function-level imports):\n" + "\n".join(
        " -> ".join(cycle) for cycle in found)


def test_no_private_name_is_imported_from_another_module() -> None:
    found = private_imports()
    assert not found, ("private names imported across modules (make the name public where it is defined, or "
                       "move the code that needs it there):\n" + "\n".join(found))


def test_no_module_imports_from_a_higher_layer() -> None:
    found = upward_imports(import_graph())
    assert not found, ("imports from a higher layer (move the shared code down, or pass it in):\n"
                       + "\n".join(found))


def test_aws_names_and_limits_import_no_boto3() -> None:
    # Packagers read function names and Lambda limits from here; boto3 stays out of packaging.
    names = PACKAGE / "aws" / "names.py"
    assert "DIRECT_UPLOAD_LIMIT" in names.read_text(encoding="utf-8")
    assert import_graph()["edgemaas.aws.names"] <= {"edgemaas", "edgemaas.errors", "edgemaas.units"}
    assert not third_party_imports(names) & {"boto3", "botocore"}
