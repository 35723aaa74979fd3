"""The wheel holds every package and data file of the source tree, and its console entry point runs from it.

The wheel is built offline (no index, no build isolation: the venv's setuptools) from a copy of the project's
packaging inputs, so a stale ``build/`` folder in the checkout can neither leak into it nor be written to.
"""

import configparser
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGING_FILES = ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    project = tmp / "project"
    project.mkdir()
    for name in PACKAGING_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, project / name)
    shutil.copytree(SRC, project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([*cmd, "-q", "-w", str(tmp / "dist"), str(project)], check=True, env=env, timeout=300)
    (path,) = (tmp / "dist").glob("edgegan-*.whl")
    return path


def source_packages() -> list[Path]:
    """Every folder under src/edgegan with an __init__.py, relative to src."""
    return sorted(p.parent.relative_to(SRC) for p in (SRC / "edgegan").rglob("__init__.py"))


def test_every_source_folder_with_code_is_a_package():
    # setuptools would ship a folder of modules without __init__.py as a namespace package; say so here.
    code_dirs = {p.parent for p in (SRC / "edgegan").rglob("*.py")}
    missing = sorted(str(d.relative_to(SRC)) for d in code_dirs if not (d / "__init__.py").is_file())
    assert not missing, f"folders with modules but no __init__.py: {missing}"
    assert Path("edgegan/setgan") in source_packages()


def test_wheel_holds_every_package_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = source_packages()
    assert len(packages) > 10  # the walk found the tree
    for pkg in packages:
        assert f"{pkg.as_posix()}/__init__.py" in names, f"package {pkg} is missing from {wheel.name}"
    modules = sorted(p.relative_to(SRC).as_posix() for p in (SRC / "edgegan").rglob("*.py"))
    missing = [m for m in modules if m not in names]
    assert not missing, f"modules missing from {wheel.name}: {missing}"
    # The package data pyproject declares: every file each pattern matches in the source tree ships.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "assets/*.png" in declared["edgegan.setgan"]
    for package, patterns in declared.items():
        folder = SRC.joinpath(*package.split("."))
        for pattern in patterns:
            files = sorted(folder.glob(pattern))
            assert files, f"{package}: {pattern} matches nothing in the source tree"
            for f in files:
                assert f.relative_to(SRC).as_posix() in names, f"{f.relative_to(SRC)} is missing from {wheel.name}"


def test_console_entry_point_runs_from_the_wheel(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as zf:
        (entry_file,) = (n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points = configparser.ConfigParser()
        entry_points.read_string(zf.read(entry_file).decode())
    target = entry_points["console_scripts"]["edgegan"]
    assert target == "edgegan.cli:main"
    module, func = target.split(":")

    # What the generated `edgegan` script does, importing from the wheel itself (a pure wheel is a zip that
    # zipimport reads), which PYTHONPATH puts ahead of the editable install of the checkout.
    script = (
        "import sys, edgegan\n"
        f"assert edgegan.__file__.startswith({str(wheel)!r}), edgegan.__file__\n"
        f"from {module} import {func}\n"
        "sys.argv = ['edgegan', '--help']\n"
        f"sys.exit({func}())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(wheel), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # The first word of each line of the help's command list, against the commands the CLI registers.
    listed = done.stdout.split("Commands:", 1)[-1].splitlines()
    listed_names = {line.split()[0] for line in listed if line.startswith("  ") and line.strip()}
    from edgegan.cli import app

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"compress", "export", "train", "weights"} <= commands
    assert listed_names == commands, done.stdout
