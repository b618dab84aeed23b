"""The layout's rules, read from the source: imports point down the core's layers, the core never imports Ray or
the wrappers above it, and no module anywhere in the project takes part in an import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The core's layers, lowest first; a name is a top-level module or a subpackage of uhlm_ray. A module may import
# its own unit and any lower layer, never a higher one or another unit of its own layer.
LAYERS: list[tuple[str, ...]] = [
    ("validation", "snr"),
    ("config",),
    ("sampling",),
    ("records", "protocol"),
    ("models", "data"),
    ("link",),
    ("measures",),
    ("device",),
    ("base_station",),
    ("decode", "cell"),
    ("draft_control",),  # plans a cell's block lengths on cell.py's slot
    ("experiments",),
    ("cli",),
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for top in ("uhlm_ray", "actors", "jobs", "bench", "scripts", "tests"):
        for path in (ROOT / top).rglob("*.py"):
            found[module_name(path)] = path
    return found


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(path: Path, *, known: set[str]) -> set[str]:
    """Project modules `path` imports at run time, at module level or inside functions (TYPE_CHECKING blocks
    excluded). `from pkg import name` counts as importing pkg.name when that is a module, else pkg."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in known:
                    out.add(full)
                elif node.module in known:
                    out.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return out


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph = {name: imported_modules(path, known=known) for name, path in modules.items()}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first; a package's own submodules are not a circle with it.
    for module, deps in graph.items():
        for dep in list(deps):
            parts = dep.split(".")
            parents = (".".join(parts[:i]) for i in range(1, len(parts)))
            deps.update(p for p in parents if p in known and not module.startswith(p + "."))
    return graph


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_core_unit_has_a_layer():
    units = {unit_of(m) for m in project_modules() if m.startswith("uhlm_ray.")}
    assert units <= set(LAYER_OF), f"give these a layer in LAYERS: {sorted(units - set(LAYER_OF))}"


def test_core_imports_point_down_the_layers():
    graph = import_graph()
    upward = []
    for module, deps in graph.items():
        if not module.startswith("uhlm_ray."):
            continue
        for dep in deps:
            if dep == "uhlm_ray" or not dep.startswith("uhlm_ray."):
                continue
            src, dst = unit_of(module), unit_of(dep)
            if src != dst and LAYER_OF[dst] >= LAYER_OF[src]:
                upward.append(f"{module} -> {dep}")
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("forbidden", ["ray", "actors", "jobs"])
def test_core_imports_no_ray_and_nothing_above_it(forbidden):
    offenders = []
    for module, path in project_modules().items():
        if not module.startswith("uhlm_ray"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{module}: {n}" for n in names if n == forbidden or n.startswith(forbidden + ".")]
    assert not offenders, offenders


def test_no_import_circle_anywhere():
    graph = import_graph()
    # Tarjan's strongly connected components: any component of two or more modules is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """A negative control: a lower-layer module that imports a higher one is reported."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from uhlm_ray.decode import decode_prompt\n")
    deps = imported_modules(source, known={"uhlm_ray.decode", "uhlm_ray"})
    assert deps == {"uhlm_ray.decode"}
    assert LAYER_OF[unit_of("uhlm_ray.decode")] > LAYER_OF[unit_of("uhlm_ray.sampling.verify")]
