"""Pods users create: the project's own image runs its command for real (exit
code, logs, follow, activeDeadlineSeconds), any other image stays Pending in
ImagePullBackOff, and pods/log answers with the kubelet's texts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from corednsprobe import __version__
from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend
from corednsprobe.sandbox.registry import PODS
from tests.kube.conftest import Http, Kubectl, eventually

Obj = dict[str, Any]
NS = "kube-system"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Kubectl]]:
    config = SandboxConfig(replicas=1, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=0.5))
    async with Sandbox(InProcessBackend(), config) as sandbox:
        await sandbox.wait_ready(within=10)
        yield sandbox, Kubectl(sandbox.write_kubeconfig(tmp_path / "kc"), tmp_path / "cache")


def pod(name: str, image: str, *args: str, deadline: int | None = None) -> Obj:
    spec: Obj = {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "containers": [{"name": "main", "image": image, "args": list(args)}]}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"metadata": {"name": name}, "spec": spec}


def phase(sandbox: Sandbox, name: str) -> str:
    found = sandbox.store.get(PODS, NS, name)
    return "" if found is None else str(found["status"].get("phase"))


async def test_another_image_is_image_pull_back_off(cluster: tuple[Sandbox, Kubectl]) -> None:
    sandbox, kubectl = cluster
    sandbox.registry.create(PODS, NS, pod("web", "docker.io/library/nginx:1.27"))

    def waiting() -> Obj:
        current = sandbox.store.must_get(PODS, NS, "web")
        statuses = current["status"].get("containerStatuses") or [{}]
        found: Obj = (statuses[0].get("state") or {}).get("waiting") or {}
        return found

    await eventually(lambda: waiting().get("reason") == "ImagePullBackOff")
    assert waiting()["message"] == 'Back-off pulling image "docker.io/library/nginx:1.27"'
    assert phase(sandbox, "web") == "Pending"
    code, out, err = await kubectl.run("get", "pod", "web", "-n", NS)
    assert code == 0 and "ImagePullBackOff" in out and "0/1" in out, err
    code, out, err = await kubectl.run("logs", "web", "-n", NS)
    assert code == 1
    assert ('container "main" in pod "web" is waiting to start: trying and failing to pull '
            "image") in err


async def test_active_deadline_fails_the_pod(cluster: tuple[Sandbox, Kubectl]) -> None:
    sandbox, kubectl = cluster
    sandbox.registry.create(PODS, NS, pod("stuck", "example.invalid/app:1", deadline=1))
    await eventually(lambda: phase(sandbox, "stuck") == "Failed", within=15)
    status = sandbox.store.must_get(PODS, NS, "stuck")["status"]
    assert (status["reason"], status["message"]) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    code, out, err = await kubectl.run("get", "pod", "stuck", "-n", NS, "-o",
                                       "jsonpath={.status.phase}/{.status.reason}")
    assert (code, out) == (0, "Failed/DeadlineExceeded"), err


async def test_the_project_image_runs_and_exits(cluster: tuple[Sandbox, Kubectl]) -> None:
    sandbox, kubectl = cluster
    sandbox.registry.create(PODS, NS, pod("ver", "corednsprobe:0.1.0", "version"))
    sandbox.registry.create(PODS, NS, pod("bad", "ghcr.io/x/corednsprobe", "check"))
    await eventually(lambda: phase(sandbox, "ver") == "Succeeded"
                     and phase(sandbox, "bad") == "Failed", within=20)
    done = sandbox.store.must_get(PODS, NS, "ver")["status"]["containerStatuses"][0]
    assert done["state"]["terminated"]["exitCode"] == 0
    assert done["state"]["terminated"]["reason"] == "Completed"
    failed = sandbox.store.must_get(PODS, NS, "bad")["status"]["containerStatuses"][0]
    assert failed["state"]["terminated"]["exitCode"] == 2  # check without --server
    code, out, err = await kubectl.run("logs", "ver", "-n", NS)
    assert code == 0 and out.strip() == f"corednsprobe {__version__}", err
    code, out, err = await kubectl.run("get", "pods", "ver", "bad", "-n", NS)
    assert code == 0 and "Completed" in out and "Error" in out, err


async def test_logs_follow_a_probe_pod_to_its_end(cluster: tuple[Sandbox, Kubectl]) -> None:
    """The probe pod of deploy/extras/probe-job.yaml, asking the real kube-dns ClusterIP."""
    sandbox, kubectl = cluster
    dns = sandbox.service(NS, "kube-dns")["spec"]["clusterIP"]
    sandbox.registry.create(PODS, NS, pod(
        "probe", "corednsprobe:0.1.0", "check", "--server", f"{dns}:{sandbox.backend.port}",
        "--count", "4", "--interval", "0.3"))
    await eventually(lambda: phase(sandbox, "probe") == "Running", within=10)
    code, out, err = await kubectl.run("logs", "-f", "probe", "-n", NS, within=30)
    assert code == 0, err
    assert phase(sandbox, "probe") in ("Running", "Succeeded")
    lines = [line for line in out.splitlines() if dns in line]
    assert len(lines) >= 4 and all(" ok" in line or "ok " in line for line in lines), out
    await eventually(lambda: phase(sandbox, "probe") == "Succeeded", within=10)


async def test_deadline_kills_a_running_process(cluster: tuple[Sandbox, Kubectl]) -> None:
    sandbox, _ = cluster
    sandbox.registry.create(PODS, NS, pod(
        "long", "corednsprobe", "check", "--server", "127.0.0.1:9", "--count", "1000",
        "--interval", "0.2", "--timeout", "0.1", deadline=1))
    await eventually(lambda: phase(sandbox, "long") == "Failed", within=15)
    status = sandbox.store.must_get(PODS, NS, "long")["status"]
    assert status["reason"] == "DeadlineExceeded"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] != 0
    running = sandbox.processes.running
    assert not running  # the process is gone


async def test_delete_stops_the_process(cluster: tuple[Sandbox, Kubectl]) -> None:
    sandbox, kubectl = cluster
    sandbox.registry.create(PODS, NS, pod(
        "loop", "corednsprobe", "check", "--server", "127.0.0.1:9", "--count", "1000",
        "--interval", "0.2", "--timeout", "0.1"))
    await eventually(lambda: phase(sandbox, "loop") == "Running", within=10)
    (process,) = [r.process for r in sandbox.processes.running.values()]
    code, _, err = await kubectl.run("delete", "pod", "loop", "-n", NS, "--grace-period=1")
    assert code == 0, err
    assert sandbox.store.get(PODS, NS, "loop") is None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 5)
    assert process.returncode is not None


async def test_pod_log_errors_golden(cluster: tuple[Sandbox, Kubectl]) -> None:
    """The Status bodies of pods/log refusals: the kubelet's text
    (validateContainerLogStatus) as a 400 BadRequest, and the container choice
    errors of pkg/registry/core/pod/strategy.go."""
    sandbox, _ = cluster
    two = pod("two", "docker.io/library/nginx:1.27")
    two["spec"]["containers"].append({"name": "side", "image": "busybox:1.36"})
    sandbox.registry.create(PODS, NS, two)
    await eventually(lambda: bool(sandbox.store.must_get(PODS, NS, "two")["status"].get(
        "containerStatuses")))
    async with aiohttp.ClientSession() as session:
        http = Http(sandbox, session)
        base = f"/api/v1/namespaces/{NS}/pods/two/log"
        code, _, body = await http.call("GET", f"{base}?container=main")
        assert code == 400
        assert body["kind"] == "Status" and body["reason"] == "BadRequest"
        assert body["message"] in (
            'container "main" in pod "two" is waiting to start: image can\'t be pulled',
            'container "main" in pod "two" is waiting to start: trying and failing to pull image')
        code, _, body = await http.call("GET", base)
        assert (code, body["message"]) == (
            400, "a container name must be specified for pod two, choose one of: [main side]")
        code, _, body = await http.call("GET", f"{base}?container=nope")
        assert (code, body["message"]) == (400, "container nope is not valid for pod two")
        code, _, body = await http.call("GET", f"/api/v1/namespaces/{NS}/pods/gone/log")
        assert (code, body["message"]) == (404, 'pods "gone" not found')
