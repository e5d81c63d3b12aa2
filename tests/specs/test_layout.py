"""The package's folders are its architecture: each module imports only from its own layer or those below it
(no circle, nothing upward), and `inception_keras` never imports `search`."""

import ast
from pathlib import Path

import inception_keras

PACKAGE = Path(inception_keras.__file__).parent
# lowest first: a module may import from its own layer and any below it
LAYERS = [
    ("utils",),
    ("spec", "serialize", "presets", "cost", "memory", "report", "examples", "inherit_rules", "scaling"),
    ("layers",),
    ("builder", "inherit", "elastic", "pretrained", "applications"),
    ("data",),
    ("training", "train", "child_scoring"),
    ("export",),
    ("cli",),
]


def layer_of(dotted: str) -> int:
    parts = dotted.split(".")
    if parts == ["inception_keras"]:
        return 1  # the package's own __init__ (the public API: the spec layer, and the rest lazily)
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def imports(path: Path) -> set[str]:
    """Every `inception_keras...` module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("inception_keras", *path.relative_to(PACKAGE).with_suffix("").parts))
        yield path, name.removesuffix(".__init__")


def test_every_module_belongs_to_a_layer():
    for _, name in modules():
        if name != "inception_keras":
            layer_of(name)  # StopIteration: a module outside the map


def test_nothing_imports_upward_and_nothing_imports_search():
    upward = []
    for path, name in modules():
        if name == "inception_keras":
            continue
        for target in imports(path):
            assert target.split(".")[0] != "search", f"{name} imports {target}"
            if target.startswith("inception_keras") and layer_of(target) > layer_of(name):
                upward.append(f"{name} -> {target}")
    assert upward == []
