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


class TargetKind(StrEnum):
    POD = "pod"
    SERVICE = "service"


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
    def key(self) -> tuple[str, str, int, str]:
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

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK
