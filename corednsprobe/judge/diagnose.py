"""Diagnosis: reasons across all targets about what is wrong, once a round.

Owns: telling one sick pod from a sick Service path from a shared cause
(widespread failure, a broken upstream), and naming the pods that may be
restarted and why. Never does: I/O, or act on its verdict.

The rule for "widespread" protects the cluster from its own cure: when more
than ``max_unhealthy_fraction`` of the judged pods are unhealthy, the likely
cause is shared (network, upstream, the prober itself) and no pod is a
candidate. A single unhealthy pod beside a healthy one is always a pod
problem, so that the common two-replica CoreDNS can be repaired; a lone pod
with no healthy peer to compare with is never restarted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corednsprobe.model import (
    ClusterState,
    Diagnosis,
    DiagnosisState,
    Evidence,
    Health,
    HealthState,
    PodEvidence,
    TargetKey,
    TargetSet,
)


@dataclass(frozen=True, slots=True)
class Policy:
    max_unhealthy_fraction: float = 0.49
    failure_ratio: float = 0.5


def diagnose(targets: TargetSet, healths: Mapping[TargetKey, Health], policy: Policy) -> Diagnosis:
    """The verdict for this round, with its reason and evidence."""
    if targets.state is ClusterState.SYNCING:
        return Diagnosis(DiagnosisState.SYNCING, "waiting for the first list from the API")
    if targets.state is ClusterState.NO_SERVICE:
        return Diagnosis(DiagnosisState.NO_SERVICE, "the DNS Service does not exist")
    if targets.state is ClusterState.NO_ENDPOINTS or not targets.pods:
        return Diagnosis(DiagnosisState.NO_ENDPOINTS, "the DNS Service has no endpoints")

    pods = [healths[t.key] for t in targets.pods if t.key in healths]
    judged = [h for h in pods if h.state in (HealthState.HEALTHY, HealthState.UNHEALTHY)]
    sick = [h for h in judged if h.state is HealthState.UNHEALTHY]
    well = [h for h in judged if h.state is HealthState.HEALTHY]
    services = [healths[t.key] for t in targets.services if t.key in healths]
    service_sick = [h for h in services if h.state is HealthState.UNHEALTHY]
    evidence = _evidence(pods, judged, sick, services)

    too_many = len(sick) >= 2 and len(sick) / len(judged) > policy.max_unhealthy_fraction
    if sick and (not well or too_many):
        reason = (
            f"{len(sick)} of {len(judged)} judged pods unhealthy "
            f"(more than {policy.max_unhealthy_fraction:.0%}, or no healthy peer): a shared cause"
        )
        return Diagnosis(DiagnosisState.WIDESPREAD, reason, (), evidence)
    if sick:
        names = ", ".join(h.target.name for h in sick)
        return Diagnosis(
            DiagnosisState.POD,
            f"{len(sick)} of {len(judged)} judged pods unhealthy while the others answer: {names}",
            tuple(h.target for h in sick),
            evidence,
        )
    if service_sick:
        return Diagnosis(
            DiagnosisState.SERVICE_PATH,
            "the ClusterIP fails while every pod answers: kube-proxy, conntrack or the network",
            (),
            evidence,
        )
    if judged and all(_upstream_failing(h, policy) for h in judged):
        return Diagnosis(
            DiagnosisState.UPSTREAM,
            "only the external name fails, on every pod: the upstream resolvers",
            (),
            evidence,
        )
    if not judged:
        return Diagnosis(DiagnosisState.HEALTHY, "no pod judged yet (grace or too few samples)",
                         (), evidence)
    return Diagnosis(DiagnosisState.HEALTHY, "every judged target answers", (), evidence)


def _upstream_failing(h: Health, policy: Policy) -> bool:
    if not h.upstream_samples:
        return False
    return h.upstream_failures / h.upstream_samples >= policy.failure_ratio


def _evidence(
    pods: list[Health], judged: list[Health], sick: list[Health], services: list[Health]
) -> Evidence:
    return Evidence(
        pods=len(pods),
        pods_judged=len(judged),
        pods_unhealthy=len(sick),
        pods_in_grace=sum(1 for h in pods if h.state is HealthState.GRACE),
        service=tuple(h.state.value for h in services),
        unhealthy=tuple(PodEvidence(h.target.name, h.samples, h.failures, h.udp_only,
                                    h.outcomes) for h in sick),
    )
