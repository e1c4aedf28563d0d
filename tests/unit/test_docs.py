"""The docs say what the code does: README's settings table and test command."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from corednsprobe.config import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_equals_config_markdown() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(
        r"<!-- settings-table:begin -->\n(.*?)<!-- settings-table:end -->", readme, re.S
    )
    assert found, "README lacks the settings-table markers"
    assert found.group(1) == markdown_table(), (
        "README's settings table is stale: regenerate it with `corednsprobe config --markdown`"
    )


def test_ci_runs_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    test_cmds = [line for b in blocks for line in b.splitlines() if "pytest" in line]
    assert len(test_cmds) == 1, "README must give exactly one test command"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == test_cmds[0]


DOCS = ROOT / "docs"


def test_man_page_settings_section_equals_config_man() -> None:
    from corednsprobe.config import troff_settings

    page = (DOCS / "corednsprobe.1").read_text()
    found = re.search(r'\.\\" settings:begin\n(.*?)\.\\" settings:end', page, re.S)
    assert found, "corednsprobe.1 lacks the settings markers"
    assert found.group(1) == troff_settings(), (
        "corednsprobe.1's ENVIRONMENT is stale: regenerate it with `corednsprobe config --man`"
    )


def _plain(page: str) -> str:
    return page.replace("\\-", "-").replace("\\fB", "").replace("\\fR", "").replace("\\fI", "")


def test_output_page_names_every_metric_outcome_state_and_log_event() -> None:
    from corednsprobe.metrics import Metrics
    from corednsprobe.model import DiagnosisState, HealthState, Outcome

    page = _plain((DOCS / "corednsprobe-output.7").read_text())
    words = set(re.findall(r"[a-z_][a-z0-9_]+", page))
    metrics = {n for n in Metrics(1.0).names()}
    assert {m for m in metrics if m not in words and m + "_total" not in words} == set()
    for enum in (Outcome, DiagnosisState, HealthState):
        assert {v.value for v in enum} - words == set(), enum.__name__
    emitted = set()
    for path in (ROOT / "corednsprobe").glob("**/*.py"):
        if "sandbox" in path.relative_to(ROOT / "corednsprobe").parts:
            continue  # the sandbox's own logs are not the product's output
        emitted |= set(re.findall(r'log\.(?:debug|info|warning|error)\(\s*"([a-z_]+)"',
                                  path.read_text()))
    assert emitted - words == set(), "log events missing from corednsprobe-output(7)"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff absent")
@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.[17]")))
def test_man_pages_render_without_warnings(page: str) -> None:
    proc = subprocess.run(["groff", "-man", "-ww", "-z", "-t", str(DOCS / page)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_commands_in_help_are_documented_in_readme_and_man_page() -> None:
    from corednsprobe.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    readme = (ROOT / "README.md").read_text()
    page = _plain((DOCS / "corednsprobe.1").read_text())
    for name in commands:
        assert f"corednsprobe {name}" in readme, name
        assert f"corednsprobe {name}" in page, name
