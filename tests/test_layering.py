"""The package's layering rule (``rvs_nerfstudio/__init__.py``), read from every import statement in the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

import rvs_nerfstudio

PACKAGE = Path(rvs_nerfstudio.__file__).parent
SUBPACKAGES = ("core", "engine", "data", "samplers", "models", "method_configs", "tools")

ALLOWED: Dict[str, Set[str]] = {
    "core": set(),
    "engine": set(),
    "data": set(),
    "samplers": {"core"},
    "models": {"core", "samplers", "engine", "data"},
    "method_configs": {"models", "data", "engine"},
    "tools": set(SUBPACKAGES),
}
"""Subpackage → the other subpackages it may import (its own modules are always allowed)."""


def imported_modules(source: str) -> Iterator[str]:
    """Every absolute module name that ``source`` imports, at the top level or inside functions."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from rvs_nerfstudio import spline" imports the submodule rvs_nerfstudio.spline
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError("relative imports hide the layer they reach; write rvs_nerfstudio.<subpackage>...")


def subpackage_of(module: str) -> str | None:
    """``rvs_nerfstudio.models.rvs_mc`` → ``models``; None for the package itself and other packages."""
    parts = module.split(".")
    return parts[1] if parts[0] == "rvs_nerfstudio" and len(parts) > 1 and parts[1] in SUBPACKAGES else None


def violations(layer: str, source: str) -> List[str]:
    """The imports in ``source`` (a module of ``layer``) that break the rule."""
    found = []
    for module in imported_modules(source):
        target = subpackage_of(module)
        if layer == "core" and module.split(".")[0] == "nerfstudio":
            found.append(f"{module} (the core imports no nerfstudio)")
        if target is not None and target != layer and target not in ALLOWED[layer]:
            found.append(f"{module} ({layer} may import {sorted(ALLOWED[layer]) or 'no other layer'})")
    return found


def package_modules() -> Iterator[Tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        yield relative.parts[0].removesuffix(".py"), path


def test_every_module_belongs_to_a_layer():
    layers = {layer for layer, _ in package_modules()}
    assert layers == set(SUBPACKAGES) | {"__init__"}


@pytest.mark.parametrize("layer, path", list(package_modules()), ids=lambda value: str(value).replace(str(PACKAGE) + "/", ""))
def test_imports_follow_the_layering_rule(layer, path):
    if layer == "__init__":  # the package's own docstring module imports no layer
        assert [m for m in imported_modules(path.read_text()) if subpackage_of(m)] == []
    else:
        assert violations(layer, path.read_text()) == []


@pytest.mark.parametrize(
    "layer, source",
    [
        ("core", "import nerfstudio.cameras.rays"),
        ("samplers", "from rvs_nerfstudio.models.rvs_mc import RVSMonteCarloModel"),
        ("models", "def f():\n    from rvs_nerfstudio.tools import runner"),
        ("data", "from rvs_nerfstudio import tools"),
        ("method_configs", "import rvs_nerfstudio.tools.presets"),
        ("engine", "from rvs_nerfstudio.samplers import proposal"),
    ],
)
def test_the_rule_catches_an_import_that_breaks_it(layer, source):
    assert violations(layer, source)


def test_method_configs_stay_cheap_to_import():
    """What every ns-* command pays for the plugin: no tooling, no nerfstudio method registry, no plotting."""
    probe = (
        "import sys, time; start = time.perf_counter(); import rvs_nerfstudio.method_configs; "
        "print(time.perf_counter() - start); print(' '.join(sorted(sys.modules)))"
    )
    seconds, modules = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    ).stdout.splitlines()[-2:]
    loaded = set(modules.split())
    assert not {m for m in loaded if m.startswith("rvs_nerfstudio.tools")}
    assert "nerfstudio.configs.method_configs" not in loaded  # circular for ns-* commands
    assert not {m for m in loaded if m.split(".")[0] in ("matplotlib", "scipy", "selenium")} - _imported_by_nerfstudio()
    print(f"import rvs_nerfstudio.method_configs: {float(seconds):.1f} s")


def _imported_by_nerfstudio() -> Set[str]:
    """What importing nerfstudio's own model and pipeline configs loads anyway (the plugin is not to blame)."""
    probe = (
        "import sys; import nerfstudio.models.nerfacto, nerfstudio.pipelines.base_pipeline, "
        "nerfstudio.engine.trainer, nerfstudio.viewer.viewer_elements; print(' '.join(sorted(sys.modules)))"
    )
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300)
    return set(output.stdout.split())
