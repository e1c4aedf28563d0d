"""Actions: the writes remediation makes — evict, delete, post an Event — answers as values,
and the fresh read of a pod (with the DNS Service and its endpoints) before a restart.

Owns: the requests through the kubernetes_asyncio client (an Eviction with a
uid precondition, so a replacement that took the name is never evicted; a
delete with the same precondition and the pod's own grace period; core/v1
Events from reporting component ``corednsprobe``) and reading each answer
into an ``ActionOutcome``: 404, and 409 from the uid precondition, mean the pod
was already gone or replaced (another 409 is a plain failure, retried later),
429 a PodDisruptionBudget (with Retry-After and the causes), 403 a missing
permission. No answer at all (a timeout, a reset connection, an answer that
cannot be read) is ``no_answer``: the request may have reached the API server
and taken effect, so it is never read as a plain failure.
Never does: decide whether to act, retry, or raise on an API error.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from corednsprobe import logs
from corednsprobe.kube.client import ApiClient, ApiError, call
from corednsprobe.model import PodRef
from corednsprobe.remedy.history import Result

log = logs.get(__name__)
COMPONENT = "corednsprobe"
REQUEST_TIMEOUT = 15.0
MESSAGE_LIMIT = 1024  # the API server rejects longer Event messages


class Reason:
    """Event reasons, as `kubectl get events` and alert rules see them."""

    PROBE_FAILED = "CoreDNSProbeFailed"
    RESTARTED = "CoreDNSPodRestarted"
    BLOCKED = "CoreDNSRestartBlocked"
    DRY_RUN = "CoreDNSRestartDryRun"
    MANUAL = "ManualInterventionRequired"
    RECOVERED = "CoreDNSPodRecovered"
    PATH = "CoreDNSPathUnreachable"  # sick from some vantages' nodes only: not restarted


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    result: Result
    status: int | None  # HTTP status; None when no answer came
    message: str
    retry_after: float | None = None
    causes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Involved:
    """The object an Event is about."""

    kind: str
    name: str
    namespace: str
    uid: str = ""
    api_version: str = "v1"

    @classmethod
    def pod(cls, ref: PodRef, namespace: str) -> Involved:
        return cls("Pod", ref.name, namespace, ref.uid)

    @classmethod
    def workload(cls, workload: str, namespace: str) -> Involved | None:
        """``Deployment/coredns`` as an Event target; None for a workload we cannot name."""
        kind, _, name = workload.partition("/")
        versions = {"Deployment": "apps/v1", "DaemonSet": "apps/v1", "StatefulSet": "apps/v1",
                    "ReplicaSet": "apps/v1"}
        if kind not in versions or not name:
            return None
        return cls(kind, name, namespace, api_version=versions[kind])


async def evict(api: ApiClient, namespace: str, pod: PodRef) -> ActionOutcome:
    body = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod.name, namespace=namespace),
        delete_options=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=pod.uid or None)))
    try:
        await call(client.CoreV1Api(api).create_namespaced_pod_eviction, pod.name, namespace,
                   body, deadline=REQUEST_TIMEOUT)
    except ApiError as exc:
        return outcome_of(exc)
    except Exception as exc:  # no (readable) answer: it may have been done all the same
        return unanswered(exc)
    return ActionOutcome(Result.DONE, 201, f"evicted {pod.name}")


async def delete(api: ApiClient, namespace: str, pod: PodRef) -> ActionOutcome:
    """Delete with a uid precondition; no grace period given, so the pod's own applies."""
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=pod.uid or None))
    try:
        await call(client.CoreV1Api(api).delete_namespaced_pod, pod.name, namespace,
                   body=options, deadline=REQUEST_TIMEOUT)
    except ApiError as exc:
        return outcome_of(exc)
    except Exception as exc:  # no (readable) answer: it may have been done all the same
        return unanswered(exc)
    return ActionOutcome(Result.DONE, 200, f"deleted {pod.name}")


def unanswered(exc: Exception) -> ActionOutcome:
    """A write whose answer never came (or could not be read): it may have taken effect."""
    return ActionOutcome(Result.NO_ANSWER, None,
                         f"no answer: {type(exc).__name__}: {exc}" if str(exc)
                         else f"no answer: {type(exc).__name__}")


def outcome_of(exc: ApiError) -> ActionOutcome:
    """What an error answer means for a remediation."""
    message = exc.message
    details = exc.body.get("details") or {}
    causes = tuple(str(c.get("message") or c.get("reason") or "")
                   for c in details.get("causes") or () if isinstance(c, dict))
    status = exc.status
    if status == 404 or (status == 409 and "precondition" in message.lower()):
        return ActionOutcome(Result.GONE, status, message)
    if status == 429:
        return ActionOutcome(Result.PDB_BLOCKED, status, message, _retry_after(exc, details),
                             causes)
    if status == 403:
        return ActionOutcome(Result.FORBIDDEN, status, message)
    return ActionOutcome(Result.FAILED, status, message, _retry_after(exc, details), causes)


def _retry_after(exc: ApiError, details: dict[str, Any]) -> float | None:
    for value in (exc.headers.get("Retry-After"), details.get("retryAfterSeconds")):
        try:
            seconds = float(value) if value is not None else 0.0
        except (TypeError, ValueError):
            continue
        if seconds > 0:
            return seconds
    return None


async def post_event(api: ApiClient, about: Involved, reason: str, message: str, *, warning: bool,
                     instance: str, now: float) -> bool:
    """Post one core/v1 Event; False (and a log line) when the API refuses it."""
    stamp = datetime.fromtimestamp(int(now), UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"{about.name}.{secrets.token_hex(8)}",
                                     namespace=about.namespace),
        involved_object=client.V1ObjectReference(
            kind=about.kind, name=about.name, namespace=about.namespace,
            uid=about.uid or None, api_version=about.api_version),
        reason=reason, message=message[:MESSAGE_LIMIT], type="Warning" if warning else "Normal",
        source=client.V1EventSource(component=COMPONENT), reporting_component=COMPONENT,
        reporting_instance=instance, first_timestamp=stamp, last_timestamp=stamp, count=1)
    try:
        await call(client.CoreV1Api(api).create_namespaced_event, about.namespace, event,
                   deadline=REQUEST_TIMEOUT)
    except ApiError as exc:
        log.warning("event_not_posted", reason=reason, about=f"{about.kind}/{about.name}",
                    status=exc.status, error=outcome_of(exc).message)
        return False
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("event_not_posted", reason=reason, about=f"{about.kind}/{about.name}",
                    error=str(exc) or type(exc).__name__)
        return False
    return True


@dataclass(frozen=True, slots=True)
class Fresh:
    """What the API says right now, read just before a restart: the pod (None: 404),
    the DNS Service, and the objects that list its endpoints (EndpointSlices, or the
    legacy Endpoints where discovery.k8s.io/v1 is not served), each as its JSON."""

    pod: dict[str, Any] | None
    service: dict[str, Any]
    endpoints: tuple[dict[str, Any], ...]


async def read_fresh(api: ApiClient, namespace: str, service: str, name: str) -> Fresh:
    """Read the pod, the Service and its endpoints; raise on any answer but a pod's 404."""
    core = client.CoreV1Api(api)
    try:
        pod = await call(core.read_namespaced_pod, name, namespace, deadline=REQUEST_TIMEOUT)
    except ApiError as exc:
        if exc.status != 404:
            raise
        pod = None
    svc = await call(core.read_namespaced_service, service, namespace, deadline=REQUEST_TIMEOUT)
    try:
        slices = await call(client.DiscoveryV1Api(api).list_namespaced_endpoint_slice,
                            namespace, label_selector=f"kubernetes.io/service-name={service}",
                            deadline=REQUEST_TIMEOUT)
        listed = tuple(api.sanitize_for_serialization(s) for s in slices.items or ())
    except ApiError as exc:
        if exc.status != 404:
            raise
        legacy = await call(core.read_namespaced_endpoints, service, namespace,
                            deadline=REQUEST_TIMEOUT)
        listed = (api.sanitize_for_serialization(legacy),)
    as_json = api.sanitize_for_serialization
    return Fresh(as_json(pod) if pod is not None else None, as_json(svc), listed)


def endpoint_uids(objects: tuple[dict[str, Any], ...]) -> frozenset[str]:
    """The pod uids that EndpointSlices (or legacy Endpoints) name as endpoints."""
    refs: list[Any] = []
    for obj in objects:
        refs += [ep.get("targetRef") for ep in obj.get("endpoints") or ()]
        for subset in obj.get("subsets") or ():
            for field in ("addresses", "notReadyAddresses"):
                refs += [a.get("targetRef") for a in subset.get(field) or ()]
    return frozenset(str(r.get("uid")) for r in refs if isinstance(r, dict) and r.get("uid"))
