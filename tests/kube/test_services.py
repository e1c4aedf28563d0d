"""NodePort and LoadBalancer Services on the API side: nodePort allocation and
its errors as the real allocator words them, the sandbox "cloud" giving
LoadBalancers an ingress address, and the frontends the sandbox's kube-proxy
asks the DNS backend for (every node address, externalTrafficPolicy Local)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from corednsprobe.sandbox.cluster import Sandbox
from corednsprobe.sandbox.nullbackend import NullBackend
from corednsprobe.sandbox.registry import SERVICES as SERVICE_RESOURCE
from tests.kube.conftest import Http, Kubectl, MakeSandbox, eventually

Obj = dict[str, Any]
SERVICES = "/api/v1/namespaces/kube-system/services"
ROOT = Path(__file__).resolve().parents[2]
NODEPORT_YAML = ROOT / "deploy" / "extras" / "dns-nodeport.yaml"


def dns_service(name: str, kind: str, **spec: Any) -> Obj:
    return {"metadata": {"name": name}, "spec": {
        "type": kind, "selector": {"k8s-app": "kube-dns"},
        "ports": [{"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                  {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53}],
        **spec}}


async def test_nodeport_service_golden_body_after_allocation(sandbox: Sandbox,
                                                             http: Http) -> None:
    """The manifest's Service as the real API server stores it: SetDefaults_Service
    (pkg/apis/core/v1/defaults.go) fills sessionAffinity, the traffic policies and
    the IP families; the ClusterIP and the requested nodePort are allocated."""
    manifest = yaml.safe_load(NODEPORT_YAML.read_text())
    code, _, created = await http.call("POST", SERVICES, manifest)
    assert code == 201, created
    cluster_ip = created["spec"]["clusterIP"]
    assert created["spec"] == {
        "ports": [{"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53,
                   "nodePort": 30053},
                  {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53,
                   "nodePort": 30053}],
        "selector": {"k8s-app": "kube-dns"}, "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip], "type": "NodePort", "sessionAffinity": "None",
        "externalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}
    assert created["status"] == {"loadBalancer": {}}
    assert created["kind"] == "Service" and created["apiVersion"] == "v1"
    assert set(created["metadata"]) >= {"name", "namespace", "uid", "resourceVersion",
                                        "creationTimestamp", "labels"}


async def test_node_ports_are_allocated_in_range_and_kept_on_update(sandbox: Sandbox,
                                                                    http: Http) -> None:
    code, _, svc = await http.call("POST", SERVICES, dns_service("auto", "NodePort"))
    assert code == 201
    ports = [p["nodePort"] for p in svc["spec"]["ports"]]
    assert all(30000 <= p <= 32767 for p in ports) and len(set(ports)) == 2
    body = dns_service("auto", "NodePort")
    body["metadata"]["resourceVersion"] = svc["metadata"]["resourceVersion"]
    code, _, updated = await http.call("PUT", f"{SERVICES}/auto", body)
    assert code == 200, updated
    assert [p["nodePort"] for p in updated["spec"]["ports"]] == ports
    assert updated["spec"]["clusterIP"] == svc["spec"]["clusterIP"]


async def test_node_port_errors_are_worded_as_the_allocator_words_them(http: Http) -> None:
    first = dns_service("one", "NodePort")
    first["spec"]["ports"][0]["nodePort"] = 30080
    code, _, _ = await http.call("POST", SERVICES, first)
    assert code == 201
    clash = dns_service("two", "NodePort")
    clash["spec"]["ports"][0]["nodePort"] = 30080
    code, _, body = await http.call("POST", SERVICES, clash)
    assert code == 422
    assert body["message"] == ('Service "two" is invalid: spec.ports[0].nodePort: Invalid '
                               'value: 30080: provided port is already allocated')
    assert body["details"]["causes"] == [{
        "reason": "FieldValueInvalid", "field": "spec.ports[0].nodePort",
        "message": "Invalid value: 30080: provided port is already allocated"}]
    wide = dns_service("three", "NodePort")
    wide["spec"]["ports"][1]["nodePort"] = 40000
    code, _, body = await http.call("POST", SERVICES, wide)
    assert code == 422
    assert body["message"] == (
        'Service "three" is invalid: spec.ports[1].nodePort: Invalid value: 40000: provided '
        "port is not in the valid range. The range of valid ports is 30000-32767")
    plain = dns_service("four", "ClusterIP")
    plain["spec"]["ports"][0]["nodePort"] = 30090
    code, _, body = await http.call("POST", SERVICES, plain)
    assert code == 422 and "may not be used when `type` is 'ClusterIP'" in body["message"]


async def test_every_node_address_answers_at_the_node_port(make_sandbox: MakeSandbox,
                                                           tmp_path: Path) -> None:
    sandbox = await make_sandbox(replicas=2)
    kubectl = Kubectl(sandbox.write_kubeconfig(tmp_path / "kc"), tmp_path / "cache")
    code, out, err = await kubectl.run("create", "-f", str(NODEPORT_YAML), "--validate=false")
    assert code == 0, err
    backend = sandbox.backend
    assert isinstance(backend, NullBackend)
    pods = tuple(sorted(sandbox.ready_endpoints()))
    wanted = {(address, 30053): pods for address in sandbox.node_addresses().values()}
    await eventually(lambda: backend.frontends == wanted)
    code, out, err = await kubectl.run("get", "service", "kube-dns-probe", "-n", "kube-system")
    assert code == 0, err
    assert "NodePort" in out and "53:30053/UDP,53:30053/TCP" in out
    code, _, _ = await kubectl.run("delete", "service", "kube-dns-probe", "-n", "kube-system")
    assert code == 0
    await eventually(lambda: backend.frontends == {})


async def test_local_traffic_policy_sends_only_to_the_nodes_own_pods(
        make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(replicas=2)  # three nodes, pods on the first two
    backend = sandbox.backend
    assert isinstance(backend, NullBackend)
    created = sandbox.registry.create(SERVICE_RESOURCE, "kube-system", dns_service(
        "local", "NodePort", externalTrafficPolicy="Local"))
    port = created["spec"]["ports"][0]["nodePort"]
    addresses = sandbox.node_addresses()
    by_node = {p["spec"]["nodeName"]: (p["status"]["podIP"],) for p in sandbox.dns_pods()}
    wanted = {(address, port): by_node.get(node, ()) for node, address in addresses.items()}
    await eventually(lambda: {k: v for k, v in backend.frontends.items() if k[1] == port}
                     == {k: v for k, v in wanted.items() if v})
    assert len([v for v in wanted.values() if not v]) == 1  # the third node has none


async def test_load_balancer_gets_an_address_from_the_cloud(sandbox: Sandbox, http: Http,
                                                            kubectl: Kubectl) -> None:
    code, _, svc = await http.call("POST", SERVICES, dns_service(
        "outside", "LoadBalancer", externalTrafficPolicy="Local"))
    assert code == 201
    assert svc["spec"]["allocateLoadBalancerNodePorts"] is True
    assert 30000 <= svc["spec"]["healthCheckNodePort"] <= 32767
    assert svc["status"] == {"loadBalancer": {}}

    def ingress() -> list[Obj]:
        found: list[Obj] = sandbox.service("kube-system", "outside")["status"][
            "loadBalancer"].get("ingress") or []
        return found

    await eventually(lambda: bool(ingress()))
    (entry,) = ingress()
    assert entry == {"ip": entry["ip"], "ipMode": "VIP"}
    backend = sandbox.backend
    assert isinstance(backend, NullBackend)
    await eventually(lambda: backend.frontends.get((entry["ip"], 53))
                     == tuple(sorted(sandbox.ready_endpoints())))
    code, out, err = await kubectl.run("get", "svc", "outside", "-n", "kube-system")
    assert code == 0, err
    assert entry["ip"] in out and "LoadBalancer" in out
    code, out, err = await kubectl.run("get", "events", "-n", "kube-system",
                                       "--field-selector", "involvedObject.name=outside")
    assert code == 0 and "EnsuredLoadBalancer" in out, err
