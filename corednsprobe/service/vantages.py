"""Vantages at work: this replica's view served, the other replicas' views pulled.

Owns: this replica's identity as a vantage (its pod and node names); the
latest own view (``GET /vantage`` serves it); the leader's pull, once a round,
of every other replica the prober's own Service lists (``kube.replicas``) —
concurrently, bounded, each with a short deadline, from that pod's IP and
nowhere else, keeping a view only when it claims the pod and node the API
names for that IP; and, each round, the verdict over the views combined
(``judge.vantage``), with its metrics and its /status section.
Never does: write to the API (a pull is a GET to a replica; no write per
round), elect anyone (the Lease decides who pulls), or judge a pod itself.

Under the probe-pod reach with several agent pods (one per node), each agent is
a vantage too: the first agent's results are this process's own healths (they
answer the rounds), every other agent's results (``AgentSource.drain``) go into
a Tracker kept per agent node here, judged each round into that node's view,
and all are combined by the same rule as replicas' views.

A follower does not pull: only the leader acts, and a new leader pulls the
views itself from its first round on, so a failover keeps the rule.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol

import aiohttp

from corednsprobe import logs
from corednsprobe.config import Settings
from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.judge.tracker import Thresholds, Tracker
from corednsprobe.judge.vantage import (
    Combined,
    VantageView,
    combine,
    conclude,
    max_age,
    own_view,
    read_view,
)
from corednsprobe.kube.replicas import Replica, ReplicaView
from corednsprobe.metrics import Metrics
from corednsprobe.model import (
    Diagnosis,
    EndpointState,
    Health,
    ProbeResult,
    TargetKey,
    TargetSet,
)

log = logs.get(__name__)
CONCURRENCY = 64  # pulls in flight at once
MAX_BODY = 4 << 20  # bytes of one /vantage answer


def pull_deadline(interval: float) -> float:
    """Each pull's deadline: half a round, within 0.2-2 s."""
    return max(0.2, min(2.0, interval / 2))


def identity(settings: Settings, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(pod, node) of this replica: the settings, else the downward API's usual variables,
    else the host name (a pod's is its name) and "" (the EndpointSlice may say)."""
    env = os.environ if environ is None else environ
    pod = settings.pod_name or env.get("POD_NAME", "") or socket.gethostname()
    return pod, settings.node_name or env.get("NODE_NAME", "")


async def _read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    """The body, or its first ``cap`` bytes when it is longer (then refused)."""
    chunks: list[bytes] = []
    size = 0
    while size < cap and (chunk := await stream.read(cap - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class AgentSource(Protocol):
    """Agent pods on several nodes (reach.probepod): who serves, and the companions'
    results since last asked."""

    def agents(self) -> list[tuple[str, str, bool]]: ...

    def drain(self) -> list[tuple[str, str, ProbeResult]]: ...


class Vantages:
    """This replica as a vantage, and (while leading) the others' views."""

    def __init__(self, settings: Settings, replicas: ReplicaView | None, *, pod: str,
                 node: str, leading: Callable[[], bool], metrics: Metrics,
                 wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.replicas = replicas
        self.pod = pod
        self._node = node
        self.leading = leading
        self.metrics = metrics
        self.wall = wall
        self.deadline = pull_deadline(settings.interval)
        self.oldest = max_age(settings.interval, self.deadline)
        self.own: VantageView | None = None
        self.views: dict[str, VantageView] = {}  # pod -> its latest good view
        self.last: Combined | None = None
        self._refused: dict[str, str] = {}  # pod -> why its last answer was refused
        self.pulls = 0
        self.agent_source: Callable[[], AgentSource | None] = lambda: None
        self.thresholds = Thresholds(settings.window, settings.failure_ratio,
                                     settings.min_samples, settings.recovery_successes,
                                     settings.min_pod_age)
        self._agent_trackers: dict[str, Tracker] = {}  # agent node -> its window of results
        self._agent_seen: dict[str, float] = {}  # agent node -> wall time of its last results
        self._own_pod = pod  # whose healths ``healths`` are: this replica's, or the agent's

    @property
    def node(self) -> str:
        """This replica's node: as configured, else as its EndpointSlice entry says."""
        if not self._node and self.replicas is not None:
            me = self.replicas.get(self.pod)
            if me is not None and me.node:
                self._node = me.node
        return self._node or "unknown"

    # -- each round --------------------------------------------------------------------------

    def merge(self, targets: TargetSet, healths: Mapping[TargetKey, Health], policy: Policy,
              endpoints: Mapping[TargetKey, tuple[EndpointState, ...]] | None = None,
              ) -> tuple[Diagnosis, dict[TargetKey, Health]]:
        """The verdict over every fresh vantage's view, and the healths it rests on;
        ``endpoints``: this replica's view of the pods' health endpoints, as evidence."""
        now = self.wall()
        self.own = own_view(self.pod, self.node, healths, now)
        own, agents = self.own, self.agent_views(targets, healths, now)
        if agents:
            own, agents = agents[0], agents[1:]
        self._own_pod = own.pod
        c = combine(own, [*self.peers(), *agents], healths, quorum=self.settings.quorum,
                    now=now, oldest=self.oldest)
        self.last = c
        self.metrics.set_vantages(len(c.vantages), len(c.isolated), len(c.stale),
                                  [(p.pod, n) for p in c.paths for n in p.from_nodes])
        return conclude(diagnose(targets, c.healths, policy, endpoints), c), c.healths

    def agent_views(self, targets: TargetSet, healths: Mapping[TargetKey, Health],
                    now: float) -> list[VantageView]:
        """With two or more agent pods: the primary agent's view (``healths``, under its
        pod and node) first, then each companion's node's view, judged from its results
        and dated by when they last came (so a silent agent's view goes stale); else []."""
        source = self.agent_source()
        if source is None:
            self._agent_trackers.clear()
            self._agent_seen.clear()
            return []
        for _pod, node, result in source.drain():
            tracker = self._agent_trackers.get(node)
            if tracker is None:
                tracker = self._agent_trackers[node] = Tracker(self.thresholds)
            tracker.record(result, now)
            self._agent_seen[node] = now
        listed = source.agents()
        nodes = {node for _pod, node, _primary in listed}
        for node in [n for n in self._agent_trackers if n not in nodes]:
            del self._agent_trackers[node]
            self._agent_seen.pop(node, None)
        if len(listed) < 2 or not listed[0][2]:
            return []
        pod, node, _primary = listed[0]
        views = [own_view(pod, node or "unknown", healths, now)]
        for pod, node, _primary in listed[1:]:
            tracker = self._agent_trackers.get(node)
            if tracker is not None:
                views.append(own_view(pod, node, tracker.evaluate(targets.targets, now),
                                      self._agent_seen[node]))
        return views

    def peers(self) -> list[VantageView]:
        """The pulled views of replicas the Service still lists (none while following)."""
        if self.replicas is None:
            return []
        listed = {r.pod for r in self.replicas.current}
        return [v for pod, v in self.views.items() if pod in listed]

    def document(self) -> dict[str, Any] | None:
        """The ``GET /vantage`` answer: this replica's latest own view, or None before one."""
        return self.own.as_doc(self.wall()) if self.own is not None else None

    # -- pulling -----------------------------------------------------------------------------

    async def run(self) -> NoReturn:
        """Pull every round while leading; forget the views while following."""
        timeout = aiohttp.ClientTimeout(total=self.deadline)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY,
                                        keepalive_timeout=3 * self.settings.interval + 1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            loop = asyncio.get_running_loop()
            tick = loop.time()
            while True:
                if self.replicas is not None and self.leading():
                    await self.pull(session)
                elif self.views:
                    self.views.clear()
                tick = max(tick + self.settings.interval, loop.time())
                await asyncio.sleep(tick - loop.time())

    async def pull(self, session: aiohttp.ClientSession) -> None:
        """Ask every other listed replica once, concurrently, each within the deadline."""
        assert self.replicas is not None
        peers = [r for r in self.replicas.current if r.pod != self.pod]
        gate = asyncio.Semaphore(CONCURRENCY)
        got = await asyncio.gather(*(self._one(session, r, gate) for r in peers))
        for r, view in zip(peers, got, strict=True):
            if view is not None:
                self.views[r.pod] = view
        listed = {r.pod for r in peers}
        for pod in [p for p in self.views if p not in listed]:
            del self.views[pod]
        self.pulls += 1

    async def _one(self, session: aiohttp.ClientSession, r: Replica,
                   gate: asyncio.Semaphore) -> VantageView | None:
        async with gate:
            try:  # the deadline is this pull's, whatever the session's timeouts
                async with asyncio.timeout(self.deadline), \
                        session.get(r.url, allow_redirects=False) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (),
                                                          status=resp.status)
                    body = await _read_capped(resp.content, MAX_BODY + 1)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.metrics.vantage_pulled("failed")
                self._refuse(r, f"no answer: {type(exc).__name__} {exc}".strip())
                return None
        try:
            if len(body) > MAX_BODY:
                raise ValueError("answer too large")
            view = read_view(json.loads(body), self.wall())
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            self.metrics.vantage_pulled("malformed")
            self._refuse(r, f"malformed: {exc}")
            return None
        if view.pod != r.pod or (r.node and view.node != r.node):
            self.metrics.vantage_pulled("wrong_identity")
            self._refuse(r, f"claims pod {view.pod} on {view.node or '?'}, but the API lists "
                            f"{r.pod} on {r.node or '?'} at {r.address}", warn=True)
            return None
        self.metrics.vantage_pulled("ok")
        self._refused.pop(r.pod, None)
        return view

    def _refuse(self, r: Replica, why: str, *, warn: bool = False) -> None:
        if self._refused.get(r.pod) == why:
            return
        self._refused[r.pod] = why
        (log.warning if warn else log.info)("vantage_view_refused", replica=r.pod,
                                            address=r.address, node=r.node or None, reason=why)

    # -- /status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.wall()
        c = self.last
        rows: list[dict[str, Any]] = []
        if c is not None:
            for state, views in (("counted", c.vantages), ("isolated", c.isolated),
                                 ("stale", c.stale)):
                rows += [{"pod": v.pod, "node": v.node, "state": state,
                          "own": v.pod == self._own_pod,
                          "age_seconds": round(now - v.at, 3)}
                         for v in views]
        return {
            "pod": self.pod, "node": self.node, "quorum": self.settings.quorum,
            "service": self.settings.vantage_service or None,
            "pulling": self.replicas is not None and self.leading(),
            "max_age_seconds": self.oldest, "pull_deadline_seconds": self.deadline,
            "vantages": len(c.vantages) if c is not None else 0,
            "agent_pods": self._own_pod != self.pod,
            "views": rows,
            "paths": [{"pod": p.pod, "pod_node": p.pod_node, "from_nodes": list(p.from_nodes),
                       "healthy_from": list(p.healthy_from)} for p in (c.paths if c else ())],
            "refused": dict(self._refused),
        }
