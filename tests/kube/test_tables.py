"""kubectl's human output: the sandbox answers ``as=Table;v=v1;g=meta.k8s.io``
with the Table the real printers (pkg/printers/internalversion/printers.go)
produce, so ``kubectl get … -o wide`` and ``--watch`` show real columns."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.registry import PODS as POD_RESOURCE
from tests.kube.conftest import Http, Kubectl, MakeSandbox

Obj = dict[str, Any]
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
PODS = "/api/v1/namespaces/kube-system/pods"


def parse_table(text: str) -> list[list[dict[str, str]]]:
    """kubectl's column output → one list of rows (dicts by header) per header line."""
    blocks: list[list[dict[str, str]]] = []
    header: list[tuple[str, int]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line == line.upper():  # a header: only capitals
            starts = [i for i, ch in enumerate(line)
                      if ch != " " and (i == 0 or line[i - 2:i] == "  ")]
            header = [(line[s:].split("  ")[0].strip(), s) for s in starts]
            blocks.append([])
            continue
        row = {}
        for index, (name, start) in enumerate(header):
            end = header[index + 1][1] if index + 1 < len(header) else len(line)
            row[name] = line[start:end].strip()
        blocks[-1].append(row)
    return blocks


async def test_get_nodes_and_pods_wide(sandbox: Sandbox, kubectl: Kubectl) -> None:
    code, out, err = await kubectl.run("get", "nodes,pods", "-o", "wide", "-n", "kube-system")
    assert code == 0, err
    nodes, pods = parse_table(out)
    addresses = sandbox.node_addresses()
    assert list(nodes[0]) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP",
                              "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert {n["NAME"].removeprefix("node/"): n["INTERNAL-IP"] for n in nodes} == addresses
    assert [n["ROLES"] for n in nodes] == ["control-plane", "<none>", "<none>"]
    assert all(n["STATUS"] == "Ready" and n["VERSION"] == "v1.32.0"
               and n["EXTERNAL-IP"] == "<none>" for n in nodes)
    assert list(pods[0]) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                             "NOMINATED NODE", "READINESS GATES"]
    truth = {p["metadata"]["name"]: p for p in sandbox.dns_pods()}
    assert sorted(row["NAME"].removeprefix("pod/") for row in pods) == sorted(truth)
    for row in pods:
        pod = truth[row["NAME"].removeprefix("pod/")]
        assert (row["READY"], row["STATUS"], row["RESTARTS"]) == ("1/1", "Running", "0")
        assert row["IP"] == pod["status"]["podIP"] and row["NODE"] == pod["spec"]["nodeName"]
        assert row["NOMINATED NODE"] == "<none>" and row["READINESS GATES"] == "<none>"
        assert row["AGE"].endswith("s")


async def test_narrow_pods_hide_priority_columns(kubectl: Kubectl) -> None:
    code, out, err = await kubectl.run("get", "pods", "-n", "kube-system")
    assert code == 0, err
    (pods,) = parse_table(out)
    assert list(pods[0]) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]


async def test_services_slices_leases_events(sandbox: Sandbox, kubectl: Kubectl,
                                             http: Http) -> None:
    await http.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
                    {"metadata": {"name": "dns-prober"}, "spec": {"holderIdentity": "me-1"}})
    code, out, err = await kubectl.run("get", "services,endpointslices,leases", "-o", "wide",
                                       "-n", "kube-system")
    assert code == 0, err
    services, slices, leases = parse_table(out)
    dns = sandbox.service("kube-system", "kube-dns")
    assert services == [{"NAME": "service/kube-dns", "TYPE": "ClusterIP",
                         "CLUSTER-IP": dns["spec"]["clusterIP"], "EXTERNAL-IP": "<none>",
                         "PORT(S)": "53/UDP,53/TCP,9153/TCP", "AGE": services[0]["AGE"],
                         "SELECTOR": "k8s-app=kube-dns"}]
    assert list(slices[0]) == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert slices[0]["ADDRESSTYPE"] == "IPv4" and slices[0]["PORTS"] == "53,53,9153"
    assert sorted(slices[0]["ENDPOINTS"].split(",")) == sorted(sandbox.ready_endpoints())
    assert [(row["NAME"], row["HOLDER"]) for row in leases] == [
        ("lease.coordination.k8s.io/dns-prober", "me-1")]
    code, out, err = await kubectl.run("get", "events", "-n", "kube-system",
                                       "--field-selector", "reason=Scheduled")
    assert code == 0, err
    (events,) = parse_table(out)
    assert list(events[0]) == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert {e["OBJECT"] for e in events} == {f"pod/{p['metadata']['name']}"
                                             for p in sandbox.dns_pods()}
    assert all(e["TYPE"] == "Normal" and e["MESSAGE"].startswith("Successfully assigned")
               for e in events)


async def test_terminating_while_a_pod_has_a_deletion_timestamp(make_sandbox: MakeSandbox,
                                                               tmp_path: Any) -> None:
    sandbox = await make_sandbox(grace=60)
    kubectl = Kubectl(sandbox.write_kubeconfig(tmp_path / "kc"), tmp_path / "cache")
    victim = sandbox.dns_pods()[0]["metadata"]["name"]
    code, _, err = await kubectl.run("delete", "pod", victim, "-n", "kube-system", "--wait=false")
    assert code == 0, err
    code, out, err = await kubectl.run("get", "pods", "-n", "kube-system")
    assert code == 0, err
    (rows,) = parse_table(out)
    status = {row["NAME"]: row["STATUS"] for row in rows}
    assert status[victim] == "Terminating"
    assert list(status.values()).count("Terminating") == 1


async def test_watch_prints_rows_as_pods_change(make_sandbox: MakeSandbox, tmp_path: Any) -> None:
    sandbox = await make_sandbox(grace=60)
    kubectl = Kubectl(sandbox.write_kubeconfig(tmp_path / "kc"), tmp_path / "cache")
    process = await asyncio.create_subprocess_exec(
        *kubectl.base, "get", "pods", "-n", "kube-system", "--watch",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(20):
            while len(lines) < 3:  # the header and the two pods
                lines.append((await process.stdout.readline()).decode())
            victim = sandbox.dns_pods()[0]["metadata"]["name"]
            sandbox.registry.delete(POD_RESOURCE, "kube-system", victim, {}, None)
            while not any(victim in line and "Terminating" in line for line in lines):
                lines.append((await process.stdout.readline()).decode())
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all("Running" in line for line in lines[1:3])
    assert sum(1 for line in lines if line.startswith("NAME")) == 1  # one header only


async def test_table_golden_body(sandbox: Sandbox, http: Http) -> None:
    """Columns as AddHandlers in printers.go defines them for pods; cells as
    printPod renders them; row objects are PartialObjectMetadata by default."""
    code, _, body = await http.call("GET", PODS, headers={"Accept": TABLE})
    assert code == 200
    assert body["kind"] == "Table" and body["apiVersion"] == "meta.k8s.io/v1"
    assert body["metadata"]["resourceVersion"] == str(sandbox.store.rv)
    assert [(c["name"], c["type"], c["format"], c["priority"])
            for c in body["columnDefinitions"]] == [
        ("Name", "string", "name", 0), ("Ready", "string", "", 0), ("Status", "string", "", 0),
        ("Restarts", "string", "", 0), ("Age", "string", "", 0), ("IP", "string", "", 1),
        ("Node", "string", "", 1), ("Nominated Node", "string", "", 1),
        ("Readiness Gates", "string", "", 1)]
    assert body["columnDefinitions"][0]["description"].startswith(
        "Name must be unique within a namespace.")
    pod = sandbox.dns_pods()[0]
    row = next(r for r in body["rows"] if r["cells"][0] == pod["metadata"]["name"])
    assert row["cells"][1:4] == ["1/1", "Running", "0"]
    assert row["cells"][5:] == [pod["status"]["podIP"], pod["spec"]["nodeName"], "<none>",
                                "<none>"]
    assert row["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": pod["metadata"]}
    code, _, body = await http.call("GET", f"{PODS}?includeObject=None",
                                    headers={"Accept": TABLE})
    assert code == 200 and all("object" not in r for r in body["rows"])
    code, _, body = await http.call("GET", f"{PODS}/{pod['metadata']['name']}?includeObject=Object",
                                    headers={"Accept": TABLE})
    assert code == 200 and len(body["rows"]) == 1
    assert body["rows"][0]["object"]["kind"] == "Pod"
    code, _, body = await http.call("GET", PODS, headers={
        "Accept": "application/json;as=Table;v=v2;g=meta.k8s.io"})
    assert code == 406 and body["reason"] == "NotAcceptable"


async def test_service_and_node_golden_columns(http: Http) -> None:
    code, _, body = await http.call("GET", "/api/v1/services", headers={"Accept": TABLE})
    assert code == 200
    assert [(c["name"], c["priority"]) for c in body["columnDefinitions"]] == [
        ("Name", 0), ("Type", 0), ("Cluster-IP", 0), ("External-IP", 0), ("Port(s)", 0),
        ("Age", 0), ("Selector", 1)]
    kubernetes = next(r for r in body["rows"] if r["cells"][0] == "kubernetes")
    assert kubernetes["cells"][1] == "ClusterIP" and kubernetes["cells"][3:5] == ["<none>",
                                                                                "443/TCP"]
    assert kubernetes["cells"][6] == "<none>"  # no selector
    code, _, body = await http.call("GET", "/api/v1/nodes", headers={"Accept": TABLE})
    assert [(c["name"], c["priority"]) for c in body["columnDefinitions"]] == [
        ("Name", 0), ("Status", 0), ("Roles", 0), ("Age", 0), ("Version", 0),
        ("Internal-IP", 1), ("External-IP", 1), ("OS-Image", 1), ("Kernel-Version", 1),
        ("Container-Runtime", 1)]
