"""The commands' usage as people meet it: a subprocess, its output and exit code.

No network: each case is refused (or answered) before anything is probed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def corednsprobe(*args: str, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COREDNSPROBE_")}
    return subprocess.run([sys.executable, "-m", "corednsprobe", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**base, "PYTHONPATH": str(ROOT), **(env or {})})


def test_version_flag_prints_the_version() -> None:
    done = corednsprobe("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("corednsprobe ")
    assert done.stdout == corednsprobe("version").stdout


@pytest.mark.parametrize("command", ["run", "targets"])
def test_commands_that_talk_to_the_api_take_kubectl_options(command: str) -> None:
    helptext = corednsprobe(command, "--help").stdout
    for option in ("--kubeconfig", "--context", "-n NAMESPACE, --namespace NAMESPACE"):
        assert option in helptext, (command, option)
    bad = corednsprobe(command, "-n", "Not_A_Namespace")
    assert bad.returncode == 2
    assert "'Not_A_Namespace' is not a namespace name" in bad.stderr


def test_an_empty_name_is_a_usage_error() -> None:
    done = corednsprobe("check", "--server", "127.0.0.1:9", "--name", "")
    assert done.returncode == 2
    assert "argument --name: an empty name" in done.stderr
    assert done.stdout == ""


def test_ndots_without_search_is_a_usage_error() -> None:
    done = corednsprobe("check", "--server", "127.0.0.1:9", "--ndots", "2")
    assert done.returncode == 2
    assert "--ndots applies only to --search" in done.stderr
    assert done.stdout == ""


def test_a_range_error_says_the_range() -> None:
    done = corednsprobe("check", "--server", "127.0.0.1:9", "--search", "a.b", "--ndots", "99")
    assert done.returncode == 2 and "'99' is not between 0 and 15" in done.stderr
    done = corednsprobe("demo", "--fault", "0=loss:150@1", "--duration", "1")
    assert done.returncode == 2
    assert "loss is a percentage from 0 to 100" in done.stderr
    done = corednsprobe("demo", "--fault", "0=delay:-5@1", "--duration", "1")
    assert done.returncode == 2
    assert "delay is milliseconds, 0 or more" in done.stderr


def test_config_says_where_each_value_came_from() -> None:
    env = {"COREDNSPROBE_TIMEOUT": "2.5"}
    lines = corednsprobe("config", env=env).stdout.splitlines()
    assert lines[0].split() == ["VARIABLE", "VALUE", "SOURCE"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["COREDNSPROBE_TIMEOUT"] == ["2.5", "environment"]
    assert rows["COREDNSPROBE_INTERVAL"] == ["5", "default"]
    assert rows["COREDNSPROBE_EXTERNAL_NAME"] == ["(empty)", "default"]
    document = json.loads(corednsprobe("config", "--json", env=env).stdout)
    assert document["COREDNSPROBE_TIMEOUT"] == {"value": "2.5", "source": "environment"}
    assert document["COREDNSPROBE_NAMESPACE"] == {"value": "kube-system", "source": "default"}
