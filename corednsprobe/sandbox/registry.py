"""The API-level rules of each kind, on top of the store.

Owns: what create, update (PUT), patch, delete and eviction mean for the kinds
the sandbox serves: defaults on create (uid, ClusterIP allocation, pod
status), optimistic concurrency and the Lease rules, status kept across
updates, generation bumps, merge and strategic-merge patches, deletion
preconditions and grace periods, PodDisruptionBudget checks on eviction.
Never does: HTTP or authorization; never awaits, so each operation is atomic
with respect to watchers and controllers.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from corednsprobe.sandbox import resources as R
from corednsprobe.sandbox import status as S
from corednsprobe.sandbox.resources import Resource
from corednsprobe.sandbox.selectors import LabelSelector
from corednsprobe.sandbox.store import Store, now_iso

Obj = dict[str, Any]

PODS = R.require("", "pods")
NODES = R.require("", "nodes")
NAMESPACES = R.require("", "namespaces")
SERVICES = R.require("", "services")
PDBS = R.require("policy", "poddisruptionbudgets")

NODE_PORT_RANGE = (30000, 32767)  # --service-node-port-range's default
# Kinds whose PUT creates a missing object (AllowCreateOnUpdate in their strategies).
_CREATE_ON_UPDATE = {"leases", "endpoints", "events"}
# Kinds whose DELETE answers with the deleted object rather than a Status.
_RETURNS_OBJECT = {"pods", "services", "namespaces"}
_MICROTIME_FIELDS = {"leases": ("spec", ("renewTime", "acquireTime")),
                     "events": ("", ("eventTime",))}


def pod_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or ())


def microtime(text: str) -> str:
    """metav1.MicroTime: accept any RFC 3339 (``+00:00``, ``Z``, naive), emit ``…123456Z``."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def merge_patch(target: Any, patch: Any, strategic: bool = False) -> Any:
    """RFC 7386 merge patch; ``strategic`` also merges lists of named items by name."""
    if isinstance(patch, list) and strategic and isinstance(target, list) \
            and all(isinstance(i, dict) and "name" in i for i in [*patch, *target]):
        merged = {item["name"]: item for item in target}
        for item in patch:
            merged[item["name"]] = merge_patch(merged.get(item["name"], {}), item, strategic)
        return list(merged.values())
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value, strategic)
    return out


def json_patch(target: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902 add/replace/remove/test on object paths (enough for labels and annotations)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), op["value"])
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test" and parent.get(last) != op.get("value"):
            raise S.ApiError(S.status_body(422, "Invalid", f"testing value at {op['path']} failed"))
    return doc


class Registry:
    def __init__(self, store: Store, allocate_service_ip: Callable[[], str],
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.allocate_service_ip = allocate_service_ip
        self.wall_clock = wall_clock

    # create --------------------------------------------------------------

    def create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise S.bad_request("the namespace of the provided object does not match the "
                                    "namespace sent on the request")
            meta["namespace"] = namespace
            if self.store.get(NAMESPACES, "", namespace) is None:
                raise S.not_found(NAMESPACES, namespace)
        if not meta.get("name") and not meta.get("generateName"):
            raise S.required(res, "metadata.name", "name or generateName is required")
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(key, None)
        self._normalize(res, obj)
        self._defaults(res, obj)
        return self.store.create(res, obj)

    def _defaults(self, res: Resource, obj: Obj) -> None:
        if res is SERVICES:
            self._service_defaults(obj)
        elif res is PODS:
            spec = obj.setdefault("spec", {})
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        elif res is NAMESPACES:
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = \
                obj["metadata"]["name"]
        elif res is NODES:
            pass  # "Nodes allow *all* fields, including status, to be set on create."
        elif res.has_status:
            obj["status"] = {}

    def _used_node_ports(self, except_key: tuple[str, str] | None = None) -> set[int]:
        used: set[int] = set()
        for svc in self.store.items(SERVICES):
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            if key == except_key:
                continue
            spec = svc.get("spec") or {}
            used.update(int(p["nodePort"]) for p in spec.get("ports") or () if p.get("nodePort"))
            if spec.get("healthCheckNodePort"):
                used.add(int(spec["healthCheckNodePort"]))
        return used

    def _free_node_port(self, used: set[int]) -> int:
        low, high = NODE_PORT_RANGE
        free = [p for p in range(low, high + 1) if p not in used]
        if not free:
            raise S.internal_error("failed to allocate a nodePort: range is full")
        chosen = random.choice(free)
        used.add(chosen)
        return chosen

    def _allocate_node_ports(self, obj: Obj, previous: Obj | None = None) -> None:
        """nodePorts of NodePort and LoadBalancer Services, as the real allocator
        (pkg/registry/core/service/portallocator) assigns and checks them; a port
        given twice in one Service for different protocols is one allocation."""
        spec, name = obj["spec"], obj["metadata"].get("name", "")
        key = (obj["metadata"].get("namespace", ""), name)
        kind = spec.get("type", "ClusterIP")
        ports = spec.get("ports") or []
        if kind not in ("NodePort", "LoadBalancer") or (
                kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False):
            for index, port in enumerate(ports):
                if port.get("nodePort") and kind in ("ClusterIP", "ExternalName"):
                    raise S.invalid(SERVICES, name, f"spec.ports[{index}].nodePort",
                                    f"Forbidden: may not be used when `type` is '{kind}'",
                                    "FieldValueForbidden")
            return
        used = self._used_node_ports(key)
        kept = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                for p in ((previous or {}).get("spec") or {}).get("ports") or ()}
        mine: set[int] = set()
        low, high = NODE_PORT_RANGE
        for index, port in enumerate(ports):
            wanted = port.get("nodePort") or kept.get((port.get("port"),
                                                       port.get("protocol", "TCP")))
            if not wanted:
                continue
            wanted = int(wanted)
            field = f"spec.ports[{index}].nodePort"
            if not low <= wanted <= high:
                raise S.invalid(SERVICES, name, field, f"Invalid value: {wanted}: provided port "
                                "is not in the valid range. The range of valid ports is "
                                f"{low}-{high}")
            if wanted in used:
                raise S.invalid(SERVICES, name, field, f"Invalid value: {wanted}: provided port "
                                "is already allocated")
            port["nodePort"] = wanted
            mine.add(wanted)
        used |= mine
        for port in ports:
            if not port.get("nodePort"):
                port["nodePort"] = self._free_node_port(used)
        spec.setdefault("externalTrafficPolicy", "Cluster")
        if kind == "LoadBalancer" and spec["externalTrafficPolicy"] == "Local":
            previous_hc = ((previous or {}).get("spec") or {}).get("healthCheckNodePort")
            spec["healthCheckNodePort"] = spec.get("healthCheckNodePort") or previous_hc \
                or self._free_node_port(used)

    def _service_defaults(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if spec.get("clusterIP") in (None, ""):
            spec["clusterIP"] = self.allocate_service_ip()
        if spec["clusterIP"] != "None":
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or ():
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port["port"])
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        self._allocate_node_ports(obj)
        obj["status"] = {"loadBalancer": {}}

    def _normalize(self, res: Resource, obj: Obj) -> None:
        where = _MICROTIME_FIELDS.get(res.plural)
        if where is None:
            return
        section, fields = where
        holder = obj.get(section, {}) if section else obj
        for name in fields:
            if isinstance(holder.get(name), str):
                try:
                    holder[name] = microtime(holder[name])
                except ValueError:
                    raise S.bad_request(f"invalid time {holder[name]!r} in {name}") from None

    # update and patch ----------------------------------------------------

    def update(self, res: Resource, namespace: str, name: str, body: Obj) -> tuple[Obj, bool]:
        """PUT; returns the stored object and whether it was created."""
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise S.bad_request(f"the name of the object ({meta.get('name')}) does not match "
                                f"the name on the URL ({name})")
        current = self.store.get(res, namespace if res.namespaced else "", name)
        if current is None:
            if res.plural not in _CREATE_ON_UPDATE:
                raise S.not_found(res, name)
            created = copy.deepcopy(body)
            created.setdefault("metadata", {})["name"] = name
            return self.create(res, namespace, created), True
        if not meta.get("resourceVersion") and res.requires_rv_on_update:
            raise S.invalid(res, name, "metadata.resourceVersion",
                            "Invalid value: 0x0: must be specified for an update")
        return self._replace(res, current, body), False

    def patch(self, res: Resource, namespace: str, name: str, patch: Any,
              content_type: str) -> Obj:
        current = self.store.must_get(res, namespace if res.namespaced else "", name)
        if content_type.startswith("application/merge-patch+json"):
            merged = merge_patch(current, patch)
        elif content_type.startswith("application/strategic-merge-patch+json"):
            merged = merge_patch(current, patch, strategic=True)
        elif content_type.startswith("application/json-patch+json"):
            merged = json_patch(current, patch)
        else:
            raise S.unsupported_media_type(content_type)
        if not isinstance(patch, dict) or "resourceVersion" not in patch.get("metadata", {}):
            merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._replace(res, current, merged)

    def _replace(self, res: Resource, current: Obj, body: Obj) -> Obj:
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        name = current["metadata"]["name"]
        if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
            raise S.conflict_modified(res, name)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp", "namespace", "name", "generation",
                    "deletionTimestamp", "deletionGracePeriodSeconds", "generateName"):
            if key in current["metadata"]:
                meta[key] = current["metadata"][key]
            else:
                meta.pop(key, None)
        if res.has_status:
            obj["status"] = copy.deepcopy(current.get("status", {}))
        if res is SERVICES:
            self._service_update(current, obj)
        if res.has_generation and obj.get("spec") != current.get("spec"):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        self._normalize(res, obj)
        return self.store.replace(res, obj)

    def _service_update(self, current: Obj, obj: Obj) -> None:
        """An update keeps the allocated ClusterIP and nodePorts it does not name
        (patchAllocatedValues in pkg/registry/core/service/storage)."""
        spec, old = obj.setdefault("spec", {}), current.get("spec") or {}
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if not spec.get(key) and old.get(key):
                spec[key] = copy.deepcopy(old[key])
        spec.setdefault("type", old.get("type", "ClusterIP"))
        for port in spec.get("ports") or ():
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        else:
            obj["status"] = {"loadBalancer": {}}
        self._allocate_node_ports(obj, current)

    def write_status(self, res: Resource, obj: Obj) -> Obj:
        """The controllers' status subresource: replace status only, no checks."""
        current = self.store.must_get(res, obj["metadata"].get("namespace", ""),
                                      obj["metadata"]["name"])
        if current.get("status") == obj.get("status"):
            return current
        return self.store.replace(res, {**current, "status": copy.deepcopy(obj["status"])})

    # delete and evict ----------------------------------------------------

    def delete(self, res: Resource, namespace: str, name: str, options: Obj,
               grace_query: int | None) -> Obj:
        ns = namespace if res.namespaced else ""
        current = self.store.must_get(res, ns, name)
        self._check_preconditions(res, current, options.get("preconditions") or {})
        if res is PODS:
            return self._delete_pod(current, options, grace_query)
        last = self.store.remove(res, ns, name)
        if res.plural in _RETURNS_OBJECT:
            return last
        details: Obj = {"name": name, "kind": res.plural, "uid": last["metadata"]["uid"]}
        if res.group:
            details = {"name": name, "group": res.group, "kind": res.plural,
                       "uid": last["metadata"]["uid"]}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details}

    def _check_preconditions(self, res: Resource, obj: Obj, pre: Obj) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise S.conflict_precondition(res, ns, meta["name"], "UID", pre["uid"], meta["uid"])
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise S.conflict_precondition(res, ns, meta["name"], "ResourceVersion",
                                          pre["resourceVersion"], meta["resourceVersion"])

    def _delete_pod(self, pod: Obj, options: Obj, grace_query: int | None) -> Obj:
        grace = grace_query if grace_query is not None else options.get("gracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = int(grace)
        phase = pod.get("status", {}).get("phase")
        if not pod["spec"].get("nodeName") or phase in ("Succeeded", "Failed"):
            grace = 0
        meta = pod["metadata"]
        if grace <= 0:
            return self.store.remove(PODS, meta["namespace"], meta["name"])
        old_grace = meta.get("deletionGracePeriodSeconds")
        if old_grace is not None and old_grace <= grace:
            return pod
        deadline = datetime.fromtimestamp(self.wall_clock() + grace, UTC)
        new_meta = {**meta, "deletionTimestamp": deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "deletionGracePeriodSeconds": grace}
        return self.store.replace(PODS, {**pod, "metadata": new_meta})

    def evict(self, namespace: str, name: str, body: Obj) -> Obj:
        body_name = (body.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise S.bad_request("name in URL does not match name in Eviction object")
        pod = self.store.must_get(PODS, namespace, name)
        options = body.get("deleteOptions") or {}
        self._check_preconditions(PODS, pod, options.get("preconditions") or {})
        if self._ignores_pdb(pod):
            self.delete(PODS, namespace, name, options, None)
            return S.success(201)
        budgets = [p for p in self.store.items(PDBS, namespace)
                   if (sel := LabelSelector.from_match_labels(p["spec"].get("selector")))
                   and sel.matches_object(pod)]
        if len(budgets) > 1:
            raise S.internal_error("This pod has more than one PodDisruptionBudget, which the "
                                   "eviction subresource does not support.")
        if budgets:
            self._spend_budget(budgets[0], pod)
        self.delete(PODS, namespace, name, options, None)
        return S.success(201)

    @staticmethod
    def _ignores_pdb(pod: Obj) -> bool:
        phase = pod.get("status", {}).get("phase")
        return bool(pod["metadata"].get("deletionTimestamp")) or \
            phase in ("Pending", "Succeeded", "Failed")

    def _spend_budget(self, pdb: Obj, pod: Obj) -> None:
        name = pdb["metadata"]["name"]
        status = pdb.get("status", {})
        if int(status.get("observedGeneration", 0)) < int(pdb["metadata"].get("generation", 1)):
            raise S.pdb_processing(name)
        healthy, desired = int(status.get("currentHealthy", 0)), \
            int(status.get("desiredHealthy", 0))
        if not pod_ready(pod):
            policy = pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            if policy == "AlwaysAllow" or healthy >= desired:
                return
            raise S.pdb_blocked(name, desired, healthy)
        if int(status.get("disruptionsAllowed", 0)) <= 0:
            raise S.pdb_blocked(name, desired, healthy)
        disrupted = dict(status.get("disruptedPods") or {})
        disrupted[pod["metadata"]["name"]] = now_iso()
        new_status = {**status, "disruptionsAllowed": int(status["disruptionsAllowed"]) - 1,
                      "disruptedPods": disrupted}
        self.write_status(PDBS, {**pdb, "status": new_status})

