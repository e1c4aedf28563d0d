"""``NullBackend``: API only, no DNS.

Owns: handing out pod IPs (10.244.x.y), ClusterIPs (10.96.x.y), node addresses
(192.0.2.x) and LoadBalancer addresses (198.51.100.x) as data, and remembering
what the API side asked of it (pods, zone, service and frontend routes,
faults) so that tests of the API side can look. Never does: open a socket or
answer DNS; nothing it hands out is reachable. ``pod_alive`` is true
while a pod is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address

from corednsprobe.sandbox.backend import Fault, ZoneData


class NullBackend:
    name = "none"
    nsid = False

    def __init__(self, domain: str = "cluster.local", port: int = 53) -> None:
        self.domain = domain
        self.port = port
        self.health_port, self.ready_port = 8080, 8181  # data only, as CoreDNS's defaults
        self.pods: dict[str, str] = {}
        self.zone = ZoneData(domain)
        self.services: dict[str, tuple[str, ...]] = {}
        self.pod_faults: dict[str, Fault] = {}
        self.service_broken = False
        self.frontends: dict[tuple[str, int], tuple[str, ...]] = {}
        self._next_pod = 2
        self._next_service = 10
        self._next_node = 9
        self._next_external = 9

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.pods.clear()
        self.services.clear()

    def allocate_pod_ip(self) -> str:
        self._next_pod += 1
        return str(IPv4Address("10.244.0.0") + self._next_pod)

    def allocate_service_ip(self) -> str:
        self._next_service += 1
        return str(IPv4Address("10.96.0.0") + self._next_service)

    def allocate_node_ip(self) -> str:
        self._next_node += 1
        return str(IPv4Address("192.0.2.0") + self._next_node)  # RFC 5737: data only

    def allocate_external_ip(self) -> str:
        self._next_external += 1
        return str(IPv4Address("198.51.100.0") + self._next_external)  # RFC 5737: data only

    async def add_pod(self, pod: str, ip: str, zone: ZoneData) -> None:
        self.pods[pod] = ip
        self.zone = zone

    async def remove_pod(self, pod: str) -> None:
        self.pods.pop(pod, None)
        self.pod_faults.pop(pod, None)

    async def pod_alive(self, pod: str) -> bool:
        return pod in self.pods

    async def update_zone(self, zone: ZoneData) -> None:
        self.zone = zone

    async def set_service(self, cluster_ip: str, backends: Sequence[str]) -> None:
        self.services[cluster_ip] = tuple(backends)

    async def set_frontend(self, address: str, port: int, backends: Sequence[str]) -> None:
        if backends:
            self.frontends[(address, port)] = tuple(backends)
        else:
            self.frontends.pop((address, port), None)

    async def set_pod_fault(self, pod: str, fault: Fault) -> None:
        self.pod_faults[pod] = fault

    async def set_service_fault(self, broken: bool) -> None:
        self.service_broken = broken

    def client_hint(self) -> str:
        return "API only, no DNS: pod and Service addresses are data, nothing answers there"
