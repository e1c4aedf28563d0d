"""Choosing how the probes reach the pods: the configured strategy, or auto's pick.

Owns: assessing each strategy from here with these credentials (without probing for
long: one UDP question to one pod and the ClusterIP, SelfSubjectAccessReviews, a
Service list), auto's pick in the RFC's priority order -- direct, exposed, probe-pod,
port-forward -- with its reason, building the Reach chosen, and the paragraph per
strategy that exit 3 prints when none can work.
Never does: probe on a schedule or judge a result.

A strategy module other than direct and port-forward (``reach/exposed.py``,
``reach/probepod.py``) is found by import and provides
``async def assess(api, settings) -> Assessment`` and
``def build(api, settings, *, on_ignored=None) -> Reach``; without them the
strategy is reported as not built into this version.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from corednsprobe.config import Settings
from corednsprobe.kube.access import Permission, ssar
from corednsprobe.kube.client import ApiError, request
from corednsprobe.kube.view import ClusterView
from corednsprobe.model import Check, IgnoredReply, Outcome, Target, TargetSet
from corednsprobe.probe.engine import Prober
from corednsprobe.reach import Strategy, portforward
from corednsprobe.reach.base import Assessment, NoReach, Reach
from corednsprobe.reach.direct import NEEDS as DIRECT_NEEDS
from corednsprobe.reach.direct import DirectReach

DIRECT_BUDGET = 1.5  # seconds for one pod IP and the ClusterIP to answer over UDP
FIRST_LIST_WITHIN = 10.0  # seconds for the API to list the DNS Service, its pods
NOT_ANSWERED = (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.ERROR)
MODULES = {Strategy.EXPOSED: "corednsprobe.reach.exposed",
           Strategy.PROBE_POD: "corednsprobe.reach.probepod"}
EXPOSED_NEEDS = ("a Service of type NodePort or LoadBalancer whose selector matches the DNS "
                 "Service's pods and that serves UDP port 53 (or its name in "
                 "COREDNSPROBE_EXPOSED_SERVICE), reachable from here at a node address "
                 "or its load-balancer address")


def probe_pod_permissions(namespace: str) -> list[Permission]:
    purpose = "run the probe pod in the cluster"
    return [*(Permission(v, "pods", namespace, purpose=purpose)
              for v in ("create", "get", "delete")),
            Permission("get", "pods", namespace, subresource="log",
                       purpose="read the probe pod's results")]


PROBE_POD_NEEDS = ("the right to run a short-lived pod of COREDNSPROBE_PROBE_IMAGE in the "
                   "DNS namespace (Role: apiGroups: [\"\"], resources: [\"pods\"], verbs: "
                   "[\"create\", \"get\", \"delete\"]; resources: [\"pods/log\"], verbs: "
                   "[\"get\"]) and an image the nodes can pull")


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


def strategy_module(strategy: Strategy) -> ModuleType | None:
    """The module of a strategy built by its own branch, if this version has it."""
    name = MODULES.get(strategy)
    if name is None:
        return None
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError:
        return None
    return module if hasattr(module, "assess") and hasattr(module, "build") else None


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


def _dns_port_udp(service: dict[str, Any]) -> bool:
    return any((p.get("protocol") or "TCP") == "UDP" and 53 in (p.get("port"), p.get("targetPort"))
               for p in (service.get("spec") or {}).get("ports") or ())


async def exposed_services(api: Any, settings: Settings) -> tuple[list[str], str]:
    """(Services that expose the DNS pods over UDP 53 as NodePort/LoadBalancer, why not
    when there are none). The discovery the exposed strategy does, as a fact for auto."""
    ns = settings.namespace
    try:
        listed = await request(api, "GET", f"/api/v1/namespaces/{ns}/services")
    except ApiError as exc:
        return [], f"could not list Services in {ns}: {exc.status} {exc.reason}"
    items = [i for i in listed.get("items") or [] if isinstance(i, dict)]
    dns = next((i for i in items if (i.get("metadata") or {}).get("name") == settings.service),
               None)
    selector = ((dns or {}).get("spec") or {}).get("selector") or {}
    found = []
    for item in items:
        name = (item.get("metadata") or {}).get("name") or ""
        spec = item.get("spec") or {}
        if name == settings.service or spec.get("type") not in ("NodePort", "LoadBalancer"):
            continue
        if settings.exposed_service and name != settings.exposed_service:
            continue
        theirs = spec.get("selector") or {}
        matches = bool(theirs) and all(selector.get(k) == v for k, v in theirs.items())
        if (matches or name == settings.exposed_service) and _dns_port_udp(item):
            found.append(f"{name} ({spec.get('type')})")
    if found:
        return found, ""
    pods = ",".join(f"{k}={v}" for k, v in selector.items()) or "the DNS pods"
    wanted = (f"Service {settings.exposed_service!r} of type NodePort or LoadBalancer"
              if settings.exposed_service
              else f"NodePort or LoadBalancer Service selecting {pods}")
    return [], f"found no {wanted} serving UDP 53 in {ns}"


async def assess_exposed(api: Any, settings: Settings) -> Assessment:
    module = strategy_module(Strategy.EXPOSED)
    if module is not None:
        found: Assessment = await module.assess(api, settings)
        return found
    services, why_not = await exposed_services(api, settings)
    if not services:
        return Assessment(Strategy.EXPOSED, False, why_not, EXPOSED_NEEDS)
    return Assessment(Strategy.EXPOSED, False, f"found {', '.join(services)}, but this version "
                      "has no exposed strategy built in", EXPOSED_NEEDS)


async def assess_probe_pod(api: Any, settings: Settings) -> Assessment:
    module = strategy_module(Strategy.PROBE_POD)
    if module is not None:
        found: Assessment = await module.assess(api, settings)
        return found
    missing = [p for p in probe_pod_permissions(settings.namespace) if not await ssar(api, p)]
    if missing:
        return Assessment(Strategy.PROBE_POD, False,
                          "not allowed: " + "; ".join(p.what for p in missing), PROBE_POD_NEEDS)
    return Assessment(Strategy.PROBE_POD, False, "allowed to run pods, but this version has "
                      "no probe-pod strategy built in", PROBE_POD_NEEDS)


async def assess(api: Any, settings: Settings, strategy: Strategy, *, in_cluster: bool,
                 targets: TargetSet | None = None) -> Assessment:
    """One strategy's assessment; an API error while asking is a reason, not a crash."""
    try:
        if strategy is Strategy.DIRECT:
            return await assess_direct(api, settings, in_cluster=in_cluster, targets=targets)
        if strategy is Strategy.EXPOSED:
            return await assess_exposed(api, settings)
        if strategy is Strategy.PROBE_POD:
            return await assess_probe_pod(api, settings)
        return await portforward.assess(api, settings)
    except ApiError as exc:
        return Assessment(strategy, False, f"the API answered {exc.status} {exc.reason} "
                          "while assessing it", _needs(strategy, settings))


def _needs(strategy: Strategy, settings: Settings) -> str:
    return {Strategy.DIRECT: DIRECT_NEEDS, Strategy.EXPOSED: EXPOSED_NEEDS,
            Strategy.PROBE_POD: PROBE_POD_NEEDS,
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
    module = strategy_module(strategy)
    if module is None:
        raise NoReach(f"reach strategy {strategy.value} is not built into this version")
    reach: Reach = module.build(api, settings, on_ignored=on_ignored)
    return reach


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
