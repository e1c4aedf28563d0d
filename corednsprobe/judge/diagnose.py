"""Diagnosis: reasons across all targets about what is wrong, once a round.

Owns: telling one sick pod from a sick Service path from a shared cause
(widespread failure, a broken upstream), and naming the pods that may be
restarted and why. Never does: I/O, or act on its verdict.

A port-forward tunnel that could not be opened is the API server's or the
kubelet's failure, never the pod's: such probes are no samples (the tracker),
and the reason names the targets it happened to ("the tunnel could not be
opened ..."), so that nobody reads their unknown state as a pod problem.

The rule for "widespread" protects the cluster from its own cure: when more
than ``max_unhealthy_fraction`` of the judged pods are unhealthy, the likely
cause is shared (network, upstream, the prober itself) and no pod is a
candidate. A single unhealthy pod beside a healthy one is a pod problem, so
that the common two-replica CoreDNS can be repaired; a lone pod with no
healthy peer to compare with is never restarted.

A shared fault does not reach every pod in the same round: the first pod to
break is judged unhealthy while the others still look healthy. So the sick
pods are candidates only when every other pod (not sick, not in grace) is
confidently healthy at that moment: judged healthy over at least
``min_samples`` outcomes, and for each of its checks the one-sided 95% Wilson
*upper* bound of the failure share stays below ``failure_ratio``. Otherwise the verdict is
``suspect``: no candidate, and ``Evidence.unconfirmed`` names the pods that
are not yet confidently healthy. The remediation side holds a ``pod`` verdict
for a confirmation period on top of this: a candidate's ``PodEvidence.since``
says when it turned unhealthy, and the first round it appears among
``candidates`` is when it became one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from corednsprobe.model import (
    CheckWindow,
    ClusterState,
    Diagnosis,
    DiagnosisState,
    EndpointState,
    Evidence,
    Health,
    HealthState,
    PodEvidence,
    TargetKey,
    TargetSet,
)
from corednsprobe.stats import failure_upper_bound


@dataclass(frozen=True, slots=True)
class Policy:
    max_unhealthy_fraction: float = 0.49
    failure_ratio: float = 0.5
    min_samples: int = 5  # a peer's check needs this many outcomes to vouch for it


def diagnose(targets: TargetSet, healths: Mapping[TargetKey, Health], policy: Policy,
             endpoints: Mapping[TargetKey, tuple[EndpointState, ...]] | None = None,
             ) -> Diagnosis:
    """The verdict for this round, with its reason and evidence.

    ``endpoints`` holds the latest states of each pod's own health endpoints (the
    kubelet's view): shown beside the evidence against an unhealthy pod, never a
    part of the verdict."""
    verdict = _diagnose(targets, healths, policy, endpoints)
    tunnel = [healths[t.key] for t in targets.targets
              if t.key in healths and healths[t.key].tunnel_failures]
    if not tunnel:
        return verdict
    names = ", ".join(h.target.name for h in tunnel)
    detail = tunnel[-1].tunnel_detail
    reason = (f"{verdict.reason}; the tunnel could not be opened to {names} "
              f"({sum(h.tunnel_failures for h in tunnel)} probes in the window"
              f"{': ' + detail if detail else ''}): the API server or the kubelet, "
              "never the pod's fault, so nothing is restarted for it")
    evidence = verdict.evidence or Evidence()
    evidence = dataclasses.replace(evidence, tunnel_failed=tuple(h.target.name for h in tunnel))
    return dataclasses.replace(verdict, reason=reason, evidence=evidence)


def _diagnose(targets: TargetSet, healths: Mapping[TargetKey, Health], policy: Policy,
              endpoints: Mapping[TargetKey, tuple[EndpointState, ...]] | None) -> Diagnosis:
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
    unconfirmed = [h.target.name for h in pods if h.state is not HealthState.GRACE
                   and h.state is not HealthState.UNHEALTHY and not confident(h, policy)]
    evidence = _evidence(pods, judged, sick, services, unconfirmed if sick else [],
                         endpoints or {})

    too_many = len(sick) >= 2 and len(sick) / len(judged) > policy.max_unhealthy_fraction
    if sick and (not well or too_many):
        reason = (
            f"{len(sick)} of {len(judged)} judged pods unhealthy "
            f"(more than {policy.max_unhealthy_fraction:.0%}, or no healthy peer): a shared cause"
        )
        return Diagnosis(DiagnosisState.WIDESPREAD, reason, (), evidence)
    if sick and unconfirmed:
        return Diagnosis(
            DiagnosisState.SUSPECT,
            f"{len(sick)} of {len(judged)} judged pods unhealthy, but "
            f"{', '.join(unconfirmed)} not yet confidently healthy: "
            "maybe a shared cause arriving pod by pod; no candidate yet",
            (),
            evidence,
        )
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


def confident(h: Health, policy: Policy) -> bool:
    """Judged healthy over at least ``min_samples`` outcomes, and sure of it: each
    check's failure share is, with 95% confidence, below the failure ratio.

    The upper bound asks enough outcomes of each check by itself (3 clean ones
    of 3 for a ratio of 0.5, 7 with one failure); a per-check ``min_samples``
    would never be met where rounds overrun a short window.
    """
    if h.state is not HealthState.HEALTHY or h.samples < policy.min_samples:
        return False
    windows = h.checks or (CheckWindow("", h.samples, h.failures),)
    return all(failure_upper_bound(w.failures, w.samples) < policy.failure_ratio
               for w in windows)


def _upstream_failing(h: Health, policy: Policy) -> bool:
    if not h.upstream_samples:
        return False
    return h.upstream_failures / h.upstream_samples >= policy.failure_ratio


def _evidence(
    pods: list[Health], judged: list[Health], sick: list[Health], services: list[Health],
    unconfirmed: list[str], endpoints: Mapping[TargetKey, tuple[EndpointState, ...]],
) -> Evidence:
    return Evidence(
        pods=len(pods),
        pods_judged=len(judged),
        pods_unhealthy=len(sick),
        pods_in_grace=sum(1 for h in pods if h.state is HealthState.GRACE),
        service=tuple(h.state.value for h in services),
        unhealthy=tuple(PodEvidence(h.target.name, h.samples, h.failures, h.udp_only,
                                    h.outcomes, h.since, endpoints.get(h.target.key, ()))
                       for h in sick),
        unconfirmed=tuple(unconfirmed),
    )
