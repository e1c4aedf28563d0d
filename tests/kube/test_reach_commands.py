"""The reach options of the one-shot commands, as subprocesses against the sandbox
(pods answer on 127.x: in the network): `check --cluster` through direct and through
port-forward, `targets --reach`, and the usage errors of `check`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corednsprobe.sandbox.cluster import Sandbox, SandboxConfig
from corednsprobe.sandbox.controllers import Timings
from corednsprobe.sandbox.inprocess import InProcessBackend
from tests.kube.conftest import Command

SCHEMA_KEYS = {"server", "name", "type", "outcome", "rcode", "rtt_seconds", "answers",
               "udp_only", "detail", "records"}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[Sandbox, Path]]:
    config = SandboxConfig(replicas=2, termination_grace_seconds=1,
                           timings=Timings(readiness_period=0.05, resync_period=0.5))
    async with Sandbox(InProcessBackend(), config) as sandbox:
        await sandbox.wait_ready(within=10)
        yield sandbox, sandbox.write_kubeconfig(tmp_path / "kubeconfig")


async def test_check_cluster_json_direct_asks_every_pod_and_the_service(
        cluster: tuple[Sandbox, Path], corednsprobe: Command) -> None:
    sandbox, kubeconfig = cluster
    code, out, err = await corednsprobe.run("check", "--cluster", "--json", "--count", "2",
                                            "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["reach"]["strategy"] == "direct" and doc["reach"]["blind_to"] == []
    assert "answered over UDP" in doc["reach"]["reason"]
    cluster_ip = sandbox.service("kube-system", "kube-dns")["spec"]["clusterIP"]
    pods = {p["status"]["podIP"] for p in sandbox.dns_pods()}
    assert {r["server"].rsplit(":", 1)[0] for r in doc["results"]} == pods | {cluster_ip}
    assert all(set(r) >= SCHEMA_KEYS for r in doc["results"])
    assert {(r["kind"], r["reach"]) for r in doc["results"]} == {("pod", "direct"),
                                                                  ("service", "direct")}
    assert doc["summary"]["probes"] == 6 and doc["summary"]["ok"] == 6
    truth = sandbox.service("default", "kubernetes")["spec"]["clusterIP"]
    assert {tuple(r["answers"]) for r in doc["results"]} == {(truth,)}


async def test_check_cluster_through_port_forward_names_what_it_cannot_see(
        cluster: tuple[Sandbox, Path], corednsprobe: Command) -> None:
    sandbox, kubeconfig = cluster
    bad = sandbox.dns_pods()[0]["metadata"]["name"]
    await sandbox.set_pod_fault(bad, "servfail")
    code, out, err = await corednsprobe.run("check", "--cluster", "--reach", "port-forward",
                                            "--kubeconfig", str(kubeconfig))
    assert code == 1, err  # one pod answers SERVFAIL over TCP too
    assert "reach: port-forward" in err and "blind to UDP, the pod network, the ClusterIP" \
        in err
    rows = [line for line in out.splitlines() if line.startswith("127.")]
    assert len(rows) == 2 and sum("servfail" in r for r in rows) == 1
    assert out.splitlines()[-1] == "1 of 2 probes ok"


async def test_targets_reach_port_forward_leaves_out_the_clusterip(
        cluster: tuple[Sandbox, Path], corednsprobe: Command) -> None:
    _, kubeconfig = cluster
    code, out, err = await corednsprobe.run("targets", "--json", "--kubeconfig",
                                            str(kubeconfig))
    assert code == 0, err
    assert len(json.loads(out)["services"]) == 1
    code, out, err = await corednsprobe.run("targets", "--json", "--reach", "port-forward",
                                            "--kubeconfig", str(kubeconfig))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["services"] == [] and len(doc["pods"]) == 2
    assert "reach: port-forward" in err


@pytest.mark.parametrize(("args", "said"), [
    ((), "--server ADDR"),
    (("--server", "127.0.0.1", "--cluster"), "--server ADDR"),
    (("--cluster", "--tcp"), "--tcp and --search apply to --server only"),
    (("--server", "127.0.0.1", "--reach", "direct"), "apply to --cluster only"),
])
async def test_check_usage_errors(corednsprobe: Command, args: tuple[str, ...],
                                  said: str) -> None:
    code, _out, err = await corednsprobe.run("check", *args)
    assert code == 2 and said in err
