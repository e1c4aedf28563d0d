"""The vocabulary of corednsprobe: plain, immutable data shared by every stage.

Owns: what a target is, what a check asks and expects, what one probe found.
Never does: I/O, clocks, or any logic beyond small derived properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    """How one probe ended. Every DNS failure is one of these, never an exception."""

    OK = "ok"
    TIMEOUT = "timeout"  # no acceptable reply before the deadline
    SERVFAIL = "servfail"
    REFUSED = "refused"
    NXDOMAIN = "nxdomain"  # NXDOMAIN where an answer was expected
    NODATA = "nodata"  # NOERROR with no answer of the asked type
    WRONG_ANSWER = "wrong_answer"  # an answer, but not the expected one
    TRUNCATED = "truncated"  # TC bit set on the UDP reply
    MALFORMED = "malformed"  # a reply that does not parse, or another rcode
    UNREACHABLE = "unreachable"  # ICMP unreachable / connection refused
    ERROR = "error"  # local failure (no socket, no route, resolver error)
    # the port-forward tunnel could not be opened (API server or kubelet): never the
    # pod's fault, so never a sample of it (the tracker counts it apart)
    TUNNEL = "tunnel"


TargetKey = tuple[str, str, int, str]


class TargetKind(StrEnum):
    POD = "pod"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """What a person raising a CoreDNS pod's resources needs, from the pod as watched:
    the restart count, the last termination (e.g. OOMKilled, exit 137) and the
    resource requests and limits."""

    name: str
    restarts: int = 0
    last_reason: str = ""  # lastState.terminated.reason, e.g. "OOMKilled"
    last_exit_code: int | None = None
    requests: tuple[tuple[str, str], ...] = ()  # (resource, quantity), e.g. ("memory", "70Mi")
    limits: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "restarts": self.restarts,
                "last_termination_reason": self.last_reason or None,
                "last_exit_code": self.last_exit_code,
                "requests": dict(self.requests), "limits": dict(self.limits)}

    def describe(self) -> str:
        """One phrase, e.g. ``coredns: 7 restarts, last OOMKilled (exit 137), limits
        memory=170Mi, requests cpu=100m memory=70Mi``."""
        said = f"{self.name}: {self.restarts} restart{'' if self.restarts == 1 else 's'}"
        if self.last_reason or self.last_exit_code is not None:
            code = f" (exit {self.last_exit_code})" if self.last_exit_code is not None else ""
            said += f", last {self.last_reason or 'terminated'}{code}"
        for label, pairs in (("limits", self.limits), ("requests", self.requests)):
            said += f", {label} " + (" ".join(f"{k}={v}" for k, v in pairs) or "none")
        return said


@dataclass(frozen=True, slots=True)
class HealthEndpoint:
    """One HTTP endpoint the kubelet probes on a pod, from its spec's ``livenessProbe`` or
    ``readinessProbe`` ``httpGet``; ``host`` "" means the pod's IP (the kubelet's default)."""

    probe: str  # "liveness" or "readiness"
    path: str = "/"
    port: int = 80
    scheme: str = "HTTP"  # or "HTTPS" (the kubelet does not verify its certificate)
    host: str = ""
    container: str = ""

    @property
    def label(self) -> str:
        """The bounded ``endpoint`` label and the name people read: ``:8080/health``."""
        return f":{self.port}{self.path}"


@dataclass(frozen=True, slots=True)
class PodRef:
    """The pod behind a target, as the API last described it."""

    name: str
    uid: str = ""
    node: str = ""
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    created_at: float | None = None  # unix seconds
    workload: str = ""  # controlling workload, e.g. "Deployment/coredns"; "" when unknown
    containers: tuple[ContainerFacts, ...] = ()  # as the pod status last said
    health_endpoints: tuple[HealthEndpoint, ...] = ()  # what the kubelet probes, from the spec

    @property
    def workload_key(self) -> str:
        """The workload remediation counts against: the controller, else a guess from the
        name (what is left of it without its random suffix) when the API gave none."""
        return self.workload or f"Pod/{self.name.rsplit('-', 1)[0]}"


@dataclass(frozen=True, slots=True)
class Target:
    """One address to ask: a CoreDNS pod, or the Service's ClusterIP."""

    kind: TargetKind
    address: str
    port: int = 53
    pod: PodRef | None = None

    @property
    def name(self) -> str:
        """A short, bounded label: the pod name, or ``service``."""
        return self.pod.name if self.pod is not None else self.kind.value

    @property
    def key(self) -> TargetKey:
        """Identity across TargetSets: readiness changes do not make a new target."""
        return (self.kind.value, self.address, self.port, self.pod.uid if self.pod else "")

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Check:
    """One question and what a right answer looks like.

    ``expect_addresses`` None means "any non-empty answer"; an empty frozenset is
    never used. ``expect_rcode`` NXDOMAIN makes a check pass only on NXDOMAIN.
    ``search``/``ndots`` are used only by application-view checks, which go
    through the stub resolver the way a pod's libc or c-ares would.
    """

    name: str
    qname: str
    qtype: str = "A"
    expect_addresses: frozenset[str] | None = None
    expect_rcode: str = "NOERROR"
    search: tuple[str, ...] = ()
    ndots: int = 1
    application_view: bool = False
    upstream: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe of one check against one target found."""

    target: Target
    check: Check
    outcome: Outcome
    rcode: str | None = None
    answers: tuple[str, ...] = ()
    rtt_seconds: float | None = None
    udp_only: bool = False
    at: float = 0.0  # unix seconds when the probe was sent
    qname: str = ""  # the name actually asked (canary names are fresh each round)
    detail: str = ""
    flags: tuple[str, ...] = field(default=())
    records: tuple[str, ...] = field(default=())  # the answer section, as dig prints it
    reach: str = "direct"  # the strategy that carried the probe (reach.Strategy's value)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


class ClusterState(StrEnum):
    """What the API says about the DNS Service, before any probe."""

    SYNCING = "syncing"  # no complete list yet
    OK = "ok"
    NO_SERVICE = "no_service"
    NO_ENDPOINTS = "no_endpoints"


@dataclass(frozen=True, slots=True)
class TargetSet:
    """An immutable snapshot of what to probe and what is true.

    ``expected`` holds the ClusterIP(s) of ``default/kubernetes``: the right
    answer for ``kubernetes.default.svc.<domain>``.
    """

    pods: tuple[Target, ...] = ()
    services: tuple[Target, ...] = ()
    expected: frozenset[str] = frozenset()
    state: ClusterState = ClusterState.SYNCING
    generation: int = 0  # increases with every published snapshot

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.pods + self.services


class HealthState(StrEnum):
    UNKNOWN = "unknown"  # fewer samples than the minimum
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    GRACE = "grace"  # terminating, not ready or too young: never judged


@dataclass(frozen=True, slots=True)
class CheckWindow:
    """The outcomes of one check against one target in its window."""

    check: str  # Check.name
    samples: int
    failures: int


@dataclass(frozen=True, slots=True)
class Health:
    """One target judged over its window at one moment."""

    target: Target
    state: HealthState
    samples: int = 0
    failures: int = 0
    udp_only: int = 0  # failures where TCP still answered
    outcomes: tuple[tuple[str, int], ...] = ()  # (outcome, count) in the window
    upstream_samples: int = 0
    upstream_failures: int = 0
    since: float = 0.0  # when the state last changed
    grace_reason: str = ""
    checks: tuple[CheckWindow, ...] = ()  # per non-upstream check, by name; () when unknown
    tunnel_failures: int = 0  # probes in the window whose tunnel could not open (not samples)
    tunnel_detail: str = ""  # why the latest of them failed

    @property
    def ratio(self) -> float:
        return self.failures / self.samples if self.samples else 0.0


class DiagnosisState(StrEnum):
    SYNCING = "syncing"
    HEALTHY = "healthy"
    POD = "pod"  # a minority of pods sick: they may be restarted
    SERVICE_PATH = "service_path"  # ClusterIP sick while pods are healthy
    WIDESPREAD = "widespread"  # most pods sick: a shared cause
    SUSPECT = "suspect"  # a minority sick, but the other pods not yet confidently healthy
    UPSTREAM = "upstream"  # only the external name fails, everywhere
    NO_SERVICE = "no_service"
    NO_ENDPOINTS = "no_endpoints"


class EndpointOutcome(StrEnum):
    """How one GET of a pod's health endpoint ended (never an exception)."""

    OK = "ok"  # 200-399, as the kubelet counts success
    STATUS = "status"  # an HTTP answer outside 200-399 (``status`` holds it)
    TIMEOUT = "timeout"
    REFUSED = "refused"  # connection refused or reset
    ERROR = "error"  # no route, a TLS failure, or a reply that is not HTTP


@dataclass(frozen=True, slots=True)
class EndpointState:
    """The latest GET of one of a pod's health endpoints."""

    endpoint: HealthEndpoint
    outcome: EndpointOutcome
    status: int | None = None
    at: float = 0.0  # unix seconds when it was asked
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is EndpointOutcome.OK

    @property
    def said(self) -> str:
        """``/health ok``, ``/ready 503``, ``/health timeout``."""
        how = str(self.status) if self.outcome is EndpointOutcome.STATUS else self.outcome.value
        return f"{self.endpoint.path} {how}"


def kubelet_view(states: tuple[EndpointState, ...], udp_only: int) -> str:
    """What the pod's own health endpoints say beside a DNS verdict of unhealthy, in one
    phrase; "" when the pod has none. The liveness endpoint answering while DNS fails is
    the failure coredns/coredns#3617 describes: the kubelet keeps such a pod."""
    if not states:
        return ""
    said = ", ".join(s.said for s in states)
    dns = "DNS over UDP" if udp_only else "DNS"
    if all(s.ok for s in states):
        return f"{said} — kubelet sees healthy while {dns} fails (coredns#3617)"
    if any(not s.ok for s in states if s.endpoint.probe == "liveness"):
        return (f"{said} — the kubelet's liveness probe fails as well (as seen from here, "
                "not from the pod's node): the kubelet will likely restart it")
    return (f"{said} — the kubelet's readiness probe fails as well (as seen from here): "
            "the kubelet will likely take it out of the Service")


@dataclass(frozen=True, slots=True)
class PodEvidence:
    """What the window of one unhealthy pod showed."""

    name: str
    samples: int
    failures: int
    udp_only: int
    outcomes: tuple[tuple[str, int], ...] = ()  # (outcome, count), as in Health
    since: float = 0.0  # when the pod turned unhealthy (Health.since)
    endpoints: tuple[EndpointState, ...] = ()  # its health endpoints' latest states

    @property
    def kubelet_view(self) -> str:
        """The health endpoints beside the DNS verdict (see ``kubelet_view``)."""
        return kubelet_view(self.endpoints, self.udp_only)

    @property
    def summary(self) -> str:
        """One line for Events and /status: ``8/10 failed, udp_only=8, timeout=8``."""
        outcomes = " ".join(f"{name}={count}" for name, count in self.outcomes)
        return f"{self.failures}/{self.samples} failed, udp_only={self.udp_only}, {outcomes}"


@dataclass(frozen=True, slots=True)
class Evidence:
    """The counts a verdict rests on."""

    pods: int = 0  # pods in the TargetSet that have a Health
    pods_judged: int = 0  # healthy or unhealthy (not unknown, not in grace)
    pods_unhealthy: int = 0
    pods_in_grace: int = 0
    service: tuple[str, ...] = ()  # HealthState value of each Service target
    unhealthy: tuple[PodEvidence, ...] = ()  # one per unhealthy pod
    unconfirmed: tuple[str, ...] = ()  # pods not sick whose windows are not confidently healthy
    tunnel_failed: tuple[str, ...] = ()  # targets whose port-forward tunnel could not open

    def pod(self, name: str) -> PodEvidence | None:
        """The evidence against the pod called ``name``, if it is unhealthy."""
        return next((p for p in self.unhealthy if p.name == name), None)

    def as_dict(self) -> dict[str, str]:
        """The flat string map /status shows under ``diagnosis.evidence``."""
        out = {
            "pods": str(self.pods),
            "pods_judged": str(self.pods_judged),
            "pods_unhealthy": str(self.pods_unhealthy),
            "pods_in_grace": str(self.pods_in_grace),
            "service": ",".join(self.service) or "none",
        }
        out.update((f"pod/{p.name}", p.summary) for p in self.unhealthy)
        out.update((f"pod/{p.name}/health_endpoint", p.kubelet_view)
                   for p in self.unhealthy if p.endpoints)
        if self.unconfirmed:
            out["pods_unconfirmed"] = ",".join(self.unconfirmed)
        if self.tunnel_failed:
            out["tunnel_failed"] = ",".join(self.tunnel_failed)
        return out


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The verdict of one round across all targets, with its evidence."""

    state: DiagnosisState
    reason: str
    candidates: tuple[Target, ...] = ()  # pods that may be restarted
    evidence: Evidence | None = None  # None before any target is judged (syncing, no service)

    def evidence_of(self, name: str) -> str:
        """The one-line evidence against pod ``name``, or "" when there is none."""
        found = self.evidence.pod(name) if self.evidence is not None else None
        return found.summary if found is not None else ""

    def kubelet_view_of(self, name: str) -> str:
        """What pod ``name``'s health endpoints say beside its DNS failures, or ""."""
        found = self.evidence.pod(name) if self.evidence is not None else None
        return found.kubelet_view if found is not None else ""


@dataclass(frozen=True, slots=True)
class RoundReport:
    number: int
    tick: float  # loop time the round was due
    duration: float  # seconds from the tick to the last probe's end
    probes: int
    skipped: int  # jobs dropped because their target left during the round
    overrun: bool  # the round outlasted its interval
    results: tuple[ProbeResult, ...] = ()  # in the order the probes ended


class IgnoredReply(StrEnum):
    """Why a datagram on a probe's socket was not taken as its reply (bounded labels)."""

    OTHER_SOURCE = "other_source"  # not from the target's address and port
    UNREADABLE = "unreadable"  # no whole header or question to tie it to the probe
    OTHER_ID = "other_id"  # a readable ID, not the probe's
    NOT_A_RESPONSE = "not_a_response"  # the QR bit is clear: a query, not a reply
    OTHER_QUESTION = "other_question"  # no question, or another one
