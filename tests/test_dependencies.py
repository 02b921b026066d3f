"""Every package that the code under src/ imports is declared in pyproject.toml: a hard
dependency when imported at module level, else a hard dependency or a pip extra."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip(
    "tomli")

ROOT = Path(__file__).resolve().parents[1]
# import name -> distribution name, where the two differ
DISTRIBUTION = {"PIL": "pillow", "skimage": "scikit-image", "colour": "colour-science",
                "colour_demosaicing": "colour-demosaicing"}


def _name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.lower().replace("_", "-")


def _imports() -> tuple[set[str], set[str]]:
    """(top-level names imported at module level, names imported anywhere) under src/."""
    top, anywhere = set(), set()
    for path in (ROOT / "src").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            anywhere.update(names)
            if id(node) in module_level:
                top.update(names)
    own = {"dipprior"} | set(sys.stdlib_module_names)
    return top - own, anywhere - own


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    top, anywhere = _imports()
    assert {"torch", "numpy", "PIL", "imageio", "scipy", "skimage"} <= anywhere  # the scan works
    dist = {name: DISTRIBUTION.get(name, name).lower() for name in anywhere}
    assert sorted(n for n in top if dist[n] not in required) == []
    assert sorted(n for n in anywhere if dist[n] not in required | extras) == []
