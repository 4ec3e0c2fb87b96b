"""The code's shape, checked: layers import downwards only, and no module imports itself back.

    avatar_core  <-  backends, deployments  <-  serve_app

The core knows no backend (the registry finds them through entry points), and the serve_app modules
form no import circle (the WebSocket session gets the turn service, not the ingress).
"""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("avatar_core", "backends", "deployments", "serve_app", "capacity")


def imports_of(path: Path) -> set[str]:
    """Project modules a file imports, at any depth (TYPE_CHECKING and lazy imports included)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def test_the_core_imports_no_backend_and_nothing_above_it():
    for name, path in modules("avatar_core").items():
        above = {m for m in imports_of(path) if m.split(".")[0] != "avatar_core"}
        assert not above, f"{name} imports {sorted(above)}"


@pytest.mark.parametrize("package", ["backends", "deployments"])
def test_stages_and_backends_do_not_import_the_front_door(package):
    for name, path in modules(package).items():
        up = {m for m in imports_of(path) if m.split(".")[0] == "serve_app"}
        assert not up, f"{name} imports {sorted(up)}"


def test_serve_app_has_no_import_circle():
    mods = modules("serve_app")
    graph = {name: {m for m in imports_of(path) if m in mods and m != name} for name, path in mods.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for name in graph if (c := cycle_from(name))]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)
    assert graph["serve_app.ws_session"] >= {"serve_app.service"}  # the check sees real edges


def test_the_check_finds_a_circle_where_there_is_one(tmp_path, monkeypatch):
    """The graph test above is only as good as imports_of: it must see both kinds of import."""
    pkg = tmp_path / "serve_app"
    pkg.mkdir()
    (pkg / "a.py").write_text("from serve_app.b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    monkeypatch.setattr("tests.test_structure.ROOT", tmp_path)
    assert "serve_app.b.thing" in imports_of(pkg / "a.py") and "serve_app.a" in imports_of(pkg / "b.py")
    with pytest.raises(AssertionError, match="serve_app.a -> serve_app.b -> serve_app.a"):
        test_serve_app_has_no_import_circle()
