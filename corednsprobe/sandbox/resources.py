"""The kinds the sandbox API server serves, described once.

Owns: each resource's group, version, names, scope, verbs and subresources,
and the discovery documents (``APIResourceList``, ``APIGroupList``) built from
them. Never does: store objects or answer requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

READ = ("get", "list", "watch")
CRUD = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    version: str = "v1"


@dataclass(frozen=True, slots=True)
class Resource:
    """One served resource (``pods``, ``leases.coordination.k8s.io`` …)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    verbs: tuple[str, ...] = CRUD
    short_names: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    has_status: bool = False  # status is kept across PUT/PATCH of the main resource
    has_generation: bool = False  # metadata.generation counts spec changes
    requires_rv_on_update: bool = False  # PUT without metadata.resourceVersion → 422
    extra_fields: tuple[str, ...] = ()  # field-selector paths beyond metadata.name/namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``pods`` or ``leases.coordination.k8s.io``, as error messages name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def subresource(self, name: str) -> Subresource | None:
        return next((s for s in self.subresources if s.name == name), None)


_POD_FIELDS = (
    "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
    "status.phase", "status.podIP", "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
)

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", namespaced=False,
             verbs=("create", "get", "list", "watch"), short_names=("ns",), has_status=True,
             extra_fields=("status.phase",)),
    Resource("", "v1", "nodes", "Node", namespaced=False, short_names=("no",),
             has_status=True, extra_fields=("spec.unschedulable",)),
    Resource("", "v1", "pods", "Pod", short_names=("po",), has_status=True,
             subresources=(Subresource("eviction", "Eviction", ("create",), "policy", "v1"),
                           Subresource("log", "Pod", ("get",)),
                           Subresource("portforward", "PodPortForwardOptions",
                                       ("create", "get"))),
             extra_fields=_POD_FIELDS),
    Resource("", "v1", "services", "Service", short_names=("svc",), has_status=True,
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    Resource("", "v1", "endpoints", "Endpoints", short_names=("ep",)),
    Resource("", "v1", "events", "Event", short_names=("ev",), extra_fields=_EVENT_FIELDS),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice",
             extra_fields=("addressType",)),
    Resource("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
             has_status=True, has_generation=True),
    Resource("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",),
             has_status=True, has_generation=True),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget",
             short_names=("pdb",), has_status=True, has_generation=True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", requires_rv_on_update=True),
    # Stored only (deploy/ ships one); nothing in the sandbox enforces it.
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy",
             short_names=("netpol",), has_generation=True),
    Resource("events.k8s.io", "v1", "events", "Event", short_names=("ev",),
             extra_fields=("reason", "type", "regarding.kind", "regarding.name",
                           "regarding.namespace", "regarding.uid")),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews",
             "SelfSubjectAccessReview", namespaced=False, verbs=("create",)),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",),
             subresources=(Subresource("token", "TokenRequest", ("create",),
                                       "authentication.k8s.io", "v1"),)),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole",
             namespaced=False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
             namespaced=False),
)

GROUP_VERSIONS: tuple[str, ...] = tuple(
    dict.fromkeys(r.api_version for r in RESOURCES if r.group)
)


def find(group: str, version: str, plural: str) -> Resource | None:
    return next(
        (r for r in RESOURCES if (r.group, r.version, r.plural) == (group, version, plural)),
        None,
    )


def require(group: str, plural: str) -> Resource:
    """A served resource by group and plural (v1); a typo here is a bug."""
    found = find(group, "v1", plural)
    if found is None:
        raise LookupError(f"no served resource {plural!r} in group {group!r}")
    return found


def resource_list(group: str, version: str) -> Obj | None:
    """The ``APIResourceList`` of one group version, or None if not served."""
    gv = f"{group}/{version}" if group else version
    served = [r for r in RESOURCES if r.api_version == gv]
    if not served:
        return None
    entries: list[Obj] = []
    for res in served:
        entry: Obj = {
            "name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
            "kind": res.kind, "verbs": list(res.verbs),
        }
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        entries.append(entry)
        for sub in res.subresources:
            sub_entry: Obj = {
                "name": f"{res.plural}/{sub.name}", "singularName": "",
                "namespaced": res.namespaced, "kind": sub.kind, "verbs": list(sub.verbs),
            }
            if sub.group:
                sub_entry.update(group=sub.group, version=sub.version)
            entries.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": entries}


def group_list(unserved: frozenset[str] = frozenset()) -> Obj:
    """The ``APIGroupList``, without the group versions in ``unserved``."""
    groups = []
    for gv in GROUP_VERSIONS:
        if gv in unserved:
            continue
        name, _, version = gv.partition("/")
        ref = {"groupVersion": gv, "version": version}
        groups.append({"name": name, "versions": [ref], "preferredVersion": ref})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
