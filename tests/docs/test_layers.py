"""The floor plan holds: imports run down the layers only (the picture in
docs/architecture.md), the repository has no symlinks, and outside the
backends' own folders no code asks which concrete backend it holds.

Every module of the three portions (protos/blobgate, server/blobgate,
client/blobgate) is parsed, and every import in it counts, function-level
and TYPE_CHECKING ones included, as do module names given to
``importlib.import_module`` as literals (the client's lazy names).
"""

from __future__ import annotations

import ast
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PORTIONS = ("protos", "server", "client")  # each holds a part of the blobgate namespace

# Which layers each layer may import (itself included). The order, bottom up:
# v1 -> shared -> {client | core -> storage -> rpc -> setup}.
ALLOWED: dict[str, frozenset[str]] = {
    "v1": frozenset({"v1"}),
    "shared": frozenset({"v1", "shared"}),
    "client": frozenset({"v1", "shared", "client"}),
    "core": frozenset({"v1", "shared", "core"}),
    "storage": frozenset({"v1", "shared", "core", "storage"}),
    "rpc": frozenset({"v1", "shared", "core", "storage", "rpc"}),
    "setup": frozenset({"v1", "shared", "core", "storage", "rpc", "setup"}),
}
# The server's subpackages that are layers; its top-level modules are the set-up.
SERVER_LAYERS = ("core", "storage", "rpc")
# Folders of concrete backends: only they (and nothing else) may test for
# their own classes; the factory chooses a backend by building it.
BACKEND_FOLDERS = ("blobgate.server.storage.s3", "blobgate.server.storage.memory")


@dataclass(frozen=True)
class Import:
    """One import of a blobgate module, where it is written."""

    path: Path
    line: int
    importer: str
    imported: str


def layer_of(module: str) -> str | None:
    """The layer ``module`` belongs to; None for a module that is not ours or
    the bare namespace, "unclassified" for a server folder no rule names."""
    parts = module.split(".")
    if parts[0] != "blobgate" or len(parts) == 1:
        return None
    if parts[1] in ("v1", "shared", "client"):
        return parts[1]
    if parts[1] != "server":
        return "unclassified"
    if len(parts) == 2:
        return "setup"
    return parts[2] if parts[2] in SERVER_LAYERS else "setup"


def modules_under(root: Path) -> dict[str, Path]:
    """Every module of the portions under ``root``, by its dotted name."""
    found: dict[str, Path] = {}
    for portion in PORTIONS:
        base = root / portion
        for path in sorted((base / "blobgate").rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _target(module: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """What ``from module import names`` imports: the submodules among the
    names where they are modules, else the module itself."""
    subs = [f"{module}.{name}" for name in names if f"{module}.{name}" in known]
    return subs or [module]


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """Every import of a blobgate module written in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = _target(base, [alias.name for alias in node.names], known)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
        ):
            targets = [a.value for a in node.args if isinstance(a, ast.Constant)]
        elif isinstance(node, ast.Dict):
            # A table of module names imported later by name (blobgate.client's
            # lazy attributes): each value that names one of our modules.
            targets = [
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value in known
            ]
        for target in targets:
            if isinstance(target, str) and target.split(".")[0] == "blobgate":
                found.append(Import(path, node.lineno, module, target))
    return found


def crossings(root: Path) -> list[str]:
    """Each import under ``root`` that crosses a layer the wrong way, as
    ``file:line: importer (layer) imports name (layer)``."""
    known = modules_under(root)
    bad: list[str] = []
    for module, path in known.items():
        layer = layer_of(module)
        for found in imports_of(module, path, known):
            target = layer_of(found.imported)
            if target is None:
                continue
            if layer not in ALLOWED or target not in ALLOWED[layer]:
                where = path.relative_to(root)
                bad.append(
                    f"{where}:{found.line}: {module} ({layer}) imports {found.imported} ({target})"
                )
    return sorted(bad)


def test_imports_run_down_the_layers_only() -> None:
    bad = crossings(ROOT)
    assert not bad, "imports that cross a layer the wrong way:\n" + "\n".join(bad)


def test_every_module_is_in_a_layer() -> None:
    modules = modules_under(ROOT)
    assert len(modules) > 100, sorted(modules)  # the walk found the portions
    unplaced = [m for m in modules if m != "blobgate" and layer_of(m) not in ALLOWED]
    assert not unplaced, f"modules no layer rule covers (add the folder to ALLOWED): {unplaced}"


def test_the_architecture_page_states_these_rules() -> None:
    """docs/architecture.md's Layout table says, for each folder, which
    layers it may import: exactly ALLOWED (beside its own layer)."""
    names = {"v1", "shared", "client", "core", "storage", "rpc"}
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
        if line.startswith("| `protos/")
        or line.startswith("| `server/")
        or line.startswith("| `client/")
    ]
    assert len(rows) >= len(ALLOWED), rows
    stated: dict[str, set[str]] = {}
    for folder, import_name, may_import, _ in rows:
        layer = layer_of(import_name.strip("`"))
        assert layer in ALLOWED, f"{folder}: {import_name} is in no layer"
        listed = {name.strip("` ") for name in may_import.split(",")}
        listed = {"setup" if name == "set-up" else name for name in listed if name in names}
        assert listed == ALLOWED[layer] - {layer}, (
            f"docs/architecture.md says {folder} may import {sorted(listed)}; "
            f"the rule is {sorted(ALLOWED[layer] - {layer})}"
        )
        stated[layer] = listed
    assert set(stated) == set(ALLOWED), (
        f"layers the Layout table omits: {set(ALLOWED) - set(stated)}"
    )


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_check_finds_a_crossing_and_says_where(tmp_path: Path) -> None:
    """The checker itself, on a small tree with one import of each kind that
    must be refused, and some that must not."""
    _write(tmp_path, "protos/blobgate/shared/wire.py", "import blobgate.v1\n")
    _write(tmp_path, "protos/blobgate/shared/tls.py", "from blobgate.client import models\n")
    _write(tmp_path, "client/blobgate/client/__init__.py", "")
    _write(tmp_path, "client/blobgate/client/models.py", "from blobgate.shared import wire\n")
    _write(
        tmp_path,
        "client/blobgate/client/lazy.py",
        "import importlib\n_MODULES = {'x': 'blobgate.server.core.errors'}\n",
    )
    _write(tmp_path, "server/blobgate/server/__init__.py", "")
    _write(tmp_path, "server/blobgate/server/app.py", "from blobgate.server.rpc import handlers\n")
    _write(tmp_path, "server/blobgate/server/core/__init__.py", "")
    _write(tmp_path, "server/blobgate/server/core/errors.py", "")
    _write(
        tmp_path,
        "server/blobgate/server/storage/limits.py",
        """\
        from blobgate.server.core import errors


        def late() -> None:
            from .. import app
        """,
    )
    _write(tmp_path, "server/blobgate/server/rpc/__init__.py", "")
    _write(
        tmp_path,
        "server/blobgate/server/rpc/handlers.py",
        "import importlib\nimportlib.import_module('blobgate.client.models')\n",
    )
    assert crossings(tmp_path) == [
        "client/blobgate/client/lazy.py:2: blobgate.client.lazy (client) imports "
        "blobgate.server.core.errors (core)",
        "protos/blobgate/shared/tls.py:1: blobgate.shared.tls (shared) imports "
        "blobgate.client.models (client)",
        "server/blobgate/server/rpc/handlers.py:2: blobgate.server.rpc.handlers (rpc) imports "
        "blobgate.client.models (client)",
        "server/blobgate/server/storage/limits.py:5: blobgate.server.storage.limits (storage) "
        "imports blobgate.server.app (setup)",
    ]


@pytest.mark.slow  # runs git
def test_no_symlinks_in_the_repository() -> None:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(listed) > 100  # a real listing, not an empty one
    links = [line.split("\t", 1)[1] for line in listed if line.startswith("120000 ")]
    assert not links, f"symlinks in the repository: {links}"


def _backend_classes(modules: dict[str, Path]) -> dict[str, str]:
    """The classes the concrete backends define, each with its folder."""
    classes: dict[str, str] = {}
    for module, path in modules.items():
        folder = next((f for f in BACKEND_FOLDERS if module.startswith(f + ".")), None)
        if folder is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = folder
    return classes


def _named(node: ast.expr) -> list[str]:
    """The class names in an isinstance's second argument."""
    if isinstance(node, ast.Tuple):
        return [name for element in node.elts for name in _named(element)]
    if isinstance(node, ast.BinOp):  # X | Y
        return _named(node.left) + _named(node.right)
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    return []


def test_no_code_tests_for_a_concrete_backend() -> None:
    """A decorator (or the factory) never asks which backend sits under it:
    a backend offers its capabilities through the Backend protocol."""
    modules = modules_under(ROOT)
    classes = _backend_classes(modules)
    assert {"S3Backend", "MemoryBackend"} <= set(classes), sorted(classes)
    bad: list[str] = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass")
                and len(node.args) == 2
            ):
                continue
            for name in _named(node.args[1]):
                folder = classes.get(name)
                if folder is not None and not module.startswith(folder + "."):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.func.id} {name}")
    assert not bad, "code that tests for a concrete backend:\n" + "\n".join(bad)
