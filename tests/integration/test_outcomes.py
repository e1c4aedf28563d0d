"""Each Outcome, produced by a real Debian DNS server on loopback."""

from __future__ import annotations

from corednsprobe.model import Check, Outcome, Target, TargetKind
from corednsprobe.probe.engine import Prober
from tests.helpers.dnsservers import SERVICE_IP, RunningServer, free_port

KUBERNETES = "kubernetes.default.svc.cluster.local"


def target(server: RunningServer) -> Target:
    return Target(TargetKind.POD, server.address, server.port)


async def test_expected_address_is_ok(unbound: RunningServer) -> None:
    check = Check("svc", KUBERNETES, expect_addresses=frozenset({SERVICE_IP}))
    result = await Prober(1.0).probe(target(unbound), check)
    assert result.outcome is Outcome.OK
    assert result.rcode == "NOERROR"
    assert result.answers == (SERVICE_IP,)
    assert result.rtt_seconds is not None and 0 < result.rtt_seconds < 0.5
    assert result.qname == KUBERNETES and not result.udp_only


async def test_all_addresses_of_a_name_must_match(unbound: RunningServer) -> None:
    name = "multi.default.svc.cluster.local"
    both = Check("multi", name, expect_addresses=frozenset({"10.96.0.7", "10.96.0.8"}))
    one = Check("multi", name, expect_addresses=frozenset({"10.96.0.7"}))
    prober = Prober(1.0)
    assert (await prober.probe(target(unbound), both)).outcome is Outcome.OK
    assert (await prober.probe(target(unbound), one)).outcome is Outcome.WRONG_ANSWER


async def test_other_address_is_wrong_answer_and_shows_what_came(unbound: RunningServer) -> None:
    check = Check("svc", KUBERNETES, expect_addresses=frozenset({"10.96.0.99"}))
    result = await Prober(1.0).probe(target(unbound), check)
    assert result.outcome is Outcome.WRONG_ANSWER
    assert result.answers == (SERVICE_IP,)
    assert "10.96.0.99" in result.detail


async def test_missing_name_is_nxdomain(unbound: RunningServer) -> None:
    result = await Prober(1.0).probe(target(unbound), Check("x", "nope.svc.cluster.local"))
    assert (result.outcome, result.rcode) == (Outcome.NXDOMAIN, "NXDOMAIN")


async def test_nxdomain_is_ok_when_expected_and_an_answer_is_not(unbound: RunningServer) -> None:
    prober = Prober(1.0)
    missing = Check("neg", "nope.svc.cluster.local", expect_rcode="NXDOMAIN")
    present = Check("neg", KUBERNETES, expect_rcode="NXDOMAIN")
    assert (await prober.probe(target(unbound), missing)).outcome is Outcome.OK
    assert (await prober.probe(target(unbound), present)).outcome is Outcome.WRONG_ANSWER


async def test_name_without_that_type_is_nodata(unbound: RunningServer) -> None:
    result = await Prober(1.0).probe(target(unbound), Check("x", KUBERNETES, qtype="AAAA"))
    assert (result.outcome, result.rcode, result.answers) == (Outcome.NODATA, "NOERROR", ())


async def test_aaaa_answer_is_read(unbound: RunningServer) -> None:
    check = Check("v6", "v6only.default.svc.cluster.local", qtype="AAAA",
                  expect_addresses=frozenset({"fd00::1"}))
    result = await Prober(1.0).probe(target(unbound), check)
    assert (result.outcome, result.answers) == (Outcome.OK, ("fd00::1",))


async def test_name_outside_the_zone_is_refused(unbound: RunningServer) -> None:
    result = await Prober(1.0).probe(target(unbound), Check("x", "example.org"))
    assert (result.outcome, result.rcode) == (Outcome.REFUSED, "REFUSED")


async def test_zone_that_failed_to_load_is_servfail(named_servfail: RunningServer) -> None:
    result = await Prober(1.0).probe(target(named_servfail), Check("x", KUBERNETES))
    assert (result.outcome, result.rcode) == (Outcome.SERVFAIL, "SERVFAIL")


async def test_cname_is_followed_to_the_address(knot: RunningServer) -> None:
    check = Check("alias", "alias.default.svc.cluster.local",
                  expect_addresses=frozenset({SERVICE_IP}))
    result = await Prober(1.0).probe(target(knot), check)
    assert (result.outcome, result.answers) == (Outcome.OK, (SERVICE_IP,))


async def test_closed_port_is_unreachable_at_once() -> None:
    closed = Target(TargetKind.POD, "127.0.0.1", free_port())
    result = await Prober(1.0).probe(closed, Check("x", KUBERNETES))
    assert result.outcome is Outcome.UNREACHABLE
    assert result.rtt_seconds is not None and result.rtt_seconds < 0.5
    assert not result.udp_only  # TCP is refused as well


async def test_every_probe_reaches_the_server(unbound: RunningServer) -> None:
    prober = Prober(1.0)
    check = Check("svc", KUBERNETES, expect_addresses=frozenset({SERVICE_IP}))
    before = unbound.queries()
    results = [await prober.probe(target(unbound), check) for _ in range(25)]
    assert all(r.ok for r in results)
    assert unbound.queries() - before == 25
