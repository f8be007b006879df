"""The package's layout stays readable: no import cycle inside uml_fed (module-level, deferred and
type-checking imports all count), the data sources are found by the registry, none by name, and the app
bundle a SuperLink ships holds the apps, the package and its configs only."""

from __future__ import annotations

import ast
import io
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "uml_fed"
ROOT = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The uml_fed modules ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.add(target if target in modules else base)
    return {m for m in out if m in modules and m != name}


def test_no_import_cycle_inside_the_package():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: imports(p, set(files)) for m, p in files.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_source_is_registered_and_found_by_name():
    from uml_fed.data.sources.archive import RealSource
    from uml_fed.data.sources.registry import SOURCES, source_class

    for name in ("synthetic", "bigearthnet_v1", "bigearthnet_v2", "sen12ms", "eurosat", "folder"):
        assert source_class(name).name == name
    assert issubclass(SOURCES["bigearthnet_v1"], RealSource) and not issubclass(SOURCES["synthetic"], RealSource)
    for module in ("loading.py", "specs.py", "prepare.py", "__init__.py"):  # no source special-cased by name
        tree = ast.parse((PACKAGE / "data" / module).read_text())
        names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not names & set(SOURCES), (module, names & set(SOURCES))


def test_the_app_bundle_holds_the_apps_package_and_configs_only_and_fits_flowers_limit():
    """``flwr run`` refuses a FAB over 10 MB; docs/results with its stored runs alone is larger."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.constant import FAB_MAX_SIZE

    fab = build_fab_from_disk(ROOT)
    with zipfile.ZipFile(io.BytesIO(fab)) as z:
        names = {n for n in z.namelist() if not n.startswith(".info/")}
    wanted = {"pyproject.toml", "README.md", "server_app.py", "client_app.py"}
    wanted |= {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
    wanted |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert names == wanted, (sorted(names - wanted), sorted(wanted - names))
    assert len(fab) < FAB_MAX_SIZE / 4, f"{len(fab):,} bytes"
