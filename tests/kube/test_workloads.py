"""Pods users create: the project's own image runs its command for real (exit
code, logs, follow, activeDeadlineSeconds), any other image stays Pending in
ImagePullBackOff, and pods/log answers with the kubelet's texts."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import re
import time
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


STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{9})Z (.*)$")


def stamped(out: str) -> list[tuple[float, str]]:
    """``kubectl logs --timestamps`` output → (unix time, line); every line must
    carry the kubelet's RFC3339Nano UTC stamp and a space."""
    found = []
    for line in out.splitlines():
        match = STAMPED.match(line)
        assert match, f"no timestamp on {line!r}"
        seconds = calendar.timegm(time.strptime(match[1], "%Y-%m-%dT%H:%M:%S"))
        found.append((seconds + int(match[2]) / 1e9, match[3]))
    return found


async def test_logs_timestamps_and_since(cluster: tuple[Sandbox, Kubectl]) -> None:
    """``kubectl logs --timestamps`` stamps each line with the time it was
    written; ``--since`` keeps only the recent ones, and both combine with
    ``--tail`` and ``-f``."""
    sandbox, kubectl = cluster
    dns = sandbox.service(NS, "kube-dns")["spec"]["clusterIP"]
    before = time.time()
    sandbox.registry.create(PODS, NS, pod(
        "ticker", "corednsprobe:0.1.0", "check", "--server", f"{dns}:{sandbox.backend.port}",
        "--count", "16", "--interval", "0.4"))
    await eventually(lambda: phase(sandbox, "ticker") == "Running", within=10)
    await asyncio.sleep(max(0.0, before + 4.0 - time.time()))

    called = time.time()
    code, out, err = await kubectl.run("logs", "ticker", "-n", NS, "--since=2s",
                                       "--timestamps")
    returned = time.time()
    assert code == 0, err
    recent = stamped(out)
    code, out, err = await kubectl.run("logs", "ticker", "-n", NS, "--timestamps")
    assert code == 0, err
    full = stamped(out)
    stamps = [t for t, _ in full]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= time.time()
    assert stamps[-1] - stamps[0] >= 2.5  # written over seconds, stamped as they came
    assert len([line for _, line in full if dns in line]) >= 8, out

    # --since=2s: the server's cut is 2s before some moment in [called, returned]
    assert recent and all(t >= called - 2 for t, _ in recent), (recent, called)
    first = full.index(recent[0])
    assert full[first:first + len(recent)] == recent  # a contiguous run, not a sample
    assert first > 0 and full[first - 1][0] < returned - 2  # older lines left out

    code, out, err = await kubectl.run("logs", "-f", "ticker", "-n", NS, "--timestamps",
                                       within=30)
    assert code == 0, err
    followed = stamped(out)
    assert followed[:len(full)] == full
    await eventually(lambda: phase(sandbox, "ticker") == "Succeeded", within=10)
    code, out, err = await kubectl.run("logs", "ticker", "-n", NS, "--timestamps")
    assert (code, stamped(out)) == (0, followed), err  # -f ran to the process's end
    code, out, err = await kubectl.run("logs", "ticker", "-n", NS, "--tail=2", "--timestamps")
    assert (code, stamped(out)) == (0, followed[-2:]), err
    code, out, err = await kubectl.run("logs", "ticker", "-n", NS, "--since=1h", "--tail=3")
    assert (code, out.splitlines()) == (0, [line for _, line in followed[-3:]]), err


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
        # PodLogOptions are decoded (strconv.ParseInt: 400) and validated
        # (ValidatePodLogOptions: 422) before the pod is looked at.
        code, _, body = await http.call("GET", f"{base}?sinceSeconds=abc")
        assert (code, body) == (400, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'strconv.ParseInt: parsing "abc": invalid syntax',
            "reason": "BadRequest", "code": 400})
        for value in ("0", "-5"):
            code, _, body = await http.call("GET", f"{base}?container=main&sinceSeconds={value}")
            assert (code, body) == (422, {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f'PodLogOptions "two" is invalid: sinceSeconds: Invalid value: '
                           f"{value}: must be greater than 0",
                "reason": "Invalid",
                "details": {"name": "two", "kind": "PodLogOptions", "causes": [{
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {value}: must be greater than 0",
                    "field": "sinceSeconds"}]},
                "code": 422})
        code, _, body = await http.call(
            "GET", f"/api/v1/namespaces/{NS}/pods/gone/log?sinceSeconds=0&tailLines=-1")
        assert (code, body["message"]) == (422, (
            'PodLogOptions "gone" is invalid: [tailLines: Invalid value: -1: must be greater '
            "than or equal to 0, sinceSeconds: Invalid value: 0: must be greater than 0]"))
