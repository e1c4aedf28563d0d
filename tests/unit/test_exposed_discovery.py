"""Finding the Service that exposes CoreDNS, and its front doors (pure)."""

from __future__ import annotations

from typing import Any

from corednsprobe.model import ClusterState, PodRef, Target, TargetKind, TargetSet
from corednsprobe.reach.exposed import (
    Exposure,
    exposure_of,
    find_exposure,
    frontends,
    node_addresses,
)

Obj = dict[str, Any]
DNS_SELECTOR = {"k8s-app": "kube-dns"}


def service(name: str, kind: str = "NodePort", selector: Obj | None = None,
            ports: list[Obj] | None = None, **spec: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"type": kind, "selector": DNS_SELECTOR if selector is None else selector,
                     "ports": ports if ports is not None else [
                         {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53,
                          "nodePort": 30053},
                         {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53,
                          "nodePort": 30053}],
                     **spec}}


KUBE_DNS = service("kube-dns", "ClusterIP", ports=[{"name": "dns", "protocol": "UDP",
                                                    "port": 53, "targetPort": 53}])


def pod(name: str, node: str, ready: bool = True) -> Target:
    return Target(TargetKind.POD, f"10.244.0.{len(name)}", 53,
                  PodRef(name, uid=name, node=node, ready=ready))


TS = TargetSet(pods=(pod("coredns-a", "node-a"), pod("coredns-b", "node-b"),
                     pod("coredns-c", "node-b", ready=False)), state=ClusterState.OK)
NODES = {"node-a": "192.168.7.2", "node-b": "192.168.7.3", "node-c": "192.168.7.4"}


def test_a_nodeport_selecting_the_dns_pods_on_udp_53_is_found() -> None:
    found, why = find_exposure([KUBE_DNS, service("kube-dns-probe")], "kube-dns")
    assert why == "" and found == Exposure("kube-system", "kube-dns-probe", "NodePort", 53,
                                           30053, False, (), "")


def test_a_narrower_selector_and_a_named_target_port_qualify() -> None:
    narrower = service("narrow", selector={"k8s-app": "kube-dns", "zone": "a"},
                       ports=[{"protocol": "UDP", "port": 5353, "targetPort": "dns",
                               "nodePort": 31000}])
    found, _ = find_exposure([KUBE_DNS, narrower], "kube-dns")
    assert found is not None and (found.name, found.port, found.node_port) == (
        "narrow", 5353, 31000)


def test_services_that_do_not_expose_dns_are_passed_over_with_reasons() -> None:
    others = [KUBE_DNS, service("web", selector={"app": "web"}),
              service("tcp-only", ports=[{"protocol": "TCP", "port": 53, "targetPort": 53,
                                          "nodePort": 30054}]),
              service("wider", selector={})]
    found, why = find_exposure(others, "kube-dns")
    assert found is None
    assert why.startswith("no NodePort or LoadBalancer Service selects the DNS pods")
    assert "kube-system/tcp-only serves no UDP port with targetPort 53 or dns" in why
    assert "kube-system/web's selector {'app': 'web'} does not select the DNS pods" in why
    assert "kube-system/wider's selector {} does not select the DNS pods" in why


def test_the_configured_service_is_taken_whatever_it_selects() -> None:
    named = service("custom", "LoadBalancer", selector={"app": "my-dns"})
    found, _ = find_exposure([KUBE_DNS, service("kube-dns-probe"), named], "kube-dns", "custom")
    assert found is not None and found.name == "custom"
    missing, why = find_exposure([KUBE_DNS], "kube-dns", "custom")
    assert missing is None and why == ("COREDNSPROBE_EXPOSED_SERVICE names 'custom', which "
                                       "does not exist")
    plain, why = find_exposure([KUBE_DNS], "kube-dns", "kube-dns")
    assert plain is None and why == ("kube-system/kube-dns is of type ClusterIP, not NodePort "
                                     "or LoadBalancer")


def test_session_affinity_or_topology_routing_is_not_uniform() -> None:
    sticky, _ = exposure_of(service("s", sessionAffinity="ClientIP"), DNS_SELECTOR)
    assert sticky is not None and sticky.uniform.startswith("sessionAffinity ClientIP")
    near, _ = exposure_of(service("t", trafficDistribution="PreferClose"), DNS_SELECTOR)
    assert near is not None and near.uniform.startswith("topology-aware")


def test_every_node_reaches_every_ready_pod_under_cluster_policy() -> None:
    found, _ = exposure_of(service("p"), DNS_SELECTOR)
    assert found is not None
    doors = frontends(found, NODES, TS)
    assert [(d.label, d.address, d.port, d.pods) for d in doors] == [
        ("exposed:node-a", "192.168.7.2", 30053, ("coredns-a", "coredns-b")),
        ("exposed:node-b", "192.168.7.3", 30053, ("coredns-a", "coredns-b")),
        ("exposed:node-c", "192.168.7.4", 30053, ("coredns-a", "coredns-b"))]
    assert doors[0].target.name == "exposed:node-a"
    assert doors[0].target.kind is TargetKind.SERVICE


def test_local_policy_reaches_only_the_nodes_own_ready_pods() -> None:
    found, _ = exposure_of(service("p", externalTrafficPolicy="Local"), DNS_SELECTOR)
    assert found is not None and found.local
    doors = frontends(found, NODES, TS)
    assert [(d.label, d.pods) for d in doors] == [("exposed:node-a", ("coredns-a",)),
                                                  ("exposed:node-b", ("coredns-b",))]


def test_a_load_balancer_address_is_probed_instead_of_the_nodes() -> None:
    svc = service("lb", "LoadBalancer", externalTrafficPolicy="Local")
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.9", "ipMode": "VIP"}]}}
    found, _ = exposure_of(svc, DNS_SELECTOR)
    assert found is not None and found.ingress == ("203.0.113.9",)
    doors = frontends(found, NODES, TS)
    assert [(d.label, d.address, d.port, d.pods) for d in doors] == [
        ("exposed:203.0.113.9", "203.0.113.9", 53, ("coredns-a", "coredns-b"))]


def test_node_addresses_are_the_internal_ips() -> None:
    nodes = [{"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.1.0.1"}]}},
        {"metadata": {"name": "n2"}, "status": {"addresses": [
            {"type": "ExternalIP", "address": "1.2.3.4"}]}},
        {"metadata": {"name": "n3"}}]
    assert node_addresses(nodes) == {"n1": "10.1.0.1"}
