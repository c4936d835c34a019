"""The package's structure rules: small modules, imports that neither circle nor reach into privates.

Read from the source with ``ast`` (nothing is imported): every ``import`` of a package module,
at module level or inside a function, is an edge, and so is a string that names one (a module
loaded by name through importlib, as the command line loads its subcommands).
"""

import ast
from pathlib import Path

import napari_svi

PACKAGE = Path(napari_svi.__file__).parent
MAX_LINES = 400


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``) for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["napari_svi", *path.relative_to(PACKAGE).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str | None]]:
    """``(module, imported name or None)`` for every import of a package module by module ``name``."""
    path, is_package = MODULES[name]
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] == "napari_svi"]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module.split(".")[0] != "napari_svi":
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                found.append((full, None) if full in MODULES else (module, alias.name))
        elif isinstance(node, ast.Constant) and node.value in MODULES and node.value != "napari_svi":  # by name (importlib)
            found.append((node.value, None))
    return found


def test_no_module_is_over_400_lines():
    long = {str(path.relative_to(PACKAGE)): n for path, _ in MODULES.values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along their concepts): {long}"


def test_imports_do_not_circle():
    graph = {name: {m for m, _ in _imports(name) if m in MODULES and m != name} for name in MODULES}
    # a package's __init__ re-exporting its modules is not a cycle of those modules
    for name, (_, is_package) in MODULES.items():
        if is_package:
            graph = {k: v - {name} if k.startswith(name + ".") else v for k, v in graph.items()}
    cycles, done = [], set()

    def visit(node, path):
        if node in path:
            cycles.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, path + [node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_the_package_root_or_another_modules_private_names():
    bad = []
    for name in MODULES:
        for module, imported in _imports(name):
            if module == "napari_svi" and name != "napari_svi":
                bad.append(f"{name} imports {imported or module} from the package root (import it from its module)")
            elif imported and imported.startswith("_") and not imported.startswith("__") and module != name:
                bad.append(f"{name} imports the private {module}.{imported}")
    assert not bad, "\n".join(bad)


COMMANDS = ("napari_svi.cli", "napari_svi.cli_train", "napari_svi.batch", "napari_svi.benchmark.cli")


def test_the_core_imports_neither_the_napari_layer_nor_a_command():
    bad = []
    for name in MODULES:
        for module, _ in _imports(name):
            if module.startswith("napari_svi._napari") and not name.startswith("napari_svi._napari"):
                bad.append(f"{name} imports the napari layer ({module})")
            if module in COMMANDS and name not in (module, "napari_svi.cli"):  # cli registers the subcommands
                bad.append(f"{name} imports the command module {module}")
    assert not bad, "\n".join(bad)
