"""The probe-pod reach: an agent pod in the cluster probes, this process judges.

Owns: the agent pod's spec (the project's image running ``corednsprobe agent``
with the targets and checks on its command line; labels that say what it is and
whose; ``restartPolicy: Never``, ``activeDeadlineSeconds``, no service-account
token, non-root, read-only root, no capabilities, small requests and limits),
creating it in the prober namespace, following its ``pods/log`` and reading
each line into a ProbeResult (``reach="probe-pod"``; a malformed line is
counted and skipped), serving ``probe(target, check)`` from those results,
replacing the pod when the targets or checks change, when it ends and before
its deadline, reaping leftovers of an earlier run at start and deleting its
pods on ``aclose``; the pod's start-up time (create → first result); whether
these credentials allow all that (``assess``).
With a quorum of 2 or more and two or more schedulable nodes it runs one agent
per node on up to COREDNSPROBE_PROBE_PODS nodes, each pinned with
``spec.nodeName``: the first (primary) answers ``probe``; the others
(companions) hand their results to ``drain`` for the service's per-node
vantages (service/vantages.py); all are rotated, replaced, reaped and deleted
alike. With one agent the behaviour is the one described here.
Never does: judge a result, restart a CoreDNS pod, or probe from this process.

``probe(target, check)`` answers with the agent's next result for that
(target, check): one that arrived since the last was taken, else the next to
arrive within interval + timeout (+ a margin for the log's path). When none
comes (the pod is being replaced, or the log stream is late) the answer is
``tunnel`` (reused from the port-forward strategy: the reach could not carry
the probe), which says nothing about the target: no sample of its window.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from corednsprobe import logs
from corednsprobe.config import Settings
from corednsprobe.kube.access import Permission, check_permissions, prober_namespace
from corednsprobe.kube.client import ApiClient, ApiError, request, send
from corednsprobe.model import (
    Check,
    IgnoredReply,
    Outcome,
    ProbeResult,
    Target,
    TargetKey,
    TargetSet,
)
from corednsprobe.probe.checks import Checks
from corednsprobe.reach import Strategy
from corednsprobe.reach.agentlines import (
    REACH,
    LineError,
    Lookup,
    UnknownJob,
    pack,
    spec_text,
)
from corednsprobe.reach.base import Assessment, ReachLost

log = logs.get(__name__)

NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
OWNER_LABEL = "corednsprobe.io/owner"  # the host (in a cluster: the pod) that made it
INSTANCE_LABEL = "corednsprobe.io/instance"  # the process that made it, random per start
COMPONENT = "probe-agent"
SELECTOR = f"{NAME_LABEL}=corednsprobe,{COMPONENT_LABEL}={COMPONENT}"
CONTAINER = "agent"
RUN_AS = 65532
LIFETIME = 3600  # activeDeadlineSeconds of one agent pod
START_BUDGET = 180.0  # seconds from create to the first result before giving up on a pod
LATE_MARGIN = 0.5  # seconds the log path may add to a result's way here
FAILED_STARTS = 3  # pods in a row that end without a result: the strategy is lost
PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                           "ErrImageNeverPull"})
CANNOT_START = frozenset({"CreateContainerConfigError", "CreateContainerError",
                          "RunContainerError"})
FEED_MAX = 65536  # companions' results waiting to be taken (drain) before the oldest go
NO_RESULT = Outcome.TUNNEL  # no agent result in time: the reach's failure, no sample
RESOURCES = {"requests": {"cpu": "20m", "memory": "48Mi"},
             "limits": {"cpu": "500m", "memory": "128Mi"}}


def permissions(namespace: str) -> list[Permission]:
    """What the probe-pod strategy asks the API for, in the prober namespace."""
    why = "run the probe agent pod"
    return [*(Permission(v, "pods", namespace, purpose=why)
              for v in ("create", "get", "list", "delete")),
            Permission("get", "pods", namespace, subresource="log",
                       purpose="read the agent's results from its log")]


def needs(namespace: str) -> str:
    return ("a Role in the prober namespace with pods create, get, list, delete and pods/log "
            "get (deploy/extras/probe-pod-rbac.yaml): " +
            "; ".join(p.rule for p in permissions(namespace)))


async def assess(api: ApiClient, settings: Settings) -> Assessment:
    """Usable when SelfSubjectAccessReview allows every rule of ``permissions``."""
    namespace = prober_namespace(settings.prober_namespace, settings.namespace)
    report = await check_permissions(api, permissions(namespace))
    if report.ok:
        return Assessment(Strategy.PROBE_POD, True,
                          f"may create, read, list and delete pods and read pods/log in "
                          f"namespace {namespace} (image {settings.probe_image!r})",
                          needs(namespace))
    missing = ", ".join(p.what for p in report.missing_required)
    return Assessment(Strategy.PROBE_POD, False, f"not allowed: {missing}", needs(namespace))


def build(api: ApiClient, settings: Settings, *,
          on_ignored: Callable[[IgnoredReply], None] | None = None) -> ProbePodReach:
    """The strategy for reach/choose.py (the agent's replies are checked in the agent)."""
    return ProbePodReach(api, settings)


def label_value(text: str) -> str:
    """``text`` as a label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63].strip("._-")
    return cleaned or "unknown"


def agent_pod(namespace: str, image: str, spec: str, *, owner: str, instance: str,
              lifetime: int, targets: int, node: str = "") -> dict[str, Any]:
    """The agent pod: least privilege, bounded life, labels that say what and whose;
    ``node``: pinned there (``spec.nodeName``), one vantage of several."""
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                "capabilities": {"drop": ["ALL"]}}
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "corednsprobe-agent-", "namespace": namespace,
            "labels": {NAME_LABEL: "corednsprobe", COMPONENT_LABEL: COMPONENT,
                       OWNER_LABEL: owner, INSTANCE_LABEL: instance},
            "annotations": {"corednsprobe.io/targets": str(targets)},
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": lifetime,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS,
                                "runAsGroup": RUN_AS,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
                "args": ["agent", spec],
                "env": [{"name": "COREDNSPROBE_LOG_LEVEL", "value": "error"}],
                "securityContext": security,
                "resources": RESOURCES,
            }],
        },
    }
    if node:
        pod["spec"]["nodeName"] = node
    return pod


def _jobs(checks: Checks, ts: TargetSet) -> tuple[tuple[Target, tuple[Check, ...]], ...]:
    return tuple((t, checks.for_target(t, ts.expected)) for t in ts.targets)


def _signature(jobs: tuple[tuple[Target, tuple[Check, ...]], ...]
               ) -> tuple[tuple[TargetKey, tuple[Check, ...]], ...]:
    """What the agent is told: targets by identity and their checks (not readiness)."""
    return tuple((t.key, c) for t, c in jobs)


class _Waiting:
    """A probe waiting for the agent's next result of its (target, check)."""

    __slots__ = ("check", "deadline", "done", "on_done", "qname", "target")

    def __init__(self, target: Target, check: Check, qname: str | None,
                 on_done: Callable[[ProbeResult], None], deadline: float) -> None:
        self.target = target
        self.check = check
        self.qname = qname
        self.on_done = on_done
        self.deadline = deadline  # loop time
        self.done = False

    def cancel(self) -> None:
        """Stop waiting without a result (its caller was cancelled)."""
        self.done = True


@dataclass(eq=False)
class _Agent:
    """One agent pod of ours and what its log has told so far."""

    name: str
    created: float  # loop time
    signature: tuple[tuple[TargetKey, tuple[Check, ...]], ...]
    rotate_at: float  # loop time
    node: str = ""
    results: int = 0
    malformed: int = 0
    first_result: float | None = None  # loop time
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # first result, or it ended
    seen: set[tuple[TargetKey, str]] = field(default_factory=set)  # pairs it gave a result of
    covered: asyncio.Event = field(default_factory=asyncio.Event)  # a result of every pair
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""
    fatal: str = ""  # why no pod of this spec can ever start (an image that cannot be pulled)
    task: asyncio.Task[None] | None = None
    primary: bool = True  # its results answer probe(); a companion's are another vantage's

    @property
    def startup(self) -> float | None:
        return None if self.first_result is None else self.first_result - self.created


class ProbePodReach:
    """Probes through an agent pod in the cluster; a ProbeEngine for Rounds."""

    strategy = Strategy.PROBE_POD
    blind_to: tuple[str, ...] = (
        "the path from this process to the pods (the agent probes from inside the cluster)",
        "the paths to the pods from nodes that run no agent pod",
    )

    def __init__(self, api: ApiClient, settings: Settings, *, owner: str | None = None,
                 lifetime: int = LIFETIME, start_budget: float = START_BUDGET,
                 poll: float = 0.2) -> None:
        self.api = api
        self.namespace = prober_namespace(settings.prober_namespace, settings.namespace)
        self.image = settings.probe_image
        self.interval = settings.interval
        self.timeout = settings.timeout
        self.max_in_flight = settings.max_in_flight
        self.checks = Checks(settings.cluster_domain, settings.namespace, settings.external_name)
        self.owner = label_value(owner or socket.gethostname())
        self.instance = secrets.token_hex(4)
        self.lifetime = lifetime
        self.start_budget = start_budget
        self.poll = poll
        self.wait = self.interval + self.timeout + LATE_MARGIN
        self._ts: TargetSet | None = None
        self._jobs: tuple[tuple[Target, tuple[Check, ...]], ...] = ()
        self._lookup = Lookup(())
        self._changed: asyncio.Event | None = None
        self._slots: dict[tuple[TargetKey, str], tuple[float, ProbeResult]] = {}
        self._waiters: dict[tuple[TargetKey, str], deque[_Waiting]] = {}
        self._deadlines: deque[_Waiting] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._first_job: tuple[TargetKey, str] | None = None
        self._ticked: float | None = None  # unix time of the last round's first probe
        self._tick_seen = asyncio.Event()
        self._agents: dict[str, _Agent] = {}
        self._current: _Agent | None = None
        self.quorum = settings.quorum
        self.wanted = settings.probe_pods or settings.quorum
        self._companions: dict[str, _Agent] = {}  # node -> the companion agent pinned there
        self._companion_failures: dict[str, int] = {}  # node -> companions that gave nothing
        self._feed: deque[tuple[str, str, ProbeResult]] = deque(maxlen=FEED_MAX)
        self.nodes_from = ""  # where the agents' nodes came from (the Nodes, or the pods')
        self._closed = False
        self.counts = {"pods_created": 0, "lines": 0, "results": 0, "malformed_lines": 0,
                       "unknown_lines": 0, "no_result": 0, "replacements": 0, "reaped": 0,
                       "answered_at_once": 0}
        self.startup_last: float | None = None
        self.startup_max: float | None = None
        self.last_replacement = ""

    # the ProbeEngine side --------------------------------------------------

    def plan(self, ts: TargetSet) -> TargetSet:
        """Every pod and the Service, as the view has them; a change of targets or
        checks has the agent pod replaced."""
        jobs = _jobs(self.checks, ts)
        self._ts = ts
        self._first_job = next(((t.key, c[0].name) for t, c in jobs if c), None)
        self._lookup = Lookup(jobs)
        if _signature(jobs) != _signature(self._jobs):
            self._jobs = jobs
            if self._changed is not None:
                self._changed.set()
        else:
            self._jobs = jobs
        return ts

    def start(self, target: Target, check: Check, qname: str | None,
              on_done: Callable[[ProbeResult], None]) -> _Waiting:
        """Hand ``on_done`` the agent's next result for (target, check): at once when one
        arrived since the last was taken, else when it arrives, else ``tunnel``
        after interval + timeout + 0.5 s (Rounds' task-free path)."""
        key = (target.key, check.name)
        if key == self._first_job:
            self._ticked = time.time()  # the first job of a round: the Rounds' tick
            self._tick_seen.set()
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = _Waiting(target, check, qname, on_done, now + self.wait)
        slot = self._slots.pop(key, None)
        if slot is not None and now - slot[0] <= self.wait:
            waiting.done = True
            self.counts["answered_at_once"] += 1
            on_done(slot[1])
            return waiting
        queue = self._waiters.get(key)
        if queue is None:
            queue = self._waiters[key] = deque()
        queue.append(waiting)
        self._deadlines.append(waiting)
        if self._timer is None:
            self._timer = loop.call_at(waiting.deadline, self._expire)
        return waiting

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        """The agent's next result for (target, check); ``tunnel`` when none comes."""
        done: asyncio.Future[ProbeResult] = asyncio.get_running_loop().create_future()

        def finish(result: ProbeResult) -> None:
            if not done.done():
                done.set_result(result)

        waiting = self.start(target, check, qname, finish)
        try:
            return await done
        finally:
            waiting.cancel()

    def _not_carried(self, waiting: _Waiting) -> ProbeResult:
        self.counts["no_result"] += 1
        pod = self._current.name if self._current is not None else "none"
        return ProbeResult(waiting.target, waiting.check, NO_RESULT, at=time.time(),
                           qname=waiting.qname or "", reach=REACH,
                           detail=f"no result from the probe pod {pod} within {self.wait:g}s")

    def _expire(self) -> None:
        """Answer every probe whose wait is over (the waits are FIFO: one length)."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        pending = self._deadlines
        while pending:
            waiting = pending[0]
            if waiting.done or waiting.deadline <= now:
                pending.popleft()
                key = (waiting.target.key, waiting.check.name)
                queue = self._waiters.get(key)
                if queue is not None:
                    with contextlib.suppress(ValueError):
                        queue.remove(waiting)
                    if not queue:
                        del self._waiters[key]
                if not waiting.done:
                    waiting.done = True
                    waiting.on_done(self._not_carried(waiting))
            else:
                self._timer = loop.call_at(waiting.deadline, self._expire)
                return

    def _deliver(self, result: ProbeResult) -> None:
        key = (result.target.key, result.check.name)
        queue = self._waiters.get(key)
        while queue:
            waiting = queue.popleft()
            if not waiting.done:
                waiting.done = True
                if not queue:
                    del self._waiters[key]
                waiting.on_done(result)
                return
        if queue is not None:
            del self._waiters[key]
        self._slots[key] = (asyncio.get_running_loop().time(), result)

    # the pods ---------------------------------------------------------------

    @property
    def _pods_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods"

    async def run(self) -> None:
        """Reap leftovers, then keep one agent pod running the current targets; raises
        ReachLost when no agent pod can run (an image that cannot be pulled, pods that
        keep ending without a result, no permission)."""
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        await self._reap()
        previous: _Agent | None = None
        failed = 0
        reason = "start"
        try:
            while not self._closed:
                jobs = await self._targets()
                if self._ticked is None:  # the rounds' first tick gives the agent its phase
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.interval):
                            await self._tick_seen.wait()
                nodes = await self._nodes()
                agent = await self._launch(jobs, reason, node=nodes[0] if nodes else "")
                companions = {n: await self._launch(jobs, reason, node=n, primary=False)
                              for n in nodes[1:]}
                await self._until_ready(agent)
                if agent.fatal or agent.first_result is None:
                    for companion in companions.values():
                        await self._delete(companion, "its primary did not start")
                if agent.fatal:
                    await self._delete(agent, "cannot start")
                    raise ReachLost(agent.fatal)
                if agent.first_result is None:
                    failed += 1
                    await self._delete(agent, f"ended without a result: {agent.end_reason}")
                    if failed >= FAILED_STARTS:
                        raise ReachLost(f"{failed} probe pods in a row ended without a "
                                        f"result; the last: {agent.end_reason}")
                    reason = f"the previous pod ended without a result ({agent.end_reason})"
                    await asyncio.sleep(min(30.0, 2.0 ** failed))
                    continue
                failed = 0
                if previous is not None:
                    await self._delete(previous, f"replaced by {agent.name}")
                for old in list(self._companions.values()):
                    await self._delete(old, f"replaced by {agent.name}'s companions")
                self._companions = companions
                reason = await self._until_replace(agent, loop)
                if self._closed:
                    return
                self.counts["replacements"] += 1
                self.last_replacement = reason
                log.info("probe_pod_replacing", pod=agent.name, reason=reason)
                previous = None if agent.ended.is_set() else agent
                if previous is None:
                    await self._delete(agent, reason)
        finally:
            self._changed = None

    async def _targets(self) -> tuple[tuple[Target, tuple[Check, ...]], ...]:
        """The jobs to hand the next pod (waits for a TargetSet with targets)."""
        assert self._changed is not None
        while not self._jobs:
            self._changed.clear()
            await self._changed.wait()
        self._changed.clear()
        return self._jobs

    async def _nodes(self) -> list[str]:
        """The nodes to pin agents to, one each: none (one agent, placed by the scheduler)
        when the quorum or COREDNSPROBE_PROBE_PODS is 1 or fewer than two nodes are
        schedulable; else the first ``wanted`` schedulable Nodes by name, or, where these
        credentials may not list Nodes, the nodes the DNS pods run on."""
        if self.quorum < 2 or self.wanted < 2:
            return []
        try:
            listed = await request(self.api, "GET", "/api/v1/nodes")
            names = sorted(str((n.get("metadata") or {}).get("name") or "")
                           for n in listed.get("items") or ()
                           if not (n.get("spec") or {}).get("unschedulable"))
            self.nodes_from = "nodes"
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            pods = self._ts.pods if self._ts is not None else ()
            names = sorted({t.pod.node for t in pods if t.pod is not None and t.pod.node})
            if self.nodes_from != "pods":
                log.info("probe_pod_nodes_from_pods", error=str(exc), nodes=names)
            self.nodes_from = "pods"
        names = [n for n in names if n]
        return names[:self.wanted] if len(names) >= 2 else []

    def drain(self) -> list[tuple[str, str, ProbeResult]]:
        """The companions' results since the last drain, as (agent pod, node, result)."""
        out = list(self._feed)
        self._feed.clear()
        return out

    def agents(self) -> list[tuple[str, str, bool]]:
        """(pod, node, primary) of the agents serving now, the primary first."""
        out = [(a.name, a.node, True) for a in (self._current,) if a is not None]
        return out + [(a.name, a.node, False) for a in self._companions.values()]

    async def _launch(self, jobs: tuple[tuple[Target, tuple[Check, ...]], ...],
                      reason: str, *, node: str = "", primary: bool = True) -> _Agent:
        if self._closed:
            raise asyncio.CancelledError  # closed while it waited: nothing more to make
        loop = asyncio.get_running_loop()
        duration = self.lifetime - min(60.0, self.lifetime * 0.1)
        spec = spec_text(jobs, interval=self.interval, timeout=self.timeout, duration=duration,
                         max_in_flight=self.max_in_flight, domain=self.checks.domain,
                         namespace=self.checks.namespace, phase=self._agent_phase())
        try:
            spec = pack(spec)
        except ValueError as exc:
            raise ReachLost(f"{len(jobs)} targets are too many for one probe pod: {exc}") \
                from None
        body = agent_pod(self.namespace, self.image, spec, owner=self.owner,
                         instance=self.instance, lifetime=self.lifetime, targets=len(jobs),
                         node=node)
        delay = 1.0
        while True:
            created_at = loop.time()
            try:
                made = await request(self.api, "POST", self._pods_path, body=body)
                break
            except ApiError as exc:
                if exc.status in (401, 403, 404, 422):
                    raise ReachLost(f"the API refused to create the probe pod in namespace "
                                    f"{self.namespace}: {exc}") from None
                log.warning("probe_pod_create_failed", error=str(exc), retry_in=delay)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("probe_pod_create_failed", error=str(exc) or type(exc).__name__,
                            retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        name = str(made["metadata"]["name"])
        if self._closed:  # closed while the create was on its way: leave nothing behind
            await self._delete_pod(name, "shutdown")
            raise asyncio.CancelledError
        rotate_in = self.lifetime - min(300.0, self.lifetime * 0.3)
        agent = _Agent(name, created_at, _signature(jobs), created_at + rotate_in, node=node,
                       primary=primary)
        self._agents[name] = agent
        if primary:
            self._current = agent
        self.counts["pods_created"] += 1
        log.info("probe_pod_created", pod=name, namespace=self.namespace, image=self.image,
                 targets=len(jobs), reason=reason, deadline_seconds=self.lifetime,
                 node=node or None, primary=primary)
        agent.task = asyncio.get_running_loop().create_task(self._follow(agent),
                                                            name=f"probe-pod-{name}")
        return agent

    def _agent_phase(self) -> float | None:
        """When the agent's rounds should tick: LEAD ahead of the service's (a quarter of
        the interval, at most 0.5 s), so each line is there when its probe is asked for
        and a probe seldom waits; None before the service's first round (any phase)."""
        if self._ticked is None:
            return None
        return self._ticked - min(self.interval / 4, 0.5)

    async def _until_ready(self, agent: _Agent) -> None:
        """Until the first result (or its end), then until it gave a result of every
        (target, check) (or a round's time more): only then may its predecessor go."""
        await agent.ready.wait()
        if agent.first_result is not None and not agent.ended.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval + self.wait):
                    await agent.covered.wait()

    async def _until_replace(self, agent: _Agent, loop: asyncio.AbstractEventLoop) -> str:
        """Why ``agent`` must be replaced, once it must."""
        assert self._changed is not None
        changed = asyncio.ensure_future(self._changed.wait())
        ended = asyncio.ensure_future(agent.ended.wait())
        companions = [asyncio.ensure_future(c.ended.wait()) for c in self._companions.values()]
        try:
            await asyncio.wait([changed, ended, *companions],
                               timeout=max(0.0, agent.rotate_at - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (changed, ended, *companions):
                waiting.cancel()
        if not agent.ended.is_set() and not self._changed.is_set() and \
                any(c.ended.is_set() for c in self._companions.values()):
            await self._relaunch_companions(agent)
            return await self._until_replace(agent, loop)
        if agent.ended.is_set():
            return f"the pod ended: {agent.end_reason}"
        if self._changed.is_set() and _signature(self._jobs) != agent.signature:
            return "the targets changed"
        if self._changed.is_set():
            self._changed.clear()
            return await self._until_replace(agent, loop)
        return f"rotation before its activeDeadlineSeconds ({self.lifetime}s)"

    async def _relaunch_companions(self, primary: _Agent) -> None:
        """Each companion that ended is replaced on its node, after a pause that doubles
        with each one that ended there without a result (a node that cannot run it)."""
        for node, old in list(self._companions.items()):
            if not old.ended.is_set():
                continue
            self._companion_failures[node] = 0 if old.first_result is not None \
                else self._companion_failures.get(node, 0) + 1
            await self._delete(old, f"the companion ended: {old.end_reason}")
            log.info("probe_pod_replacing", pod=old.name, node=node,
                     reason=f"the pod ended: {old.end_reason}")
            await asyncio.sleep(min(30.0, 2.0 ** self._companion_failures[node]))
            if self._closed or primary.ended.is_set():
                return
            self._companions[node] = await self._launch(
                self._jobs, f"the previous companion ended ({old.end_reason})", node=node,
                primary=False)

    async def _follow(self, agent: _Agent) -> None:
        """Wait for the container to start, then read its log to the end."""
        try:
            if await self._started(agent):
                await self._read_log(agent)
                if not agent.end_reason:
                    agent.end_reason = await self._why_ended(agent)
        except asyncio.CancelledError:
            agent.end_reason = agent.end_reason or "stopped"
            raise
        except Exception as exc:  # a follower's failure ends its pod's use, never the service
            agent.end_reason = f"following its log failed: {type(exc).__name__}: {exc}"
            log.warning("probe_pod_follow_failed", pod=agent.name, error=agent.end_reason)
        finally:
            if (self._current is agent or not agent.primary) and agent.first_result is not None \
                    and not self._closed:
                log.info("probe_pod_ended", pod=agent.name, reason=agent.end_reason,
                         results=agent.results, malformed_lines=agent.malformed)
            agent.ended.set()
            agent.ready.set()

    async def _pod(self, agent: _Agent) -> dict[str, Any] | None:
        try:
            return await request(self.api, "GET", f"{self._pods_path}/{agent.name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _started(self, agent: _Agent) -> bool:
        """Poll the pod until its container runs (True) or it cannot (False, with why)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                pod = await self._pod(agent)
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("probe_pod_read_failed", pod=agent.name, error=str(exc))
                pod = {}
            if pod is None:
                agent.end_reason = "the pod was deleted before it started"
                return False
            status = pod.get("status") or {}
            agent.node = str((pod.get("spec") or {}).get("nodeName") or "")
            state = _container_state(status)
            if "running" in state or "terminated" in state:
                return True
            waiting = state.get("waiting") or {}
            why = str(waiting.get("reason") or "")
            if why in PULL_FAILURES:
                message = str(waiting.get("message") or "")
                agent.fatal = (f"the probe image {self.image!r} cannot be pulled: pod "
                               f"{self.namespace}/{agent.name} is waiting with {why}: {message}. "
                               f"Set COREDNSPROBE_PROBE_IMAGE to an image of this project "
                               f"the cluster's nodes can pull")
                agent.end_reason = why
                return False
            if why in CANNOT_START:
                agent.fatal = (f"the probe pod {self.namespace}/{agent.name} cannot start: "
                               f"{why}: {waiting.get('message', '')}")
                agent.end_reason = why
                return False
            if status.get("phase") in ("Failed", "Succeeded"):
                agent.end_reason = _ended_text(status)
                return False
            if loop.time() - agent.created > self.start_budget:
                conditions = {c.get("type"): c for c in status.get("conditions") or ()}
                sched = conditions.get("PodScheduled") or {}
                agent.fatal = (f"the probe pod {self.namespace}/{agent.name} did not start "
                               f"within {self.start_budget:g}s (phase "
                               f"{status.get('phase', 'unknown')}"
                               f"{', ' + str(sched.get('message')) if sched.get('message') else ''}"
                               f"{', waiting: ' + why if why else ''})")
                return False
            await asyncio.sleep(self.poll)

    async def _read_log(self, agent: _Agent) -> None:
        """Follow the container's log; a stream cut while the pod runs is followed again
        from its new lines on."""
        query: list[tuple[str, str]] = [("follow", "true"), ("container", CONTAINER)]
        timeout = aiohttp.ClientTimeout(total=None, connect=30.0, sock_connect=30.0,
                                        sock_read=None)
        for attempt in range(5):
            try:
                async with await send(self.api, "GET", f"{self._pods_path}/{agent.name}/log",
                                      query=query, deadline=timeout) as resp:
                    async for line in resp.content:
                        self._take(agent, line)
            except (aiohttp.ClientError, ApiError) as exc:
                log.warning("probe_pod_log_interrupted", pod=agent.name, error=str(exc),
                            attempt=attempt + 1)
            pod = await self._pod(agent)
            if pod is None:
                agent.end_reason = "the pod was deleted"
                return
            if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
                agent.end_reason = _ended_text(pod.get("status") or {})
                return
            query = [("follow", "true"), ("container", CONTAINER), ("tailLines", "0")]
            await asyncio.sleep(self.poll)
        agent.end_reason = "its log stream kept ending while it ran"

    async def _why_ended(self, agent: _Agent) -> str:
        pod = await self._pod(agent)
        return "the pod was deleted" if pod is None else _ended_text(pod.get("status") or {})

    def _take(self, agent: _Agent, line: bytes) -> None:
        """One log line: a result to hand on, the hello, or a malformed line (counted)."""
        counts = self.counts
        counts["lines"] += 1
        try:
            result = self._lookup.read(line)
        except UnknownJob:
            counts["unknown_lines"] += 1
            return
        except LineError as exc:
            counts["malformed_lines"] += 1
            agent.malformed += 1
            if agent.malformed == 1:
                log.warning("probe_pod_line_malformed", pod=agent.name, error=str(exc),
                            line=line[:200].decode("utf-8", "replace").rstrip())
            return
        if result is None:
            return
        counts["results"] += 1
        agent.results += 1
        if not agent.covered.is_set():
            agent.seen.add((result.target.key, result.check.name))
            if len(agent.seen) >= sum(len(checks) for _, checks in agent.signature):
                agent.covered.set()
        if agent.first_result is None:
            now = asyncio.get_running_loop().time()
            agent.first_result = now
            startup = now - agent.created
            self.startup_last = startup
            self.startup_max = max(self.startup_max or 0.0, startup)
            log.info("probe_pod_ready", pod=agent.name, node=agent.node,
                     startup_seconds=round(startup, 3))
            agent.ready.set()
        if agent.primary:
            self._deliver(result)
        else:
            self._feed.append((agent.name, agent.node, result))

    async def _delete(self, agent: _Agent, why: str) -> None:
        """Delete an agent pod of ours (it is gone already: fine)."""
        if agent.task is not None:
            agent.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await agent.task
        self._agents.pop(agent.name, None)
        if self._current is agent:
            self._current = None
        if self._companions.get(agent.node) is agent:
            del self._companions[agent.node]
        await self._delete_pod(agent.name, why)

    async def _delete_pod(self, name: str, why: str) -> None:
        try:
            await request(self.api, "DELETE", f"{self._pods_path}/{name}",
                          query=[("gracePeriodSeconds", "0")])
            log.info("probe_pod_deleted", pod=name, reason=why)
        except ApiError as exc:
            if exc.status != 404:
                log.warning("probe_pod_delete_failed", pod=name, error=str(exc))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("probe_pod_delete_failed", pod=name, error=str(exc))

    async def _reap(self) -> None:
        """Delete agent pods a crashed earlier run of this owner left, and ended ones."""
        try:
            listed = await request(self.api, "GET", self._pods_path,
                                   query=[("labelSelector", SELECTOR)])
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            if isinstance(exc, ApiError) and exc.status in (401, 403):
                raise ReachLost(f"the API refused to list pods in namespace "
                                f"{self.namespace}: {exc}") from None
            log.warning("probe_pod_reap_failed", error=str(exc))
            return
        for pod in listed.get("items") or ():
            meta = pod.get("metadata") or {}
            labels = meta.get("labels") or {}
            name = str(meta.get("name") or "")
            phase = (pod.get("status") or {}).get("phase")
            if labels.get(OWNER_LABEL) == self.owner and labels.get(INSTANCE_LABEL) != \
                    self.instance:
                why = f"left by an earlier run of {self.owner}"
            elif phase in ("Succeeded", "Failed"):
                why = f"ended ({phase})"
            else:
                continue
            self.counts["reaped"] += 1
            log.info("probe_pod_reaped", pod=name, owner=labels.get(OWNER_LABEL, ""),
                     reason=why)
            await self._delete_pod(name, why)

    async def aclose(self) -> None:
        """Delete every agent pod of ours; idempotent."""
        if self._closed:
            return
        self._closed = True
        # probes still waiting are answered now, so no round waits on a closed reach
        for waiting in list(self._deadlines):
            if not waiting.done:
                waiting.done = True
                waiting.on_done(self._not_carried(waiting))
        self._deadlines.clear()
        self._waiters.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for agent in list(self._agents.values()):
            await self._delete(agent, "shutdown")
        # a create cancelled on its way may have made a pod whose name never came back
        try:
            listed = await request(self.api, "GET", self._pods_path, query=[
                ("labelSelector", f"{SELECTOR},{INSTANCE_LABEL}={self.instance}")])
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("probe_pod_list_failed", error=str(exc))
            listed = {}
        for pod in listed.get("items") or ():
            await self._delete_pod(str((pod.get("metadata") or {}).get("name")), "shutdown")

    def status(self) -> dict[str, Any]:
        current = self._current
        return {
            "namespace": self.namespace, "image": self.image, "owner": self.owner,
            "pod": current.name if current is not None else None,
            "node": current.node if current is not None else None,
            "deadline_seconds": self.lifetime,
            "startup_seconds": _rounded(self.startup_last),
            "startup_seconds_max": _rounded(self.startup_max),
            "last_replacement": self.last_replacement or None,
            "agents": [{"pod": a.name, "node": a.node or None, "primary": a.primary,
                        "startup_seconds": _rounded(a.startup), "results": a.results}
                       for a in ([self._current] if self._current else [])
                       + list(self._companions.values())],
            "agent_nodes_from": self.nodes_from or None,
            **self.counts,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _container_state(status: dict[str, Any]) -> dict[str, Any]:
    for c in status.get("containerStatuses") or ():
        if c.get("name") == CONTAINER:
            state = c.get("state")
            return state if isinstance(state, dict) else {}
    return {}


def _ended_text(status: dict[str, Any]) -> str:
    state = _container_state(status)
    term = state.get("terminated") or {}
    parts = [f"phase {status.get('phase', 'unknown')}"]
    if status.get("reason"):
        parts.append(str(status["reason"]))
    if term:
        parts.append(f"exit {term.get('exitCode')} ({term.get('reason', '')})")
    if status.get("message"):
        parts.append(str(status["message"]))
    return ", ".join(parts)

