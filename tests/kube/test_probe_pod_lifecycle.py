"""The probe-pod reach's pods over the life of `corednsprobe run` processes: a kill -9
leaves the agent pod, the next start reaps it, a clean stop leaves none, an image
that cannot be pulled ends the run with its name and the pod's waiting message.
The sandbox runs the agent pods as real `corednsprobe agent` processes; its CoreDNS
pods answer on loopback (in-process backend)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corednsprobe.config import Settings
from corednsprobe.kube.access import connect
from corednsprobe.kube.view import ClusterView
from corednsprobe.model import ClusterState, Outcome, RoundReport, TargetSet
from corednsprobe.probe.rounds import Rounds
from corednsprobe.reach.probepod import ProbePodReach
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend
from corednsprobe.sandbox.registry import PODS
from tests.kube.conftest import Command, communicate_within, eventually

FAST = {"COREDNSPROBE_REACH": "probe-pod", "COREDNSPROBE_INTERVAL": "0.5",
        "COREDNSPROBE_TIMEOUT": "0.2", "COREDNSPROBE_REMEDIATION": "off",
        "COREDNSPROBE_PROBER_NAMESPACE": "kube-system", "COREDNSPROBE_LOG_FORMAT": "json",
        "COREDNSPROBE_MIN_POD_AGE": "0"}


@pytest.fixture
async def cluster() -> AsyncIterator[Sandbox]:
    config = SandboxConfig(replicas=2, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=1.0))
    async with Sandbox(InProcessBackend(domain="cluster.local"), config) as sandbox:
        await sandbox.wait_ready(within=20)
        yield sandbox


def agents(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [p for p in sandbox.store.items(PODS, "kube-system")
            if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
            == "probe-agent"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reach_status(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as r:
            doc: dict[str, Any] = json.loads(r.read())
    except OSError:
        return {}
    return doc.get("reach") or {}


async def start_run(kubeconfig: Path, port: int, **env: str) -> asyncio.subprocess.Process:
    full = {**Command().env, **FAST, "COREDNSPROBE_LISTEN": f"127.0.0.1:{port}", **env}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "corednsprobe", "run", "--kubeconfig", str(kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full)


async def until_probing(process: asyncio.subprocess.Process, port: int) -> dict[str, Any]:
    """The run's /status reach section once its agent pod gave a result."""
    async with asyncio.timeout(60):
        while not (reach := _reach_status(port)).get("startup_seconds"):
            assert process.returncode is None, "run exited"
            await asyncio.sleep(0.2)
    return reach


async def test_kill_9_leaves_the_agent_pod_the_next_start_reaps_it_a_clean_stop_leaves_none(
        cluster: Sandbox, tmp_path: Path) -> None:
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kc")
    port = _free_port()
    first = await start_run(kubeconfig, port)
    try:
        reach = await until_probing(first, port)
    finally:
        first.kill()  # kill -9: no aclose, the pod stays
    await first.wait()
    orphan = reach["pod"]
    assert [p["metadata"]["name"] for p in agents(cluster)] == [orphan]
    await asyncio.sleep(1.0)
    assert [p["status"]["phase"] for p in agents(cluster)] == ["Running"]  # still probing

    port = _free_port()
    second = await start_run(kubeconfig, port)
    try:
        reach = await until_probing(second, port)
        assert reach["pod"] != orphan and reach["reaped"] == 1
        await eventually(lambda: orphan not in [p["metadata"]["name"] for p in agents(cluster)],
                         within=10)
        assert [p["metadata"]["name"] for p in agents(cluster)] == [reach["pod"]]
    finally:
        if second.returncode is None:
            second.send_signal(signal.SIGTERM)
    code, _, err = await communicate_within(second, 30)
    assert code == 0, err
    reaped = [json.loads(line) for line in err.splitlines() if '"probe_pod_reaped"' in line]
    assert [(e["pod"], e["reason"].startswith("left by an earlier run")) for e in reaped] == \
        [(orphan, True)]
    await eventually(lambda: agents(cluster) == [], within=10)  # a clean stop leaves none
    await eventually(lambda: not cluster.processes.running, within=10)


async def test_an_image_that_cannot_be_pulled_ends_run_naming_it(
        cluster: Sandbox, tmp_path: Path) -> None:
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kc")
    image = "registry.example.org/elsewhere/probe:1.0"
    process = await start_run(kubeconfig, _free_port(), COREDNSPROBE_PROBE_IMAGE=image)
    code, _, err = await communicate_within(process, 60)
    assert code == 3, err
    said = err.strip().splitlines()[-1]
    assert said.startswith("corednsprobe: reach probe-pod stopped working: "), said
    assert f"the probe image {image!r} cannot be pulled" in said
    assert "ErrImagePull" in said or "ImagePullBackOff" in said
    assert "failed to pull" in said or "Back-off pulling" in said  # the pod's own message
    assert "COREDNSPROBE_PROBE_IMAGE" in said
    lost = [json.loads(line) for line in err.splitlines() if '"reach_lost"' in line]
    assert lost and lost[0]["strategy"] == "probe-pod"
    await eventually(lambda: agents(cluster) == [], within=10)  # its pod is not left behind


async def test_the_agent_pod_is_rotated_before_its_deadline_without_a_gap(
        cluster: Sandbox, tmp_path: Path) -> None:
    """activeDeadlineSeconds is a lifetime: a new pod takes over before it runs out, and
    every probe in between is answered by one pod or the other."""
    access = await connect(str(cluster.write_kubeconfig(tmp_path / "kc")))
    try:
        # the in-process pods answer from this test's own loop: a roomy timeout
        settings = Settings.from_env({**FAST, "COREDNSPROBE_TIMEOUT": "0.5"})
        reach = ProbePodReach(access.api, settings, lifetime=8)  # rotates at 5.6 s
        view = ClusterView(access.api, namespace="kube-system", service="kube-dns")
        watching = asyncio.create_task(view.run())
        ts: TargetSet = await view.changed(0)
        assert ts.state is ClusterState.OK and len(ts.pods) == 2
        reach.plan(ts)
        task = asyncio.create_task(reach.run())
        outcomes: list[Outcome] = []
        try:
            async with asyncio.timeout(30):
                while reach.startup_last is None:  # noqa: ASYNC110 (the first pod's start)
                    await asyncio.sleep(0.05)
                while reach.counts["pods_created"] < 2 or len(agents(cluster)) > 1:
                    sweep = await asyncio.gather(*(
                        reach.probe(t, check) for t in ts.targets
                        for check in reach.checks.for_target(t, ts.expected)))
                    outcomes += [r.outcome for r in sweep]
        finally:
            task.cancel()
            watching.cancel()
            await asyncio.gather(task, watching, return_exceptions=True)
            await reach.aclose()
        assert reach.last_replacement.startswith("rotation before its activeDeadlineSeconds")
        assert Outcome.TUNNEL not in outcomes  # every probe answered by one pod or the other
        assert outcomes.count(Outcome.OK) >= 0.9 * len(outcomes), outcomes
        await eventually(lambda: agents(cluster) == [], within=10)
    finally:
        await access.close()


async def test_the_agent_ticks_just_ahead_of_the_rounds_so_probes_seldom_wait(
        cluster: Sandbox, tmp_path: Path) -> None:
    """The agent is told the service's tick: its rounds run a quarter interval ahead, so
    a probe finds its line already there (no waiting probes filling max_in_flight)."""
    access = await connect(str(cluster.write_kubeconfig(tmp_path / "kc")))
    try:
        settings = Settings.from_env({**FAST, "COREDNSPROBE_INTERVAL": "2",
                                      "COREDNSPROBE_TIMEOUT": "0.5"})
        reach = ProbePodReach(access.api, settings)
        view = ClusterView(access.api, namespace="kube-system", service="kube-dns")
        watching = asyncio.create_task(view.run())
        ts: TargetSet = await view.changed(0)
        reports: list[RoundReport] = []
        rounds = Rounds(view, reach.checks, reach, reports.append, interval=2.0, timeout=0.5,
                        max_in_flight=256)
        reach.plan(ts)
        loop = asyncio.get_running_loop()
        to_wall = time.time() - loop.time()
        tasks = [asyncio.create_task(reach.run()), asyncio.create_task(rounds.run())]
        try:
            async with asyncio.timeout(30):
                while reach.startup_last is None:  # noqa: ASYNC110 (the pod's start)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(2.5)  # the first rounds of the agent's results
                seen, at_once = len(reports), reach.counts["answered_at_once"]
                while len(reports) < seen + 5:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            (pod,) = [p for p in agents(cluster) if not p["metadata"].get("deletionTimestamp")]
            phase = json.loads(pod["spec"]["containers"][0]["args"][1])["phase"]
        finally:
            for task in (*tasks, watching):
                task.cancel()
            await asyncio.gather(*tasks, watching, return_exceptions=True)
            await reach.aclose()
        later = reports[seen + 1:seen + 5]
        probes = sum(r.probes for r in later)
        assert reach.counts["answered_at_once"] - at_once >= 0.9 * probes, reach.counts
        results = [x for r in later for x in r.results]
        assert {x.outcome for x in results} == {Outcome.OK}
        # the agent was told the service's tick less 0.5 s (a quarter interval), and its
        # lines were sent on that schedule
        tick_phase = (later[0].tick + to_wall) % 2.0
        assert 0.4 < (tick_phase - phase) % 2.0 < 0.6, (tick_phase, phase)
        step = rounds.spread / len(rounds.jobs())
        for r in later:
            for i, result in enumerate(sorted(r.results, key=lambda x: x.at)):
                late = (result.at - phase - i * step) % 2.0
                assert late < 0.15 or late > 1.95, (late, i)
    finally:
        await access.close()


@pytest.fixture
async def three_nodes() -> AsyncIterator[Sandbox]:
    config = SandboxConfig(replicas=3, nodes=3, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=1.0))
    async with Sandbox(InProcessBackend(domain="cluster.local"), config) as sandbox:
        await sandbox.wait_ready(within=20)
        yield sandbox


async def test_every_agent_pod_of_several_is_pinned_reaped_after_kill_9_and_deleted_on_stop(
        three_nodes: Sandbox, tmp_path: Path) -> None:
    cluster = three_nodes
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kc")

    async def all_probing(process: asyncio.subprocess.Process, port: int) -> dict[str, Any]:
        async with asyncio.timeout(60):
            while not ((reach := _reach_status(port)).get("agents") and len(reach["agents"]) == 3
                       and all(a["startup_seconds"] for a in reach["agents"])):
                assert process.returncode is None, "run exited"
                await asyncio.sleep(0.2)
        return reach

    port = _free_port()
    first = await start_run(kubeconfig, port, COREDNSPROBE_PROBE_PODS="3")
    try:
        reach = await all_probing(first, port)
    finally:
        first.kill()  # kill -9: no aclose, every agent pod stays
    await first.wait()
    nodes = sorted(n["metadata"]["name"] for n in cluster.nodes())
    assert sorted(a["node"] for a in reach["agents"]) == nodes
    orphans = sorted(a["pod"] for a in reach["agents"])
    assert sorted(p["metadata"]["name"] for p in agents(cluster)) == orphans
    assert {p["metadata"]["name"]: p["spec"]["nodeName"] for p in agents(cluster)} == \
        {a["pod"]: a["node"] for a in reach["agents"]}  # pinned where /status says

    port = _free_port()
    second = await start_run(kubeconfig, port, COREDNSPROBE_PROBE_PODS="3")
    try:
        reach = await all_probing(second, port)
        assert reach["reaped"] == 3 and not set(orphans) & {a["pod"] for a in reach["agents"]}
        await eventually(lambda: sorted(p["metadata"]["name"] for p in agents(cluster))
                         == sorted(a["pod"] for a in reach["agents"]), within=10)
    finally:
        if second.returncode is None:
            second.send_signal(signal.SIGTERM)
    code, _, err = await communicate_within(second, 30)
    assert code == 0, err
    await eventually(lambda: agents(cluster) == [], within=10)  # a clean stop leaves none
    await eventually(lambda: not cluster.processes.running, within=10)
