"""The package's layers, written down where they are enforced: every module imports only modules
of its own layer or below (lazy imports inside functions included), and no import cycles.

From the bottom up (../shared/DESIGN.md): a module may import another of its own layer only
if that creates no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "slimtext"

LAYERS = [
    ["slimtext.errors", "slimtext.rundir"],
    ["slimtext.data"],
    ["slimtext.models"],
    ["slimtext.train"],
    ["slimtext.config", "slimtext.checkpoint"],
    ["slimtext.recipes", "slimtext.inference"],
    ["slimtext.experiments"],
    # the package itself is the Python API's facade: its lazy __getattr__ imports slimtext.api
    ["slimtext", "slimtext.cli", "slimtext.cli_lm", "slimtext.serve", "slimtext.entry",
     "slimtext.__main__", "slimtext.api", "slimtext.datasets"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """slimtext modules imported anywhere in the file (top level or inside functions)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out |= {n for n in names if n == "slimtext" or n.startswith("slimtext.")}
    out.discard(me)
    return out


def graph() -> dict[str, set[str]]:
    files = sorted(SRC.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {layer_of(m) + 1}) imports {d} (layer {layer_of(d) + 1})"
            for m, deps in sorted(g.items()) for d in sorted(deps)
            if d != "slimtext" and layer_of(d) > layer_of(m)]


def cycles(g: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    found = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if d not in g:
                continue
            if state.get(d) == 1:
                found.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    return found


def test_every_import_points_down_or_sideways():
    bad = upward_imports(graph())
    assert not bad, "imports from a lower layer up:\n" + "\n".join(bad)


def test_no_import_cycles():
    bad = cycles(graph())
    assert not bad, "import cycles:\n" + "\n".join(bad)


def test_the_checker_sees_a_planted_upward_import_and_cycle(tmp_path, monkeypatch):
    """The rules above can fail: a model importing a recipe lazily is caught, and so is a cycle."""
    fake = tmp_path / "slimtext"
    (fake / "models").mkdir(parents=True)
    (fake / "recipes").mkdir()
    for d in (fake, fake / "models", fake / "recipes"):
        (d / "__init__.py").write_text("")
    (fake / "models" / "a.py").write_text("def f():\n    from slimtext.recipes import b\n")
    (fake / "recipes" / "b.py").write_text("from slimtext.models import a\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    g = graph()
    assert upward_imports(g) == ["slimtext.models.a (layer 3) imports slimtext.recipes.b (layer 6)"]
    assert cycles(g) == ["slimtext.models.a -> slimtext.recipes.b -> slimtext.models.a"]
