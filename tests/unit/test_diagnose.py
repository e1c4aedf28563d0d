"""Diagnosis: each state from synthetic health, with its candidates."""

from __future__ import annotations

import pytest

from corednsprobe.judge.diagnose import Policy, confident, diagnose
from corednsprobe.judge.tracker import Thresholds, Tracker
from corednsprobe.model import (
    Check,
    CheckWindow,
    ClusterState,
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    Outcome,
    Target,
    TargetKey,
    TargetSet,
)
from tests.unit.helpers import CHECK, SERVICE, pod, targetset

CANARY = Check("nxdomain", "canary.invalid.", "A", None, "NXDOMAIN")

H, U, G, N = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.GRACE, HealthState.UNKNOWN


def verdict(
    states: list[HealthState],
    service: HealthState = H,
    *,
    upstream_failing: list[bool] | None = None,
    policy: Policy | None = None,
) -> Diagnosis:
    pods = [pod(i + 1) for i in range(len(states))]
    healths: dict[TargetKey, Health] = {}
    for i, (p, s) in enumerate(zip(pods, states, strict=True)):
        sick = s is U
        healths[p.key] = Health(
            p, s, samples=10, failures=8 if sick else 0, udp_only=8 if sick else 0,
            outcomes=(("timeout", 8),) if sick else (), upstream_samples=10,
            upstream_failures=10 if upstream_failing and upstream_failing[i] else 0,
        )
    healths[SERVICE.key] = Health(SERVICE, service, samples=10)
    return diagnose(targetset(*pods), healths, policy or Policy())


def names(targets: tuple[Target, ...]) -> list[str]:
    return [t.name for t in targets]


@pytest.mark.parametrize(
    ("states", "service", "state", "candidates"),
    [
        ([H, H, H], H, DiagnosisState.HEALTHY, []),
        ([U, H, H], H, DiagnosisState.POD, ["coredns-1"]),
        ([H, U], H, DiagnosisState.POD, ["coredns-2"]),  # one of two: still a pod problem
        ([U, U, H], H, DiagnosisState.WIDESPREAD, []),  # 67 % > 49 %
        ([U, U, H, H, H], U, DiagnosisState.POD, ["coredns-1", "coredns-2"]),  # 40 %
        ([U, U, U], U, DiagnosisState.WIDESPREAD, []),
        ([U], H, DiagnosisState.WIDESPREAD, []),  # no healthy peer to compare with
        ([U, G, G], H, DiagnosisState.WIDESPREAD, []),  # grace pods are no evidence
        # coredns-2 is not judged yet, so not confidently healthy: the fault may be
        # shared and reaching it next (before issue 15 this was pod, ["coredns-1"])
        ([U, N, H], H, DiagnosisState.SUSPECT, []),
        ([H, H, H], U, DiagnosisState.SERVICE_PATH, []),
        ([G, G], H, DiagnosisState.HEALTHY, []),
    ],
)
def test_states_and_candidates(states: list[HealthState], service: HealthState,
                               state: DiagnosisState, candidates: list[str]) -> None:
    d = verdict(states, service)
    assert d.state is state, d.reason
    assert names(d.candidates) == candidates


def test_upstream_only_when_every_judged_pod_fails_it() -> None:
    d = verdict([H, H, H], upstream_failing=[True, True, True])
    assert d.state is DiagnosisState.UPSTREAM
    assert d.candidates == ()
    d = verdict([H, H, H], upstream_failing=[True, False, True])
    assert d.state is DiagnosisState.HEALTHY


def test_max_fraction_is_tunable() -> None:
    d = verdict([U, U, H], policy=Policy(max_unhealthy_fraction=0.7))
    assert d.state is DiagnosisState.POD
    assert names(d.candidates) == ["coredns-1", "coredns-2"]


def test_evidence_names_sick_pods_with_udp_only() -> None:
    d = verdict([U, H, H])
    assert d.evidence is not None
    assert d.evidence.pods_unhealthy == 1
    assert "udp_only=8" in d.evidence_of("coredns-1")
    assert "timeout=8" in d.evidence_of("coredns-1")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ClusterState.SYNCING, DiagnosisState.SYNCING),
        (ClusterState.NO_SERVICE, DiagnosisState.NO_SERVICE),
        (ClusterState.NO_ENDPOINTS, DiagnosisState.NO_ENDPOINTS),
    ],
)
def test_cluster_states_are_explicit(state: ClusterState, expected: DiagnosisState) -> None:
    d = diagnose(TargetSet(state=state), {}, Policy())
    assert d.state is expected
    assert d.candidates == ()


def _h(target: Target, state: HealthState, checks: list[tuple[int, int]]) -> Health:
    windows = tuple(CheckWindow(f"c{i}", n, f) for i, (n, f) in enumerate(checks))
    return Health(target, state, samples=sum(n for n, _ in checks),
                  failures=sum(f for _, f in checks), checks=windows, since=7.0)


@pytest.mark.parametrize(
    ("peer", "state"),
    [
        ((H, [(12, 0), (12, 0)]), DiagnosisState.POD),  # every peer sure: a pod problem
        ((H, [(12, 1), (12, 0)]), DiagnosisState.POD),  # one loss does not hide a fault
        ((H, [(12, 4), (12, 0)]), DiagnosisState.SUSPECT),  # 4 of 12: maybe failing too
        ((H, [(12, 0), (2, 0)]), DiagnosisState.SUSPECT),  # too few outcomes of one check
        ((H, [(3, 0), (3, 0)]), DiagnosisState.POD),  # 3 clean of each: sure enough
        ((H, [(4, 0)]), DiagnosisState.SUSPECT),  # fewer than min_samples in all
        ((N, [(12, 0), (12, 0)]), DiagnosisState.SUSPECT),  # not judged yet
        ((G, []), DiagnosisState.POD),  # grace pods are neither evidence nor obstacle
    ],
)
def test_a_pod_is_a_candidate_only_while_its_peers_are_confidently_healthy(
        peer: tuple[HealthState, list[tuple[int, int]]], state: DiagnosisState) -> None:
    sick, sure, other = pod(1), pod(2), pod(3)
    healths = {sick.key: _h(sick, U, [(12, 12), (12, 0)]),
               sure.key: _h(sure, H, [(12, 0), (12, 0)]),
               other.key: _h(other, *peer),
               SERVICE.key: Health(SERVICE, H, samples=10)}
    d = diagnose(targetset(sick, sure, other), healths, Policy())
    assert d.state is state, d.reason
    if state is DiagnosisState.POD:
        assert names(d.candidates) == ["coredns-1"]
        assert d.evidence is not None and d.evidence.unconfirmed == ()
    else:
        assert d.candidates == ()
        assert d.evidence is not None and d.evidence.unconfirmed == ("coredns-3",)
        assert "coredns-3" in d.reason
    assert d.evidence.pod("coredns-1") is not None
    assert d.evidence.pod("coredns-1").since == 7.0  # type: ignore[union-attr]


@pytest.mark.parametrize("stagger", [0.5, 1.0, 2.0])
def test_a_shared_fault_arriving_pod_by_pod_never_names_a_candidate(stagger: float) -> None:
    # three pods break one after another (interval 0.5 s, window 10 s, two checks a
    # round, every window full of successes first): while any other pod's window is
    # not confidently healthy, no pod is a candidate, and no round ever says pod
    from tests.unit.helpers import result

    tracker = Tracker(Thresholds(window=10.0, min_pod_age=0.0))
    pods = [pod(1), pod(2), pod(3)]
    ts = targetset(*pods)
    onset = {p.key: 60.0 + i * stagger for i, p in enumerate(pods)}
    seen: list[DiagnosisState] = []
    for r in range(200):
        now = r * 0.5
        for p in pods:
            outcome = Outcome.TIMEOUT if now >= onset[p.key] else Outcome.OK
            for check in (CHECK, CANARY):
                tracker.record(result(p, outcome, now, check=check), now)
        healths = tracker.evaluate(ts.targets, now)
        d = diagnose(ts, healths, Policy())
        seen.append(d.state)
        if d.candidates:
            others = [h for h in healths.values()
                      if h.target.kind.value == "pod" and h.target not in d.candidates]
            assert all(confident(h, Policy()) for h in others), (now, d.reason)
        assert d.state is not DiagnosisState.POD, (now, d.reason)
    assert DiagnosisState.WIDESPREAD in seen
    assert DiagnosisState.SUSPECT in seen


def test_a_genuine_single_pod_fault_still_names_its_pod() -> None:
    from tests.unit.helpers import result

    tracker = Tracker(Thresholds(window=10.0, min_pod_age=0.0))
    pods = [pod(1), pod(2), pod(3)]
    ts = targetset(*pods)
    first_pod = None
    for r in range(200):
        now = r * 0.5
        for p in pods:
            broken = p is pods[0] and now >= 60.0
            for check in (CHECK, CANARY):
                tracker.record(result(p, Outcome.TIMEOUT if broken else Outcome.OK, now,
                                      check=check), now)
        d = diagnose(ts, tracker.evaluate(ts.targets, now), Policy())
        if d.state is DiagnosisState.POD and first_pod is None:
            first_pod = now
            assert names(d.candidates) == ["coredns-1"]
        assert d.state is not DiagnosisState.SUSPECT
    assert first_pod is not None and first_pod - 60.0 < 10.0
