"""The house (docs/ARCHITECTURE.md): the import graph of `nas/` has no cycle, lower layers never import the layers
above them, and no file or function outgrows the size a reader can hold. Measured with `ast` on the source itself,
module-level and function-level imports alike."""

from __future__ import annotations

import ast
import pathlib

NAS = pathlib.Path(__file__).resolve().parent.parent / "nas"
LOWER = ("nas.store", "nas.spec", "nas.latency", "nas.search", "nas.distill", "nas.students", "nas.teachers")
UPPER = ("nas.stages", "nas.workers", "nas.service", "nas.ui", "nas.pipeline")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(NAS.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(NAS.rglob("*.py")) if "migrations" not in p.parts}


def import_graph() -> dict[str, set[str]]:
    """module -> the nas modules it imports anywhere in its body. `from pkg import sub` counts as pkg.sub when sub is a
    module; relative imports are resolved against the importing module."""
    mods = sources()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.split(".")[0] == "nas"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                if base.split(".")[0] != "nas":
                    continue
                for a in node.names:
                    out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and graph["nas.pipeline"], "the graph must see the package"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["nas.spec.job"] = graph["nas.spec.job"] | {"nas.pipeline"}  # pipeline -> ... -> spec.job -> pipeline
    assert find_cycle(graph) is not None


def test_lower_layers_import_nothing_above_them():
    bad = [(m, dep) for m, deps in import_graph().items() if within(m, LOWER) for dep in deps if within(dep, UPPER)]
    assert not bad, f"lower layers importing stages, workers, service, ui or the pipeline: {bad}"


def test_nothing_imports_the_cli_or_the_dashboard():
    bad = [(m, dep) for m, deps in import_graph().items() for dep in deps
           if within(dep, ("nas.ui",)) and not within(m, ("nas.ui",)) and m != "nas.__main__"]
    assert not bad, f"the user interface is a leaf: {bad}"


def test_no_file_or_function_too_long():
    long_files, long_functions = [], []
    for name, path in sources().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append((name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append((name, node.name, n))
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_every_package_says_what_it_holds():
    missing = [p for p in NAS.rglob("__init__.py") if "migrations" not in p.parts and ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not missing, f"packages without a docstring: {missing}"
