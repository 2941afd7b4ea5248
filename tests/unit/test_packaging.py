"""Every third-party module the product imports is a runtime dependency in pyproject.toml.

A module imported by `fastingress` or `workers` but declared only in the `test` extra works in the
test venv and fails for a user who installs the package (this happened with `cryptography`).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("fastingress", "workers")


def _runtime_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}


def _imported_top_levels() -> dict[str, Path]:
    """Top-level module names imported anywhere in the product (TYPE_CHECKING imports included)."""
    found: dict[str, Path] = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".", 1)[0], path)
    return found


def test_every_third_party_import_is_a_runtime_dependency() -> None:
    declared = _runtime_distributions()
    owners = packages_distributions()  # import name -> distributions installed here
    missing = []
    for module, path in sorted(_imported_top_levels().items()):
        if module in sys.stdlib_module_names or module in PRODUCT:
            continue
        dists = {d.lower() for d in owners.get(module, [])}
        if not dists & declared:
            missing.append(f"{module} (imported in {path.relative_to(ROOT)}, from {sorted(dists) or 'nowhere'})")
    assert not missing, "imported but not in [project].dependencies: " + "; ".join(missing)


def test_the_check_sees_the_imports_it_must_see() -> None:
    imported = _imported_top_levels()
    for module in ("numpy", "msgspec", "uvloop", "httptools", "orjson", "cryptography"):
        assert module in imported
