"""Which questions each target is asked, from the settings and the API's truth."""

from __future__ import annotations

from corednsprobe.probe.checks import Checks
from tests.unit.helpers import SERVICE, pod

C = Checks("cluster.local", "kube-system")


def table(checks: tuple[object, ...]) -> list[tuple[str, str, object]]:
    return [(c.name, c.qtype, c.expect_addresses) for c in checks]  # type: ignore[attr-defined]


def test_ipv4_cluster_pod_and_service() -> None:
    truth = frozenset({"10.96.0.1"})
    assert table(C.for_target(pod(1), truth)) == [
        ("kubernetes", "A", truth), ("nxdomain", "A", None)]
    service = C.for_target(SERVICE, truth)
    assert table(service)[-1] == ("app_view", "A", truth)
    app = service[-1]
    assert app.search == ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")
    assert (app.ndots, app.application_view) == (5, True)


def test_ipv6_only_cluster_is_asked_aaaa() -> None:
    truth = frozenset({"fd00:10:96::1"})
    assert table(C.for_target(pod(1), truth)) == [
        ("kubernetes_aaaa", "AAAA", truth), ("nxdomain", "A", None)]
    assert table(C.for_target(SERVICE, truth))[-1] == ("app_view", "AAAA", truth)


def test_dual_stack_asks_both_families() -> None:
    truth = frozenset({"10.96.0.1", "fd00:10:96::1"})
    assert table(C.for_target(pod(1), truth))[:2] == [
        ("kubernetes", "A", frozenset({"10.96.0.1"})),
        ("kubernetes_aaaa", "AAAA", frozenset({"fd00:10:96::1"}))]


def test_without_truth_any_answer_is_accepted_and_external_is_upstream() -> None:
    checks = Checks("cluster.local", "kube-system", "example.org").for_target(pod(1), frozenset())
    assert table(checks)[0] == ("kubernetes", "A", None)
    external = next(c for c in checks if c.name == "external")
    assert external.upstream and external.qname == "example.org."


def test_the_canary_name_is_fresh_every_time() -> None:
    canary = next(c for c in C.for_target(pod(1), frozenset()) if c.name == "nxdomain")
    names = {C.qname(canary) for _ in range(100)}
    assert len(names) == 100
    assert all(n and n.endswith(".kube-system.svc.cluster.local.") for n in names)
