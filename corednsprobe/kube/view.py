"""ClusterView: what to probe, and what is true, as the Kubernetes API says it.

Owns: informers over the EndpointSlices of the DNS Service (legacy Endpoints
only when discovery.k8s.io/v1 is not served), the Service itself, the pods of
its namespace (creation time, deletionTimestamp) and ``default/kubernetes``
(whose ClusterIP is the right answer for ``kubernetes.default.svc.<domain>``);
merging them into an immutable ``TargetSet`` published on every change; an
object that cannot be read (whatever it raises) is skipped, logged and counted
once per version, never the end of the view.
Never does: decide anything about health, or write to the API.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NoReturn

import aiohttp

from corednsprobe import logs
from corednsprobe.kube.client import ApiClient, ApiError, Obj, metadata, send
from corednsprobe.kube.informer import DEFAULT_TIMING, Informer, Timing
from corednsprobe.model import (
    ClusterState,
    ContainerFacts,
    HealthEndpoint,
    PodRef,
    Target,
    TargetKind,
    TargetSet,
)

log = logs.get(__name__)

DNS_PORT_NAME = "dns"
DEFAULT_DNS_PORT = 53


def parse_time(value: Any) -> float | None:
    """Unix seconds of an RFC 3339 timestamp as the API writes it, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _dns_port(ports: Iterable[Obj] | None) -> int:
    """The UDP port named ``dns`` (else the first UDP port), falling back to 53."""
    udp = [p for p in ports or () if (p.get("protocol") or "TCP") == "UDP"]
    for p in udp:
        if p.get("name") == DNS_PORT_NAME and p.get("port"):
            return int(p["port"])
    return int(udp[0]["port"]) if udp and udp[0].get("port") else DEFAULT_DNS_PORT


def workload_of(meta: Obj) -> str:
    """``Kind/name`` of the pod's controller; a ReplicaSet of a Deployment names the Deployment."""
    ref = next((r for r in meta.get("ownerReferences") or () if r.get("controller")), None)
    if ref is None:
        return ""
    kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
    pod_hash = str((meta.get("labels") or {}).get("pod-template-hash") or "")
    if kind == "ReplicaSet" and pod_hash and name.endswith(f"-{pod_hash}"):
        return f"Deployment/{name[: -len(pod_hash) - 1]}"
    return f"{kind}/{name}"


Skip = Callable[[str, Obj, Exception], None]


def log_skip(kind: str, obj: Obj, exc: Exception) -> None:
    """The default for a malformed object: a log line (no deduplication)."""
    log.warning("api_object_skipped", kind=kind, object=object_id(obj),
                error=f"{type(exc).__name__}: {exc}")


def object_id(obj: Any) -> str:
    """``namespace/name@resourceVersion`` of an object, as far as it can be read."""
    meta = metadata(obj)
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}@" \
           f"{meta.get('resourceVersion') or ''}"


def _name(obj: Any) -> str:
    return str(metadata(obj).get("name") or "")


def _address(value: Any) -> str:
    """An endpoint's address, which must be an IP address."""
    return str(ipaddress.ip_address(str(value)))


def _pod_ref(endpoint: Obj, conditions: Obj, pods: Mapping[str, Obj], namespace: str,
             address: str, skip: Skip = log_skip) -> PodRef:
    ref = endpoint.get("targetRef") or {}
    name = str(ref.get("name") or "")
    pod = pods.get(f"{ref.get('namespace') or namespace}/{name}") or {}
    meta = pod.get("metadata") or {}
    deleting = bool(meta.get("deletionTimestamp"))
    terminating = bool(conditions.get("terminating")) or deleting
    ready = conditions.get("ready")
    serving = conditions.get("serving")
    ready_b = (True if ready is None else bool(ready)) and not terminating
    return PodRef(
        name=name or address,
        uid=str(ref.get("uid") or meta.get("uid") or ""),
        node=str(endpoint.get("nodeName") or (pod.get("spec") or {}).get("nodeName") or ""),
        ready=ready_b,
        serving=ready_b if serving is None else bool(serving),
        terminating=terminating,
        created_at=parse_time(meta.get("creationTimestamp")),
        workload=workload_of(meta),
        containers=containers_of(pod),
        health_endpoints=health_endpoints_of(pod, skip) if pod else (),
    )


PROBES = (("liveness", "livenessProbe"), ("readiness", "readinessProbe"))


def health_endpoint(probe: str, container: Obj, spec: Any) -> HealthEndpoint:
    """One ``httpGet`` probe of a container as an endpoint; ValueError/TypeError when
    it cannot be read. A named port is resolved through the container's ports; the
    path defaults to ``/``, the scheme to HTTP, the host to the pod's IP."""
    if not isinstance(spec, dict):
        raise TypeError(f"{probe}Probe.httpGet must be an object")
    port = spec.get("port")
    if isinstance(port, str) and not port.isdigit():
        named = [p.get("containerPort") for p in container.get("ports") or ()
                 if isinstance(p, dict) and p.get("name") == port]
        if not named:
            raise ValueError(f"{probe}Probe.httpGet.port {port!r} names no containerPort")
        port = named[0]
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise TypeError(f"{probe}Probe.httpGet.port must be a number or a port name")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{probe}Probe.httpGet.port {number} is out of range")
    path = spec.get("path") or "/"
    scheme = str(spec.get("scheme") or "HTTP").upper()
    host = spec.get("host") or ""
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError(f"{probe}Probe.httpGet.path {path!r} is not a path")
    if scheme not in ("HTTP", "HTTPS"):
        raise ValueError(f"{probe}Probe.httpGet.scheme {scheme!r} is not HTTP or HTTPS")
    if host:
        host = _address(host)
    return HealthEndpoint(probe, path, number, scheme, host, str(container.get("name") or ""))


def health_endpoints_of(pod: Obj, skip: Skip = log_skip) -> tuple[HealthEndpoint, ...]:
    """The HTTP endpoints the kubelet probes on the pod (liveness, then readiness, per
    container). A probe that is not ``httpGet`` (exec, tcpSocket, grpc) has none; one
    that cannot be read is left out, and the pod reported to ``skip`` (counted once
    per version by the view), never the end of the pod or the view."""
    found: list[HealthEndpoint] = []
    try:
        containers = list((pod.get("spec") or {}).get("containers") or ())
    except (AttributeError, TypeError) as exc:
        skip("Pod", pod, exc)
        return ()
    for container in containers:
        for probe, key in PROBES:
            try:
                spec = (container.get(key) or {}).get("httpGet")
                if spec is not None:
                    found.append(health_endpoint(probe, container, spec))
            except (AttributeError, TypeError, ValueError) as exc:
                skip("Pod", pod, exc)
    return tuple(dict.fromkeys(found))


def containers_of(pod: Obj) -> tuple[ContainerFacts, ...]:
    """Each container's restarts, last termination and resources; a malformed part is
    left out (a pod object's shape is the API's, not ours to trust)."""
    try:
        statuses = {str(c.get("name")): c for c in
                    (pod.get("status") or {}).get("containerStatuses") or ()}
        facts = []
        for c in (pod.get("spec") or {}).get("containers") or ():
            name = str(c.get("name") or "")
            st = statuses.get(name) or {}
            last = ((st.get("lastState") or {}).get("terminated")) or {}
            resources = c.get("resources") or {}
            code = last.get("exitCode")
            facts.append(ContainerFacts(
                name, int(st.get("restartCount") or 0), str(last.get("reason") or ""),
                int(code) if code is not None else None,
                tuple(sorted((str(k), str(v)) for k, v in
                             (resources.get("requests") or {}).items())),
                tuple(sorted((str(k), str(v)) for k, v in
                             (resources.get("limits") or {}).items()))))
        return tuple(facts)
    except (AttributeError, TypeError, ValueError):
        return ()


def usable_pods(pods: Mapping[str, Obj], skip: Skip = log_skip) -> dict[str, Obj]:
    """The pods whose fields the view reads can be read; every other one skipped."""
    usable: dict[str, Obj] = {}
    for key, pod in pods.items():
        try:
            if not isinstance(pod, dict):
                raise TypeError(f"a Pod must be an object, not {type(pod).__name__}")
            meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
            str(meta.get("uid") or "") + str(spec.get("nodeName") or "")
            bool(meta.get("deletionTimestamp"))
            parse_time(meta.get("creationTimestamp"))
            workload_of(meta)
        except Exception as exc:  # a malformed object is skipped, never the end of the view
            skip("Pod", pod, exc)
            continue
        usable[key] = pod
    return usable


def _slice_targets(sl: Obj, pods: Mapping[str, Obj], namespace: str,
                   skip: Skip = log_skip) -> list[Target]:
    if sl.get("addressType") not in ("IPv4", "IPv6"):
        return []
    port = _dns_port(sl.get("ports"))
    targets = []
    for ep in sl.get("endpoints") or []:
        conditions = ep.get("conditions") or {}
        for address in map(_address, ep.get("addresses") or []):
            ref = _pod_ref(ep, conditions, pods, namespace, address, skip)
            targets.append(Target(TargetKind.POD, address, port, ref))
    return targets


def pods_from_slices(
    slices: Iterable[Obj], pods: Mapping[str, Obj], namespace: str, skip: Skip = log_skip,
) -> list[Target]:
    """Merge every slice of the Service into one target per address.

    Slices split by address family and size, and a rollover can list one
    endpoint twice; an address seen twice is kept once, ready if any copy is.
    A slice that cannot be read whole (an endpoint without addresses is fine;
    a port that is not a number is not) is skipped, the others still count.
    """
    merged: dict[tuple[str, int], Target] = {}
    pods = usable_pods(pods, skip)
    for sl in sorted(slices, key=_name):
        try:
            if not isinstance(sl, dict):
                raise TypeError(f"an EndpointSlice must be an object, not {type(sl).__name__}")
            targets = _slice_targets(sl, pods, namespace, skip)
        except Exception as exc:  # a malformed object is skipped, never the end of the view
            skip("EndpointSlice", sl, exc)
            continue
        for target in targets:
            key = (target.address, target.port)
            old = merged.get(key)
            assert target.pod is not None
            if old is not None and old.pod is not None and (old.pod.ready or not target.pod.ready):
                continue
            merged[key] = target
    return sorted(merged.values(), key=lambda t: (t.name, t.address))


def pods_from_endpoints(
    endpoints: Obj | None, pods: Mapping[str, Obj], namespace: str, skip: Skip = log_skip,
) -> list[Target]:
    """Targets from legacy Endpoints (which drop terminating pods entirely).

    Endpoints that cannot be read whole are skipped: no pod targets.
    """
    pods = usable_pods(pods, skip)
    targets: list[Target] = []
    try:
        for subset in (endpoints or {}).get("subsets") or []:
            port = _dns_port(subset.get("ports"))
            for field, ready in (("addresses", True), ("notReadyAddresses", False)):
                for addr in subset.get(field) or []:
                    address = _address(addr.get("ip"))
                    ep = {"targetRef": addr.get("targetRef"), "nodeName": addr.get("nodeName")}
                    ref = _pod_ref(ep, {"ready": ready}, pods, namespace, address, skip)
                    targets.append(Target(TargetKind.POD, address, port, ref))
    except Exception as exc:  # a malformed object is skipped, never the end of the view
        skip("Endpoints", endpoints or {}, exc)
        return []
    return sorted(targets, key=lambda t: (t.name, t.address))


def cluster_ips(service: Obj | None) -> list[str]:
    spec = (service or {}).get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [str(ip) for ip in ips if ip and ip != "None"]


def build_targetset(
    *,
    service: Obj | None,
    pod_targets: list[Target],
    kubernetes: Obj | None,
    generation: int,
    skip: Skip = log_skip,
) -> TargetSet:
    """The snapshot for one moment of the informers' stores.

    A Service (or ``default/kubernetes``) that cannot be read is skipped, as
    if it were absent.
    """
    try:
        expected = frozenset(cluster_ips(kubernetes))
    except Exception as exc:  # a malformed object is skipped, never the end of the view
        skip("Service", kubernetes or {}, exc)
        expected = frozenset()
    if service is None:
        return TargetSet((), (), expected, ClusterState.NO_SERVICE, generation)
    try:
        port = _dns_port((service.get("spec") or {}).get("ports"))
        services = tuple(Target(TargetKind.SERVICE, ip, port) for ip in cluster_ips(service))
    except Exception as exc:  # a malformed object is skipped, never the end of the view
        skip("Service", service, exc)
        return TargetSet((), (), expected, ClusterState.NO_SERVICE, generation)
    state = ClusterState.OK if pod_targets else ClusterState.NO_ENDPOINTS
    return TargetSet(tuple(pod_targets), services, expected, state, generation)


def targetset_from(objs: Mapping[str, Mapping[str, Obj]], *, namespace: str, legacy: bool,
                   generation: int, skip: Skip = log_skip) -> TargetSet:
    """The whole path from the informers' stores (by informer name) to a TargetSet.

    Never raises for what the objects hold: whatever cannot be read is skipped.
    """
    service = next(iter(objs["service"].values()), None)
    kubernetes = next(iter(objs["kubernetes"].values()), None)
    if legacy:
        endpoints = next(iter(objs["endpoints"].values()), None)
        pods = pods_from_endpoints(endpoints, objs["pods"], namespace, skip)
    else:
        pods = pods_from_slices(objs["endpointslices"].values(), objs["pods"], namespace, skip)
    return build_targetset(service=service, pod_targets=pods, kubernetes=kubernetes,
                           generation=generation, skip=skip)


async def endpointslices_served(api: ApiClient,
                                request_timeout: float = DEFAULT_TIMING.request_timeout,
                                ) -> bool:
    """Whether the API serves discovery.k8s.io/v1 (else only legacy v1 Endpoints).

    Only a 404 says no: on any other answer or error EndpointSlices are assumed.
    """
    try:
        async with await send(api, "GET", "/apis/discovery.k8s.io/v1",
                              deadline=request_timeout) as resp:
            await resp.read()
    except ApiError as exc:
        return exc.status != 404
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("discovery_failed", error=str(exc), assumed="endpointslices")
    return True


class ClusterView:
    """Keeps a current TargetSet; consumers read ``current`` or await ``changed``."""

    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        service: str,
        timing: Timing = DEFAULT_TIMING,
        on_restart: Callable[[str, str], None] = lambda _n, _r: None,
        on_skip: Callable[[str], None] = lambda _kind: None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.service = service
        self.timing = timing
        self._on_restart = on_restart
        self._on_skip = on_skip  # a malformed object (its kind) was skipped
        self._skipped: set[tuple[str, str]] = set()
        self.current = TargetSet()
        self.legacy_endpoints = False
        self._changed = asyncio.Event()
        self._informers: dict[str, Informer] = {}
        self._started_at: float | None = None

    async def run(self) -> NoReturn:
        """Run every informer until cancelled (or one of them raises)."""
        self._started_at = asyncio.get_running_loop().time()
        self.legacy_endpoints = not await self._slices_served()
        if self.legacy_endpoints:
            log.warning("endpointslices_unavailable", fallback="v1 Endpoints")
        ns, svc = self.namespace, self.service
        if self.legacy_endpoints:
            self._add("endpoints", f"/api/v1/namespaces/{ns}/endpoints",
                      field_selector=f"metadata.name={svc}")
        else:
            self._add("endpointslices",
                      f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                      label_selector=f"kubernetes.io/service-name={svc}")
        self._add("service", f"/api/v1/namespaces/{ns}/services",
                  field_selector=f"metadata.name={svc}")
        self._add("kubernetes", "/api/v1/namespaces/default/services",
                  field_selector="metadata.name=kubernetes")
        self._add("pods", f"/api/v1/namespaces/{ns}/pods")
        async with asyncio.TaskGroup() as tasks:
            for informer in self._informers.values():
                tasks.create_task(informer.run(), name=f"informer-{informer.name}")
        raise AssertionError("an informer returned")  # each runs until cancelled

    def _add(self, name: str, path: str, **selectors: str) -> None:
        self._informers[name] = Informer(
            self.api, path, name=name, on_change=lambda _objs: self._rebuild(),
            on_restart=self._on_restart, timing=self.timing, **selectors,
        )

    async def _slices_served(self) -> bool:
        return await endpointslices_served(self.api, self.timing.request_timeout)

    def unsynced(self) -> list[str]:
        """Informers that have not completed a first list (all, before ``run``)."""
        if not self._informers:
            return ["all"]
        return [name for name, i in self._informers.items() if not i.synced]

    @property
    def last_event_at(self) -> float | None:
        """When the stalest informer last heard from the API (loop time).

        The oldest, not the newest: one informer stuck relisting (say, after
        an RBAC change) leaves its part of the TargetSet stale while the
        others stay fresh. An informer that never listed counts from start.
        """
        if self._started_at is None:
            return None
        times = [i.last_event_at if i.last_event_at is not None else self._started_at
                 for i in self._informers.values()]
        return min(times) if times else self._started_at

    def _rebuild(self) -> None:
        if not self._informers or not all(i.synced for i in self._informers.values()):
            return
        objs = {name: i.objects for name, i in self._informers.items()}
        snapshot = targetset_from(objs, namespace=self.namespace, legacy=self.legacy_endpoints,
                                  generation=self.current.generation + 1, skip=self._skip)
        if _same(snapshot, self.current):
            return
        self.current = snapshot
        log.info("targets_changed", state=snapshot.state.value, pods=len(snapshot.pods),
                 services=[t.address for t in snapshot.services], generation=snapshot.generation)
        self._changed.set()
        self._changed = asyncio.Event()

    def _skip(self, kind: str, obj: Obj, exc: Exception) -> None:
        """Log and count a malformed object once per version; it stays skipped meanwhile."""
        key = (kind, object_id(obj))
        if key in self._skipped:
            return
        if len(self._skipped) > 10_000:  # versions of objects long gone
            self._skipped.clear()
        self._skipped.add(key)
        log_skip(kind, obj, exc)
        self._on_skip(kind)

    async def changed(self, after: int) -> TargetSet:
        """The first TargetSet with a generation above ``after``."""
        while self.current.generation <= after:
            await self._changed.wait()
        return self.current


def _same(a: TargetSet, b: TargetSet) -> bool:
    return (a.pods, a.services, a.expected, a.state) == (b.pods, b.services, b.expected, b.state)


__all__ = ["ApiError", "ClusterView", "Timing", "build_targetset", "endpointslices_served",
           "pods_from_slices", "targetset_from"]
