"""UDP dead while TCP answers, inside a network namespace the test creates.

unbound listens on the namespace's own loopback; an nft rule in the namespace
drops or rejects UDP/53 only. `corednsprobe check` runs inside the namespace
(`ip netns exec`), so no packet can leave it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import dnsservers, netns

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def check_in(ns: str, *args: str) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "corednsprobe", "check",
         "--server", "127.0.0.1:53", "--json", *args],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_udp_dropped_tcp_alive_is_timeout_and_udp_only(namespace: str, tmp_path: Path) -> None:
    with dnsservers.unbound(tmp_path, netns=namespace):
        code, before = check_in(namespace)
        assert code == 0 and before["results"][0]["outcome"] == "ok"

        table = netns.port_filter(namespace, "drop")
        code, after = check_in(namespace, "--timeout", "0.3", "--count", "3")
    assert code == 1
    assert [r["outcome"] for r in after["results"]] == ["timeout"] * 3
    assert all(r["udp_only"] for r in after["results"])
    assert netns.counted_packets(namespace, table) == 3  # one packet per probe, no retries


def test_udp_rejected_tcp_alive_is_unreachable_and_udp_only(
        namespace: str, tmp_path: Path) -> None:
    with dnsservers.unbound(tmp_path, netns=namespace):
        netns.port_filter(namespace, "reject")
        code, found = check_in(namespace, "--timeout", "1")
    result = found["results"][0]
    assert code == 1
    assert (result["outcome"], result["udp_only"]) == ("unreachable", True)
    assert result["rtt_seconds"] < 0.5  # the ICMP error ends the probe, not the deadline


def test_udp_only_flag_stays_off_when_tcp_dies_too(namespace: str, tmp_path: Path) -> None:
    with dnsservers.unbound(tmp_path, netns=namespace):
        netns.port_filter(namespace, "drop", netns.ANY_53)
        code, found = check_in(namespace, "--timeout", "0.3")
    result = found["results"][0]
    assert (code, result["outcome"], result["udp_only"]) == (1, "timeout", False)
    assert "tcp timeout" in result["detail"]


def test_tcp_only_check_answers_where_udp_is_dropped(namespace: str, tmp_path: Path) -> None:
    """`check --tcp` is for paths that carry TCP alone, such as kubectl port-forward."""
    with dnsservers.unbound(tmp_path, netns=namespace):
        table = netns.port_filter(namespace, "drop")
        code, found = check_in(namespace, "--tcp", "--timeout", "1", "--count", "2")
    assert code == 0
    assert [r["outcome"] for r in found["results"]] == ["ok", "ok"]
    assert netns.counted_packets(namespace, table) == 0  # not one UDP packet was sent
