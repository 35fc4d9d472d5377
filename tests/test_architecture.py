"""The package's shape (docs/architecture.md): imports go one way, and none hides in a function."""

import ast
from pathlib import Path

import alexnet

PACKAGE = Path(alexnet.__file__).parent
#: Lower layers never import higher ones: the net, then its data and how it runs, then a trained
#: net's files, then the rooms that use it (inference and interop; training; experiments), then
#: the command line.
LAYERS = {"errors": 0, "files": 0, "progress": 0, "versions": 0, "devices": 0, "precision": 0, "machine": 0,
          "tables": 0, "settings": 0, "world": 0, "ops": 1, "model": 2, "analysis": 3, "data": 3, "runtime": 3,
          "run_folder": 4, "checkpoint": 5, "caffe": 6, "trained": 7, "inference": 8, "export": 8, "train": 9,
          "experiments": 10, "cli": 11, "__init__": 12, "__main__": 12}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _layer(parts):
    return LAYERS[parts[0]]


def _target(parts, node: ast.ImportFrom):
    """The package-relative parts an import names (None for a third-party import)."""
    if node.level == 0:
        names = (node.module or "").split(".")
        return tuple(names[1:]) if names[0] == "alexnet" else None
    base = parts[:len(parts) - node.level]  # level 1: the module's own package
    return tuple(base) + tuple((node.module or "").split(".")) if node.module else tuple(base)


def test_no_module_imports_upward():
    upward = []
    for path, parts in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _target(parts, node)
                if target and target[0] in LAYERS and LAYERS[target[0]] > _layer(parts):
                    upward.append(f"{'/'.join(parts)} imports {'.'.join(target)}")
    assert upward == []


def _imports():
    """Every module of the package and the package modules it imports (at any depth of its code,
    under ``TYPE_CHECKING`` too), by dotted name."""
    modules = {".".join(parts): path for path, parts in _modules()}
    graph = {}
    for name, path in modules.items():
        parts = tuple(name.split("."))
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _target(parts, node) is not None:
                target = _target(parts, node)
                for alias in node.names:  # "from . import distributed" imports a module
                    full = ".".join(target + (alias.name,))
                    targets.add(full if full in modules or full + ".__init__" in modules else ".".join(target))
        packages = {t: t + ".__init__" for t in targets if t + ".__init__" in modules}
        graph[name] = {packages.get(t, t) for t in targets} & set(modules) - {name}
    return graph


def _cycle(graph):
    """One import cycle of ``graph`` as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_module_imports_itself_through_a_cycle():
    """Inside a layer too: model.config -> model.init -> model.spec -> model.config was one."""
    assert _cycle(_imports()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_package_import_inside_a_function():
    hidden = []
    for path, parts in _modules():
        for func in ast.walk(ast.parse(path.read_text())):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    if isinstance(node, ast.ImportFrom) and _target(parts, node) is not None:
                        hidden.append(f"{'/'.join(parts)}:{node.lineno} in {func.name}()")
    assert hidden == []


#: The longest a function may be, counted from its ``def`` to its last line (docstring included).
MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_a_screen():
    long = []
    for path, parts in _modules():
        for func in ast.walk(ast.parse(path.read_text())):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = func.end_lineno - func.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{'/'.join(parts)}:{func.lineno} {func.name}() has {lines} lines")
    assert long == []
