"""The sandbox's control loops: Deployment, ReplicaSet, kubelet, EndpointSlice, PDB, zone.

Owns: turning desired state into observed state, the way the real
controllers do it for the objects corednsprobe looks at: Deployments roll
ReplicaSets (maxSurge/maxUnavailable), ReplicaSets keep N pods (each with a
stable slot index that a replacement inherits), the kubelet starts each pod's
DNS server through the backend, reports readiness from ``backend.pod_alive``
and honours grace periods, the EndpointSlice controller publishes endpoints
(and legacy Endpoints, and the backend's ClusterIP routing), the disruption
controller fills PodDisruptionBudget status, and the zone follows the
Services' ClusterIPs. All waiting is on the event loop's clock.
Never does: HTTP; never bypasses the registry's rules for spec writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from corednsprobe import logs
from corednsprobe.sandbox import resources as R
from corednsprobe.sandbox.backend import DnsBackend, Fault, FaultKind, ZoneData
from corednsprobe.sandbox.registry import Registry, pod_ready
from corednsprobe.sandbox.selectors import LabelSelector
from corednsprobe.sandbox.store import Change, Store, now_iso, random_suffix
from corednsprobe.sandbox.workloads import (
    DEADLINE_MESSAGE,
    PodKind,
    ProcessPods,
    pod_kind,
    pull_failure,
    waiting_status,
)

Obj = dict[str, Any]
log = logs.get(__name__)


PODS = R.require("", "pods")
NODES = R.require("", "nodes")
SERVICES = R.require("", "services")
ENDPOINTS = R.require("", "endpoints")
EVENTS = R.require("", "events")
SLICES = R.require("discovery.k8s.io", "endpointslices")
DEPLOYMENTS = R.require("apps", "deployments")
REPLICASETS = R.require("apps", "replicasets")
PDBS = R.require("policy", "poddisruptionbudgets")

SLOT_ANNOTATION = "sandbox.corednsprobe.io/slot"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME = "kubernetes.io/service-name"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
_HASH_CHARS = "bcdfghjkmnpqrstvwxz2456789"


@dataclass
class Timings:
    """Every duration of the sandbox's controllers, in seconds of loop time."""

    readiness_period: float = 1.0  # the kubelet's readiness probe period
    grace_scale: float = 1.0  # multiplies grace periods (tests use < 1)
    resync_period: float = 5.0  # controllers reconcile at least this often
    disrupted_pod_timeout: float = 120.0  # a PDB forgets an eviction after this


@dataclass
class PodFaults:
    """Injected DNS faults: per pod name, per slot (follows replacements), for all."""

    by_pod: dict[str, Fault] = field(default_factory=dict)
    by_slot: dict[int, Fault] = field(default_factory=dict)
    every_pod: Fault | None = None

    def effective(self, pod: str, slot: int | None) -> Fault:
        if pod in self.by_pod:
            return self.by_pod[pod]
        if slot is not None and slot in self.by_slot:
            return self.by_slot[slot]
        return self.every_pod or Fault()


def downward_env(pod: Obj, ip: str) -> dict[str, str]:
    """The container's env entries that take a pod field (``valueFrom.fieldRef``)."""
    fields = {"spec.nodeName": pod["spec"].get("nodeName") or "",
              "metadata.name": pod["metadata"]["name"],
              "metadata.namespace": pod["metadata"]["namespace"], "status.podIP": ip}
    out = {}
    for e in pod["spec"]["containers"][0].get("env") or ():
        path = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if path in fields:
            out[e["name"]] = fields[path]
    return out


def meta(obj: Obj) -> Obj:
    result: Obj = obj["metadata"]
    return result


def slot_of(pod: Obj) -> int | None:
    raw = (meta(pod).get("annotations") or {}).get(SLOT_ANNOTATION)
    return int(raw) if raw is not None else None


def terminating(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def owned_by(obj: Obj, owner: Obj) -> bool:
    return any(ref.get("uid") == meta(owner)["uid"] for ref in meta(obj).get("ownerReferences")
               or ())


def owner_ref(owner: Obj) -> Obj:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta(owner)["name"],
            "uid": meta(owner)["uid"], "controller": True, "blockOwnerDeletion": True}


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_HASH_CHARS[b % len(_HASH_CHARS)] for b in digest[:10])


def set_condition(conditions: list[Obj], kind: str, value: bool) -> list[Obj]:
    text = "True" if value else "False"
    out = [c for c in conditions if c.get("type") != kind]
    previous = next((c for c in conditions if c.get("type") == kind), None)
    if previous is not None and previous.get("status") == text:
        out.append(previous)
    else:
        out.append({"type": kind, "status": text, "lastProbeTime": None,
                    "lastTransitionTime": now_iso()})
    order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
             "PodScheduled"]
    return sorted(out, key=lambda c: order.index(c["type"]) if c["type"] in order else 99)


def scaled_value(raw: Any, total: int, round_up: bool) -> int:
    """An int-or-percent (``maxSurge``, ``minAvailable``) against ``total``."""
    if isinstance(raw, str) and raw.endswith("%"):
        exact = total * float(raw[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(raw)


class Trigger:
    """Wakes a control loop when something it cares about changed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()

    async def wait(self, at_most: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._event.wait()
        self._event.clear()


class Controllers:
    def __init__(self, store: Store, registry: Registry, backend: DnsBackend, timings: Timings,
                 domain: str, faults: PodFaults) -> None:
        self.store = store
        self.registry = registry
        self.backend = backend
        self.timings = timings
        self.domain = domain
        self.faults = faults
        self.pdb_paused = False
        self.zone = ZoneData(domain, {})
        self._triggers: dict[str, Trigger] = {
            name: Trigger() for name in ("deployments", "replicasets", "kubelet", "slices",
                                         "pdb", "zone")}
        self._pod_wakeups: dict[str, asyncio.Event] = {}
        self._pod_tasks: dict[str, asyncio.Task[None]] = {}
        self._routed: dict[str, tuple[str, ...]] = {}
        self._frontends: dict[tuple[str, int], tuple[str, ...]] = {}
        self._serving: set[str] = set()
        self._endpoints_owned: set[tuple[str, str]] = set()
        self._group: asyncio.TaskGroup | None = None
        self.processes: ProcessPods | None = None  # set by the Sandbox: project-image pods
        # The environment a project-image pod gets for its ServiceAccount (KUBECONFIG).
        self.credentials: Callable[[Obj], dict[str, str]] | None = None
        # the same for a pod in a node's namespace (the API at the bridge address)
        self.vantage_credentials: Callable[[Obj], dict[str, str]] | None = None
        # run the project's long-running pods (its Deployment) as probers in their node's
        # namespace, where the backend has such namespaces (SandboxConfig.run_probers)
        self.run_probers = False
        store.listen(self._on_change)

    def _on_change(self, change: Change) -> None:
        plural = change.resource.plural
        wake = {
            "deployments": ("deployments",), "replicasets": ("deployments", "replicasets"),
            "pods": ("deployments", "replicasets", "kubelet", "slices", "pdb"),
            "services": ("slices", "zone"), "poddisruptionbudgets": ("pdb",),
            "nodes": ("slices",),
            "endpointslices": ("slices",),
        }.get(plural, ())
        for name in wake:
            self._triggers[name].fire()
        if plural == "pods":
            uid = meta(change.current)["uid"]
            if uid in self._pod_wakeups:
                self._pod_wakeups[uid].set()

    async def run(self) -> None:
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "deployments": self._sync_deployments, "replicasets": self._sync_replicasets,
            "kubelet": self._sync_kubelet, "slices": self._sync_slices, "pdb": self._sync_pdbs,
            "zone": self.sync_zone,
        }
        async with asyncio.TaskGroup() as group:
            self._group = group
            for name, sync in loops.items():
                group.create_task(self._loop(name, sync), name=f"sandbox-{name}")

    async def _loop(self, name: str, sync: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await sync()
            except Exception:  # a controller bug must not stop the sandbox
                log.exception("controller_failed", controller=name)
            await self._triggers[name].wait(self.timings.resync_period)

    # events ----------------------------------------------------------------

    def record_event(self, involved: Obj, reason: str, message: str, component: str,
                     kind: str = "Normal") -> None:
        now = now_iso()
        ns = meta(involved).get("namespace", "default")
        body = {
            "metadata": {"name": f"{meta(involved)['name']}.{random_suffix(16)}", "namespace": ns},
            "involvedObject": {"kind": involved["kind"], "namespace": ns,
                               "name": meta(involved)["name"], "uid": meta(involved)["uid"],
                               "apiVersion": involved["apiVersion"],
                               "resourceVersion": meta(involved).get("resourceVersion", "")},
            "reason": reason, "message": message, "source": {"component": component},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": kind,
            "eventTime": None, "reportingComponent": component, "reportingInstance": "",
        }
        self.registry.create(EVENTS, ns, body)

    # zone ------------------------------------------------------------------

    def _wanted_zone(self) -> ZoneData:
        records: dict[str, tuple[str, ...]] = {}
        for svc in self.store.items(SERVICES):
            ips = tuple(ip for ip in svc["spec"].get("clusterIPs") or () if ip != "None")
            if ips:
                records[f"{meta(svc)['name']}.{meta(svc)['namespace']}.svc.{self.domain}"] = ips
        return ZoneData(self.domain, records)

    async def sync_zone(self) -> None:
        wanted = self._wanted_zone()
        if wanted != self.zone:
            self.zone = wanted
            await self.backend.update_zone(wanted)
            log.info("zone_updated", records=len(wanted.records))

    # deployments -----------------------------------------------------------

    async def _sync_deployments(self) -> None:
        for deployment in list(self.store.items(DEPLOYMENTS)):
            self._roll(deployment)

    def _roll(self, deployment: Obj) -> None:
        spec = deployment["spec"]
        desired = int(spec.get("replicas", 1))
        new_rs = self._current_replicaset(deployment)
        old = [rs for rs in self.store.items(REPLICASETS, meta(deployment)["namespace"])
               if owned_by(rs, deployment) and meta(rs)["uid"] != meta(new_rs)["uid"]]
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        surge = scaled_value(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        old_total = sum(int(rs["spec"]["replicas"]) for rs in old)
        new_count = int(new_rs["spec"]["replicas"])
        room = desired + surge - old_total - new_count
        if new_count < desired and room > 0:
            new_count = min(desired, new_count + room)
        elif new_count > desired:
            new_count = desired
        self._scale(new_rs, new_count)
        pods = self._pods_of_deployment(deployment)
        ready = sum(1 for p in pods if pod_ready(p) and not terminating(p))
        removable = ready - (desired - unavailable)
        for rs in sorted(old, key=lambda r: meta(r)["creationTimestamp"]):
            cut = max(0, min(int(rs["spec"]["replicas"]), removable))
            removable -= cut
            self._scale(rs, int(rs["spec"]["replicas"]) - cut)
        self._deployment_status(deployment, new_rs, pods)

    def _current_replicaset(self, deployment: Obj) -> Obj:
        template = deployment["spec"]["template"]
        pod_hash = template_hash(template)
        ns, name = meta(deployment)["namespace"], f"{meta(deployment)['name']}-{pod_hash}"
        existing = self.store.get(REPLICASETS, ns, name)
        if existing is not None:
            return existing
        revisions = [int((meta(rs).get("annotations") or {}).get(
            "deployment.kubernetes.io/revision", 0)) for rs in self.store.items(REPLICASETS, ns)
            if owned_by(rs, deployment)]
        labels = {**(template.get("metadata", {}).get("labels") or {}),
                  "pod-template-hash": pod_hash}
        selector = copy.deepcopy(deployment["spec"]["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        pod_template = copy.deepcopy(template)
        pod_template.setdefault("metadata", {})["labels"] = labels
        body = {
            "metadata": {"name": name, "namespace": ns, "labels": labels,
                         "annotations": {"deployment.kubernetes.io/revision":
                                         str(max(revisions, default=0) + 1)},
                         "ownerReferences": [owner_ref(deployment)]},
            "spec": {"replicas": 0, "selector": selector, "template": pod_template},
        }
        created = self.registry.create(REPLICASETS, ns, body)
        self.record_event(deployment, "ScalingReplicaSet",
                          f"Scaled up replica set {name} from 0 to "
                          f"{deployment['spec'].get('replicas', 1)}", "deployment-controller")
        return created

    def _scale(self, rs: Obj, replicas: int) -> None:
        if int(rs["spec"]["replicas"]) == replicas:
            return
        current = self.store.must_get(REPLICASETS, meta(rs)["namespace"], meta(rs)["name"])
        body = copy.deepcopy(current)
        body["spec"]["replicas"] = replicas
        self.registry.update(REPLICASETS, meta(rs)["namespace"], meta(rs)["name"], body)

    def _pods_of_deployment(self, deployment: Obj) -> list[Obj]:
        ns = meta(deployment)["namespace"]
        sets = [rs for rs in self.store.items(REPLICASETS, ns) if owned_by(rs, deployment)]
        return [p for p in self.store.items(PODS, ns) if any(owned_by(p, rs) for rs in sets)]

    def _deployment_status(self, deployment: Obj, new_rs: Obj, pods: list[Obj]) -> None:
        live = [p for p in pods if not terminating(p)]
        ready = sum(1 for p in live if pod_ready(p))
        updated = sum(1 for p in live if owned_by(p, new_rs))
        desired = int(deployment["spec"].get("replicas", 1))
        previous = deployment.get("status") or {}
        status = {
            "observedGeneration": meta(deployment).get("generation", 1),
            "replicas": len(live), "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(0, desired - ready),
            "conditions": self._deployment_conditions(previous, ready > 0 or desired == 0),
        }
        self.registry.write_status(DEPLOYMENTS, {**deployment, "status": status})

    @staticmethod
    def _deployment_conditions(previous: Obj, available: bool) -> list[Obj]:
        old = {c["type"]: c for c in previous.get("conditions") or ()}
        now = now_iso()

        def condition(kind: str, value: bool, reason: str, message: str) -> Obj:
            text = "True" if value else "False"
            before = old.get(kind)
            since = before["lastTransitionTime"] if before and before["status"] == text else now
            return {"type": kind, "status": text, "lastUpdateTime": since,
                    "lastTransitionTime": since, "reason": reason, "message": message}

        return [
            condition("Available", available, "MinimumReplicasAvailable" if available
                      else "MinimumReplicasUnavailable", "Deployment has minimum availability."),
            condition("Progressing", True, "NewReplicaSetAvailable",
                      "ReplicaSet has successfully progressed."),
        ]

    # replicasets -----------------------------------------------------------

    async def _sync_replicasets(self) -> None:
        for rs in list(self.store.items(REPLICASETS)):
            self._keep_replicas(rs)

    def _keep_replicas(self, rs: Obj) -> None:
        ns = meta(rs)["namespace"]
        owned = [p for p in self.store.items(PODS, ns) if owned_by(p, rs)]
        live = [p for p in owned if not terminating(p)]
        want = int(rs["spec"].get("replicas", 1))
        for _ in range(want - len(live)):
            self._create_pod(rs)
        if len(live) > want:
            doomed = sorted(live, key=lambda p: (pod_ready(p), meta(p)["creationTimestamp"]))
            for pod in doomed[: len(live) - want]:
                self.registry.delete(PODS, ns, meta(pod)["name"], {}, None)
                self.record_event(rs, "SuccessfulDelete", f"Deleted pod: {meta(pod)['name']}",
                                  "replicaset-controller")
        owned = [p for p in self.store.items(PODS, ns) if owned_by(p, rs)]
        live = [p for p in owned if not terminating(p)]
        ready = sum(1 for p in live if pod_ready(p))
        status = {"replicas": len(live), "fullyLabeledReplicas": len(live),
                  "readyReplicas": ready, "availableReplicas": ready,
                  "observedGeneration": meta(rs).get("generation", 1)}
        current = self.store.get(REPLICASETS, ns, meta(rs)["name"])
        if current is not None:
            self.registry.write_status(REPLICASETS, {**current, "status": status})

    def _family(self, rs: Obj) -> list[Obj]:
        """Every ReplicaSet of the same Deployment (or just this one)."""
        owners = {ref["uid"] for ref in meta(rs).get("ownerReferences") or ()}
        if not owners:
            return [rs]
        return [other for other in self.store.items(REPLICASETS, meta(rs)["namespace"])
                if owners & {ref["uid"] for ref in meta(other).get("ownerReferences") or ()}]

    def _free_slot(self, rs: Obj) -> int:
        family = self._family(rs)
        used = {slot_of(p) for p in self.store.items(PODS, meta(rs)["namespace"])
                if not terminating(p) and any(owned_by(p, member) for member in family)}
        return next(i for i in range(len(used) + 1) if i not in used)

    def _create_pod(self, rs: Obj) -> None:
        template = copy.deepcopy(rs["spec"]["template"])
        pod_meta = template.get("metadata") or {}
        slot = self._free_slot(rs)
        annotations = {**(pod_meta.get("annotations") or {}), SLOT_ANNOTATION: str(slot)}
        body = {
            "metadata": {"generateName": f"{meta(rs)['name']}-", "labels": pod_meta.get("labels"),
                         "annotations": annotations, "ownerReferences": [owner_ref(rs)]},
            "spec": template.get("spec") or {},
        }
        pod = self.registry.create(PODS, meta(rs)["namespace"], body)
        self.record_event(rs, "SuccessfulCreate", f"Created pod: {meta(pod)['name']}",
                          "replicaset-controller")
        log.info("pod_created", pod=meta(pod)["name"], slot=slot)

    # kubelet ---------------------------------------------------------------

    async def _sync_kubelet(self) -> None:
        assert self._group is not None
        for pod in list(self.store.items(PODS)):
            uid = meta(pod)["uid"]
            if uid not in self._pod_tasks:
                self._pod_wakeups[uid] = asyncio.Event()
                self._pod_tasks[uid] = self._group.create_task(
                    self._run_pod(meta(pod)["namespace"], meta(pod)["name"], uid),
                    name=f"sandbox-pod-{meta(pod)['name']}")

    def _live_pod(self, namespace: str, name: str, uid: str) -> Obj | None:
        pod = self.store.get(PODS, namespace, name)
        return pod if pod is not None and meta(pod)["uid"] == uid else None

    async def _pod_wait(self, uid: str, at_most: float) -> None:
        wakeup = self._pod_wakeups[uid]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await wakeup.wait()
        wakeup.clear()

    async def _run_pod(self, namespace: str, name: str, uid: str) -> None:
        try:
            await self._pod_life(namespace, name, uid)
        except Exception:  # one pod's failure must not stop the sandbox
            log.exception("pod_failed", pod=name)
        finally:
            with contextlib.suppress(Exception):
                await self._stop_server(name)
            self._pod_tasks.pop(uid, None)
            self._pod_wakeups.pop(uid, None)

    async def _pod_life(self, namespace: str, name: str, uid: str) -> None:
        pod = self._live_pod(namespace, name, uid)
        if pod is None:
            return
        if terminating(pod):  # deleted before it ever started
            self.store.remove(PODS, namespace, name)
            return
        kind = pod_kind(pod, vantages=self.run_probers and hasattr(self.backend, "add_vantage"))
        if kind is PodKind.UNPULLABLE or (kind in (PodKind.PROCESS, PodKind.VANTAGE)
                                          and self.processes is None):
            await self._never_pulled(namespace, name, uid)
            return
        if kind in (PodKind.PROCESS, PodKind.VANTAGE):
            pinned = kind is PodKind.PROCESS and bool(pod["spec"].get("nodeName")) \
                and hasattr(self.backend, "add_vantage")
            await self._run_process(namespace, name, uid, vantage=kind is PodKind.VANTAGE,
                                    on_node=pinned)
            return
        ip = self.backend.allocate_pod_ip()
        self._schedule(pod)
        await self.backend.add_pod(name, ip, self.zone)
        self._serving.add(name)
        await self.backend.set_pod_fault(name, self.faults.effective(name, slot_of(pod)))
        if self._mark_running(namespace, name, uid, ip):
            await self._probe_until_deleted(namespace, name, uid)

    # pods that are not DNS servers --------------------------------------------

    def _write_pod_status(self, namespace: str, name: str, uid: str, **changes: Any) -> Obj | None:
        pod = self._live_pod(namespace, name, uid)
        if pod is None:
            return None
        status = {**pod["status"], **changes}
        if status == pod["status"]:
            return pod
        return self.registry.write_status(PODS, {**pod, "status": status})

    def _admit(self, namespace: str, name: str, uid: str) -> Obj | None:
        """Scheduled and admitted by the node's kubelet: hostIP, startTime, conditions."""
        pod = self._live_pod(namespace, name, uid)
        if pod is None:
            return None
        self._schedule(pod)
        pod = self._live_pod(namespace, name, uid)
        if pod is None:
            return None
        node = pod["spec"]["nodeName"]
        conditions = pod["status"].get("conditions") or []
        for kind, value in (("PodReadyToStartContainers", True), ("Initialized", True),
                            ("Ready", False), ("ContainersReady", False)):
            conditions = set_condition(conditions, kind, value)
        host = self._host_ip(node)
        return self._write_pod_status(namespace, name, uid, conditions=conditions, hostIP=host,
                                      hostIPs=[{"ip": host}], startTime=now_iso())

    def _deadline(self, pod: Obj) -> float:
        """Loop time at which activeDeadlineSeconds runs out (inf: none)."""
        seconds = pod["spec"].get("activeDeadlineSeconds")
        if seconds is None:
            return math.inf
        return asyncio.get_running_loop().time() + float(seconds) * self.timings.grace_scale

    def _deadline_exceeded(self, namespace: str, name: str, uid: str,
                           containers: list[Obj]) -> None:
        pod = self._live_pod(namespace, name, uid)
        if pod is None:
            return
        self.record_event(pod, "DeadlineExceeded", DEADLINE_MESSAGE, "kubelet", "Warning")
        conditions = pod["status"].get("conditions") or []
        for kind in ("Ready", "ContainersReady"):
            conditions = set_condition(conditions, kind, False)
        self._write_pod_status(namespace, name, uid, phase="Failed", reason="DeadlineExceeded",
                               message=DEADLINE_MESSAGE, conditions=conditions,
                               containerStatuses=containers)

    async def _until_deleted(self, namespace: str, name: str, uid: str, deadline: float,
                             on_deadline: Callable[[], Awaitable[None]] | None = None) -> None:
        """Wait for deletion (then honour the grace period) or the active deadline."""
        loop = asyncio.get_running_loop()
        while (pod := self._live_pod(namespace, name, uid)) is not None:
            if terminating(pod):
                grace = float(meta(pod).get("deletionGracePeriodSeconds") or 0)
                await self._pod_wait(uid, grace * self.timings.grace_scale)
                if self._live_pod(namespace, name, uid) is not None:
                    self.store.remove(PODS, namespace, name)
                return
            if loop.time() >= deadline and on_deadline is not None:
                await on_deadline()
                on_deadline, deadline = None, math.inf
                continue
            await self._pod_wait(uid, min(deadline - loop.time(), self.timings.resync_period))

    async def _never_pulled(self, namespace: str, name: str, uid: str) -> None:
        """An image the sandbox cannot have: Pending, ErrImagePull, then ImagePullBackOff."""
        pod = self._admit(namespace, name, uid)
        if pod is None:
            return
        image = pod["spec"]["containers"][0].get("image", "")
        self.record_event(pod, "Pulling", f'Pulling image "{image}"', "kubelet")
        self.record_event(pod, "Failed", f'Failed to pull image "{image}": '
                          f"{pull_failure(image)}", "kubelet", "Warning")
        self.record_event(pod, "Failed", "Error: ErrImagePull", "kubelet", "Warning")
        self._write_pod_status(namespace, name, uid,
                               containerStatuses=waiting_status(pod, "ErrImagePull"))
        deadline = self._deadline(pod)
        await self._pod_wait(uid, self.timings.readiness_period)
        pod = self._live_pod(namespace, name, uid)
        if pod is not None and not terminating(pod):
            self.record_event(pod, "BackOff", f'Back-off pulling image "{image}"', "kubelet")
            self.record_event(pod, "Failed", "Error: ImagePullBackOff", "kubelet", "Warning")
            self._write_pod_status(namespace, name, uid,
                                   containerStatuses=waiting_status(pod, "ImagePullBackOff"))

        async def expire() -> None:
            current = self._live_pod(namespace, name, uid)
            if current is not None:
                self._deadline_exceeded(namespace, name, uid,
                                        current["status"].get("containerStatuses") or [])

        await self._until_deleted(namespace, name, uid, deadline, expire)

    def _container_status(self, pod: Obj, state: Obj, ready: bool = False,
                          started: bool = True) -> list[Obj]:
        container = pod["spec"]["containers"][0]
        return [{"name": container.get("name", ""), "image": container.get("image", ""),
                 "imageID": f"sandbox://{container.get('image', '')}",
                 "containerID": f"containerd://{meta(pod)['uid'].replace('-', '')}",
                 "ready": ready, "started": started, "restartCount": 0, "state": state,
                 "lastState": {}}]

    async def _run_process(self, namespace: str, name: str, uid: str,
                           vantage: bool = False, on_node: bool = False) -> None:
        """The project's image: its command as a local process, to its exit code.

        ``vantage``: a long-running prober (its Deployment's pod): scheduled to a node
        and run in that node's namespace, whose address is its pod IP; the downward
        API's spec.nodeName, metadata.name, metadata.namespace and status.podIP fill
        its env's fieldRefs. ``on_node``: a pod its maker pinned to a node
        (``spec.nodeName``, e.g. a probe agent, one per node): run in that node's
        namespace too, so the node's network paths are the pod's."""
        assert self.processes is not None
        pod = self._admit(namespace, name, uid)
        if pod is None:
            return
        prefix: list[str] = []
        if vantage:
            self._schedule(pod)
            pod = self._live_pod(namespace, name, uid) or pod
            netns, ip = await self.backend.add_vantage(  # type: ignore[attr-defined]
                pod["spec"]["nodeName"])
            prefix = ["ip", "netns", "exec", netns]
            env = self.vantage_credentials(pod) if self.vantage_credentials else {}
            env.update(downward_env(pod, ip))
        elif on_node:
            netns, ip = await self.backend.add_vantage(  # type: ignore[attr-defined]
                pod["spec"]["nodeName"])
            prefix = ["ip", "netns", "exec", netns]
            env = self.credentials(pod) if self.credentials is not None else {}
        else:
            ip = self.backend.allocate_pod_ip()
            env = self.credentials(pod) if self.credentials is not None else {}
        running = await self.processes.start(pod, env, prefix)
        started = now_iso()
        self.record_event(pod, "Started", f"Started container "
                          f"{pod['spec']['containers'][0].get('name', '')}", "kubelet")
        conditions = pod["status"].get("conditions") or []
        for kind in ("Ready", "ContainersReady"):
            conditions = set_condition(conditions, kind, True)
        self._write_pod_status(namespace, name, uid, phase="Running", podIP=ip,
                               podIPs=[{"ip": ip}], conditions=conditions,
                               containerStatuses=self._container_status(
                                   pod, {"running": {"startedAt": started}}, ready=True))
        deadline = self._deadline(pod)
        loop = asyncio.get_running_loop()
        while (pod := self._live_pod(namespace, name, uid)) is not None:
            if running.exited.is_set():
                break
            if terminating(pod):
                grace = float(meta(pod).get("deletionGracePeriodSeconds") or 0)
                await self.processes.stop(uid, grace * self.timings.grace_scale)
                if self._live_pod(namespace, name, uid) is not None:
                    self.store.remove(PODS, namespace, name)
                self.processes.forget(namespace, name)
                return
            if loop.time() >= deadline:
                code = await self.processes.stop(uid, 0.0)
                self._deadline_exceeded(namespace, name, uid, self._container_status(
                    pod, {"terminated": {"exitCode": code if code and code > 0 else 137,
                                         "reason": "Error", "startedAt": started,
                                         "finishedAt": now_iso()}}))
                break
            waiters = [asyncio.ensure_future(running.exited.wait()),
                       asyncio.ensure_future(self._pod_wait(
                           uid, min(deadline - loop.time(), self.timings.resync_period)))]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        pod = self._live_pod(namespace, name, uid)
        if pod is not None and running.exited.is_set() and pod["status"].get("phase") == "Running":
            code = running.process.returncode or 0
            conditions = pod["status"].get("conditions") or []
            for kind in ("Ready", "ContainersReady"):
                conditions = set_condition(conditions, kind, False)
            self._write_pod_status(
                namespace, name, uid, phase="Succeeded" if code == 0 else "Failed",
                conditions=conditions, containerStatuses=self._container_status(
                    pod, {"terminated": {"exitCode": code,
                                         "reason": "Completed" if code == 0 else "Error",
                                         "startedAt": started, "finishedAt": now_iso()}},
                    started=False))
        await self.processes.stop(uid, 0.0)
        while self._live_pod(namespace, name, uid) is not None:
            await self._pod_wait(uid, self.timings.resync_period)
        self.processes.forget(namespace, name)

    async def _stop_server(self, name: str) -> None:
        if name in self._serving:
            self._serving.discard(name)
            await self.backend.remove_pod(name)

    def _nodes(self) -> list[Obj]:
        return [n for n in self.store.items(NODES) if not n["spec"].get("unschedulable")]

    def _pick_node(self, pod: Obj) -> str:
        """A slot's pods go to node slot mod N (so replicas spread and a replacement
        lands where its predecessor was); other pods to the node with fewest pods."""
        nodes: list[str] = [meta(n)["name"] for n in self._nodes()]
        if not nodes:
            raise RuntimeError("no schedulable node")
        slot = slot_of(pod)
        if slot is not None:
            return nodes[slot % len(nodes)]
        load = {name: 0 for name in nodes}
        for other in self.store.items(PODS):
            if (placed := other["spec"].get("nodeName")) in load:
                load[placed] += 1
        return min(nodes, key=lambda name: (load[name], name))

    def _schedule(self, pod: Obj) -> None:
        node = pod["spec"].get("nodeName") or self._pick_node(pod)
        body = copy.deepcopy(pod)
        body["spec"]["nodeName"] = node
        conditions = set_condition(body["status"].get("conditions") or [], "PodScheduled", True)
        body["status"] = {**body["status"], "conditions": conditions}
        current = self.store.replace(PODS, body)
        self.record_event(current, "Scheduled",
                          f"Successfully assigned {meta(pod)['namespace']}/{meta(pod)['name']} "
                          f"to {node}", "default-scheduler")

    def _mark_running(self, namespace: str, name: str, uid: str, ip: str) -> bool:
        pod = self._live_pod(namespace, name, uid)
        if pod is None:
            return False
        node = pod["spec"]["nodeName"]
        conditions = pod["status"].get("conditions") or []
        for kind, value in (("PodReadyToStartContainers", True), ("Initialized", True),
                            ("Ready", False), ("ContainersReady", False)):
            conditions = set_condition(conditions, kind, value)
        now = now_iso()
        containers = [
            {"name": c.get("name", "dns"), "image": c.get("image", ""), "imageID": "",
             "containerID": f"containerd://{uid.replace('-', '')}", "ready": False,
             "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
            for c in pod["spec"].get("containers") or [{}]]
        status = {**pod["status"], "phase": "Running", "conditions": conditions,
                  "hostIP": self._host_ip(node), "hostIPs": [{"ip": self._host_ip(node)}],
                  "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
                  "containerStatuses": containers}
        self.registry.write_status(PODS, {**pod, "status": status})
        self.record_event(pod, "Started", "Started container coredns", "kubelet")
        return True

    def _host_ip(self, node: str) -> str:
        """The node's InternalIP (where its NodePorts answer)."""
        found = self.store.get(NODES, "", node)
        addresses = ((found or {}).get("status") or {}).get("addresses") or ()
        return next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "")

    async def _probe_until_deleted(self, namespace: str, name: str, uid: str) -> None:
        while True:
            pod = self._live_pod(namespace, name, uid)
            if pod is None:
                return
            if terminating(pod):
                await self._terminate(namespace, name, uid)
                return
            self._set_ready(pod, await self.backend.pod_alive(name))
            await self._pod_wait(uid, self.timings.readiness_period)

    def _set_ready(self, pod: Obj, ready: bool) -> None:
        pod = self._live_pod(meta(pod)["namespace"], meta(pod)["name"], meta(pod)["uid"]) or pod
        conditions = pod["status"].get("conditions") or []
        for kind in ("Ready", "ContainersReady"):
            conditions = set_condition(conditions, kind, ready)
        containers = [{**c, "ready": ready} for c in pod["status"].get("containerStatuses") or ()]
        status = {**pod["status"], "conditions": conditions, "containerStatuses": containers}
        if self.store.get(PODS, meta(pod)["namespace"], meta(pod)["name"]) is not None:
            self.registry.write_status(PODS, {**pod, "status": status})

    async def _terminate(self, namespace: str, name: str, uid: str) -> None:
        """Lameduck: still serving until the next readiness probe, then not ready;
        the server stops when the grace period ends and the object goes."""
        pod = self._live_pod(namespace, name, uid)
        if pod is None:
            return
        self.record_event(pod, "Killing", "Stopping container coredns", "kubelet")
        grace = float(meta(pod).get("deletionGracePeriodSeconds") or 0) * self.timings.grace_scale
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await self._pod_wait(uid, min(self.timings.readiness_period, grace))
        while (pod := self._live_pod(namespace, name, uid)) is not None:
            if pod_ready(pod):
                self._set_ready(pod, False)
            left = deadline - loop.time()
            if left <= 0:
                break
            await self._pod_wait(uid, left)
        await self._stop_server(name)
        if self._live_pod(namespace, name, uid) is not None:
            self.store.remove(PODS, namespace, name)
            log.info("pod_deleted", pod=name)

    # endpoint slices -------------------------------------------------------

    async def _sync_slices(self) -> None:
        services = list(self.store.items(SERVICES))
        wanted: dict[tuple[str, int], tuple[str, ...]] = {}
        for svc in services:
            svc = self._ensure_load_balancer(svc)
            if svc["spec"].get("selector"):
                await self._publish_service(svc)
                wanted.update(self._wanted_frontends(svc))
        await self._forget_gone_services({(meta(s)["namespace"], meta(s)["name"])
                                          for s in services})
        await self._route_frontends(wanted)

    # exposed services (kube-proxy's NodePorts, the sandbox "cloud") ----------

    def _ensure_load_balancer(self, svc: Obj) -> Obj:
        """The cloud provider's service controller: a LoadBalancer Service gets an
        ingress address from the backend's "cloud" once, with its events."""
        if svc["spec"].get("type") != "LoadBalancer":
            return svc
        if ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
            return svc
        self.record_event(svc, "EnsuringLoadBalancer", "Ensuring load balancer",
                          "service-controller")
        address = self.backend.allocate_external_ip()
        status = {"loadBalancer": {"ingress": [{"ip": address, "ipMode": "VIP"}]}}
        updated = self.registry.write_status(SERVICES, {**svc, "status": status})
        self.record_event(updated, "EnsuredLoadBalancer", "Ensured load balancer",
                          "service-controller")
        log.info("load_balancer_ensured", service=meta(svc)["name"], address=address)
        return updated

    def _node_addresses(self) -> dict[str, str]:
        found = {}
        for node in self.store.items(NODES):
            address = self._host_ip(meta(node)["name"])
            if address:
                found[meta(node)["name"]] = address
        return found

    def _wanted_frontends(self, svc: Obj) -> dict[tuple[str, int], tuple[str, ...]]:
        """Where kube-proxy makes this Service answer outside its ClusterIP: each
        node address at each nodePort, and each LoadBalancer address at each port,
        for the ports that lead to the pods' DNS port. With externalTrafficPolicy
        Local a node sends only to its own pods (none: nothing answers there)."""
        spec = svc["spec"]
        kind = spec.get("type", "ClusterIP")
        if kind not in ("NodePort", "LoadBalancer"):
            return {}
        pairs = [(p, e) for p, e in self._endpoints_for(svc) if e["conditions"]["ready"]]
        pods = [p for p, _ in pairs]
        local = spec.get("externalTrafficPolicy") == "Local"
        everyone = tuple(sorted(e["addresses"][0] for _, e in pairs))
        wanted: dict[tuple[str, int], tuple[str, ...]] = {}
        for port in spec.get("ports") or ():
            # The pods serve DNS at the backend's port; a manifest's 53 means that port
            # (the in-process backend, without root, cannot bind 53 itself).
            if self._target_port(port, pods) not in (53, self.backend.port):
                continue
            if port.get("nodePort"):
                for node, address in self._node_addresses().items():
                    backends = tuple(sorted(e["addresses"][0] for _, e in pairs
                                            if e.get("nodeName") == node)) if local else everyone
                    wanted[(address, int(port["nodePort"]))] = backends
            if kind == "LoadBalancer":
                for ingress in ((svc.get("status") or {}).get("loadBalancer") or {}).get(
                        "ingress") or ():
                    if ingress.get("ip"):
                        wanted[(ingress["ip"], int(port["port"]))] = everyone
        return wanted

    async def _route_frontends(self, wanted: dict[tuple[str, int], tuple[str, ...]]) -> None:
        for key in [k for k in self._frontends if k not in wanted]:
            del self._frontends[key]
            await self.backend.set_frontend(*key, ())
        for key, backends in wanted.items():
            if self._frontends.get(key) != backends:
                self._frontends[key] = backends
                await self.backend.set_frontend(*key, backends)
                log.info("frontend_routed", address=key[0], port=key[1], backends=len(backends))

    def _endpoints_for(self, svc: Obj) -> list[tuple[Obj, Obj]]:
        """(pod, endpoint) for every pod with an IP that the Service selects."""
        selector = LabelSelector.from_match_labels({"matchLabels": svc["spec"]["selector"]})
        assert selector is not None
        found = []
        for pod in self.store.items(PODS, meta(svc)["namespace"]):
            ip = pod.get("status", {}).get("podIP")
            if not ip or not selector.matches_object(pod):
                continue
            ready, ending = pod_ready(pod), terminating(pod)
            endpoint = {"addresses": [ip],
                        "conditions": {"ready": ready and not ending, "serving": ready,
                                       "terminating": ending},
                        "nodeName": pod["spec"].get("nodeName"),
                        "targetRef": {"kind": "Pod", "namespace": meta(pod)["namespace"],
                                      "name": meta(pod)["name"], "uid": meta(pod)["uid"]}}
            found.append((pod, endpoint))
        return found

    @staticmethod
    def _target_port(port: Obj, pods: list[Obj]) -> int | None:
        """A Service port's targetPort as a number (a name is looked up in the pods)."""
        target: Any = port.get("targetPort", port["port"])
        if isinstance(target, str):
            if target.isdigit():
                return int(target)
            found = next((p["containerPort"] for pod in pods
                          for c in pod["spec"].get("containers") or ()
                          for p in c.get("ports") or () if p.get("name") == target), None)
            return None if found is None else int(found)
        return int(target)

    @classmethod
    def _slice_ports(cls, svc: Obj, pods: list[Obj]) -> list[Obj]:
        ports = []
        for port in svc["spec"].get("ports") or ():
            target = cls._target_port(port, pods)
            if target is None:
                continue
            ports.append({"name": port.get("name", ""), "protocol": port.get("protocol", "TCP"),
                          "port": target})
        return ports

    async def _publish_service(self, svc: Obj) -> None:
        pairs = self._endpoints_for(svc)
        pods = [p for p, _ in pairs]
        ports = self._slice_ports(svc, pods)
        self._write_slice(svc, [e for _, e in pairs], ports)
        self._write_legacy_endpoints(svc, pairs, ports)
        cluster_ip = svc["spec"].get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            ready = tuple(e["addresses"][0] for _, e in pairs if e["conditions"]["ready"])
            if self._routed.get(cluster_ip) != ready:
                self._routed[cluster_ip] = ready
                await self.backend.set_service(cluster_ip, ready)
                log.info("service_routed", service=meta(svc)["name"], cluster_ip=cluster_ip,
                         backends=len(ready))

    def _write_slice(self, svc: Obj, endpoints: list[Obj], ports: list[Obj]) -> None:
        ns, name = meta(svc)["namespace"], meta(svc)["name"]
        labels = {**(meta(svc).get("labels") or {}), MANAGED_BY: SLICE_CONTROLLER,
                  SERVICE_NAME: name}
        managed = [s for s in self.store.items(SLICES, ns)
                   if (meta(s).get("labels") or {}).get(SERVICE_NAME) == name
                   and (meta(s).get("labels") or {}).get(MANAGED_BY) == SLICE_CONTROLLER]
        wanted = {"addressType": "IPv4", "endpoints": endpoints, "ports": ports}
        if not managed:
            self.registry.create(SLICES, ns, {
                "metadata": {"generateName": f"{name}-", "labels": labels,
                             "ownerReferences": [owner_ref(svc)]}, **wanted})
            return
        first, extra = managed[0], managed[1:]
        current = {k: first.get(k) for k in wanted}
        if current != wanted or meta(first).get("labels") != labels:
            body = {**copy.deepcopy(first), **wanted}
            body["metadata"]["labels"] = labels
            self.store.replace(SLICES, body)
        for stale in extra:
            self.store.remove(SLICES, ns, meta(stale)["name"])

    def _write_legacy_endpoints(self, svc: Obj, pairs: list[tuple[Obj, Obj]],
                                ports: list[Obj]) -> None:
        ns, name = meta(svc)["namespace"], meta(svc)["name"]
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        for _, endpoint in pairs:
            if endpoint["conditions"]["terminating"]:
                continue
            address = {"ip": endpoint["addresses"][0], "nodeName": endpoint["nodeName"],
                       "targetRef": endpoint["targetRef"]}
            (ready if endpoint["conditions"]["ready"] else not_ready).append(address)
        subset: Obj = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        body: Obj = {"metadata": {"name": name, "namespace": ns,
                                  "labels": dict(meta(svc).get("labels") or {})}}
        if subset:
            body["subsets"] = [{**subset, "ports": ports}]
        current = self.store.get(ENDPOINTS, ns, name)
        self._endpoints_owned.add((ns, name))
        if current is None:
            self.registry.create(ENDPOINTS, ns, body)
        elif current.get("subsets") != body.get("subsets") or \
                meta(current).get("labels") != body["metadata"]["labels"]:
            replacement = copy.deepcopy(current)
            replacement["metadata"]["labels"] = body["metadata"]["labels"]
            replacement.pop("subsets", None)
            if "subsets" in body:
                replacement["subsets"] = body["subsets"]
            self.store.replace(ENDPOINTS, replacement)

    async def _forget_gone_services(self, alive: set[tuple[str, str]]) -> None:
        for piece in list(self.store.items(SLICES)):
            labels = meta(piece).get("labels") or {}
            key = (meta(piece)["namespace"], labels.get(SERVICE_NAME, ""))
            if labels.get(MANAGED_BY) == SLICE_CONTROLLER and key not in alive:
                self.store.remove(SLICES, *key[:1], meta(piece)["name"])
        for key in list(self._endpoints_owned - alive):
            self._endpoints_owned.discard(key)
            if self.store.get(ENDPOINTS, *key) is not None:
                self.store.remove(ENDPOINTS, *key)
        wanted_ips = {s["spec"].get("clusterIP") for s in self.store.items(SERVICES)}
        for ip in [ip for ip in self._routed if ip not in wanted_ips]:
            del self._routed[ip]
            await self.backend.set_service(ip, ())

    # disruption budgets ----------------------------------------------------

    async def _sync_pdbs(self) -> None:
        if self.pdb_paused:
            return
        for pdb in list(self.store.items(PDBS)):
            self._pdb_status(pdb)

    def _expected_pods(self, pods: list[Obj]) -> int:
        """The scale of the pods' controllers (Deployment replicas), as the real
        disruption controller reads it; pods without a controller count themselves."""
        scales: dict[str, int] = {}
        loose = 0
        for pod in pods:
            refs = meta(pod).get("ownerReferences") or ()
            rs = next((self.store.get(REPLICASETS, meta(pod)["namespace"], r["name"])
                       for r in refs if r.get("kind") == "ReplicaSet"), None)
            if rs is None:
                loose += 1
                continue
            owner = next((r for r in meta(rs).get("ownerReferences") or ()
                          if r.get("kind") == "Deployment"), None)
            deployment = owner and self.store.get(DEPLOYMENTS, meta(rs)["namespace"],
                                                  owner["name"])
            scaled = deployment or rs
            scales[meta(scaled)["uid"]] = int(scaled["spec"].get("replicas", 1))
        return sum(scales.values()) + loose

    def _pdb_status(self, pdb: Obj) -> None:
        selector = LabelSelector.from_match_labels(pdb["spec"].get("selector"))
        ns = meta(pdb)["namespace"]
        pods = [p for p in self.store.items(PODS, ns) if selector and selector.matches_object(p)]
        expected = self._expected_pods(pods)
        disrupted = self._still_disrupted(pdb, pods)
        healthy = sum(1 for p in pods if pod_ready(p) and not terminating(p)
                      and meta(p)["name"] not in disrupted)
        spec = pdb["spec"]
        if "minAvailable" in spec:
            desired = scaled_value(spec["minAvailable"], expected, round_up=True)
        else:
            desired = expected - scaled_value(spec.get("maxUnavailable", 0), expected,
                                              round_up=True)
        allowed = max(0, healthy - desired)
        previous = pdb.get("status") or {}
        condition = set_condition(previous.get("conditions") or [], "DisruptionAllowed",
                                  allowed > 0)[0]
        condition = {**condition, "reason": "SufficientPods" if allowed else "InsufficientPods",
                     "message": "", "observedGeneration": meta(pdb).get("generation", 1)}
        condition.pop("lastProbeTime", None)
        status: Obj = {"observedGeneration": meta(pdb).get("generation", 1),
                       "disruptionsAllowed": allowed, "currentHealthy": healthy,
                       "desiredHealthy": desired, "expectedPods": expected,
                       "conditions": [condition]}
        if disrupted:
            status["disruptedPods"] = disrupted
        self.registry.write_status(PDBS, {**pdb, "status": status})

    def _still_disrupted(self, pdb: Obj, pods: list[Obj]) -> dict[str, str]:
        live = {meta(p)["name"] for p in pods if not terminating(p)}
        limit = datetime.now(UTC) - timedelta(seconds=self.timings.disrupted_pod_timeout)
        kept = {}
        for name, stamp in ((pdb.get("status") or {}).get("disruptedPods") or {}).items():
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if name in live and when > limit:
                kept[name] = stamp
        return kept

    # faults ----------------------------------------------------------------

    def running_pods(self) -> list[Obj]:
        return [p for p in self.store.items(PODS) if meta(p)["name"] in self._serving]

    async def apply_faults(self) -> None:
        """Re-apply the effective fault of every running pod."""
        for pod in self.running_pods():
            name = meta(pod)["name"]
            await self.backend.set_pod_fault(name, self.faults.effective(name, slot_of(pod)))

    async def stop_pods(self) -> None:
        for task in list(self._pod_tasks.values()):
            task.cancel()


__all__ = ["Controllers", "FaultKind", "PodFaults", "Timings"]
