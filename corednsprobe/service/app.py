"""The composition root: builds the parts from Settings and runs them in one TaskGroup.

Owns: which checks each target gets, wiring the ClusterView's TargetSets into
the Rounds, every result into the Tracker and the metrics, and each round's
verdict into the Diagnosis, the logs and /status; graceful shutdown.
Never does: business logic of its own — each rule lives in its module.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from corednsprobe import logs
from corednsprobe.config import Settings
from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.judge.tracker import Thresholds, Tracker
from corednsprobe.metrics import Metrics
from corednsprobe.model import (
    Check,
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    ProbeResult,
    RoundReport,
    Target,
    TargetKey,
    TargetKind,
    TargetSet,
)
from corednsprobe.probe.rounds import Job, Rounds
from corednsprobe.stats import failure_lower_bound

log = logs.get(__name__)
LAST_RESULTS = 10  # per target, for /status


class ProbeEngine(Protocol):
    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        ...


class TargetSource(Protocol):
    current: TargetSet

    async def run(self) -> None: ...

    async def changed(self, after: int) -> TargetSet: ...

    @property
    def last_event_at(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Checks:
    """The questions every round asks, built from the settings and the truth."""

    domain: str
    namespace: str
    external_name: str = ""

    def for_target(self, target: Target, expected: frozenset[str]) -> tuple[Check, ...]:
        return _checks(self, target.kind is TargetKind.SERVICE, expected)

    @property
    def canary_zone(self) -> str:
        return f"{self.namespace}.svc.{self.domain}."

    def qname(self, check: Check) -> str | None:
        """A fresh name for the NXDOMAIN canary so no cache can answer it."""
        if check.name == "nxdomain":
            return f"corednsprobe-{secrets.token_hex(6)}.{self.canary_zone}"
        return None


@functools.lru_cache(maxsize=16)
def _checks(c: Checks, service: bool, expected: frozenset[str]) -> tuple[Check, ...]:
    """The checks for a pod or the Service; the truth decides A or AAAA.

    default/kubernetes's ClusterIPs say which families the cluster serves:
    each family present gets its own question (A for IPv4, AAAA for IPv6), so
    an IPv6-only cluster is asked AAAA instead of failing every probe with
    NODATA. With no truth yet, any A answer is accepted.
    """
    d = c.domain
    v4 = frozenset(a for a in expected if ":" not in a)
    v6 = expected - v4
    name = f"kubernetes.default.svc.{d}."
    checks = []
    if v4 or not v6:
        checks.append(Check("kubernetes", name, "A", v4 or None))
    if v6:
        checks.append(Check("kubernetes_aaaa", name, "AAAA", v6))
    checks.append(Check("nxdomain", c.canary_zone, "A", None, "NXDOMAIN"))
    if c.external_name:
        checks.append(Check("external", f"{c.external_name}.", "A", upstream=True))
    if service:
        qtype, want = ("A", v4 or None) if v4 or not v6 else ("AAAA", v6)
        checks.append(Check("app_view", "kubernetes.default", qtype, want,
                            search=(f"default.svc.{d}", f"svc.{d}", d), ndots=5,
                            application_view=True))
    return tuple(checks)


@dataclass
class State:
    """What the service knows now; read by /status, /healthz and /readyz."""

    targets: TargetSet = field(default_factory=TargetSet)
    healths: dict[TargetKey, Health] = field(default_factory=dict)
    diagnosis: Diagnosis = field(
        default_factory=lambda: Diagnosis(DiagnosisState.SYNCING, "starting")
    )
    last: dict[TargetKey, deque[ProbeResult]] = field(default_factory=dict)
    rounds: int = 0
    overruns: int = 0
    last_round: RoundReport | None = None
    last_round_end: float | None = None  # loop time
    started: float | None = None  # loop time the schedule began (after the first list)


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
    ) -> None:
        self.settings = settings
        self.view = view
        self.engine = engine
        self.wall = wall
        self.metrics = metrics or Metrics(
            settings.timeout, last_event_at=lambda: view.last_event_at, now=_loop_time
        )
        self.checks = Checks(settings.cluster_domain, settings.namespace, settings.external_name)
        self.tracker = Tracker(Thresholds(settings.window, settings.failure_ratio,
                                          settings.min_samples, settings.recovery_successes,
                                          settings.min_pod_age))
        self.policy = Policy(settings.max_unhealthy_fraction, settings.failure_ratio)
        self.state = State()
        self._on_diagnosis = on_diagnosis
        self._keys: tuple[int, frozenset[TargetKey]] = (-1, frozenset())
        self.rounds = Rounds(
            interval=settings.interval, timeout=settings.timeout,
            max_in_flight=settings.max_in_flight, jobs=self._jobs, probe=self._probe,
            on_result=self._on_result, on_round=self._on_round, is_current=self._is_current,
        )

    async def run(self) -> None:
        """Run until cancelled: the watch, the schedule and the TargetSet follower."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.view.run(), name="cluster-view")
            tasks.create_task(self._follow_targets(), name="targets")
            await self.view.changed(0)
            self.state.started = _loop_time()
            tasks.create_task(self.rounds.run(), name="rounds")

    async def _follow_targets(self) -> None:
        seen = 0
        while True:
            ts = await self.view.changed(seen)
            seen = ts.generation
            self.state.targets = ts
            self.metrics.set_targets(ts)
            current = {t.key for t in ts.targets}
            for key in [k for k in self.state.last if k not in current]:
                del self.state.last[key]

    def _jobs(self, _round: int) -> Sequence[Job]:
        ts = self.view.current
        return [(t, c) for t in ts.targets for c in self.checks.for_target(t, ts.expected)]

    def _is_current(self, target: Target) -> bool:
        ts = self.view.current
        if self._keys[0] != ts.generation:
            self._keys = (ts.generation, frozenset(t.key for t in ts.targets))
        return target.key in self._keys[1]

    async def _probe(self, target: Target, check: Check) -> ProbeResult:
        return await self.engine.probe(target, check, self.checks.qname(check))

    def _on_result(self, result: ProbeResult) -> None:
        if not self._is_current(result.target):
            return  # it left while the probe was out: no window, no series to revive
        self.tracker.record(result, self.wall())
        self.metrics.observe(result)
        ring = self.state.last.setdefault(result.target.key, deque(maxlen=LAST_RESULTS))
        ring.append(result)

    def _on_round(self, report: RoundReport) -> None:
        st = self.state
        st.rounds += 1
        st.overruns = self.rounds.overruns
        st.last_round, st.last_round_end = report, _loop_time()
        self.metrics.round_done(report)
        if report.overrun:
            log.warning("round_overran", round=report.number, duration=round(report.duration, 3),
                        interval=self.settings.interval, probes=report.probes)
        self.judge()

    def judge(self) -> Diagnosis:
        """Evaluate every target and the whole; log what changed."""
        st = self.state
        ts = self.view.current
        healths = self.tracker.evaluate(ts.targets, self.wall())
        for key, h in healths.items():
            old = st.healths.get(key)
            if old is not None and old.state is not h.state:
                _log_health_change(old, h)
        verdict = diagnose(ts, healths, self.policy)
        if verdict.state is not st.diagnosis.state or verdict.candidates != st.diagnosis.candidates:
            log.info("diagnosis_changed", state=verdict.state.value,
                     previous=st.diagnosis.state.value, reason=verdict.reason,
                     would_restart=[t.name for t in verdict.candidates])
        st.healths, st.diagnosis = healths, verdict
        self.metrics.set_health(healths)
        self.metrics.set_diagnosis(verdict)
        if self._on_diagnosis is not None:
            self._on_diagnosis(verdict, healths)
        return verdict

    # -- views for the HTTP server -------------------------------------------------

    def ready(self) -> bool:
        return self.view.current.generation > 0

    def live(self) -> bool:
        """False when rounds stopped completing (the loop or the schedule is stuck).

        Waiting for the API's first list is not being stuck: /readyz says that,
        and restarting the prober would not bring the API back.
        """
        if self.state.started is None:
            return True
        s = self.settings
        grace = 3 * s.interval + 2 * s.timeout + 5
        last = self.state.last_round_end or self.state.started
        return _loop_time() - last < grace

    def status(self) -> dict[str, Any]:
        st = self.state
        return {
            "targets_state": st.targets.state.value,
            "generation": st.targets.generation,
            "expected": sorted(st.targets.expected),
            "diagnosis": {
                "state": st.diagnosis.state.value,
                "reason": st.diagnosis.reason,
                "candidates": [t.name for t in st.diagnosis.candidates],
                "evidence": dict(st.diagnosis.evidence),
            },
            "targets": [self._target_status(t) for t in st.targets.targets],
            "rounds": {
                "completed": st.rounds,
                "overruns": st.overruns,
                "last_duration_seconds": st.last_round.duration if st.last_round else None,
            },
            "settings": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in self.settings.as_dict().items()},
        }

    def _target_status(self, t: Target) -> dict[str, Any]:
        h = self.state.healths.get(t.key)
        out: dict[str, Any] = {
            "name": t.name, "kind": t.kind.value, "address": t.address, "port": t.port,
            "node": t.pod.node if t.pod else None,
            "health": h.state.value if h else HealthState.UNKNOWN.value,
            "window": {
                "seconds": self.settings.window,
                "samples": h.samples if h else 0,
                "failures": h.failures if h else 0,
                "failure_ratio": round(h.ratio, 4) if h else 0.0,
                "failure_ratio_lower_bound": (
                    round(failure_lower_bound(h.failures, h.samples), 4) if h else 0.0),
                "udp_only": h.udp_only if h else 0,
                "outcomes": dict(h.outcomes) if h else {},
            },
            "grace_reason": h.grace_reason if h else "",
            "last": [
                {"check": r.check.name, "outcome": r.outcome.value, "rcode": r.rcode,
                 "rtt_seconds": r.rtt_seconds, "udp_only": r.udp_only, "at": r.at,
                 "answers": list(r.answers), "detail": r.detail}
                for r in self.state.last.get(t.key, ())
            ],
        }
        return out


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


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


async def serve(
    settings: Settings,
    api: Any,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[ProberService, int], None] | None = None,
    on_round: Callable[[ProberService, dict[str, Any]], None] | None = None,
    timing: Any = None,
    lease_timing: Any = None,
) -> None:
    """Run the whole service until ``stop`` is set or SIGTERM/SIGINT arrives.

    Shutdown is graceful: probing stops, the watches close, the leader hands
    its Lease back, the HTTP server answers its last requests, and the
    function returns (the CLI exits 0).
    """
    import signal

    from corednsprobe.kube.access import prober_namespace
    from corednsprobe.kube.informer import DEFAULT_TIMING
    from corednsprobe.kube.lease import LeaderElector
    from corednsprobe.kube.view import ClusterView
    from corednsprobe.probe.engine import Prober
    from corednsprobe.remedy.remediator import Remediator, rails_from
    from corednsprobe.service.server import build_app, start

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    holder: list[ProberService] = []
    view = ClusterView(
        api, namespace=settings.namespace, service=settings.service,
        timing=timing or DEFAULT_TIMING,
        on_restart=lambda name, reason: holder[0].metrics.watch_restarted(name, reason),
    )
    metrics = Metrics(settings.timeout, last_event_at=lambda: view.last_event_at, now=_loop_time)
    metrics.set_remediation_mode(settings.remediation)
    elector: LeaderElector | None = None
    remediator: Remediator | None = None
    if settings.remediation != "off":
        lease_ns = prober_namespace(settings.prober_namespace, settings.namespace)
        elector = LeaderElector(api, lease_ns, settings.lease_name, timing=lease_timing,
                                on_change=lambda leading: metrics.leader.set(int(leading)))
        remediator = Remediator(api, settings.namespace, rails_from(settings),
                                leadership=elector, metrics=metrics, lease_namespace=lease_ns)

    def after_round(diagnosis: Diagnosis, healths: dict[TargetKey, Health]) -> None:
        if remediator is not None:
            remediator.on_diagnosis(diagnosis, healths)
        if on_round is not None:
            on_round(holder[0], remediator.status() if remediator is not None else {})

    service = ProberService(settings, view, Prober(settings.timeout), metrics=metrics,
                            on_diagnosis=after_round)
    holder.append(service)
    host, port = settings.listen
    extra = {"remediation": remediator.status} if remediator else None
    runner, bound = await start(build_app(service, extra), host, port)
    log.info("service_started", listen=f"{host}:{bound}", namespace=settings.namespace,
             service=settings.service, interval=settings.interval, timeout=settings.timeout)
    if on_listening is not None:
        on_listening(service, bound)
    try:
        async with asyncio.TaskGroup() as tasks:
            work = [tasks.create_task(service.run(), name="prober")]
            if elector is not None and remediator is not None:
                work.append(tasks.create_task(elector.run(), name="leader-election"))
                work.append(tasks.create_task(remediator.run(), name="remediator"))
            await stop.wait()
            for task in work:
                task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        log.info("service_stopped", rounds=service.state.rounds)
