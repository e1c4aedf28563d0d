"""The kubelet's view beside ours: GET each CoreDNS pod's own health endpoints.

Owns: asking one ``HealthEndpoint`` (from the pod spec's liveness/readiness
``httpGet``) the way the kubelet does — a plain HTTP/1.1 GET on a fresh
connection to the pod's IP (or the probe's ``host``), success on a status from
200 to 399, HTTPS without verifying the certificate — within a deadline, and
reporting how it ended as an ``EndpointState`` value (ok, an HTTP status,
timeout, refused, error), never an exception; ``HealthRounds``, a tiny
schedule beside the DNS rounds that asks every pod's endpoints once per
interval, concurrently and bounded in flight, and hands the states on.
Never does: judge a pod, follow redirects, or read a body.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import time
from collections.abc import Callable
from typing import NoReturn, Protocol

from corednsprobe.model import (
    EndpointOutcome,
    EndpointState,
    HealthEndpoint,
    Target,
    TargetKey,
    TargetSet,
)

MAX_HEAD_LINE = 4096
USER_AGENT = "corednsprobe (kubelet view)"


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as the kubelet's HTTPS probe
    return context


_TLS: ssl.SSLContext | None = None


def status_of(line: bytes) -> int | None:
    """The status code of an HTTP status line, or None when it is not one."""
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        return None
    return int(parts[1])


async def get(endpoint: HealthEndpoint, pod_ip: str, deadline: float,
              wall: Callable[[], float] = time.time) -> EndpointState:
    """One GET of ``endpoint`` on the pod at ``pod_ip``, ended within ``deadline`` seconds."""
    at = wall()
    host = endpoint.host or pod_ip
    netloc = f"[{host}]:{endpoint.port}" if ":" in host else f"{host}:{endpoint.port}"
    request = (f"GET {endpoint.path} HTTP/1.1\r\nHost: {netloc}\r\n"
               f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
               ).encode()
    try:
        async with asyncio.timeout(deadline):
            if endpoint.scheme == "HTTPS":
                line = await _status_line_tls(host, endpoint.port, request)
            else:
                line = await _status_line(host, endpoint.port, request)
    except TimeoutError:
        return EndpointState(endpoint, EndpointOutcome.TIMEOUT, None, at,
                             f"no answer within {deadline:g} s")
    except (ConnectionRefusedError, ConnectionResetError) as exc:
        return EndpointState(endpoint, EndpointOutcome.REFUSED, None, at, str(exc))
    except (OSError, ValueError, asyncio.LimitOverrunError) as exc:  # ssl.SSLError is an OSError
        return EndpointState(endpoint, EndpointOutcome.ERROR, None, at,
                             f"{type(exc).__name__}: {exc}")
    status = status_of(line)
    if status is None:
        return EndpointState(endpoint, EndpointOutcome.ERROR, None, at,
                             f"not an HTTP reply: {line[:80]!r}")
    outcome = EndpointOutcome.OK if 200 <= status < 400 else EndpointOutcome.STATUS
    return EndpointState(endpoint, outcome, status, at)


async def _status_line(host: str, port: int, request: bytes) -> bytes:
    """The first line of the reply over plain TCP, on a bare non-blocking socket (no
    streams: a GET per endpoint per round is the whole cost of the kubelet's view)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, request)
        received = b""
        while b"\n" not in received and len(received) < MAX_HEAD_LINE:
            chunk = await loop.sock_recv(sock, MAX_HEAD_LINE)
            if not chunk:
                break
            received += chunk
        return received.split(b"\n", 1)[0]


async def _status_line_tls(host: str, port: int, request: bytes) -> bytes:
    global _TLS
    _TLS = _TLS or _tls()
    reader, writer = await asyncio.open_connection(host, port, ssl=_TLS, server_hostname=host,
                                                   limit=MAX_HEAD_LINE)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()


async def check_pod(target: Target, deadline: float, gate: asyncio.Semaphore,
                    wall: Callable[[], float] = time.time) -> tuple[EndpointState, ...]:
    """Every health endpoint of one pod target, concurrently (each waits for ``gate``)."""
    assert target.pod is not None

    async def one(endpoint: HealthEndpoint) -> EndpointState:
        async with gate:
            return await get(endpoint, target.address, deadline, wall)

    return tuple(await asyncio.gather(*(one(e) for e in target.pod.health_endpoints)))


class Targets(Protocol):
    @property
    def current(self) -> TargetSet: ...


Done = Callable[[dict[TargetKey, tuple[EndpointState, ...]]], None]


KUBELET_PERIOD = 10.0  # seconds: the kubelet's default periodSeconds for a probe


class HealthRounds:
    """Each interval (ticks at start + k·interval on the loop clock, as the DNS rounds),
    GET the health endpoints of the pods that are due; ``done`` gets the states of the
    pods asked.

    A pod is due every round while ``urgent`` says so (its DNS is judged unhealthy: the
    evidence against it shows what its endpoints say now), else once every ``period``
    (at least the interval; by default the kubelet's own default period, 10 s: asking
    a healthy pod more often than the kubelet does tells nothing more of its view, and
    at 5,000 pods a GET of each endpoint every 1 s round doubled the CPU of a round).
    """

    def __init__(self, view: Targets, done: Done, *, interval: float, timeout: float,
                 max_in_flight: int, wall: Callable[[], float] = time.time,
                 urgent: Callable[[TargetKey], bool] = lambda _key: True,
                 period: float = KUBELET_PERIOD) -> None:
        self.view, self.done = view, done
        self.interval, self.timeout = interval, timeout
        self.max_in_flight = max(1, max_in_flight)
        self.wall = wall
        self.urgent = urgent
        self.period = max(period, interval)
        self._asked: dict[TargetKey, float] = {}  # loop time each pod was last asked

    async def run(self) -> NoReturn:
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            delay = start + k * self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.done(await self.run_round())
            k = max(k + 1, math.ceil((loop.time() - start) / self.interval))

    async def run_round(self) -> dict[TargetKey, tuple[EndpointState, ...]]:
        """One GET of every endpoint of every current pod that has any and is due."""
        now = asyncio.get_running_loop().time()
        due_before = now - self.period + self.interval / 2  # a tick's jitter is still due
        current = [t for t in self.view.current.pods
                   if t.pod is not None and t.pod.health_endpoints]
        asked = {t.key: self._asked[t.key] for t in current if t.key in self._asked}
        pods = [t for t in current
                if asked.get(t.key, -math.inf) <= due_before or self.urgent(t.key)]
        for t in pods:
            asked[t.key] = now
        self._asked = asked  # pods that left are forgotten
        gate = asyncio.Semaphore(self.max_in_flight)
        states = await asyncio.gather(*(check_pod(t, self.timeout, gate, self.wall)
                                        for t in pods))
        return {t.key: s for t, s in zip(pods, states, strict=True)}
