"""The man pages as people read them: lint-clean, rendered at 80 columns with no
identifier or option broken by hyphenation, and synopses that list every option;
README names every Debian package CI installs."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.[17]"))


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc absent")
@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_finds_no_warning(page: str) -> None:
    proc = subprocess.run(["mandoc", "-Tlint", "-W", "warning", str(DOCS / page)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff absent")
@pytest.mark.parametrize("page", PAGES)
def test_no_line_at_80_columns_ends_in_a_broken_word(page: str) -> None:
    """groff hyphenates (COREDNSPROBE_IN-/TERVAL, --dura-/tion) unless told not to, and
    breaks after a plain '-' (c-ares); every such break splits a name people copy."""
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-rLL=80n", "-P-cbou", str(DOCS / page)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    broken = [f"{a.strip()} / {b.strip()}" for a, b in itertools.pairwise(lines)
              if re.search(r"[\w\-][\u2010\-]$", a)]
    assert broken == [], broken


def _long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"}


def test_synopsis_lists_every_option_of_the_commands_it_spells_out() -> None:
    from corednsprobe.cli.main import build_parser

    page = (DOCS / "corednsprobe.1").read_text()
    synopsis = page.split(".SH SYNOPSIS", 1)[1].split(".SH", 1)[0]
    blocks = {block.split("\n", 1)[0].split()[-1]: block.replace("\\-", "-")
              for block in synopsis.split(".B corednsprobe ")[1:]}
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("run", "demo", "targets", "sandbox", "config"):
        missing = {o for o in _long_options(sub.choices[name]) if o not in blocks[name]}
        assert missing == set(), (name, missing)
    assert "--version" in synopsis.replace("\\-", "-")


def test_readme_names_every_debian_package_ci_installs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    installed = re.search(r"apt-get install[^\n]*\\\n(.*)", ci)
    assert installed is not None
    packages = installed.group(1).split()
    readme = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(r"Debian packages that `\.ci/run` installs: ([^)]*)\)", readme)
    assert listed is not None
    assert [p for p in packages if p not in listed.group(1)] == []
