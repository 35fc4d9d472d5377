"""The package's shape (docs/architecture.md): imports go one way, and none hides in a function."""

import ast
from pathlib import Path

import alexnet

PACKAGE = Path(alexnet.__file__).parent
#: Lower layers never import higher ones.
LAYERS = {"errors": 0, "files": 0, "progress": 0, "versions": 0, "devices": 0, "precision": 0, "machine": 0,
          "tables": 0, "settings": 0, "ops": 1, "model": 2, "analysis": 3, "caffe": 3, "data": 3, "train": 4,
          "experiments": 5, "cli": 6, "__init__": 7, "__main__": 7}


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
