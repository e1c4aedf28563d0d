"""The application view: a short name through a search list and ndots, via aiodns."""

from __future__ import annotations

from corednsprobe.model import Check, Outcome, Target, TargetKind
from corednsprobe.probe.engine import Prober
from tests.helpers.dnsservers import SERVICE_IP, RunningServer

POD_SEARCH = ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")


def app_check(name: str = "kubernetes.default", **kw: object) -> Check:
    return Check("app", name, search=POD_SEARCH, ndots=5, application_view=True,
                 expect_addresses=frozenset({SERVICE_IP}), **kw)  # type: ignore[arg-type]


async def test_short_name_resolves_through_the_search_list(unbound: RunningServer) -> None:
    target = Target(TargetKind.SERVICE, unbound.address, unbound.port)
    result = await Prober(1.0).probe(target, app_check())
    assert result.outcome is Outcome.OK, result.detail
    assert result.answers == (SERVICE_IP,)
    assert result.qname == "kubernetes.default.svc.cluster.local."
    assert "kubernetes.default.default.svc.cluster.local." in result.detail  # asked first


async def test_every_application_view_check_reaches_the_server(unbound: RunningServer) -> None:
    """No c-ares cache carries over: 2 candidates per check, each asked every time."""
    target = Target(TargetKind.SERVICE, unbound.address, unbound.port)
    prober = Prober(1.0)
    before = unbound.queries()
    results = [await prober.probe(target, app_check()) for _ in range(5)]
    assert [r.outcome for r in results] == [Outcome.OK] * 5
    assert unbound.queries() - before == 10


async def test_missing_short_name_is_nxdomain_after_every_candidate(
        unbound: RunningServer) -> None:
    target = Target(TargetKind.SERVICE, unbound.address, unbound.port)
    before = unbound.queries()
    result = await Prober(1.0).probe(target, app_check("nothere"))
    assert result.outcome in (Outcome.NXDOMAIN, Outcome.REFUSED)
    # three search candidates, then the bare name (which unbound refuses)
    assert unbound.queries() - before == 4
    assert result.outcome is Outcome.REFUSED and result.qname == "nothere."
