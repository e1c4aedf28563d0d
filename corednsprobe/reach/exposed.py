"""exposed: probing CoreDNS from outside the cluster through a NodePort or LoadBalancer
Service that exposes it, and telling its pods apart by what their answers say.

Owns: finding that Service (one whose selector selects the DNS Service's pods,
equal or narrower, and that serves UDP 53; or exactly COREDNSPROBE_EXPOSED_SERVICE),
its front doors (the LoadBalancer's ingress addresses, else every node's InternalIP
at the nodePort), asking EDNS NSID in every probe, tying each answer to the pods
that front door could have handed it to (judge.attribution), following the Service
and the nodes (a Service that disappears is ``ReachLost``), and telling whether the
strategy can work here (``assess``).
Never does: restart anything or decide a verdict; the pods' Healths it judges go to
the diagnosis like any other.

What a front door reaches: with ``externalTrafficPolicy: Cluster`` (the default)
any ready pod; with ``Local`` a node address reaches only that node's pods (so a
node with one DNS pod names it without NSID; a node with none is not probed);
a LoadBalancer address reaches any ready pod. A Service with ``sessionAffinity:
ClientIP`` or topology-aware routing does not choose pods uniformly, so no pod is
named by its absence through it (answers that carry an NSID still judge their pod).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from corednsprobe import logs
from corednsprobe.config import Settings
from corednsprobe.judge.attribution import MISS_BOUND, Attribution, Sighting, answers_needed
from corednsprobe.judge.tracker import Thresholds
from corednsprobe.kube.access import Permission, check_permissions
from corednsprobe.kube.client import ApiError, Obj, request
from corednsprobe.model import (
    Check,
    Health,
    IgnoredReply,
    Outcome,
    ProbeResult,
    Target,
    TargetKey,
    TargetKind,
    TargetSet,
)
from corednsprobe.probe.engine import Probe, Prober
from corednsprobe.reach import Strategy
from corednsprobe.reach.base import Assessment, NoReach, ReachLost

log = logs.get(__name__)

NODE_PORT, LOAD_BALANCER = "NodePort", "LoadBalancer"
POLL_SECONDS = 10.0  # how often the Service and the nodes are read again
ASSESS_BUDGET = 1.0  # seconds for the one UDP question to each front door in ``assess``
TOPOLOGY_ANNOTATIONS = ("service.kubernetes.io/topology-mode",
                        "service.kubernetes.io/topology-aware-hints")


def exposed_permissions(namespace: str) -> list[Permission]:
    """What finding and following the Service and its front doors asks the API for,
    beyond what watching the DNS Service needs (kube.access.read_permissions)."""
    return [
        Permission("list", "services", namespace,
                   purpose="find the NodePort or LoadBalancer Service that exposes DNS"),
        Permission("list", "nodes", "", purpose="read the nodes' InternalIPs (the NodePort's "
                                                "addresses; cluster-scoped: a ClusterRole)"),
    ]


def needs(namespace: str) -> str:
    return (f"a NodePort or LoadBalancer Service in {namespace} whose selector selects the DNS "
            "Service's pods and that serves UDP 53 (e.g. deploy/extras/dns-nodeport.yaml), or "
            "COREDNSPROBE_EXPOSED_SERVICE naming one; a route to its LoadBalancer address or to "
            "the nodes' InternalIPs at its nodePort; RBAC: a Role in "
            f"{namespace} allowing get/list/watch on services, endpointslices and pods, and a "
            'ClusterRole allowing list on nodes (deploy/extras/exposed-rbac.yaml); answers tied '
            "to pods need CoreDNS's nsid plugin or externalTrafficPolicy: Local")


@dataclass(frozen=True, slots=True)
class Exposure:
    """The Service that exposes the DNS pods outside the cluster, as read."""

    namespace: str
    name: str
    kind: str  # NodePort or LoadBalancer
    port: int  # the Service port (what a LoadBalancer address answers on)
    node_port: int  # what every node address answers on (0: none allocated)
    local: bool  # externalTrafficPolicy: Local
    ingress: tuple[str, ...]  # the LoadBalancer's ingress IPs
    uniform: str  # "" when pods are chosen uniformly; else why not (no attribution by absence)

    def describe(self) -> str:
        doors = (f"LoadBalancer {','.join(self.ingress)}:{self.port}" if self.ingress
                 else f"nodePort {self.node_port}")
        policy = "Local" if self.local else "Cluster"
        return (f"Service {self.namespace}/{self.name} ({self.kind}, {doors}, "
                f"externalTrafficPolicy {policy})")


@dataclass(frozen=True, slots=True)
class Frontend:
    """One address the probes go to, and the ready pods it can hand them to."""

    label: str  # exposed:<node> or exposed:<ingress address>
    address: str
    port: int
    pods: tuple[str, ...]

    @property
    def target(self) -> Target:
        return Target(TargetKind.SERVICE, self.address, self.port, label=self.label)


def _udp53(ports: Any) -> Obj | None:
    for p in ports or ():
        if not isinstance(p, dict) or (p.get("protocol") or "TCP") != "UDP":
            continue
        target = p.get("targetPort", p.get("port"))
        if target in (53, "53", "dns") or (target is None and p.get("port") == 53):
            return p
    return None


def exposure_of(svc: Obj, dns_selector: Mapping[str, str] | None) -> tuple[Exposure | None, str]:
    """The Exposure a Service offers, or why it offers none. ``dns_selector`` None:
    the Service was named (COREDNSPROBE_EXPOSED_SERVICE), so its selector is not compared."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    name = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
    kind = spec.get("type") or "ClusterIP"
    if kind not in (NODE_PORT, LOAD_BALANCER):
        return None, f"{name} is of type {kind}, not NodePort or LoadBalancer"
    selector = spec.get("selector") or {}
    if dns_selector is not None and (not dns_selector or not isinstance(selector, dict) or any(
            selector.get(k) != v for k, v in dns_selector.items())):
        return None, f"{name}'s selector {selector} does not select the DNS pods"
    port = _udp53(spec.get("ports"))
    if port is None:
        return None, f"{name} serves no UDP port with targetPort 53 or dns"
    ingress = tuple(str(i["ip"]) for i in (svc.get("status") or {}).get("loadBalancer", {}).get(
        "ingress") or () if isinstance(i, dict) and i.get("ip"))
    annotations = meta.get("annotations") or {}
    uniform = ""
    if spec.get("sessionAffinity") == "ClientIP":
        uniform = "sessionAffinity ClientIP sends every probe to one pod"
    elif spec.get("trafficDistribution") or any(a in annotations for a in TOPOLOGY_ANNOTATIONS):
        uniform = "topology-aware routing does not choose pods uniformly"
    return Exposure(str(meta.get("namespace") or ""), str(meta.get("name") or ""), kind,
                    int(port.get("port") or 53), int(port.get("nodePort") or 0),
                    spec.get("externalTrafficPolicy") == "Local", ingress, uniform), ""


def find_exposure(services: list[Obj], dns_service: str, configured: str = ""
                  ) -> tuple[Exposure | None, str]:
    """The Service that exposes DNS (the configured one, else the first by name that
    qualifies), or None and why none does."""
    by_name = {(s.get("metadata") or {}).get("name"): s for s in services}
    if configured:
        svc = by_name.get(configured)
        if svc is None:
            return None, f"COREDNSPROBE_EXPOSED_SERVICE names {configured!r}, which does not exist"
        return exposure_of(svc, None)
    dns = by_name.get(dns_service)
    if dns is None:
        return None, f"the DNS Service {dns_service!r} does not exist"
    selector = (dns.get("spec") or {}).get("selector") or {}
    why = []
    for name in sorted(n for n in by_name if isinstance(n, str)):
        found, reason = exposure_of(by_name[name], selector)
        if found is not None:
            return found, ""
        if (by_name[name].get("spec") or {}).get("type") in (NODE_PORT, LOAD_BALANCER):
            why.append(reason)
    detail = f" ({'; '.join(why)})" if why else ""
    return None, ("no NodePort or LoadBalancer Service selects the DNS pods and serves UDP 53"
                  + detail)


def node_addresses(nodes: list[Obj]) -> dict[str, str]:
    """Node name → InternalIP (nodes without one are left out)."""
    out = {}
    for node in nodes:
        name = (node.get("metadata") or {}).get("name")
        for a in (node.get("status") or {}).get("addresses") or ():
            if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address"):
                out[str(name)] = str(a["address"])
                break
    return out


def frontends(exposure: Exposure, nodes: Mapping[str, str], ts: TargetSet
              ) -> tuple[Frontend, ...]:
    """Where to probe, and which ready pods each address can reach (module docs)."""
    ready = [t.pod for t in ts.pods if t.pod is not None and t.pod.ready
             and not t.pod.terminating]
    every = tuple(sorted(p.name for p in ready))
    if exposure.ingress:
        return tuple(Frontend(f"exposed:{ip}", ip, exposure.port, every)
                     for ip in exposure.ingress)
    if not exposure.node_port:
        return ()
    out = []
    for node, address in sorted(nodes.items()):
        pods = tuple(sorted(p.name for p in ready if p.node == node)) if exposure.local else every
        if pods or not exposure.local:
            out.append(Frontend(f"exposed:{node}", address, exposure.node_port, pods))
    return tuple(out)


async def list_items(api: Any, path: str) -> list[Obj]:
    listed = await request(api, "GET", path)
    return [i for i in listed.get("items") or () if isinstance(i, dict)]


class ExposedReach:
    """Probes the front doors of the exposing Service, asking NSID; judges pods from
    the answers (``attribute``)."""

    strategy = Strategy.EXPOSED
    blind_to: tuple[str, ...] = (
        "the pod network", "the ClusterIP path",
        "each pod by itself: only through CoreDNS's nsid plugin or externalTrafficPolicy Local")

    def __init__(self, api: Any, settings: Settings, exposure: Exposure | None = None,
                 nodes: Mapping[str, str] | None = None, *, poll: float = POLL_SECONDS,
                 on_ignored: Callable[[IgnoredReply], None] | None = None,
                 prober: Prober | None = None) -> None:
        """``exposure`` None: ``run`` finds the Service first (nothing is probed until)."""
        self.api = api
        self.settings = settings
        self.exposure = exposure
        self.nodes = dict(nodes or {})
        self.poll = poll
        self.prober = prober or Prober(settings.timeout, nsid=True, on_ignored=on_ignored)
        self.plan_version = 0  # bumped when the Service or the nodes change (plan afresh)
        self.reason = (f"{exposure.describe()} found" if exposure is not None
                       else "the Service that exposes DNS is looked up as it starts")
        self.attribution = Attribution(
            Thresholds(settings.window, settings.failure_ratio, settings.min_samples,
                       settings.recovery_successes, settings.min_pod_age))
        self._take(exposure, self.nodes)
        self._doors: dict[tuple[str, int], Frontend] = {}
        self._named: dict[str, int] = {}  # answers per NSID seen (for /status)
        self._anonymous = 0

    # ---------------------------------------------------------------- planning

    def _take(self, exposure: Exposure | None, nodes: dict[str, str]) -> None:
        self.exposure, self.nodes = exposure, nodes
        # a Service that does not choose pods uniformly names none by its absence
        self.attribution.bound = MISS_BOUND if exposure is None or not exposure.uniform else 0.0

    def plan(self, ts: TargetSet) -> TargetSet:
        doors = frontends(self.exposure, self.nodes, ts) if self.exposure is not None else ()
        self._doors = {(d.address, d.port): d for d in doors}
        return TargetSet(pods=(), services=tuple(d.target for d in doors), expected=ts.expected,
                         state=ts.state, generation=ts.generation + self.plan_version)

    # ---------------------------------------------------------------- probing

    async def probe(self, target: Target, check: Check, qname: str | None = None) -> ProbeResult:
        return self._seen(await self.prober.probe(target, check, qname))

    def start(self, target: Target, check: Check, qname: str | None,
              on_done: Callable[[ProbeResult], None]) -> Probe:
        return self.prober.start(target, check, qname, lambda r: on_done(self._seen(r)))

    def _seen(self, result: ProbeResult) -> ProbeResult:
        check = result.check
        door = self._doors.get((result.target.address, result.target.port))
        if door is not None and not check.upstream and not check.application_view:
            if result.nsid:
                self._named[result.nsid] = self._named.get(result.nsid, 0) + 1
            elif result.outcome not in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.ERROR):
                self._anonymous += 1
            self.attribution.record(Sighting(result.at, door.pods, result.nsid,
                                             result.outcome.value, check.name, result.udp_only))
        return replace(result, reach=self.strategy.value)

    def attribute(self, published: TargetSet, now: float) -> dict[TargetKey, Health]:
        """The Health of each pod of ``published`` judged from the attributed answers
        of the window (the service's optional hook; see reach.base)."""
        return self.attribution.evaluate(published.pods, now)

    # ---------------------------------------------------------------- following

    async def run(self) -> None:
        """Find the Service when not given; then read it (and the nodes) again every
        ``poll`` seconds; raise ReachLost when none exposes DNS, or it is gone or
        exposes DNS no more."""
        while self.exposure is None:
            try:
                found, nodes, why = await discover(self.api, self.settings)
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("exposed_service_read_failed", service="",
                            error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.poll)
                continue
            if found is None:
                raise ReachLost(why)
            log.info("exposed_frontends_changed", service=found.describe(), nodes=len(nodes))
            self._take(found, nodes)
            self.reason = f"{found.describe()} found"
            self.plan_version += 1
        ns, name = self.exposure.namespace, self.exposure.name
        while True:
            await asyncio.sleep(self.poll)
            try:  # a list, not a get: the rights asked for are list (exposed_permissions)
                services = await list_items(self.api, f"/api/v1/namespaces/{ns}/services")
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("exposed_service_read_failed", service=f"{ns}/{name}",
                            error=f"{type(exc).__name__}: {exc}")
                continue
            svc = next((s for s in services if (s.get("metadata") or {}).get("name") == name),
                       None)
            if svc is None:
                raise ReachLost(f"the Service {ns}/{name} that exposed DNS is gone")
            found, why = exposure_of(svc, None)
            if found is None:
                raise ReachLost(f"the Service {ns}/{name} exposes DNS no more: {why}")
            nodes = self.nodes
            if not found.ingress:
                with contextlib.suppress(ApiError, aiohttp.ClientError, TimeoutError,
                                         ValueError):
                    nodes = node_addresses(await list_items(self.api, "/api/v1/nodes"))
            if found != self.exposure or nodes != self.nodes:
                log.info("exposed_frontends_changed", service=found.describe(),
                         nodes=len(nodes))
                self._take(found, nodes)
                self.plan_version += 1

    async def aclose(self) -> None:
        return None  # nothing made: the Service is the operator's

    def status(self) -> dict[str, Any]:
        pods = max((len(d.pods) for d in self._doors.values()), default=0)
        exposure = self.exposure
        return {
            "exposed": {
                "service": exposure.describe() if exposure is not None else None,
                "frontends": [{"name": d.label, "address": f"{d.address}:{d.port}",
                               "pods": list(d.pods)} for d in self._doors.values()],
                "nsid_answers": dict(sorted(self._named.items())),
                "answers_without_nsid": self._anonymous,
                "attribution_by_absence": (
                    f"off: {exposure.uniform}" if exposure is not None and exposure.uniform
                    else f"on: a pod absent from {answers_needed(pods)} answers of {pods} pods "
                         f"(P <= {MISS_BOUND:g})" if pods > 1 else "on"),
                "absences": {name: a.describe() for name, a in
                             sorted(self.attribution.last.items()) if a.answers},
            }
        }


async def discover(api: Any, settings: Settings) -> tuple[Exposure | None, dict[str, str], str]:
    """The exposing Service and the node addresses (none when it has LoadBalancer
    addresses), or None and why. Raises ApiError and aiohttp/timeout errors."""
    ns = settings.namespace
    services = await list_items(api, f"/api/v1/namespaces/{ns}/services")
    found, why = find_exposure(services, settings.service, settings.exposed_service)
    if found is None:
        return None, {}, why
    nodes = {} if found.ingress else node_addresses(await list_items(api, "/api/v1/nodes"))
    if not found.ingress and not nodes:
        return None, {}, f"{found.describe()} has no LoadBalancer address and no node an InternalIP"
    return found, nodes, ""


def build(api: Any, settings: Settings, *,
          on_ignored: Callable[[IgnoredReply], None] | None = None) -> ExposedReach:
    """The exposed Reach for reach.choose; its ``run`` finds the Service first and
    raises ReachLost, naming what is missing, when none exposes DNS."""
    return ExposedReach(api, settings, on_ignored=on_ignored)


async def open_exposed(api: Any, settings: Settings, *,
                       on_ignored: Callable[[IgnoredReply], None] | None = None,
                       poll: float = POLL_SECONDS) -> ExposedReach:
    """The exposed Reach; raises NoReach naming what is missing when it cannot work."""
    try:
        found, nodes, why = await discover(api, settings)
    except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise NoReach(f"exposed: cannot read the Services or nodes: {exc}") from None
    if found is None:
        raise NoReach(f"exposed: {why}. It needs {needs(settings.namespace)}.")
    return ExposedReach(api, settings, found, nodes, poll=poll, on_ignored=on_ignored)


async def assess(api: Any, settings: Settings, *, budget: float = ASSESS_BUDGET
                 ) -> Assessment:
    """Whether exposed can work here: the Service exists (and the rights to find it and
    its node addresses), and one of its front doors answers a UDP question within
    ``budget`` seconds."""
    ns = settings.namespace
    wanted = exposed_permissions(ns)

    def out(usable: bool, reason: str) -> Assessment:
        return Assessment(Strategy.EXPOSED, usable, reason, needs(ns))

    try:
        report = await check_permissions(api, wanted)
        missing = {p.resource for p in report.missing_required}
    except (ApiError, aiohttp.ClientError, TimeoutError, ValueError):
        missing = set()  # no answer about rights: the reads below tell
    if "services" in missing:
        return out(False, f"may not list services in {ns} (SelfSubjectAccessReview)")
    try:
        services = await list_items(api, f"/api/v1/namespaces/{ns}/services")
    except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return out(False, f"cannot list the Services of {ns}: {exc}")
    found, why = find_exposure(services, settings.service, settings.exposed_service)
    if found is None:
        return out(False, why)
    doors: list[tuple[str, int]] = [(ip, found.port) for ip in found.ingress]
    if not doors:
        if "nodes" in missing:
            return out(False, f"{found.describe()} found, but nodes may not be listed "
                              "(their InternalIPs are its addresses): a ClusterRole with "
                              "list on nodes")
        try:
            nodes = node_addresses(await list_items(api, "/api/v1/nodes"))
        except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return out(False, f"{found.describe()} found, but the nodes cannot be read: {exc}")
        doors = [(address, found.node_port) for _, address in sorted(nodes.items())]
    if not doors or (not found.node_port and not found.ingress):
        return out(False, f"{found.describe()} has no address to probe yet")
    answer = await first_answer(doors, settings, budget)
    if answer is None:
        return out(False, f"{found.describe()} found, but none of "
                          f"{', '.join(f'{a}:{p}' for a, p in doors)} answered over UDP "
                          f"within {budget:g}s")
    named = f" (NSID {answer.nsid})" if answer.nsid else " (no NSID: CoreDNS's nsid plugin is off)"
    return out(True, f"{found.describe()} answered at {answer.target.endpoint}{named}")


async def first_answer(doors: list[tuple[str, int]], settings: Settings, budget: float
                       ) -> ProbeResult | None:
    """One UDP question to each address at once; the first that got a DNS reply."""
    prober = Prober(budget, tcp_reask=False, nsid=True)
    check = Check("kubernetes", f"kubernetes.default.svc.{settings.cluster_domain}.", "A")
    results = await asyncio.gather(*(prober.probe(Target(TargetKind.SERVICE, a, p), check)
                                     for a, p in doors))
    return next((r for r in results if r.outcome not in (
        Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.ERROR)), None)
