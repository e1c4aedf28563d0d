"""The docs say what the code does: README's settings table and test command."""

from __future__ import annotations

import re
from pathlib import Path

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
