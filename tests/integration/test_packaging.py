"""The distributions people install: the sdist carries docs/ and deploy/, the wheel
carries the man pages and the licence, and both declare Apache-2.0 as SPDX.

Builds both through setuptools' own PEP 517 hooks (the build front-end `build`
need not be installed) from a copy of the tree, with `build-system.requires`
installed into a folder of its own as a front-end would isolate it.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist",
                              ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis")
BUILD = """
import sys
from setuptools import build_meta
out = sys.argv[1]
sdist = build_meta.build_sdist(out)
wheel = build_meta.build_wheel(out)
print("built:", sdist, wheel)
"""
MAN_PAGES = {"man1/corednsprobe.1", "man7/corednsprobe-deploy.7", "man7/corednsprobe-output.7"}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built from a copy of the tree."""
    work = tmp_path_factory.mktemp("packaging")
    tree = work / "tree"
    shutil.copytree(ROOT, tree, ignore=SKIP)
    backend = work / "backend"  # the build requirements, isolated as a front-end would
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(backend),
                    *_build_requires()], check=True, timeout=300)
    out = work / "dist"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(backend)}
    proc = subprocess.run([sys.executable, "-c", BUILD, str(out)], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.splitlines()[-1].split()
    assert last[0] == "built:", proc.stdout
    sdist_name, wheel_name = last[1:]
    return out / sdist_name, out / wheel_name


def _build_requires() -> list[str]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["build-system"]["requires"])


def _metadata(text: str) -> email.message.Message:
    return email.parser.HeaderParser().parsestr(text)


def test_sdist_carries_docs_deploy_tests_and_the_licence(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        top = sdist.name.removesuffix(".tar.gz")
        pkg_info = tar.extractfile(f"{top}/PKG-INFO")
        assert pkg_info is not None
        meta = _metadata(pkg_info.read().decode())
    tracked = {str(p.relative_to(ROOT)) for d in ("docs", "deploy")
               for p in (ROOT / d).rglob("*") if p.is_file()}
    assert tracked - names == set(), "files of docs/ or deploy/ missing from the sdist"
    for wanted in ("LICENSE", "README.md", "pyproject.toml", "MANIFEST.in", ".ci/run",
                   "deploy/Containerfile", "deploy/constraints.txt",
                   "tests/unit/test_manifests.py", "corednsprobe/cli/main.py"):
        assert wanted in names, wanted
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert meta["License-Expression"] == "Apache-2.0"


def test_wheel_installs_man_pages_and_licence_and_no_tests(
    dists: tuple[Path, Path], tmp_path: Path,
) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = _metadata(zf.read(info).decode())
    assert meta["License-Expression"] == "Apache-2.0"
    assert "License ::" not in " ".join(meta.get_all("Classifier") or [])  # PEP 639: SPDX only
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {u.split(",")[0] for u in meta.get_all("Project-URL") or []} >= {
        "Homepage", "Documentation", "Source", "Issues"}
    assert "Topic :: Internet :: Name Service (DNS)" in (meta.get_all("Classifier") or [])
    assert not [n for n in names if n.startswith("tests/")]
    # Installed into a prefix, the pages land where man(1) looks: <prefix>/share/man.
    prefix = tmp_path / "prefix"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--ignore-installed", "--prefix", str(prefix), str(wheel)],
                   check=True, timeout=300, env=env)
    installed = {str(p.relative_to(prefix / "share" / "man"))
                 for p in (prefix / "share" / "man").rglob("*") if p.is_file()}
    assert installed == MAN_PAGES
    page = prefix / "share" / "man" / "man1" / "corednsprobe.1"
    assert page.read_bytes() == (ROOT / "docs" / "corednsprobe.1").read_bytes()


def test_the_image_lock_pins_every_runtime_dependency_within_its_range() -> None:
    import tomllib

    from packaging.requirements import Requirement

    with (ROOT / "pyproject.toml").open("rb") as f:
        wanted = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    pins: dict[str, str] = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not a pin: {line!r}"
            pins[name.lower().replace("_", "-")] = version
    for req in wanted:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{req.name} is not pinned in deploy/constraints.txt"
        assert req.specifier.contains(pins[name]), f"{req.name}=={pins[name]} outside {req}"
