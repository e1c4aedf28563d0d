"""Diagnosis: each state from synthetic health, with its candidates."""

from __future__ import annotations

import pytest

from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.model import (
    ClusterState,
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    Target,
    TargetKey,
    TargetSet,
)
from tests.unit.helpers import SERVICE, pod, targetset

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
        ([U, N, H], H, DiagnosisState.POD, ["coredns-1"]),
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
