"""`corednsprobe check` end to end, as a user runs it, against a real unbound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.dnsservers import SERVICE_IP, RunningServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def corednsprobe(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "corednsprobe", "check", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def server(s: RunningServer) -> str:
    return f"{s.address}:{s.port}"


def test_table_for_a_good_server_and_exit_0(unbound: RunningServer) -> None:
    done = corednsprobe("--server", server(unbound), "--expect", SERVICE_IP)
    assert done.returncode == 0, done.stderr
    header, row, *_ = done.stdout.splitlines()
    assert header.split()[:7] == ["SERVER", "NAME", "OUTCOME", "RCODE", "RTT_MS", "ANSWERS",
                                  "UDP_ONLY"]
    assert row.split()[:4] == [server(unbound), "kubernetes.default.svc.cluster.local", "ok",
                               "NOERROR"]
    assert row.split()[5:7] == [SERVICE_IP, "no"]
    assert header.index("OUTCOME") == row.index("ok")  # columns are aligned


def test_json_has_the_documented_fields(unbound: RunningServer) -> None:
    closed = f"127.0.0.1:{free_port()}"
    done = corednsprobe("--server", server(unbound), "--server", closed, "--count", "2",
                        "--json")
    assert done.returncode == 1  # the closed port fails
    document = json.loads(done.stdout)
    results = document["results"]
    assert len(results) == 4
    for result in results:
        assert {"server", "name", "outcome", "rcode", "rtt_seconds", "answers", "udp_only",
                "detail"} <= result.keys()
    good = [r for r in results if r["server"] == server(unbound)]
    assert [r["outcome"] for r in good] == ["ok", "ok"]
    assert good[0]["answers"] == [SERVICE_IP] and good[0]["rcode"] == "NOERROR"
    assert 0 < good[0]["rtt_seconds"] < 0.5
    assert {r["outcome"] for r in results if r["server"] == closed} == {"unreachable"}
    assert document["summary"] == {"probes": 4, "ok": 2, "failed": 2,
                                   "outcomes": {"ok": 2, "unreachable": 2}}


def test_any_failed_probe_exits_1(unbound: RunningServer) -> None:
    wrong = corednsprobe("--server", server(unbound), "--expect", "10.0.0.9", "--json")
    missing = corednsprobe("--server", server(unbound), "--name", "gone.cluster.local")
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["results"][0]["outcome"] == "wrong_answer"
    assert missing.returncode == 1 and "nxdomain" in missing.stdout


def test_expected_nxdomain_exits_0(unbound: RunningServer) -> None:
    done = corednsprobe("--server", server(unbound), "--name", "gone.cluster.local",
                        "--expect-rcode", "NXDOMAIN")
    assert done.returncode == 0, done.stdout


def test_search_list_gives_an_application_view_check(unbound: RunningServer) -> None:
    done = corednsprobe("--server", server(unbound), "--name", "kubernetes.default",
                        "--search", "default.svc.cluster.local,svc.cluster.local",
                        "--ndots", "5", "--expect", SERVICE_IP, "--json")
    assert done.returncode == 0, done.stdout
    result = json.loads(done.stdout)["results"][0]
    assert result["name"] == "kubernetes.default.svc.cluster.local."


def test_bad_usage_exits_2_with_a_message() -> None:
    cases = {
        ("--server", "dns.example:53"): "expected an IP address",
        ("--server", "127.0.0.1:99999"): "port must be 1-65535",
        ("--server", "[::1"): "expected",
        ("--server", "127.0.0.1", "--expect", "10.0.0"): "is not an IP address",
        ("--server", "127.0.0.1", "--timeout", "0"): "--timeout",
        ("--server", "127.0.0.1", "--type", "BOGUS"): "--type",
        (): "--server",
    }
    for args, message in cases.items():
        done = corednsprobe(*args)
        assert done.returncode == 2, args
        assert message in done.stderr, (args, done.stderr)
        assert done.stdout == ""


def test_ipv6_server_syntax_is_accepted() -> None:
    done = corednsprobe("--server", f"[::1]:{free_port()}", "--timeout", "0.2", "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)["results"][0]
    assert result["server"].startswith("[::1]:")
    assert result["outcome"] in ("unreachable", "error")  # no IPv6 loopback: a local error
