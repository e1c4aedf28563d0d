"""Nodes: cluster-scoped v1 objects as the kubelet registers them, and pods
spread over them with spec.nodeName and status.hostIP."""

from __future__ import annotations

from typing import Any

from corednsprobe.sandbox.cluster import Sandbox
from tests.kube.conftest import Http, MakeSandbox

Obj = dict[str, Any]


async def test_nodes_are_cluster_scoped_with_hostname_label_and_internal_ip(
        sandbox: Sandbox, http: Http) -> None:
    code, _, listing = await http.call("GET", "/api/v1/nodes")
    assert code == 200 and listing["kind"] == "NodeList"
    names = [n["metadata"]["name"] for n in listing["items"]]
    assert names == ["sandbox-node-a", "sandbox-node-b", "sandbox-node-c"]  # none backend: 3
    for node in listing["items"]:
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == node["metadata"]["name"]
        types = [a["type"] for a in node["status"]["addresses"]]
        assert types == ["InternalIP", "Hostname"]
    code, _, _ = await http.call("GET", "/api/v1/namespaces/kube-system/nodes")
    assert code == 404
    code, _, one = await http.call("GET", "/api/v1/nodes/sandbox-node-b")
    assert code == 200 and one["kind"] == "Node" and one["apiVersion"] == "v1"


async def test_node_golden_body(http: Http) -> None:
    """Conditions as pkg/kubelet/nodestatus/setters.go writes them for a healthy
    node, labels from api/core/v1/well_known_labels.go (kubeadm's role on the
    first), nodeInfo.kubeletVersion as v1.x.y, kubelet port 10250."""
    _, _, node = await http.call("GET", "/api/v1/nodes/sandbox-node-a")
    conditions = [(c["type"], c["status"], c["reason"], c["message"])
                  for c in node["status"]["conditions"]]
    assert conditions == [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory",
         "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID",
         "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    assert all(set(c) == {"type", "status", "lastHeartbeatTime", "lastTransitionTime",
                          "reason", "message"} for c in node["status"]["conditions"])
    assert node["metadata"]["labels"] == {
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": "sandbox-node-a",
        "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"].startswith("v1.") and info["operatingSystem"] == "linux"
    assert node["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert node["status"]["capacity"]["pods"] == "110"


async def test_dns_pods_spread_over_nodes_and_carry_the_node_address(
        make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(replicas=3)
    addresses = sandbox.node_addresses()
    pods = sandbox.dns_pods()
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(addresses)
    for pod in pods:
        assert pod["status"]["hostIP"] == addresses[pod["spec"]["nodeName"]]
        assert pod["status"]["hostIPs"] == [{"ip": pod["status"]["hostIP"]}]


async def test_one_node_holds_every_pod(make_sandbox: MakeSandbox, tmp_path: Any) -> None:
    sandbox = await make_sandbox(replicas=2, nodes=1)
    assert list(sandbox.node_addresses()) == ["sandbox-node-a"]
    assert {p["spec"]["nodeName"] for p in sandbox.dns_pods()} == {"sandbox-node-a"}


async def test_field_selector_on_node_name(sandbox: Sandbox, http: Http) -> None:
    pod = sandbox.dns_pods()[0]
    node = pod["spec"]["nodeName"]
    code, _, listing = await http.call(
        "GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
    assert code == 200
    assert [p["metadata"]["name"] for p in listing["items"]] == [pod["metadata"]["name"]]
