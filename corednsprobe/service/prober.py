"""The prober service: probes every target on the Rounds and judges each round.

Owns: following the ClusterView's TargetSets (as the reach strategy plans them:
a strategy may leave targets out, e.g. port-forward the ClusterIP), feeding each round's results
into the Tracker, the metrics and the recent-results ring, asking each pod's
own health endpoints beside every round (the kubelet's view, kept as their
latest states for the evidence, /status and a metric), judging every
target and the whole after each round (logging what changed) and handing the
verdict on (``on_diagnosis``); the State that /status and liveness read.
Never does: remediate, serve HTTP or decide what /status shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from corednsprobe import logs
from corednsprobe.config import Settings
from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.judge.tracker import Thresholds, Tracker
from corednsprobe.metrics import Metrics
from corednsprobe.model import (
    Diagnosis,
    DiagnosisState,
    EndpointState,
    Health,
    HealthState,
    ProbeResult,
    RoundReport,
    TargetKey,
    TargetSet,
)
from corednsprobe.probe.checks import Checks
from corednsprobe.probe.health import HealthRounds
from corednsprobe.probe.rounds import ProbeEngine, Rounds

log = logs.get(__name__)
LAST_RESULTS = 10  # per target, for /status


class Combiner(Protocol):
    """Combines this replica's healths with the other vantages' (service.vantages)."""

    def merge(self, targets: TargetSet, healths: Mapping[TargetKey, Health], policy: Policy,
              endpoints: Mapping[TargetKey, tuple[EndpointState, ...]] | None = None,
              ) -> tuple[Diagnosis, dict[TargetKey, Health]]: ...


class TargetSource(Protocol):
    @property
    def current(self) -> TargetSet: ...

    async def run(self) -> None: ...

    async def changed(self, after: int) -> TargetSet: ...

    @property
    def last_event_at(self) -> float | None: ...


@dataclass
class State:
    """What the service knows now; read by /status, /healthz and /readyz."""

    targets: TargetSet = field(default_factory=TargetSet)
    healths: dict[TargetKey, Health] = field(default_factory=dict)
    diagnosis: Diagnosis = field(
        default_factory=lambda: Diagnosis(DiagnosisState.SYNCING, "starting")
    )
    last: dict[TargetKey, deque[ProbeResult]] = field(default_factory=dict)
    endpoints: dict[TargetKey, tuple[EndpointState, ...]] = field(default_factory=dict)
    rounds: int = 0
    overruns: int = 0
    last_round: RoundReport | None = None
    last_round_end: float | None = None  # loop time
    started: float | None = None  # loop time the schedule began (after the first list)


class Planned:
    """The TargetSet in force as the engine plans it (``engine.plan``, when it has one:
    a reach strategy), computed once per published TargetSet and ``plan_version`` (an
    optional counter a strategy bumps when what it probes changed on its own, e.g. the
    nodes behind a NodePort)."""

    def __init__(self, view: TargetSource, engine: ProbeEngine) -> None:
        self.view = view
        self.engine = engine
        self._cache: tuple[TargetSet | None, int, TargetSet] = (None, 0, TargetSet())

    def use(self, engine: ProbeEngine) -> None:
        self.engine = engine
        self._cache = (None, 0, TargetSet())

    def of(self, ts: TargetSet) -> TargetSet:
        plan = getattr(self.engine, "plan", None)
        if plan is None:
            return ts
        version: int = getattr(self.engine, "plan_version", 0)
        seen, seen_version, planned = self._cache
        if seen is not ts or seen_version != version:
            planned = plan(ts)
            self._cache = (ts, version, planned)
        return planned

    @property
    def current(self) -> TargetSet:
        return self.of(self.view.current)


class ProberService:
    """Probes, judges and reports. Remediation acts on its decisions (``on_diagnosis``)."""

    def __init__(
        self,
        settings: Settings,
        view: TargetSource,
        engine: ProbeEngine,
        *,
        metrics: Metrics | None = None,
        wall: Callable[[], float] = time.time,
        on_diagnosis: Callable[[Diagnosis, dict[TargetKey, Health]], None] | None = None,
        vantages: Combiner | None = None,
    ) -> None:
        self.settings = settings
        self.view = view
        self.wall = wall
        self.metrics = metrics or Metrics(
            settings.timeout, last_event_at=lambda: view.last_event_at, now=loop_time
        )
        self.checks = Checks(settings.cluster_domain, settings.namespace, settings.external_name)
        self.tracker = Tracker(Thresholds(settings.window, settings.failure_ratio,
                                          settings.min_samples, settings.recovery_successes,
                                          settings.min_pod_age))
        self.policy = Policy(settings.max_unhealthy_fraction, settings.failure_ratio,
                             settings.min_samples)
        self.state = State()
        self._on_diagnosis = on_diagnosis
        self.vantages = vantages  # None: this replica's own view alone, as before
        self.engine = engine
        self.planned = Planned(view, engine)
        self.rounds = Rounds(self.planned, self.checks, engine, self.round_done,
                             interval=settings.interval, timeout=settings.timeout,
                             max_in_flight=settings.max_in_flight)
        self.health_rounds = HealthRounds(_ReachablePods(self), self.endpoints_done,
                                          interval=settings.interval, timeout=settings.timeout,
                                          max_in_flight=settings.max_in_flight, wall=wall,
                                          urgent=self._dns_unhealthy)

    def use(self, engine: ProbeEngine) -> None:
        """Probe through ``engine`` from the next probe on (a reach strategy chosen again);
        the targets are planned afresh, and the windows of targets it no longer probes go."""
        self.engine = engine
        self.planned.use(engine)
        self.rounds.use(engine)
        self._show(self.view.current)
        if not reaches_pod_network(engine):  # the pods' own endpoints are out of reach now
            self.metrics.set_health_endpoints({key: () for key in self.state.endpoints})
            self.state.endpoints.clear()

    async def run(self) -> NoReturn:
        """Run until cancelled: the watch, the schedule and the TargetSet follower."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.view.run(), name="cluster-view")
            tasks.create_task(self._follow_targets(), name="targets")
            await self.view.changed(0)
            self.state.started = loop_time()
            tasks.create_task(self.rounds.run(), name="rounds")
            tasks.create_task(self.health_rounds.run(), name="health-endpoints")
        raise AssertionError("unreachable: the prober's tasks never end")

    async def _follow_targets(self) -> NoReturn:
        seen = 0
        while True:
            ts = await self.view.changed(seen)
            seen = ts.generation
            self._show(ts)

    def _show(self, published: TargetSet) -> None:
        ts = self.planned.of(published)
        self.state.targets = ts
        self.metrics.set_targets(ts)
        current = {t.key for t in ts.targets}
        for key in [k for k in self.state.last if k not in current]:
            del self.state.last[key]
        for key in [k for k in self.state.endpoints if k not in current]:
            del self.state.endpoints[key]

    def round_done(self, report: RoundReport) -> None:
        """Take in one round's results, count it, and judge."""
        for result in report.results:
            self.record(result)
        st = self.state
        st.rounds += 1
        st.overruns = self.rounds.overruns
        st.last_round, st.last_round_end = report, loop_time()
        self.metrics.round_done(report)
        if report.overrun:
            log.warning("round_overran", round=report.number, duration=round(report.duration, 3),
                        interval=self.settings.interval, probes=report.probes)
        self.judge()

    def _dns_unhealthy(self, key: TargetKey) -> bool:
        """Whether the pod's DNS is judged unhealthy now (its endpoints are asked every
        round then, for the evidence against it)."""
        h = self.state.healths.get(key)
        return h is not None and h.state is HealthState.UNHEALTHY

    def endpoints_done(self, states: dict[TargetKey, tuple[EndpointState, ...]]) -> None:
        """One pass over the pods' health endpoints: the latest states of current pods."""
        current = {t.key for t in self.view.current.pods}
        fresh = {k: v for k, v in states.items() if k in current}
        self.state.endpoints.update(fresh)
        self.metrics.set_health_endpoints(fresh)

    def record(self, result: ProbeResult) -> None:
        """One probe's outcome into the window, the metrics and the ring of recent results."""
        if not self.rounds.is_current(result.target):
            return  # it left while the probe was out: no window, no series to revive
        self.tracker.record(result, self.wall())
        self.metrics.observe(result)
        key = result.target.key
        ring = self.state.last.get(key)
        if ring is None:
            ring = self.state.last[key] = deque(maxlen=LAST_RESULTS)
        ring.append(result)

    def judge(self) -> Diagnosis:
        """Evaluate every target and the whole; log what changed."""
        st = self.state
        ts = self.planned.current
        if ts is not st.targets:  # planned afresh without a new TargetSet (plan_version)
            self._show(self.view.current)
        now = self.wall()
        healths = self.tracker.evaluate(ts.targets, now)
        judged = ts
        attribute = getattr(self.engine, "attribute", None)
        if attribute is not None:  # pods judged from answers through a shared address
            published = self.view.current
            healths.update(attribute(published, now))
            judged = dataclasses.replace(ts, pods=published.pods)
        for key, h in healths.items():
            old = st.healths.get(key)
            if old is not None and old.state is not h.state:
                _log_health_change(old, h)
        verdict, acted_on = diagnose(judged, healths, self.policy, st.endpoints), healths
        if self.vantages is not None:  # the verdict over every vantage's view
            verdict, acted_on = self.vantages.merge(judged, healths, self.policy, st.endpoints)
        if verdict.state is not st.diagnosis.state or verdict.candidates != st.diagnosis.candidates:
            log.info("diagnosis_changed", state=verdict.state.value,
                     previous=st.diagnosis.state.value, reason=verdict.reason,
                     would_restart=[t.name for t in verdict.candidates])
        st.healths, st.diagnosis = healths, verdict
        self.metrics.set_health(healths)
        self.metrics.set_diagnosis(verdict)
        if self._on_diagnosis is not None:
            self._on_diagnosis(verdict, acted_on)
        return verdict


def reaches_pod_network(engine: object) -> bool:
    """Whether probes through ``engine`` go straight to the pod network (the direct
    strategy, or a bare Prober), so that this process can ask the pods' own health
    endpoints too."""
    return str(getattr(engine, "strategy", "direct")) == "direct"


class _ReachablePods:
    """The pods whose own health endpoints this process asks: every pod while the probes
    go straight to the pod network; none through an outside strategy, where a GET would
    fail for want of a route, not because the kubelet would see the pod sick."""

    def __init__(self, service: ProberService) -> None:
        self.service = service

    @property
    def current(self) -> TargetSet:
        if not reaches_pod_network(self.service.engine):
            return TargetSet()
        return self.service.view.current


def _log_health_change(old: Health, new: Health) -> None:
    fields = {"target": new.target.name, "kind": new.target.kind.value,
              "address": new.target.address, "previous": old.state.value,
              "failures": new.failures, "samples": new.samples, "udp_only": new.udp_only,
              "outcomes": dict(new.outcomes)}
    if new.state is HealthState.UNHEALTHY:
        log.warning("target_unhealthy", **fields)
    elif old.state is HealthState.UNHEALTHY and new.state is HealthState.HEALTHY:
        log.info("target_recovered", **fields)
    else:
        log.debug("target_state_changed", state=new.state.value, **fields)


def loop_time() -> float:
    """The running loop's clock (the clock every deadline and tick is on)."""
    return asyncio.get_running_loop().time()
