"""Replicas: the prober's own pods, as its own Service's EndpointSlices list them.

Owns: an informer over the EndpointSlices of the prober's Service (in the
prober's namespace) and the immutable list of ``Replica``s read from them —
each endpoint's address, the pod it names (``targetRef``), its node and the
Service's HTTP port. These are the only addresses the leader ever asks for a
vantage view: nobody else on the pod network can feed it a verdict. An
endpoint without a pod ``targetRef`` or an address is skipped (and counted),
never guessed at.
Never does: ask a replica anything, judge, or write to the API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from corednsprobe import logs
from corednsprobe.kube.client import ApiClient, Obj
from corednsprobe.kube.informer import DEFAULT_TIMING, Informer, Timing

log = logs.get(__name__)
HTTP_PORT_NAME = "http"


@dataclass(frozen=True, slots=True)
class Replica:
    """One prober pod the API lists as an endpoint of the prober's Service."""

    pod: str
    address: str
    port: int
    node: str = ""  # the EndpointSlice's nodeName; "" when it gives none
    ready: bool = True

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/vantage"


def replicas_from(slices: Mapping[str, Obj], default_port: int,
                  skip: Callable[[str], None] = lambda _why: None) -> tuple[Replica, ...]:
    """The replicas the slices list, one per pod (the first address), sorted by pod."""
    out: dict[str, Replica] = {}
    for sl in slices.values():
        try:
            port = _http_port(sl.get("ports"), default_port)
            for ep in sl.get("endpoints") or ():
                ref = ep.get("targetRef") or {}
                addresses = ep.get("addresses") or []
                if ref.get("kind") != "Pod" or not ref.get("name") or not addresses:
                    skip("endpoint without a pod or an address")
                    continue
                ready = (ep.get("conditions") or {}).get("ready") is not False
                name = str(ref["name"])
                out.setdefault(name, Replica(name, str(addresses[0]), port,
                                             str(ep.get("nodeName") or ""), ready))
        except (AttributeError, TypeError, ValueError, KeyError):
            skip("malformed EndpointSlice")
    return tuple(sorted(out.values(), key=lambda r: r.pod))


def _http_port(ports: object, default: int) -> int:
    if not isinstance(ports, list):
        return default
    tcp = [p for p in ports if (p.get("protocol") or "TCP") == "TCP" and p.get("port")]
    for p in tcp:
        if p.get("name") == HTTP_PORT_NAME:
            return int(p["port"])
    return int(tcp[0]["port"]) if tcp else default


class ReplicaView:
    """Keeps ``current``, the replicas of the prober's Service, from a watch."""

    def __init__(self, api: ApiClient, *, namespace: str, service: str, default_port: int,
                 timing: Timing = DEFAULT_TIMING,
                 on_restart: Callable[[str, str], None] = lambda _n, _r: None,
                 on_skip: Callable[[str], None] = lambda _kind: None) -> None:
        self.namespace = namespace
        self.service = service
        self.default_port = default_port
        self.current: tuple[Replica, ...] = ()
        self._on_skip = on_skip
        self.informer = Informer(
            api, f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            name="replicas", on_change=self._rebuild, on_restart=on_restart, timing=timing,
            label_selector=f"kubernetes.io/service-name={service}")

    async def run(self) -> NoReturn:
        await self.informer.run()

    def _rebuild(self, slices: Mapping[str, Obj]) -> None:
        found = replicas_from(slices, self.default_port, self._skip)
        if found != self.current:
            log.info("replicas_changed", service=f"{self.namespace}/{self.service}",
                     replicas=[f"{r.pod}@{r.node or '?'}" for r in found])
        self.current = found

    def _skip(self, why: str) -> None:
        self._on_skip("EndpointSlice")
        log.debug("replica_skipped", reason=why)

    def get(self, pod: str) -> Replica | None:
        return next((r for r in self.current if r.pod == pod), None)
