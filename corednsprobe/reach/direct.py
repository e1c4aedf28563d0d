"""direct: UDP (and TCP on a timeout) from this process straight to every pod IP and the
ClusterIP -- the strategy of a prober inside the cluster or on a routed pod network.

Owns: wrapping the probe engine (probe.engine.Prober, with its task-free ``start``
fast path) as a Reach, and telling whether this strategy can work from here.
Never does: judge results or talk to the API beyond what ``assess`` needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corednsprobe.model import Check, IgnoredReply, ProbeResult, Target, TargetSet
from corednsprobe.probe.engine import Probe, Prober
from corednsprobe.reach import Strategy

NEEDS = ("a route to the pod network and the Service network: run in the cluster (the "
         "deploy/ manifests) or on a host that routes to the pod CIDR and the ClusterIP "
         "(UDP and TCP port 53); RBAC: get/list/watch services, endpointslices and pods in "
         "the DNS namespace")


class DirectReach:
    """Every target as the API names it, asked from here over UDP (TCP on a timeout)."""

    strategy = Strategy.DIRECT
    blind_to: tuple[str, ...] = ()

    def __init__(self, timeout: float, *,
                 on_ignored: Callable[[IgnoredReply], None] | None = None,
                 prober: Prober | None = None) -> None:
        self.prober = prober or Prober(timeout, on_ignored=on_ignored)
        self.reason = "chosen by configuration"

    def plan(self, ts: TargetSet) -> TargetSet:
        return ts

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        return await self.prober.probe(target, check, qname)

    def start(self, target: Target, check: Check, qname: str | None,
              on_done: Callable[[ProbeResult], None]) -> Probe:
        """The Prober's task-free fast path (results already say reach=direct)."""
        return self.prober.start(target, check, qname, on_done)

    async def run(self) -> None:
        """Nothing runs in the background: direct needs no tunnel, pod or Service."""
        return None

    async def aclose(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {}
