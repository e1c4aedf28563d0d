"""port-forward: DNS over TCP to every pod's port 53 through the API server.

Owns: probing each CoreDNS pod over a fresh ``pods/portforward`` tunnel per probe
(kube/portforward.py), classifying what came back, counting tunnels that could not
be opened apart from the pod's answers, and telling whether this strategy can work
here (SelfSubjectAccessReview of pods/portforward).
Never does: probe the ClusterIP (the plan drops it), UDP, or blame a pod for a
tunnel that did not open.

What it cannot see: UDP (a pod that drops UDP while TCP answers looks healthy here),
the pod network (the API server and the kubelet carry the bytes) and the ClusterIP
path (kube-proxy, conntrack).

Why a tunnel per probe: the v4 WebSocket carries one TCP connection per port for the
life of the WebSocket (the kubelet dials the pod when it opens), so a fresh DNS
exchange -- a new TCP connection to the pod, as a client's would be -- needs a new
tunnel. It costs a TLS connection to the API server and a dial by the kubelet per
probe (measured in corednsprobe-deploy(7)); a round asks each pod only a few checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections import deque
from typing import Any

from corednsprobe.config import Settings
from corednsprobe.kube.access import Permission, ssar
from corednsprobe.kube.portforward import (
    PodDialError,
    Tunnel,
    TunnelClosed,
    TunnelError,
    open_tunnel,
    with_tunnel_closed,
)
from corednsprobe.model import Check, Outcome, ProbeResult, Target, TargetSet
from corednsprobe.probe import wire
from corednsprobe.probe.classify import replace
from corednsprobe.probe.engine import tcp_result
from corednsprobe.reach import Strategy
from corednsprobe.reach.base import Assessment, ReachLost

BLIND_TO: tuple[str, ...] = ("UDP", "the pod network", "the ClusterIP path")
OPEN_SECONDS = 5.0  # the API server and the kubelet get this long to open a tunnel
LOST_AFTER = 3  # tunnels refused in a row for lack of permission (401/403) -> ReachLost


def permissions(namespace: str) -> list[Permission]:
    """What the tunnels need beyond watching the DNS Service (kube.access)."""
    return [Permission(verb, "pods", namespace, subresource="portforward",
                       purpose="open a port-forward tunnel to each CoreDNS pod's port 53")
            for verb in ("get", "create")]


def needs(namespace: str) -> str:
    return (f"pods/portforward on the CoreDNS pods (Role in {namespace}: apiGroups: [\"\"], "
            "resources: [\"pods/portforward\"], verbs: [\"get\", \"create\"]; the WebSocket "
            "upgrade is a GET, kubectl's SPDY a POST) beside the read rules of the "
            "in-cluster Role, and a route to the API server (nothing else)")


async def assess(api: Any, settings: Settings) -> Assessment:
    """Usable when SelfSubjectAccessReview allows get and create on pods/portforward."""
    missing = [p for p in permissions(settings.namespace) if not await ssar(api, p)]
    if missing:
        return Assessment(Strategy.PORT_FORWARD, False,
                          "not allowed: " + "; ".join(p.what for p in missing),
                          needs(settings.namespace))
    return Assessment(Strategy.PORT_FORWARD, True,
                      f"allowed: get and create pods/portforward in {settings.namespace}",
                      needs(settings.namespace))


class PortForwardReach:
    """Every pod over DNS/TCP through the API server; the ClusterIP is not probed."""

    strategy = Strategy.PORT_FORWARD
    blind_to = BLIND_TO

    def __init__(self, api: Any, namespace: str, timeout: float, *,
                 open_seconds: float = OPEN_SECONDS) -> None:
        self.api = api
        self.namespace = namespace
        self.timeout = timeout
        self.open_seconds = open_seconds
        self.opened = 0
        self.failed = 0
        self.last_failure = ""
        self.setups: deque[float] = deque(maxlen=100)
        self._refused_in_a_row = 0
        self._lost = asyncio.Event()
        self.lost_reason = ""

    def plan(self, ts: TargetSet) -> TargetSet:
        """The pods only: the ClusterIP path is out of this strategy's sight."""
        return dataclasses.replace(ts, services=())

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        name = qname or check.qname
        base = ProbeResult(target, check, Outcome.ERROR, qname=name, at=time.time(),
                           reach=self.strategy.value)
        if target.pod is None:
            return replace(base, detail="port-forward reaches pods only, not a ClusterIP")
        try:
            template = wire.question_bytes(name, check.qtype, False)
        except ValueError as exc:
            return replace(base, detail=str(exc))
        tunnel: Tunnel | None = None
        try:
            try:
                async with asyncio.timeout(self.open_seconds):
                    tunnel = await open_tunnel(self.api, self.namespace, target.pod.name,
                                               target.port)
            except TimeoutError:
                return self._tunnel_failed(base, f"the tunnel to pod {target.pod.name} did not "
                                           f"open within {self.open_seconds:g} s", None)
            except TunnelError as exc:
                return self._tunnel_failed(base, str(exc), exc.status)
            self._opened(tunnel)
            return await self._exchange(tunnel, base, check, template)
        finally:
            await with_tunnel_closed(tunnel)

    async def _exchange(self, tunnel: Tunnel, base: ProbeResult, check: Check,
                        template: bytes) -> ProbeResult:
        query_id = secrets.randbits(16)
        question = wire.question_of(template)
        query = wire.with_id(template, query_id)
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await tunnel.write(len(query).to_bytes(2, "big") + query)
                size = int.from_bytes(await tunnel.readexactly(2), "big")
                data = await tunnel.readexactly(size)
        except TimeoutError:
            return replace(base, outcome=Outcome.TIMEOUT, detail="tcp over port-forward")
        except PodDialError as exc:
            outcome = Outcome.UNREACHABLE if exc.refused else Outcome.TIMEOUT
            return replace(base, outcome=outcome, detail=f"the pod's port: {exc}")
        except TunnelError as exc:
            return self._tunnel_failed(base, str(exc), None)
        except TunnelClosed as exc:
            return replace(base, outcome=Outcome.MALFORMED, detail=f"tcp: {exc}")
        return tcp_result(base, check, question, query_id, data, time.perf_counter() - sent)

    def _opened(self, tunnel: Tunnel) -> None:
        self.opened += 1
        self.setups.append(tunnel.setup_seconds)
        self._refused_in_a_row = 0

    def _tunnel_failed(self, base: ProbeResult, why: str, status: int | None) -> ProbeResult:
        self.failed += 1
        self.last_failure = why
        if status in (401, 403):
            self._refused_in_a_row += 1
            if self._refused_in_a_row >= LOST_AFTER and not self._lost.is_set():
                self.lost_reason = (f"the API server refused {self._refused_in_a_row} "
                                    f"port-forward tunnels in a row: {why}")
                self._lost.set()
        return replace(base, outcome=Outcome.TUNNEL, detail=why)

    async def run(self) -> None:
        """Wait for the permission to go: tunnels refused 401/403 several times in a row
        (a revoked Role) raise ReachLost; other failures are counted, never fatal."""
        await self._lost.wait()
        raise ReachLost(self.lost_reason)

    async def aclose(self) -> None:
        """Tunnels live for one probe each: nothing is left open between probes."""
        return None

    def status(self) -> dict[str, Any]:
        setups = sorted(self.setups)
        return {
            "tunnels_opened": self.opened,
            "tunnels_failed": self.failed,
            "last_tunnel_failure": self.last_failure,
            "tunnel_setup_seconds_median": setups[len(setups) // 2] if setups else None,
            "namespace": self.namespace,
        }
