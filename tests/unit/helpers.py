"""Small builders of model values for the pure-part tests."""

from __future__ import annotations

from corednsprobe.model import (
    Check,
    ClusterState,
    Outcome,
    PodRef,
    ProbeResult,
    Target,
    TargetKind,
    TargetSet,
)

CHECK = Check("cluster_ip", "kubernetes.default.svc.cluster.local.", "A", frozenset({"10.96.0.1"}))
UPSTREAM = Check("external", "example.org.", "A", upstream=True)


def pod(n: int, *, ready: bool = True, terminating: bool = False, created: float = -1e6) -> Target:
    ref = PodRef(f"coredns-{n}", uid=f"uid-{n}", node=f"node-{n}", ready=ready,
                 serving=ready or terminating, terminating=terminating, created_at=created)
    return Target(TargetKind.POD, f"10.244.0.{n}", 53, ref)


SERVICE = Target(TargetKind.SERVICE, "10.96.0.10", 53)


def result(target: Target, outcome: Outcome, at: float, *, check: Check = CHECK,
           udp_only: bool = False) -> ProbeResult:
    answered = outcome not in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.ERROR)
    return ProbeResult(target, check, outcome, at=at, udp_only=udp_only,
                       rcode="NOERROR" if answered else None,
                       rtt_seconds=0.001 if outcome is not Outcome.TIMEOUT else None)


def targetset(*pods: Target, service: bool = True) -> TargetSet:
    return TargetSet(pods, (SERVICE,) if service else (), frozenset({"10.96.0.1"}),
                     ClusterState.OK, 1)
