"""The shipped alerts and dashboard in a real Prometheus scraping the real service.

The service probes a sandbox cluster whose CoreDNS pods are real DNS servers,
with remediation on; a pod's UDP is dropped, corednsprobe judges and evicts it,
and the pod alert must go ``firing`` in Prometheus' HTTP API and still be
firing after the pod and its own series are gone. The dashboard's every query
must then parse and return data from the same run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from corednsprobe.model import DiagnosisState
from tests.e2e.conftest import Running, Start, pods_judged
from tests.monitoring import kit
from tests.monitoring.prometheus import Prometheus, running

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="prometheus (Debian package prometheus) absent")]

EVICT = {"COREDNSPROBE_REMEDIATION": "evict", "COREDNSPROBE_COOLDOWN": "1",
         "COREDNSPROBE_MAX_RESTARTS_PER_HOUR": "10"}


@dataclass
class Observed:
    c: Running
    prom: Prometheus
    sick: str


@asynccontextmanager
async def pod_fault_observed(start: Start) -> AsyncIterator[Observed]:
    """The service with remediation on, scraped by Prometheus, one pod's UDP dropped."""
    c = await start(replicas=3, **EVICT)
    async with running([f"127.0.0.1:{c.port}"]) as prom:
        await c.until(lambda s: pods_judged(s) == 3, within=20)
        await until(prom, 'up{job="corednsprobe"} == 1', within=20)
        sick = c.pod_names()[0]
        await c.sandbox.set_pod_fault(sick, "drop")
        yield Observed(c, prom, sick)


async def until(prom: Prometheus, expr: str, within: float, *, empty: bool = False) -> None:
    """Poll (Prometheus cannot tell us) until ``expr`` returns data, or none if ``empty``."""
    async with asyncio.timeout(within):
        while True:
            if bool(await prom.query(expr)) is not empty:
                return
            await asyncio.sleep(0.5)


async def firing(prom: Prometheus, name: str, within: float) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            for alert in await prom.alerts():
                if alert["labels"]["alertname"] == name and alert["state"] == "firing":
                    return alert
            await asyncio.sleep(0.5)


async def test_real_prometheus_fires_the_pod_alert_past_the_pod_and_answers_the_dashboard(
        start: Start) -> None:
    queries = kit.dashboard_queries(rate_interval="1m")
    async with pod_fault_observed(start) as o:
        t0 = time.monotonic()
        alert = await firing(o.prom, "CoreDNSPodDNSUnhealthy", within=60)
        took = time.monotonic() - t0
        # the repair is fast: the pod is evicted, replaced, and its series leave /metrics
        await o.c.until(lambda _s: o.sick not in o.c.pod_names(), within=40)
        await o.c.until(lambda s: s.state.diagnosis.state is DiagnosisState.HEALTHY, within=40)
        gone = f'corednsprobe_target_health{{pod="{o.sick}"}}'
        await until(o.prom, gone, within=20, empty=True)
        restarted = await firing(o.prom, "CoreDNSPodRestarted", within=30)
        answer = [a for a in await o.prom.alerts() if a["state"] == "firing"]
        old_example = (f'max_over_time((corednsprobe_target_healthy{{pod="{o.sick}"}} == 0)'
                       '[5m:1s])')
        seen_at_zero = await o.prom.query(old_example)
        print(f"\nfault on {o.sick}; CoreDNSPodDNSUnhealthy firing after {took:.1f} s;"
              f" the pod is gone and replaced, and its own series with it ({gone} is empty)")
        print(f"GET {o.prom.url}/api/v1/alerts  (firing alerts):")
        print(json.dumps(answer, indent=2))
        verdict = ("a scrape saw the pod at 0, but that series is gone now" if seen_at_zero
                   else "no scrape ever saw the pod at 0")
        print(f"the old man-page example's condition, over the run: {old_example} -> "
              f"{json.dumps(seen_at_zero)} ({verdict})")
        pod_alert = next(a for a in answer
                         if a["labels"]["alertname"] == "CoreDNSPodDNSUnhealthy")
        assert pod_alert["labels"] == {**alert["labels"], "alertname": "CoreDNSPodDNSUnhealthy"}
        assert pod_alert["labels"]["severity"] == "warning"
        assert pod_alert["annotations"]["runbook_url"].endswith("#CoreDNSPodDNSUnhealthy")
        assert restarted["labels"]["job"] == "corednsprobe"
        others = {a["labels"]["alertname"] for a in answer} - {"CoreDNSPodDNSUnhealthy",
                                                               "CoreDNSPodRestarted"}
        assert others == set(), others  # nothing else is wrong, and nothing says so

        # the same run serves the dashboard: every query parses and returns data
        known = set(await o.prom.get("/api/v1/label/__name__/values"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # rates need two scrapes inside their range
        while True:
            empty = [(title, q) for title, q in queries if not await o.prom.query(q)]
            if not empty or loop.time() > deadline:
                break
            await asyncio.sleep(1)
        assert not empty, f"queries without data: {empty}"
        print(f"{len(queries)} dashboard queries, each answered with data by "
              f"{o.prom.url}/api/v1/query")
    named = kit.metric_names(kit.DASHBOARD.read_text())
    missing = {n for n in named if n not in known}
    assert not missing, missing
