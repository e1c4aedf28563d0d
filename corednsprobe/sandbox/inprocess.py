"""The sandbox's DNS backend that needs no root: everything inside this process.

Owns: one ``Responder`` per pod on its own loopback address (Linux answers for
all of 127/8), all pods on one shared port, and a relay per ClusterIP that
spreads each query over the ready pods at random, the way kube-proxy does;
the same relay on each node's loopback address at a Service's nodePort, and
on a LoadBalancer's ingress address (the sandbox "cloud").

Each pod also answers CoreDNS's ``health`` (``GET /health``) and ``ready``
(``GET /ready``) HTTP endpoints on its address, at the two ports the backend
picked (the pod spec's liveness and readiness probes name them): 200 "OK"
while the pod runs, whatever UDP fault it has; its ``health_down`` fault makes
the health port take requests and never answer.

A ClusterIP without ready pods has no socket at all, so the kernel answers
UDP with ICMP port unreachable and TCP with a reset: the same thing a client
sees from kube-proxy's reject rule. A broken Service path drops UDP and leaves
TCP connections unanswered. A pod's ``reject`` fault closes its UDP socket so
that the kernel answers ICMP port unreachable while TCP stays up.

Never does: touch anything outside 127.52.0.0/14 on the shared port and
127.56.0.0/15 (node and LoadBalancer addresses) on Service ports, or need
privileges.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import socket
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from corednsprobe import logs
from corednsprobe.sandbox.backend import DnsBackend, Fault, ZoneData
from corednsprobe.sandbox.responder import Responder, close_connections

log = logs.get(__name__)

SERVICE_OCTET = 52  # ClusterIPs: 127.52.<instance>.<n>
FIRST_POD_OCTET, LAST_POD_OCTET = 53, 55  # pod IPs: 127.53-55.<instance>.<n>
POD_ADDRESSES = (LAST_POD_OCTET - FIRST_POD_OCTET + 1) * 254  # never handed out twice
NODE_OCTET = 56  # node InternalIPs: 127.56.<instance>.<n>
EXTERNAL_OCTET = 57  # LoadBalancer ingress addresses: 127.57.<instance>.<n>
PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range, so clients never hold these
UDP_FLOW_IDLE_SECONDS = 30.0  # like conntrack's UDP timeout
MAX_UDP_FLOWS = 4096
TCP_IDLE_SECONDS = 30.0
_instances = itertools.count()


def _port_is_free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def pick_free_port(hosts: Sequence[str], attempts: int = 50) -> int:
    """A port free for UDP and TCP on every one of ``hosts``."""
    for _ in range(attempts):
        port = random.randrange(*PORT_RANGE)
        if all(_port_is_free(host, port) for host in hosts):
            return port
    raise OSError(f"no free port in {PORT_RANGE} on {', '.join(hosts)}")


def _address(octet: int, instance: int, index: int) -> str:
    return f"127.{octet}.{instance}.{index}"


class HealthPorts:
    """A pod's health and ready HTTP endpoints, as CoreDNS's plugins serve them."""

    def __init__(self, host: str, health_port: int, ready_port: int) -> None:
        self.host, self.health_port, self.ready_port = host, health_port, ready_port
        self.health_down = False
        self._servers: list[asyncio.Server] = []
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        for port, path in ((self.health_port, b"/health"), (self.ready_port, b"/ready")):
            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            path: bytes = path, liveness: bool = path == b"/health") -> None:
                task = asyncio.current_task()
                assert task is not None
                self._connections[task] = writer
                try:
                    await self._answer(reader, writer, path, liveness)
                finally:
                    self._connections.pop(task, None)
                    writer.close()

            self._servers.append(await asyncio.start_server(serve, self.host, port))

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      path: bytes, liveness: bool) -> None:
        try:
            async with asyncio.timeout(TCP_IDLE_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
                if liveness and self.health_down:
                    await reader.read()  # a hung process: nothing until the client leaves
                    return
                parts = head.split(b"\r\n", 1)[0].split(b" ")
                asked = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
                status, body = (b"200 OK", b"OK") if asked == path else (
                    b"404 Not Found", b"404 page not found\n")
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: " + str(len(body)).encode() +
                             b"\r\nConnection: close\r\n\r\n" + body)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        await close_connections(self._connections)


@dataclass
class _Flow:
    backend: str
    transport: asyncio.DatagramTransport
    last_used: float = field(default_factory=time.monotonic)


class _Upstream(asyncio.DatagramProtocol):
    """The relay's socket towards one pod for one client flow."""

    def __init__(self, relay: ServiceRelay, client: tuple[str, int]) -> None:
        self.relay, self.client = relay, client

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.relay.reply_to_client(self.client, data)

    def error_received(self, exc: Exception) -> None:
        pass  # the pod rejected or vanished; the client sees a timeout


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: ServiceRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        host, port = addr
        self.relay.forward_from_client((str(host), port), data)


class ServiceRelay:
    """A ClusterIP (or NodePort, or LoadBalancer address): UDP and TCP on
    ``host``:``port`` relayed to a random ready pod at ``target_port``."""

    def __init__(self, host: str, port: int, target_port: int | None = None) -> None:
        self.host, self.port = host, port
        self.target_port = port if target_port is None else target_port
        self.backends: tuple[str, ...] = ()
        self.broken = False
        self._listener: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._flows: dict[tuple[str, int], _Flow] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def set_backends(self, backends: Sequence[str]) -> None:
        """Route to ``backends``; with none, close every socket (the kernel rejects)."""
        self.backends = tuple(backends)
        for client, flow in list(self._flows.items()):
            if flow.backend not in self.backends:
                self._drop_flow(client)
        if self.backends and self._listener is None:
            await self._open()
        elif not self.backends:
            self._close_listeners()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port,
                                               reuse_address=True)
        self._listener, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=(self.host, self.port)
        )

    def _close_listeners(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None

    async def close(self) -> None:
        self._close_listeners()
        for client in list(self._flows):
            self._drop_flow(client)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await close_connections(self._connections)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop_flow(self, client: tuple[str, int]) -> None:
        flow = self._flows.pop(client, None)
        if flow is not None:
            flow.transport.close()

    def _expire_flows(self) -> None:
        now = time.monotonic()
        for client, flow in list(self._flows.items()):
            if now - flow.last_used > UDP_FLOW_IDLE_SECONDS:
                self._drop_flow(client)
        while len(self._flows) >= MAX_UDP_FLOWS:
            self._drop_flow(next(iter(self._flows)))

    def forward_from_client(self, client: tuple[str, int], data: bytes) -> None:
        if self.broken or not self.backends:
            return
        flow = self._flows.get(client)
        if flow is not None:
            flow.last_used = time.monotonic()
            flow.transport.sendto(data)
            return
        self._expire_flows()
        self._spawn(self._open_flow(client, random.choice(self.backends), data))

    async def _open_flow(self, client: tuple[str, int], backend: str, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, client), remote_addr=(backend, self.target_port)
        )
        if client in self._flows:  # a second datagram raced this one
            transport.close()
            self._flows[client].transport.sendto(data)
            return
        self._flows[client] = _Flow(backend, transport)
        transport.sendto(data)

    def reply_to_client(self, client: tuple[str, int], data: bytes) -> None:
        if self._listener is not None and not self.broken:
            self._listener.sendto(data, client)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            async with asyncio.timeout(TCP_IDLE_SECONDS):
                if self.broken or not self.backends:
                    await reader.read()  # hold the connection unanswered, as a drop would
                else:
                    await self._pipe_to(random.choice(self.backends), reader, writer)
        except (OSError, TimeoutError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _pipe_to(self, backend: str, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(backend, self.target_port)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_copy(reader, up_writer))
                group.create_task(_copy(up_reader, writer))
        finally:
            up_writer.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


class InProcessBackend:
    """``DnsBackend`` on loopback addresses inside this process; no root needed."""

    name = "inprocess"
    nsid = False

    def __init__(self, domain: str = "cluster.local", port: int | None = None,
                 instance: int | None = None) -> None:
        self.domain = domain
        self.instance = (os.getpid() + next(_instances)) % 256 if instance is None else instance
        probe_hosts = [_address(SERVICE_OCTET, self.instance, 1),
                       _address(FIRST_POD_OCTET, self.instance, 1)]
        self.port = port if port is not None else pick_free_port(probe_hosts)
        pod_hosts = probe_hosts[1:]
        self.health_port = pick_free_port(pod_hosts)
        self.ready_port = next(p for p in iter(lambda: pick_free_port(pod_hosts), None)
                               if p != self.health_port)
        self._pod_ips = (_address(octet, self.instance, index)
                         for octet in range(FIRST_POD_OCTET, LAST_POD_OCTET + 1)
                         for index in range(1, 255))
        self._service_ips = (_address(SERVICE_OCTET, self.instance, index)
                             for index in range(1, 255))
        self._node_ips = (_address(NODE_OCTET, self.instance, index) for index in range(1, 255))
        self._external_ips = (_address(EXTERNAL_OCTET, self.instance, index)
                              for index in range(1, 255))
        self._frontends: dict[tuple[str, int], ServiceRelay] = {}
        self._pods: dict[str, Responder] = {}
        self._health: dict[str, HealthPorts] = {}
        self._relays: dict[str, ServiceRelay] = {}
        self._service_broken = False

    async def start(self) -> None:
        log.info("dns_backend_started", backend=self.name, port=self.port,
                 instance=self.instance)

    async def close(self) -> None:
        pods = list(self._pods.values())
        relays = [*self._relays.values(), *self._frontends.values()]
        health = list(self._health.values())
        self._health.clear()
        for ports in health:
            await ports.close()
        self._pods.clear()
        self._relays.clear()
        self._frontends.clear()
        for responder in pods:
            await responder.close()
        for relay in relays:
            await relay.close()

    def allocate_pod_ip(self) -> str:
        try:
            return next(self._pod_ips)
        except StopIteration:
            raise RuntimeError("the in-process backend ran out of pod addresses") from None

    def allocate_service_ip(self) -> str:
        try:
            return next(self._service_ips)
        except StopIteration:
            raise RuntimeError("the in-process backend ran out of service addresses") from None

    def allocate_node_ip(self) -> str:
        try:
            return next(self._node_ips)
        except StopIteration:
            raise RuntimeError("the in-process backend ran out of node addresses") from None

    def allocate_external_ip(self) -> str:
        try:
            return next(self._external_ips)
        except StopIteration:
            raise RuntimeError("the in-process backend ran out of external addresses") from None

    async def add_pod(self, pod: str, ip: str, zone: ZoneData) -> None:
        await self.remove_pod(pod)
        responder = Responder(ip, self.port, zone, pod.encode() if self.nsid else None)
        started = time.perf_counter()
        await responder.start()
        self._pods[pod] = responder
        ports = HealthPorts(ip, self.health_port, self.ready_port)
        try:
            await ports.start()
        except BaseException:
            await ports.close()
            await self.remove_pod(pod)
            raise
        self._health[pod] = ports
        log.info("pod_dns_started", pod=pod, ip=ip, port=self.port,
                 seconds=round(time.perf_counter() - started, 4))

    async def remove_pod(self, pod: str) -> None:
        ports = self._health.pop(pod, None)
        if ports is not None:
            await ports.close()
        responder = self._pods.pop(pod, None)
        if responder is not None:
            await responder.close()
            log.info("pod_dns_stopped", pod=pod, ip=responder.host)

    async def pod_alive(self, pod: str) -> bool:
        responder = self._pods.get(pod)
        if responder is None:
            return False
        try:
            async with asyncio.timeout(1.0):
                _, writer = await asyncio.open_connection(responder.host, self.port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def update_zone(self, zone: ZoneData) -> None:
        for responder in self._pods.values():
            responder.zone = zone

    async def set_service(self, cluster_ip: str, backends: Sequence[str]) -> None:
        relay = self._relays.get(cluster_ip)
        if relay is None:
            relay = self._relays[cluster_ip] = ServiceRelay(cluster_ip, self.port)
            relay.broken = self._service_broken
        await relay.set_backends(backends)
        log.info("service_routed", cluster_ip=cluster_ip, backends=list(backends))

    async def set_frontend(self, address: str, port: int, backends: Sequence[str]) -> None:
        key = (address, port)
        relay = self._frontends.get(key)
        if relay is None:
            if not backends:
                return
            relay = self._frontends[key] = ServiceRelay(address, port, self.port)
        await relay.set_backends(backends)
        if not backends:
            await self._frontends.pop(key).close()
        log.info("frontend_routed", address=address, port=port, backends=list(backends))

    async def set_pod_fault(self, pod: str, fault: Fault) -> None:
        responder = self._pods.get(pod)
        if responder is None:
            raise KeyError(f"no pod {pod!r} in the in-process backend")
        await responder.set_fault(fault)
        if pod in self._health:
            self._health[pod].health_down = fault.health_down
        log.info("pod_fault_set", pod=pod, fault=str(fault))

    async def set_service_fault(self, broken: bool) -> None:
        self._service_broken = broken
        for relay in self._relays.values():
            relay.broken = broken
        log.info("service_fault_set", broken=broken)

    async def served_queries(self, pod: str) -> int:
        """Queries that reached ``pod``'s server (UDP and TCP), for tests and demos."""
        responder = self._pods[pod]
        return responder.udp_queries + responder.tcp_queries

    def client_hint(self) -> str:
        return (f"pods answer DNS at 127.{FIRST_POD_OCTET}.{self.instance}.N port {self.port} "
                f"(UDP and TCP), /health on port {self.health_port} and /ready on port "
                f"{self.ready_port}; ClusterIPs are 127.{SERVICE_OCTET}.{self.instance}.N, "
                f"e.g. dig @127.{FIRST_POD_OCTET}.{self.instance}.1 -p {self.port} "
                f"kubernetes.default.svc.{self.domain}")


def _conforms_to_the_contract(backend: InProcessBackend) -> DnsBackend:
    return backend  # mypy checks InProcessBackend against the DnsBackend protocol here
