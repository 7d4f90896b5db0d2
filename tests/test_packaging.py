"""Every third-party module the project imports is declared in pyproject.toml, pinned, and installed.

CI (``.ci/run``) builds a brand-new virtual environment and runs the README's test command in it, so a package
that nothing installs fails at collection. A package that arrives only through another one (numpy through torch,
PyYAML through lightning) would still pass there; this test catches it, and also the modules that tests import
through ``pytest.importorskip`` (which would otherwise skip silently where the package is missing).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("lightning_saliency", "tests", "examples", "benchmarks", "scripts")
OWN = {"lightning_saliency"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _norm(re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0])


def _declared() -> dict[str, set[str]]:
    """Distribution name -> the groups declaring it (``"dependencies"`` or the extra's name)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project.get("optional-dependencies", {})}
    declared: dict[str, set[str]] = {}
    for group, requirements in groups.items():
        for requirement in requirements:
            declared.setdefault(_requirement_name(requirement), set()).add(group)
    return declared


def _pins() -> dict[str, str]:
    """Distribution name -> its pinned version in requirements/constraints.txt (``==`` or ``===``)."""
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*===?\s*([^\s;]+)", line)
            assert match, f"constraints.txt: {line!r} is not a pin (name==version)"
            pins[_norm(match[1])] = match[2]
    return pins


def _python_files() -> list[Path]:
    return [p for source in SOURCES for p in sorted((ROOT / source).rglob("*.py")) if "__pycache__" not in p.parts]


def _local_names(files: list[Path]) -> set[str]:
    """Sibling modules imported by bare name (``from conftest import ...``, ``from shapes import ...``)."""
    return {p.stem for p in files} | {p.parent.name for p in files if p.name == "__init__.py"}


def _imports(path: Path) -> set[str]:
    """Top-level names of the modules a file imports (statements, ``importorskip`` and ``import_module`` calls)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("importorskip", "import_module") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return {name.split(".")[0] for name in names}


def _third_party_imports() -> dict[str, list[str]]:
    files = _python_files()
    local = _local_names(files)
    found: dict[str, list[str]] = {}
    for path in files:
        for top in _imports(path):
            if top in sys.stdlib_module_names or top in OWN or top in local or top == "__future__":
                continue
            found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_scan_sees_the_imports_it_must_check():
    found = _third_party_imports()
    # A statement import, an `importorskip`, and a package import of each kind: if these vanish the scan is broken.
    for name in ("torch", "lightning", "PIL", "hypothesis", "captum", "pytorch_grad_cam"):
        assert name in found, f"{name} not found among {sorted(found)}"
    assert "conftest" not in found, "sibling modules are not third-party"
    assert "shapes" not in found, "sibling modules are not third-party"


def test_every_imported_package_is_installed_declared_and_pinned():
    distributions = md.packages_distributions()
    declared, pins = _declared(), _pins()
    problems = []
    for top, where in sorted(_third_party_imports().items()):
        files = ", ".join(sorted(set(where))[:3])
        if importlib.util.find_spec(top) is None:
            problems.append(f"{top} (imported in {files}) is not installed: declare it in pyproject.toml")
            continue
        candidates = {_norm(d) for d in distributions.get(top, [top])}
        if not candidates & set(declared):
            problems.append(
                f"{top} (distribution {', '.join(sorted(candidates))}, imported in {files}) is not declared in "
                "pyproject.toml: add it to the dependencies or to the extra that needs it"
            )
    assert not problems, "\n".join(problems)
    unpinned = sorted(name for name in declared if name not in pins)
    assert not unpinned, f"declared in pyproject.toml but not pinned in requirements/constraints.txt: {unpinned}"


def test_pins_are_what_is_installed():
    mismatched = []
    for name, version in _pins().items():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            continue  # an extra that this environment does not install
        if installed.split("+")[0] != version.split("+")[0]:
            mismatched.append(f"{name}: pinned {version}, installed {installed}")
    assert not mismatched, "\n".join(mismatched)


def test_every_package_directory_is_a_package_that_a_wheel_includes():
    # setuptools' find_packages (pyproject.toml: include = ["lightning_saliency*"]) only takes folders with one.
    folders = {p.parent for p in (ROOT / "lightning_saliency").rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"folders without __init__.py (left out of a wheel): {missing}"


def test_the_package_imports_its_names_lazily_and_tensorboards_plugin_without_torch():
    """TensorBoard imports the SALIENCY plugin at start-up: that must not pull torch and Lightning (seconds, and an
    import error in either would break TensorBoard); the package's names come when first used."""
    code = (
        "import sys, lightning_saliency.tensorboard.plugin as p\n"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, sorted(sys.modules)\n"
        "import lightning_saliency as ls\n"
        "assert set(ls.__all__) == set(ls._EXPORTS) | {'__version__'}\n"
        "assert ls.SegmentationTarget.__module__ == 'lightning_saliency.targets'\n"
        "assert all(getattr(ls, name) is not None for name in ls.__all__)\n"
        "try:\n    ls.nothing_here\nexcept AttributeError as e:\n    assert 'nothing_here' in str(e)\n"
        "else:\n    raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
