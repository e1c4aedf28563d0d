"""The contract between the sandbox's API side and its DNS side.

The API side (store, controllers, HTTP server) decides which pods exist, their
IPs and readiness; a ``DnsBackend`` makes each of those pods really answer DNS
at its IP, makes the kube-dns ClusterIP reach the ready pods the way kube-proxy
does, and injects faults. Two backends implement it: ``inprocess`` (no root;
a responder per pod on its own 127.x address, a relay for the ClusterIP) and
``netns`` (root; a real DNS server from Debian's packages per pod in its own
network namespace, nft DNAT for the ClusterIP).

Never does: know about the Kubernetes API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ZoneData:
    """What every CoreDNS pod of the sandbox answers from.

    ``records`` maps a lower-case FQDN without the trailing dot to its addresses
    (A for IPv4, AAAA for IPv6). Names under ``domain`` that are not in
    ``records`` are NXDOMAIN; names outside ``domain`` are REFUSED.
    """

    domain: str
    records: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class FaultKind(StrEnum):
    NONE = "none"
    DROP = "udp-drop"  # UDP/53 silently dropped; TCP and the health port still answer
    REJECT = "udp-reject"  # UDP/53 answered with ICMP port unreachable
    DELAY = "delay"  # every UDP reply delayed by ``value`` milliseconds
    LOSS = "loss"  # ``value`` percent of UDP queries dropped at random
    SERVFAIL = "servfail"  # every query answered SERVFAIL
    WRONG_ANSWER = "wrong-answer"  # A answers carry an address that is not the truth


_ALIASES = {"drop": FaultKind.DROP.value, "reject": FaultKind.REJECT.value}


HEALTH_DOWN = "health-down"  # the pod's liveness port (:8080/health) stops answering


@dataclass(frozen=True, slots=True)
class Fault:
    """A DNS fault of one pod, and whether its liveness endpoint is down besides
    (``health_down``: packets to the health port dropped, as when the process hangs;
    the readiness port keeps answering, so the sandbox's kubelet keeps the pod ready)."""

    kind: FaultKind = FaultKind.NONE
    value: float = 0.0
    health_down: bool = False

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse ``udp-drop``, ``udp-reject``, ``delay:<ms>``, ``loss:<pct>``, ``servfail``,
        ``wrong-answer`` or ``none`` (the ``udp=`` prefix is optional; ``drop`` and
        ``reject`` are read as ``udp-drop`` and ``udp-reject``), optionally followed by
        ``+health-down``, or ``health-down`` alone. These names are the one vocabulary
        of the demo, the control API and what both print."""
        spec = text.strip().lower().removeprefix("udp=")
        if spec == HEALTH_DOWN:
            return cls(health_down=True)
        spec, plus, extra = spec.partition("+")
        if plus and extra != HEALTH_DOWN:
            raise ValueError(f"unknown fault {text!r}: only +{HEALTH_DOWN} may follow a fault")
        name, _, arg = spec.partition(":")
        name = _ALIASES.get(name, name)
        try:
            kind = FaultKind(name)
        except ValueError:
            valid = ", ".join([k.value for k in FaultKind] + [HEALTH_DOWN])
            raise ValueError(f"unknown fault {text!r}: expected one of {valid}") from None
        if kind in (FaultKind.DELAY, FaultKind.LOSS):
            try:
                value = float(arg)
            except ValueError:
                raise ValueError(f"fault {text!r} needs a number: {name}:<n>") from None
            if kind is FaultKind.LOSS and not 0 <= value <= 100:
                raise ValueError(f"fault {text!r}: loss is a percentage from 0 to 100")
            if not 0 <= value < float("inf"):
                raise ValueError(f"fault {text!r}: delay is milliseconds, 0 or more")
            return cls(kind, value, bool(plus))
        if arg:
            raise ValueError(f"fault {name!r} takes no argument")
        return cls(kind, health_down=bool(plus))

    def __str__(self) -> str:
        said = f"{self.kind.value}:{self.value:g}" if self.value else self.kind.value
        if not self.health_down:
            return said
        return HEALTH_DOWN if self.kind is FaultKind.NONE else f"{said}+{HEALTH_DOWN}"


class DnsBackend(Protocol):
    """Where the sandbox's CoreDNS pods and its kube-dns ClusterIP really live."""

    name: str  # "inprocess" or "netns"
    port: int  # the DNS port every pod serves and the Service exposes
    health_port: int  # every pod's GET /health (CoreDNS's health plugin; the livenessProbe)
    ready_port: int  # every pod's GET /ready (CoreDNS's ready plugin; the readinessProbe)
    nsid: bool  # pods started from now on answer EDNS NSID with their pod name

    async def start(self) -> None:
        """Create shared plumbing (bridge, client-side nft table, relays)."""

    async def close(self) -> None:
        """Stop every process and remove every namespace/table/address created.
        Idempotent; safe after a failed start."""

    def allocate_pod_ip(self) -> str:
        """A fresh pod IP, never handed out twice in the backend's life."""

    def allocate_service_ip(self) -> str:
        """A fresh ClusterIP (reachable for the DNS Service, data-only for others)."""

    def allocate_node_ip(self) -> str:
        """A fresh node address (a node's InternalIP), where NodePorts answer."""

    def allocate_external_ip(self) -> str:
        """A fresh address from the sandbox "cloud", for a LoadBalancer's ingress."""

    async def add_pod(self, pod: str, ip: str, zone: ZoneData) -> None:
        """Start a DNS server for ``pod`` answering ``zone`` at ``ip``:``port``
        over UDP and TCP. Returns once it answers."""

    async def remove_pod(self, pod: str) -> None:
        """Stop ``pod``'s server and free its address."""

    async def pod_alive(self, pod: str) -> bool:
        """The readiness port's view: true while the server process runs,
        whatever UDP faults are injected. The sandbox kubelet reads readiness
        from here, as the real kubelet's HTTP probe would."""

    async def update_zone(self, zone: ZoneData) -> None:
        """New truth (e.g. default/kubernetes got a new ClusterIP) for every pod."""

    async def set_service(self, cluster_ip: str, backends: Sequence[str]) -> None:
        """Route ``cluster_ip``:``port`` (UDP and TCP) to the ready pod IPs, as
        kube-proxy does; an empty list makes the ClusterIP reject, as kube-proxy does."""

    async def set_frontend(self, address: str, port: int, backends: Sequence[str]) -> None:
        """Route ``address``:``port`` (UDP and TCP) to the pod IPs at the DNS port, as
        kube-proxy does for a NodePort on a node address or a LoadBalancer ingress IP;
        an empty list removes the route (nothing answers there any more)."""

    async def set_pod_fault(self, pod: str, fault: Fault) -> None:
        """Apply ``fault`` to ``pod``'s DNS, replacing any earlier one."""

    async def set_service_fault(self, broken: bool) -> None:
        """Break (drop) or heal the ClusterIP path only; pod IPs keep answering."""

    def client_hint(self) -> str:
        """One line for people: how to reach the pods from this machine."""
