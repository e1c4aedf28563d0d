"""The composition root: builds the parts from Settings and runs them in one TaskGroup.

Owns: building the Metrics, the ClusterView, the reach strategy (and choosing it
again when it stops working, under auto), the prober service, the status page and
HTTP server, and (when remediation is on) the leader election and the
remediator; wiring each round's verdict into the remediator; running them all
in one TaskGroup and draining it on SIGTERM/SIGINT.
Never does: business logic of its own — each rule lives in its module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable
from typing import Any

from corednsprobe import logs
from corednsprobe.config import Settings
from corednsprobe.kube.access import prober_namespace
from corednsprobe.kube.informer import DEFAULT_TIMING
from corednsprobe.kube.lease import LeaderElector, LeaseStore
from corednsprobe.kube.replicas import ReplicaView
from corednsprobe.kube.view import ClusterView
from corednsprobe.metrics import Metrics
from corednsprobe.model import Diagnosis, Health, TargetKey
from corednsprobe.reach import Strategy
from corednsprobe.reach.base import NoReach, Reach, ReachLost
from corednsprobe.reach.choose import Chosen, choose
from corednsprobe.reach.probepod import ProbePodReach
from corednsprobe.remedy.policy import Decision
from corednsprobe.remedy.remediator import Remediator, rails_from
from corednsprobe.service.prober import ProberService, loop_time
from corednsprobe.service.server import build_app, start
from corednsprobe.service.status import StatusPage
from corednsprobe.service.vantages import AgentSource, Vantages
from corednsprobe.service.vantages import identity as vantage_identity

log = logs.get(__name__)


async def serve(
    settings: Settings,
    api: Any,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[ProberService, int], None] | None = None,
    on_round: Callable[[ProberService, dict[str, Any]], None] | None = None,
    on_decided: Callable[[dict[str, Any] | None], None] | None = None,
    timing: Any = None,
    lease_timing: Any = None,
    in_cluster: bool = False,
) -> None:
    """Run the whole service until ``stop`` is set or SIGTERM/SIGINT arrives.

    ``in_cluster``: the API credentials are the pod's service account; with
    COREDNSPROBE_LISTEN unset, only then does the HTTP server listen on every
    interface (elsewhere on loopback).

    Shutdown is graceful: probing stops, the watches close, the leader hands
    its Lease back, the HTTP server answers its last requests, and the
    function returns (the CLI exits 0).

    ``on_round`` hears every round at once (remediation as it stands then);
    ``on_decided`` hears, once per round and in order, the remediation status
    right after the decision made on that round's verdict (None when that
    verdict was skipped for a newer one; at once, empty, with remediation off).
    """
    settings = dataclasses.replace(settings, listen=settings.listen_address(in_cluster))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics(settings.timeout, now=loop_time)
    view = ClusterView(api, namespace=settings.namespace, service=settings.service,
                       timing=timing or DEFAULT_TIMING, on_restart=metrics.watch_restarted,
                       on_skip=metrics.object_skipped)
    metrics.follow_watches(lambda: view.last_event_at)
    metrics.set_remediation_mode(settings.remediation)
    elector: LeaderElector | None = None
    remediator: Remediator | None = None
    if settings.remediation != "off":
        lease_ns = prober_namespace(settings.prober_namespace, settings.namespace)
        elector = LeaderElector(api, lease_ns, settings.lease_name, timing=lease_timing,
                                on_change=lambda leading: metrics.leader.set(int(leading)))
        remediator = Remediator(api, settings.namespace, rails_from(settings),
                                leadership=elector, store=LeaseStore(elector), metrics=metrics,
                                lease_namespace=lease_ns,
                                service=settings.service, lease_name=settings.lease_name)

    def decided(decision: Decision | None) -> None:
        if on_decided is not None:
            on_decided(remediator.status() if remediator is not None and decision else None)

    def after_round(diagnosis: Diagnosis, healths: dict[TargetKey, Health]) -> None:
        if remediator is not None:
            remediator.on_diagnosis(diagnosis, healths, decided if on_decided else None)
        elif on_decided is not None:
            on_decided({})
        if on_round is not None:
            on_round(service, remediator.status() if remediator is not None else {})

    host, port = settings.listen_address(in_cluster)
    vantages = build_vantages(settings, api, elector, metrics, port, timing)
    reach = ReachInUse(await choose(settings, api, in_cluster=in_cluster,
                                    on_ignored=metrics.reply_ignored), metrics)
    vantages.agent_source = lambda: agent_source(reach.reach)
    service = ProberService(settings, view, reach.reach, metrics=metrics,
                            on_diagnosis=after_round, vantages=vantages)
    sections: dict[str, Callable[[], Any]] = {"reach": reach.status,
                                              "vantages": vantages.status}
    if remediator is not None:
        sections["remediation"] = remediator.status
    page = StatusPage(service, sections)
    runner, bound = await start(build_app(metrics, page, vantages.document), host, port)
    log.info("service_started", listen=f"{host}:{bound}", namespace=settings.namespace,
             service=settings.service, interval=settings.interval, timeout=settings.timeout,
             **startup_mode(settings, elector, reach.reach.strategy.value))
    reach.announce()
    if on_listening is not None:
        on_listening(service, bound)
    try:
        async with asyncio.TaskGroup() as tasks:
            work: list[asyncio.Task[Any]] = [
                tasks.create_task(service.run(), name="prober"),
                tasks.create_task(reach.keep(settings, api, in_cluster, service), name="reach")]
            if vantages.replicas is not None:
                work.append(tasks.create_task(vantages.replicas.run(), name="replicas"))
                work.append(tasks.create_task(vantages.run(), name="vantages"))
            if elector is not None and remediator is not None:
                work.append(tasks.create_task(elector.run(), name="leader-election"))
                work.append(tasks.create_task(remediator.run(), name="remediator"))
            await stop.wait()
            for task in work:
                task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await reach.reach.aclose()
        await runner.cleanup()
        log.info("service_stopped", rounds=service.state.rounds)


def build_vantages(settings: Settings, api: Any, elector: LeaderElector | None,
                   metrics: Metrics, port: int, timing: Any) -> Vantages:
    """This replica as a vantage; the leader pulls the others' views when remediation is on
    and COREDNSPROBE_VANTAGE_SERVICE names the prober's Service."""
    replicas = None
    if elector is not None and settings.vantage_service:
        replicas = ReplicaView(api, namespace=elector.namespace,
                               service=settings.vantage_service, default_port=port,
                               timing=timing or DEFAULT_TIMING,
                               on_restart=metrics.watch_restarted,
                               on_skip=metrics.object_skipped)
    pod, node = vantage_identity(settings)
    return Vantages(settings, replicas, pod=pod, node=node, metrics=metrics,
                    leading=lambda: elector is not None and elector.is_leader())


def agent_source(reach: Reach) -> AgentSource | None:
    """The reach's agent pods as vantages, when it runs agent pods (probe-pod)."""
    return reach if isinstance(reach, ProbePodReach) else None


class ReachInUse:
    """The reach strategy the probes go through now, why, and its part of /status."""

    def __init__(self, chosen: Chosen, metrics: Metrics) -> None:
        self.metrics = metrics
        self.lost: list[dict[str, str]] = []
        self.take(chosen)

    def take(self, chosen: Chosen) -> None:
        self.chosen = chosen
        self.reach: Reach = chosen.reach
        self.metrics.set_reach(self.reach.strategy.value, [s.value for s in Strategy])

    def announce(self) -> None:
        """The ``reach_chosen`` line: the strategy, why, and what it cannot see."""
        log.info("reach_chosen", strategy=self.reach.strategy.value, reason=self.chosen.reason,
                 blind_to=list(self.reach.blind_to),
                 others={a.strategy.value: a.reason for a in self.chosen.assessments
                         if a.strategy is not self.reach.strategy})

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"strategy": self.reach.strategy.value,
                               "reason": self.chosen.reason,
                               "blind_to": list(self.reach.blind_to),
                               "assessed": [a.as_dict() for a in self.chosen.assessments],
                               "lost": list(self.lost)}
        doc.update(self.reach.status())
        return doc

    async def keep(self, settings: Settings, api: Any, in_cluster: bool,
                   service: ProberService) -> None:
        """Run the strategy's background work; when it is lost, log ``reach_lost`` and,
        under auto, choose again (a fixed strategy that stops working ends the service:
        NoReach, exit 3 -- never a silent stall)."""
        while True:
            try:
                await self.reach.run()
                await asyncio.Future()  # no background work: hold until cancelled
            except ReachLost as exc:
                strategy = self.reach.strategy.value
                log.warning("reach_lost", strategy=strategy, reason=str(exc))
                self.lost.append({"strategy": strategy, "reason": str(exc)})
                del self.lost[:-10]
                await self.reach.aclose()
                if settings.reach != "auto":
                    raise NoReach(f"reach {strategy} stopped working: {exc} "
                                  f"(COREDNSPROBE_REACH={settings.reach}; auto would choose "
                                  "another strategy)") from exc
                self.take(await choose(settings, api, in_cluster=in_cluster,
                                       on_ignored=self.metrics.reply_ignored,
                                       exclude=frozenset({Strategy(strategy)})))
                service.use(self.reach)
                self.announce()


def startup_mode(settings: Settings, elector: LeaderElector | None,
                 reach: str = Strategy.DIRECT.value) -> dict[str, str]:
    """What the startup line says of how the service will act: the remediation mode,
    the leader state (it acts only once it holds the Lease) and the reach strategy."""
    if elector is None:
        return {"remediation": settings.remediation, "leader": "none (remediation is off)",
                "reach": reach}
    return {"remediation": settings.remediation,
            "leader": f"electing: acts only once {elector.identity} holds Lease "
                      f"{elector.namespace}/{elector.name}",
            "reach": reach}
