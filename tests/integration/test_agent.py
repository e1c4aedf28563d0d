"""`corednsprobe agent` as a process against a real DNS server (unbound on loopback):
the lines it prints, the schedule it keeps, its exits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from corednsprobe.model import Check, PodRef, Target, TargetKind
from corednsprobe.probe.checks import Checks
from corednsprobe.reach.agentlines import Lookup, pack, spec_text
from tests.helpers import dnsservers
from tests.helpers.dnsservers import SERVICE_IP, RunningServer
from tests.kube.conftest import REPO, communicate_within

EXPECTED = frozenset({SERVICE_IP})
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def jobs_for(server: RunningServer) -> list[tuple[Target, tuple[Check, ...]]]:
    checks = Checks("cluster.local", "kube-system")
    pod = Target(TargetKind.POD, server.address, server.port, PodRef("coredns-a", uid="u-1"))
    service = Target(TargetKind.SERVICE, server.address, server.port)
    return [(t, checks.for_target(t, EXPECTED)) for t in (pod, service)]


def spec_for(jobs: list[tuple[Target, tuple[Check, ...]]], *, interval: float = 0.4,
             duration: float = 1.3) -> str:
    # a roomy timeout: on a loaded machine the stub resolver of app_view is slow to start
    return spec_text(jobs, interval=interval, timeout=1.0, duration=duration, max_in_flight=16,
                     domain="cluster.local", namespace="kube-system")


async def agent(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "agent", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=ENV)


async def test_agent_prints_a_line_per_result_and_exits_0_at_its_deadline(
        unbound: RunningServer) -> None:
    jobs = jobs_for(unbound)
    started = time.monotonic()
    code, out, err = await communicate_within(await agent(spec_for(jobs)), 20)
    took = time.monotonic() - started
    assert code == 0, err
    lines = out.splitlines()
    hello = json.loads(lines[0])
    assert hello["v"] == 1 and hello["hello"].startswith("corednsprobe agent ")
    assert (hello["targets"], hello["jobs"]) == (2, 5)
    lookup = Lookup(jobs)
    results = [lookup.read(line) for line in lines[1:]]
    # 1.3 s at 0.4 s: three rounds of five probes, then exit (not a fourth round; on a
    # loaded machine a round that overran is cut by the deadline, never one added)
    assert 10 <= len(results) <= 15, out
    assert took < 1.3 + 8.0  # the interpreter's start-up (slow on a loaded machine), the deadline
    seen = {(r.target.name, r.check.name) for r in results if r is not None}
    assert seen == {("coredns-a", "kubernetes"), ("coredns-a", "nxdomain"),
                    ("service", "kubernetes"), ("service", "nxdomain"), ("service", "app_view")}
    for r in results:
        assert r is not None and r.ok, r
        assert r.reach == "probe-pod"
        assert r.target is next(t for t, _ in jobs if t.key == r.target.key)  # ours, not a copy
    kube = [r for r in results if r is not None and r.check.name == "kubernetes"]
    assert all(r.answers == (SERVICE_IP,) and r.rcode == "NOERROR" for r in kube)
    assert all(r.rtt_seconds is not None and 0 < r.rtt_seconds < 1.0 for r in kube)
    assert all("qr" in r.flags and r.records for r in kube)
    canaries = [r.qname for r in results if r is not None and r.check.name == "nxdomain"]
    assert len(set(canaries)) == len(canaries) >= 4  # a fresh name every probe
    assert all(q.endswith(".kube-system.svc.cluster.local.") for q in canaries)
    ats = sorted(r.at for r in results if r is not None)
    assert ats[-1] - ats[0] > 0.6  # spread over three rounds, not one burst


async def test_agent_reports_what_failed(unbound: RunningServer) -> None:
    closed = dnsservers.free_port()
    checks = Checks("cluster.local", "kube-system")
    dead = Target(TargetKind.POD, "127.0.0.1", closed, PodRef("coredns-dead", uid="u-2"))
    wrong = Target(TargetKind.POD, unbound.address, unbound.port, PodRef("coredns-w", uid="u-3"))
    truth = frozenset({"10.96.0.99"})  # not what the server answers
    jobs = [(dead, checks.for_target(dead, truth)), (wrong, checks.for_target(wrong, truth))]
    code, out, err = await communicate_within(await agent(spec_for(jobs, duration=0.5)), 20)
    assert code == 0, err
    lookup = Lookup(jobs)
    results = [r for r in map(lookup.read, out.splitlines()[1:]) if r is not None]
    by = {(r.target.name, r.check.name): r for r in results}
    assert by[("coredns-dead", "kubernetes")].outcome.value == "unreachable"
    assert by[("coredns-w", "kubernetes")].outcome.value == "wrong_answer"
    assert by[("coredns-w", "kubernetes")].answers == (SERVICE_IP,)
    assert by[("coredns-w", "nxdomain")].ok


async def test_agent_stops_cleanly_on_sigterm(unbound: RunningServer) -> None:
    process = await agent(spec_for(jobs_for(unbound), duration=600))
    try:
        assert process.stdout is not None
        async with asyncio.timeout(15):
            await process.stdout.readline()  # hello
            first = json.loads(await process.stdout.readline())
        assert first["outcome"] == "ok"
        process.send_signal(signal.SIGTERM)
        code, _, err = await communicate_within(process, 5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0, err


async def test_agent_malformed_spec_exits_2_saying_what_is_wrong(
        unbound: RunningServer) -> None:
    good = json.loads(spec_for(jobs_for(unbound)))
    cases = {
        "{not json": "not JSON",
        "[]": "must be a JSON object",
        json.dumps({**good, "v": 7}): "'v' is 7",
        json.dumps({**good, "interval": 0}): "'interval' must be a positive number",
        json.dumps({**good, "timeout": "fast"}): "'timeout' must be a number",
        json.dumps({**good, "targets": []}): "'targets' is empty",
        json.dumps({**good, "phase": "soon"}): "'phase' must be a number or null",
        json.dumps({k: v for k, v in good.items() if k != "checks"}): "'checks' is missing",
        json.dumps({**good, "targets": [{**good["targets"][0], "port": 70000}]}):
            "targets[0]: 'port' must be 1-65535",
        json.dumps({**good, "targets": [{**good["targets"][0], "address": "coredns"}]}):
            "targets[0]: 'address' must be an IP address",
        json.dumps({**good, "targets": [{**good["targets"][0], "checks": ["nope"]}]}):
            "targets[0]: no check called 'nope'",
        json.dumps({**good, "checks": [{**good["checks"][0], "expect": []}]}):
            "checks[0]: 'expect' must be null or a non-empty list",
    }
    for spec, said in cases.items():
        code, out, err = await communicate_within(await agent(spec), 20)
        assert code == 2, (spec, out, err)
        assert err.startswith("corednsprobe agent: invalid spec: "), err
        assert said in err, (said, err)
        assert out == ""
    code, _, err = await communicate_within(await agent(), 20)  # no SPEC at all: argparse
    assert code == 2 and "SPEC" in err


async def test_a_spec_too_long_for_one_argument_is_packed_and_read(
        unbound: RunningServer) -> None:
    """Linux takes no argument over 128 KiB: 1,500 targets' spec is packed (z: and the
    base64 of its zlib compression) and the agent probes every one of them."""
    checks = Checks("cluster.local", "kube-system")
    jobs = []
    for i in range(1500):
        t = Target(TargetKind.POD, unbound.address, unbound.port,
                   PodRef(f"coredns-5d78c9869d-{i:05d}", uid=f"0f3c2a4e-8b1d-4c6e-9a7f-{i:012d}"))
        jobs.append((t, checks.for_target(t, EXPECTED)))
    text = spec_text(jobs, interval=6.0, timeout=0.5, duration=6.0, max_in_flight=4096,
                     domain="cluster.local", namespace="kube-system")
    assert len(text) > 128 * 1024  # as JSON it could not be exec'd
    packed = pack(text)
    assert packed.startswith("z:") and len(packed) < 32 * 1024
    code, out, err = await communicate_within(await agent(packed), 60)
    assert code == 0, err
    lookup = Lookup(jobs)
    results = [lookup.read(line) for line in out.splitlines()[1:]]
    assert {(r.target.name, r.check.name) for r in results if r is not None} == {
        (t.name, c.name) for t, cs in jobs for c in cs}
    code, _, err = await communicate_within(await agent("z:not-base64!"), 20)
    assert code == 2 and "a packed spec ('z:…') that does not unpack" in err
