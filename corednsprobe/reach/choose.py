"""Choosing how the probes reach the pods: the configured strategy, or auto's pick.

Owns: assessing each strategy from here with these credentials (without probing for
long: one UDP question to one pod and the ClusterIP, SelfSubjectAccessReviews, a
Service list), auto's pick in the RFC's priority order -- direct, exposed, probe-pod,
port-forward -- with its reason, building the Reach chosen, and the paragraph per
strategy that exit 3 prints when none can work.
Never does: probe on a schedule or judge a result.

Each strategy module provides ``async def assess(api, settings) -> Assessment``
(direct's takes the first TargetSet too) and a way to build its Reach.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corednsprobe.config import Settings
from corednsprobe.kube.client import ApiError
from corednsprobe.kube.view import ClusterView
from corednsprobe.model import Check, IgnoredReply, Outcome, Target, TargetSet
from corednsprobe.probe.engine import Prober
from corednsprobe.reach import Strategy, exposed, portforward, probepod
from corednsprobe.reach.base import Assessment, NoReach, Reach
from corednsprobe.reach.direct import NEEDS as DIRECT_NEEDS
from corednsprobe.reach.direct import DirectReach

DIRECT_BUDGET = 1.5  # seconds for one pod IP and the ClusterIP to answer over UDP
FIRST_LIST_WITHIN = 10.0  # seconds for the API to list the DNS Service, its pods
NOT_ANSWERED = (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.ERROR)
@dataclass(frozen=True)
class Chosen:
    """The strategy built, why it was taken, and what was found of the others."""

    reach: Reach
    reason: str
    assessments: tuple[Assessment, ...] = field(default=())


@dataclass(frozen=True)
class Facts:
    """What auto found: each strategy's assessment in priority order, its pick, and
    how long finding out took."""

    assessments: tuple[Assessment, ...]
    pick: Strategy | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"auto": self.pick.value if self.pick else None,
                "decision_seconds": round(self.seconds, 3),
                "strategies": [a.as_dict() for a in self.assessments]}


async def first_targets(api: Any, settings: Settings,
                        within: float = FIRST_LIST_WITHIN) -> TargetSet:
    """One TargetSet as the API lists it now (an empty one if it takes too long)."""
    view = ClusterView(api, namespace=settings.namespace, service=settings.service)
    task = asyncio.create_task(view.run())
    try:
        async with asyncio.timeout(within):
            waiting = asyncio.create_task(view.changed(0))
            done, _ = await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if waiting in done:
                return waiting.result()
            waiting.cancel()
            task.result()  # the view failed: say why
            return TargetSet()
    except TimeoutError:
        return TargetSet()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def assess_direct(api: Any, settings: Settings, *, in_cluster: bool,
                        targets: TargetSet | None = None,
                        budget: float = DIRECT_BUDGET) -> Assessment:
    """Usable in the cluster, or when a ready pod IP and the ClusterIP both answer one
    UDP question within ``budget``."""
    if in_cluster:
        return Assessment(Strategy.DIRECT, True, "running in the cluster (in-cluster "
                          "service account credentials)", DIRECT_NEEDS)
    ts = targets if targets is not None else await first_targets(api, settings)
    pod = next((t for t in ts.pods if t.pod is not None and t.pod.ready), None)
    service = next(iter(ts.services), None)
    if pod is None or service is None:
        # nothing to ask yet (no Service, no ready pod): nothing is probed either, so
        # direct, as before there were strategies, costs nothing and restarts nothing
        return Assessment(Strategy.DIRECT, True,
                          f"nothing to try yet ({settings.namespace}/{settings.service}: "
                          f"{ts.state.value}, {len(ts.pods)} pods): taken until there is; "
                          "`corednsprobe reach` tells once the pods answer", DIRECT_NEEDS)
    check = Check("kubernetes", f"kubernetes.default.svc.{settings.cluster_domain}.", "A")
    prober = Prober(budget, tcp_reask=False)
    results = await asyncio.gather(*(prober.probe(t, check) for t in (pod, service)))
    silent = [r for r in results if r.outcome in NOT_ANSWERED]
    if silent:
        said = "; ".join(f"{_where(r.target)}: {r.outcome.value}"
                         + (f" ({r.detail})" if r.detail else "") for r in silent)
        return Assessment(Strategy.DIRECT, False,
                          f"no UDP answer within {budget:g} s from {said}: this host is not "
                          "on the pod and Service networks", DIRECT_NEEDS)
    return Assessment(Strategy.DIRECT, True,
                      f"pod {_where(pod)} and ClusterIP {service.endpoint} answered over UDP "
                      f"within {budget:g} s", DIRECT_NEEDS)


def _where(t: Target) -> str:
    return f"{t.name} ({t.endpoint})" if t.pod is not None else f"ClusterIP {t.endpoint}"


async def assess(api: Any, settings: Settings, strategy: Strategy, *, in_cluster: bool,
                 targets: TargetSet | None = None) -> Assessment:
    """One strategy's assessment; an API error while asking is a reason, not a crash."""
    try:
        if strategy is Strategy.DIRECT:
            return await assess_direct(api, settings, in_cluster=in_cluster, targets=targets)
        if strategy is Strategy.EXPOSED:
            return await exposed.assess(api, settings)
        if strategy is Strategy.PROBE_POD:
            return await probepod.assess(api, settings)
        return await portforward.assess(api, settings)
    except ApiError as exc:
        return Assessment(strategy, False, f"the API answered {exc.status} {exc.reason} "
                          "while assessing it", _needs(strategy, settings))


def _needs(strategy: Strategy, settings: Settings) -> str:
    return {Strategy.DIRECT: DIRECT_NEEDS, Strategy.EXPOSED: exposed.needs(settings.namespace),
            Strategy.PROBE_POD: probepod.needs(settings.namespace),
            Strategy.PORT_FORWARD: portforward.needs(settings.namespace)}[strategy]


async def facts(api: Any, settings: Settings, *, in_cluster: bool,
                stop_at_first: bool = False) -> Facts:
    """Every strategy assessed in priority order (or up to the first usable one)."""
    started = time.perf_counter()
    targets = None if in_cluster else await first_targets(api, settings)
    found: list[Assessment] = []
    for strategy in Strategy:
        found.append(await assess(api, settings, strategy, in_cluster=in_cluster,
                                  targets=targets))
        if stop_at_first and found[-1].usable:
            break
    pick = next((a.strategy for a in found if a.usable), None)
    return Facts(tuple(found), pick, time.perf_counter() - started)


def explain_none(assessments: tuple[Assessment, ...], wanted: str) -> str:
    """Exit 3's text: one paragraph per strategy, what it needs and what was missing."""
    head = ("no way to reach the DNS pods from here: check the deployment settings"
            if wanted == "auto" else f"COREDNSPROBE_REACH={wanted} cannot work here")
    paragraphs = [f"{a.strategy.value}: {a.reason}. Needs: {a.needs}." for a in assessments]
    return "\n\n".join([head + ".", *paragraphs])


def build(strategy: Strategy, api: Any, settings: Settings, *,
          on_ignored: Callable[[IgnoredReply], None] | None = None) -> Reach:
    if strategy is Strategy.DIRECT:
        return DirectReach(settings.timeout, on_ignored=on_ignored)
    if strategy is Strategy.PORT_FORWARD:
        return portforward.PortForwardReach(api, settings.namespace, settings.timeout)
    if strategy is Strategy.EXPOSED:
        return exposed.build(api, settings, on_ignored=on_ignored)
    return probepod.build(api, settings, on_ignored=on_ignored)


async def choose(settings: Settings, api: Any, *, in_cluster: bool,
                 on_ignored: Callable[[IgnoredReply], None] | None = None,
                 exclude: frozenset[Strategy] = frozenset()) -> Chosen:
    """The Reach to probe through; NoReach (exit 3) when none can work here.

    A fixed strategy is assessed too (it must be able to work before the service
    starts on it); ``exclude`` leaves out strategies just lost, for a re-choice.
    """
    if settings.reach != "auto":
        strategy = Strategy(settings.reach)
        if strategy is Strategy.DIRECT and not in_cluster:
            # configured by hand on a routed host: trust it, as before strategies existed
            return Chosen(build(strategy, api, settings, on_ignored=on_ignored),
                          f"COREDNSPROBE_REACH={settings.reach}")
        found = await assess(api, settings, strategy, in_cluster=in_cluster)
        if not found.usable:
            raise NoReach(explain_none((found,), settings.reach), (found,))
        return Chosen(build(strategy, api, settings, on_ignored=on_ignored),
                      f"COREDNSPROBE_REACH={settings.reach}: {found.reason}", (found,))
    known = await facts(api, settings, in_cluster=in_cluster, stop_at_first=not exclude)
    usable = [a for a in known.assessments if a.usable and a.strategy not in exclude]
    if not usable:
        raise NoReach(explain_none(known.assessments, "auto"), known.assessments)
    pick = usable[0]
    return Chosen(build(pick.strategy, api, settings, on_ignored=on_ignored),
                  f"auto: {pick.reason}", known.assessments)
