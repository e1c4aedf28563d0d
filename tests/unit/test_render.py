"""The one table renderer, and the commands' tables that must not change byte for byte."""

from __future__ import annotations

from corednsprobe.cli.check import render_table as check_table
from corednsprobe.cli.render import table
from corednsprobe.cli.targets import render_table as targets_table
from corednsprobe.model import Check, Outcome, ProbeResult, Target, TargetKind
from tests.unit.helpers import pod, targetset


def test_columns_are_two_spaces_apart_and_trailing_blanks_trimmed() -> None:
    assert table([("A", "BB", "C"), ("long", "x", "")]) == ["A     BB  C", "long  x"]


def test_right_aligned_columns_and_minimum_widths() -> None:
    lines = table([("NAME", "MS"), ("a", "1.50"), ("b", "12.25")], right={1},
                  min_widths=(6,), indent="  ")
    assert lines == ["  NAME       MS", "  a        1.50", "  b       12.25"]


def test_check_table_is_unchanged_but_for_the_per_server_line() -> None:
    t = Target(TargetKind.SERVICE, "127.0.0.1", 5353)
    results = [
        ProbeResult(t, Check("c", "a.b"), Outcome.OK, "NOERROR", ("10.0.0.1",), 0.00123),
        ProbeResult(t, Check("c", "much.longer.name"), Outcome.TIMEOUT, detail="x y"),
        ProbeResult(t, Check("c", "z"), Outcome.SERVFAIL, "SERVFAIL", (), 0.5, udp_only=True),
    ]
    assert check_table(results) == (
        "SERVER          NAME              OUTCOME   RCODE     RTT_MS  ANSWERS   UDP_ONLY  DETAIL\n"
        "127.0.0.1:5353  a.b               ok        NOERROR   1.23    10.0.0.1  no\n"
        "127.0.0.1:5353  much.longer.name  timeout   -         -       -         no        x y\n"
        "127.0.0.1:5353  z                 servfail  SERVFAIL  500.00  -         yes\n"
        "--- 127.0.0.1:5353: 3 sent, 1 ok, 66.7% loss, rtt min/avg/max 1.23/250.61/500.00 ms\n"
        "1 of 3 probes ok\n")


def test_targets_table_is_unchanged() -> None:
    assert targets_table(targetset(pod(1), pod(2)), 1e9).splitlines() == [
        "KIND     NAME       ADDRESS     PORT  NODE    READY  SERVING  TERMINATING  AGE",
        "pod      coredns-1  10.244.0.1  53    node-1  yes    yes      no           278055h",
        "pod      coredns-2  10.244.0.2  53    node-2  yes    yes      no           278055h",
        "service  service    10.96.0.10  53    -       -      -        -            -",
        "state: ok; kubernetes.default answers: 10.96.0.1"]


def test_demo_table_is_unchanged() -> None:
    from types import SimpleNamespace

    from corednsprobe.cli.demo import render
    from corednsprobe.model import DiagnosisState, Health, HealthState
    from tests.unit.helpers import result

    p1, p2 = pod(1), pod(2)
    diagnosis = SimpleNamespace(state=DiagnosisState.HEALTHY, reason="all fine",
                                candidates=(p1,))
    state = SimpleNamespace(
        diagnosis=diagnosis, rounds=3, targets=targetset(p1, p2),
        healths={p1.key: Health(p1, HealthState.HEALTHY, samples=12, failures=3)},
        last={p1.key: [result(p1, Outcome.OK, 1.0)],
              p2.key: [result(p2, Outcome.TIMEOUT, 1.0, udp_only=True)]})
    lines = render(SimpleNamespace(state=state), 0.0, slots={"coredns-1": 0}.get).splitlines()
    assert lines[1:] == [
        "  restart candidates: coredns-1",
        "  SLOT  TARGET                       ADDRESS                HEALTH       FAIL%  SURE%"
        "  RTT ms  LAST",
        "     0  coredns-1                    10.244.0.1:53          healthy        25%    10%"
        "    1.00  ok",
        "     -  coredns-2                    10.244.0.2:53          unknown          -      -"
        "       -  timeout (udp only)",
        "     -  service (ClusterIP)          10.96.0.10:53          unknown          -      -"
        "       -  -"]


def test_demo_table_names_why_a_pod_is_not_judged_and_the_bound_that_decides() -> None:
    from types import SimpleNamespace

    from corednsprobe.cli.demo import render
    from corednsprobe.model import CheckWindow, DiagnosisState, Health, HealthState

    p1, p2 = pod(1), pod(2)
    diagnosis = SimpleNamespace(state=DiagnosisState.HEALTHY, reason="fine", candidates=())
    state = SimpleNamespace(
        diagnosis=diagnosis, rounds=1, targets=targetset(p1, p2), last={},
        healths={p1.key: Health(p1, HealthState.GRACE, grace_reason="terminating"),
                 p2.key: Health(p2, HealthState.HEALTHY, samples=10, failures=6,
                                checks=(CheckWindow("a", 5, 1), CheckWindow("b", 5, 5)))})
    rows = render(SimpleNamespace(state=state), 0.0).splitlines()
    assert "terminating" in rows[3].split() and "grace" not in rows[3]
    # 60% failing, yet healthy: the table shows why (the window sure of 35% only,
    # and check "b" alone at 5 of 5 is sure of 48%; both below the 50% ratio)
    assert rows[4].split()[3:6] == ["healthy", "60%", "48%"], rows[4]



def test_demo_round_says_what_a_sick_pods_health_endpoints_said() -> None:
    from types import SimpleNamespace

    from corednsprobe.cli.demo import render
    from corednsprobe.model import (
        Diagnosis,
        DiagnosisState,
        EndpointOutcome,
        EndpointState,
        Evidence,
        HealthEndpoint,
        PodEvidence,
    )

    p1, p2 = pod(1), pod(2)
    live = EndpointState(HealthEndpoint("liveness", "/health", 8080), EndpointOutcome.OK, 200)
    evidence = Evidence(pods=2, pods_judged=2, pods_unhealthy=1, unhealthy=(
        PodEvidence("coredns-1", 10, 10, 10, (("timeout", 10),), 0.0, (live,)),))
    diagnosis = Diagnosis(DiagnosisState.POD, "one sick", (p1,), evidence)
    state = SimpleNamespace(diagnosis=diagnosis, rounds=3, targets=targetset(p1, p2),
                            healths={}, last={})
    lines = render(SimpleNamespace(state=state), 0.0).splitlines()
    assert lines[2] == ("  health endpoints of coredns-1: /health ok — kubelet sees healthy "
                        "while DNS over UDP fails (coredns#3617)")
