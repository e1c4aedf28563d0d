"""`corednsprobe check` as a dig and ping user reads it: a row per probe as it
completes, a ping-like summary per server, and other types' answers as dig prints
them. A subprocess against a real unbound."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import dnsservers
from tests.helpers.dnsservers import RunningServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SRV = "_dns._udp.kube-dns.kube-system.svc.cluster.local."
EXTRA = (
    f"{SRV} 30 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local.",
    "note.default.svc.cluster.local. 45 IN TXT hello-world",
    "mail.default.svc.cluster.local. 60 IN MX 10 mx.default.svc.cluster.local.",
)


@pytest.fixture(scope="module")
def records_server(workdir: Path) -> Iterator[RunningServer]:
    with dnsservers.unbound(workdir, records=dnsservers.ZONE_RECORDS + EXTRA) as server:
        yield server


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "corednsprobe", "check", *args]


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_each_probe_is_printed_as_it_completes(unbound: RunningServer) -> None:
    server = f"{unbound.address}:{unbound.port}"
    process = subprocess.Popen(command("--server", server, "--count", "3", "--interval", "1"),
                               stdout=subprocess.PIPE, text=True, env=ENV)
    assert process.stdout is not None
    seen: list[tuple[float, str]] = []
    try:
        for line in process.stdout:
            seen.append((time.monotonic(), line.rstrip("\n")))
    finally:
        assert process.wait(timeout=60) == 0
    rows = [(at, text) for at, text in seen if text.startswith(server)]
    assert len(rows) == 3
    # the first row arrived while the others were still ~2 s away (intervals of 1 s)
    assert rows[-1][0] - rows[0][0] > 1.5, seen
    assert seen[0][1].split()[:3] == ["SERVER", "NAME", "OUTCOME"]
    assert seen[0][1].index("OUTCOME") == rows[0][1].index("ok")


def test_a_ping_like_summary_per_server(unbound: RunningServer) -> None:
    good = f"{unbound.address}:{unbound.port}"
    closed = f"127.0.0.1:{free_port()}"
    done = subprocess.run(command("--server", good, "--server", closed, "--count", "4"),
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    summary = {m[1]: m for line in lines if (m := re.match(
        r"^--- (\S+): (\d+) sent, (\d+) ok, ([\d.]+)% loss, rtt min/avg/max (\S+)", line))}
    assert summary[good].group(2, 3, 4) == ("4", "4", "0")
    low, avg, high = (float(x) for x in summary[good][5].split("/"))
    assert 0 < low <= avg <= high < 500
    assert summary[closed].group(2, 3, 4) == ("4", "0", "100")
    assert lines[-1] == "4 of 8 probes ok"
    document = json.loads(subprocess.run(
        command("--server", good, "--count", "2", "--json"), capture_output=True, text=True,
        timeout=60, env=ENV).stdout)
    (server,) = document["servers"]
    assert (server["server"], server["sent"], server["ok"], server["loss_percent"]) == (
        good, 2, 2, 0)
    assert 0 < server["rtt_min_seconds"] <= server["rtt_avg_seconds"] <= \
        server["rtt_max_seconds"] < 0.5
    assert document["summary"] == {"probes": 2, "ok": 2, "failed": 0, "outcomes": {"ok": 2}}


@pytest.mark.parametrize(("name", "qtype", "record"), [
    (SRV, "SRV", f"{SRV} 30 IN SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."),
    ("note.default.svc.cluster.local", "TXT",
     "note.default.svc.cluster.local. 45 IN TXT \"hello-world\""),
    ("mail.default.svc.cluster.local", "MX",
     "mail.default.svc.cluster.local. 60 IN MX 10 mx.default.svc.cluster.local."),
])
def test_other_types_are_printed_as_dig_prints_them(records_server: RunningServer, name: str,
                                                    qtype: str, record: str) -> None:
    server = f"{records_server.address}:{records_server.port}"
    done = subprocess.run(command("--server", server, "--name", name, "--type", qtype),
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"    {record}" in done.stdout.splitlines()
    dig = subprocess.run(["dig", "+noall", "+answer", "-p", str(records_server.port),
                          f"@{records_server.address}", name, qtype],
                         capture_output=True, text=True, timeout=30)
    if dig.returncode == 0:  # the same record, field for field, as dig shows it
        assert dig.stdout.split() == record.split()
    document = json.loads(subprocess.run(
        command("--server", server, "--name", name, "--type", qtype, "--json"),
        capture_output=True, text=True, timeout=60, env=ENV).stdout)
    assert document["results"][0]["records"] == [record]
