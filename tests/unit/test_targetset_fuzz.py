"""The object→TargetSet path over arbitrary JSON: EndpointSlices, Endpoints, Services and
Pods of any shape never raise out of it; what cannot be read is skipped (and reported to
the skip hook), and a well-formed slice beside malformed ones still yields its target."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corednsprobe.kube.view import targetset_from
from corednsprobe.model import ClusterState, TargetSet

KEYS = ["metadata", "name", "namespace", "uid", "resourceVersion", "labels",
        "ownerReferences", "controller", "kind", "pod-template-hash", "creationTimestamp",
        "deletionTimestamp", "addressType", "endpoints", "addresses", "conditions", "ready",
        "serving", "terminating", "targetRef", "nodeName", "ports", "port", "protocol",
        "subsets", "ip", "notReadyAddresses", "spec", "clusterIP", "clusterIPs"]
LEAVES = (st.none() | st.booleans() | st.integers(-2, 70000) | st.floats(allow_nan=False)
          | st.text(max_size=6)
          | st.sampled_from(["IPv4", "IPv6", "FQDN", "UDP", "TCP", "dns", "10.0.0.9", "fd00::9",
                             "None", "ReplicaSet", "2024-01-01T00:00:00Z", "kube-system"]))
JSON = st.recursive(
    LEAVES,
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner,
                                     max_size=4)),
    max_leaves=24)
STORE = st.dictionaries(st.text(max_size=8), JSON, max_size=3)

GOOD_SERVICE = {"metadata": {"name": "kube-dns", "namespace": "kube-system"},
                "spec": {"clusterIP": "10.96.0.10",
                         "ports": [{"name": "dns", "protocol": "UDP", "port": 53}]}}
GOOD_SLICE = {"metadata": {"name": "kube-dns-good", "namespace": "kube-system"},
              "addressType": "IPv4", "ports": [{"name": "dns", "protocol": "UDP", "port": 53}],
              "endpoints": [{"addresses": ["10.244.0.3"], "conditions": {"ready": True},
                             "targetRef": {"kind": "Pod", "name": "coredns-a",
                                           "namespace": "kube-system"}}]}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(objs: dict[str, Any], legacy: bool) -> tuple[TargetSet, list[str]]:
    skipped: list[str] = []
    ts = targetset_from(objs, namespace="kube-system", legacy=legacy, generation=1,
                        skip=lambda kind, _obj, _exc: skipped.append(kind))
    return ts, skipped


def well_formed(ts: TargetSet) -> None:
    for t in (*ts.pods, *ts.services):
        ipaddress.ip_address(t.address)
        assert isinstance(t.port, int)
    assert ts.state in ClusterState


@FUZZ
@given(slices=STORE, endpoints=STORE, service=STORE, kubernetes=STORE, pods=STORE,
       legacy=st.booleans())
def test_any_json_in_any_store_yields_a_targetset(slices: dict[str, Any],
                                                  endpoints: dict[str, Any],
                                                  service: dict[str, Any],
                                                  kubernetes: dict[str, Any],
                                                  pods: dict[str, Any], legacy: bool) -> None:
    ts, skipped = build({"endpointslices": slices, "endpoints": endpoints, "service": service,
                         "kubernetes": kubernetes, "pods": pods}, legacy)
    well_formed(ts)
    assert set(skipped) <= {"EndpointSlice", "Endpoints", "Service", "Pod"}


@FUZZ
@given(extra=STORE, pods=STORE)
def test_a_good_slice_keeps_its_target_beside_any_other_slices_and_pods(
        extra: dict[str, Any], pods: dict[str, Any]) -> None:
    objs = {"endpointslices": {**extra, "kube-system/kube-dns-good": GOOD_SLICE},
            "service": {"kube-system/kube-dns": GOOD_SERVICE}, "kubernetes": {}, "pods": pods}
    ts, skipped = build(objs, legacy=False)
    well_formed(ts)
    assert "10.244.0.3" in {t.address for t in ts.pods}
    assert [t.address for t in ts.services] == ["10.96.0.10"]
    assert ts.state is ClusterState.OK
    assert "Service" not in skipped


def test_an_endpoint_without_addresses_is_no_error() -> None:
    empty = {**GOOD_SLICE, "metadata": {"name": "kube-dns-empty"},
             "endpoints": [{"addresses": [], "conditions": {"ready": True}}]}
    ts, skipped = build({"endpointslices": {"a": empty, "b": GOOD_SLICE},
                         "service": {"s": GOOD_SERVICE}, "kubernetes": {}, "pods": {}}, False)
    assert [t.address for t in ts.pods] == ["10.244.0.3"] and skipped == []


def test_a_slice_with_a_port_that_is_not_a_number_is_skipped_alone() -> None:
    garbled = {**GOOD_SLICE, "metadata": {"name": "kube-dns-garbled"},
               "ports": [{"name": "dns", "protocol": "UDP", "port": "fifty-three"}],
               "endpoints": [{"addresses": ["10.99.0.1"]}]}
    ts, skipped = build({"endpointslices": {"a": garbled, "b": GOOD_SLICE},
                         "service": {"s": GOOD_SERVICE}, "kubernetes": {}, "pods": {}}, False)
    assert [t.address for t in ts.pods] == ["10.244.0.3"] and skipped == ["EndpointSlice"]
