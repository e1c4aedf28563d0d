"""Building TargetSets from API objects: slices merged, conditions, explicit states."""

from __future__ import annotations

from typing import Any

from corednsprobe.kube.view import build_targetset, pods_from_endpoints, pods_from_slices
from corednsprobe.model import ClusterState

Obj = dict[str, Any]
PORTS = [{"name": "dns-tcp", "protocol": "TCP", "port": 53},
         {"name": "dns", "protocol": "UDP", "port": 5353},
         {"name": "metrics", "protocol": "TCP", "port": 9153}]


def ep(addr: str, pod: str, *, ready: bool | None = True, serving: bool | None = True,
       terminating: bool | None = False, node: str = "node-a") -> Obj:
    cond = {k: v for k, v in (("ready", ready), ("serving", serving),
                              ("terminating", terminating)) if v is not None}
    return {"addresses": [addr], "conditions": cond, "nodeName": node,
            "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": pod,
                          "uid": f"u-{pod}"}}


def slice_(name: str, family: str, *endpoints: Obj, ports: list[Obj] = PORTS) -> Obj:
    return {"metadata": {"name": name, "namespace": "kube-system"}, "addressType": family,
            "endpoints": list(endpoints), "ports": ports}


def test_reference_slice_with_a_terminating_endpoint() -> None:
    sl = slice_("kube-dns-x7k2p", "IPv4",
                ep("10.244.0.3", "coredns-a"),
                ep("10.244.1.5", "coredns-b", ready=False, serving=True, terminating=True,
                   node="node-b"))
    a, b = pods_from_slices([sl], {}, "kube-system")
    assert (a.address, a.port, a.name, a.pod and a.pod.node) == ("10.244.0.3", 5353, "coredns-a",
                                                                 "node-a")
    assert a.pod is not None and a.pod.ready and not a.pod.terminating
    assert b.pod is not None and b.pod.terminating and not b.pod.ready and b.pod.serving


def test_two_slices_and_ipv6_are_merged_and_duplicates_dropped() -> None:
    v4a = slice_("kube-dns-a", "IPv4", ep("10.244.0.3", "coredns-a"),
                 ep("10.244.0.4", "coredns-b", ready=False))
    v4b = slice_("kube-dns-b", "IPv4", ep("10.244.0.4", "coredns-b"))  # rollover duplicate
    v6 = slice_("kube-dns-c", "IPv6", ep("fd00::3", "coredns-a"))
    fqdn = slice_("kube-dns-d", "FQDN", ep("example.org", "x"))
    targets = pods_from_slices([v6, v4b, v4a, fqdn], {}, "kube-system")
    assert [(t.address, t.pod and t.pod.ready) for t in targets] == [
        ("10.244.0.3", True), ("fd00::3", True), ("10.244.0.4", True)]
    assert targets[1].endpoint == "[fd00::3]:5353"


def test_nil_conditions_mean_ready_and_port_falls_back_to_53() -> None:
    sl = slice_("s", "IPv4", ep("10.0.0.1", "p", ready=None, serving=None, terminating=None),
                ports=[])
    (t,) = pods_from_slices([sl], {}, "kube-system")
    assert t.port == 53
    assert t.pod is not None and t.pod.ready and t.pod.serving and not t.pod.terminating


def test_pod_deletion_timestamp_and_creation_time_come_from_the_pod() -> None:
    pods = {"kube-system/p": {"metadata": {"name": "p", "uid": "u-p",
                                           "creationTimestamp": "2026-01-01T00:00:00Z",
                                           "deletionTimestamp": "2026-01-01T01:00:00Z"}}}
    (t,) = pods_from_slices([slice_("s", "IPv4", ep("10.0.0.1", "p"))], pods, "kube-system")
    assert t.pod is not None and t.pod.terminating and not t.pod.ready
    assert t.pod.created_at == 1767225600.0


def test_legacy_endpoints() -> None:
    endpoints = {"subsets": [{"ports": [{"name": "dns", "protocol": "UDP", "port": 53}],
                              "addresses": [{"ip": "10.0.0.1", "targetRef": {"name": "a"}}],
                              "notReadyAddresses": [{"ip": "10.0.0.2",
                                                     "targetRef": {"name": "b"}}]}]}
    a, b = pods_from_endpoints(endpoints, {}, "kube-system")
    assert (a.name, a.pod and a.pod.ready) == ("a", True)
    assert (b.name, b.pod and b.pod.ready) == ("b", False)


def svc(*ips: str) -> Obj:
    return {"spec": {"clusterIP": ips[0] if ips else "None", "clusterIPs": list(ips),
                     "ports": [{"name": "dns", "protocol": "UDP", "port": 53}]}}


def test_explicit_states_and_truth() -> None:
    pods = pods_from_slices([slice_("s", "IPv4", ep("10.0.0.1", "p"))], {}, "kube-system")
    ts = build_targetset(service=None, pod_targets=pods, kubernetes=svc("10.96.0.1"), generation=1)
    assert ts.state is ClusterState.NO_SERVICE and ts.targets == ()
    ts = build_targetset(service=svc("10.96.0.10"), pod_targets=[], kubernetes=None, generation=2)
    assert ts.state is ClusterState.NO_ENDPOINTS
    ts = build_targetset(service=svc("10.96.0.10", "fd00::a"), pod_targets=pods,
                         kubernetes=svc("10.96.0.1"), generation=3)
    assert ts.state is ClusterState.OK
    assert [t.address for t in ts.services] == ["10.96.0.10", "fd00::a"]
    assert ts.expected == frozenset({"10.96.0.1"})
