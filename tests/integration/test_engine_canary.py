"""Canary probes (a fresh name each time) through the engine, against knotd on loopback."""

from __future__ import annotations

import asyncio

from corednsprobe.model import Outcome, ProbeResult, Target, TargetKind
from corednsprobe.probe import wire
from corednsprobe.probe.checks import Checks
from corednsprobe.probe.engine import Prober
from tests.helpers.dnsservers import SERVICE_IP, RunningServer


async def test_canaries_are_answered_and_leave_the_fixed_names_cached(
        knot: RunningServer) -> None:
    """Each canary asks its own fresh name and is matched on it; a stream of them
    neither fills nor flushes the caches the checks' fixed names are served from."""
    target = Target(TargetKind.POD, knot.address, knot.port)
    checks = Checks("cluster.local", "kube-system", "")
    svc, canary = checks.for_target(target, frozenset({SERVICE_IP}))
    prober = Prober(1.0)
    assert (await prober.probe(target, svc)).outcome is Outcome.OK  # its template cached
    built, questions = wire.question_bytes.cache_info(), wire.question_of.cache_info()
    names = [checks.qname(canary) for _ in range(40)]
    results = await asyncio.gather(*(prober.probe(target, canary, n) for n in names))
    assert [r.outcome for r in results] == [Outcome.OK] * 40
    assert [r.qname for r in results] == names and len(set(names)) == 40
    assert all(r.rcode == "NXDOMAIN" for r in results)
    assert wire.question_bytes.cache_info().currsize == built.currsize
    assert wire.question_of.cache_info().currsize == questions.currsize
    again = await prober.probe(target, svc)
    assert again.outcome is Outcome.OK and again.answers == (SERVICE_IP,)
    assert wire.question_bytes.cache_info().hits > built.hits  # still served from the cache


async def test_a_canary_reply_is_the_one_result_of_its_probe(knot: RunningServer) -> None:
    target = Target(TargetKind.POD, knot.address, knot.port)
    checks = Checks("cluster.local", "kube-system", "")
    _, canary = checks.for_target(target, frozenset({SERVICE_IP}))
    got: list[ProbeResult] = []
    done = asyncio.Event()

    def on_done(result: ProbeResult) -> None:
        got.append(result)
        done.set()

    name = checks.qname(canary)
    assert name is not None
    Prober(1.0).start(target, canary, name, on_done)
    await asyncio.wait_for(done.wait(), 2)
    await asyncio.sleep(0.05)
    [result] = got
    assert (result.outcome, result.qname, result.check) == (Outcome.OK, name, canary)
    assert result.rtt_seconds is not None and 0 < result.rtt_seconds < 1
    assert "qr" in result.flags and result.at > 0
