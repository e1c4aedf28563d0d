"""``meta.k8s.io/v1`` Tables, as the API server renders them for ``kubectl get``.

Owns: the column definitions and the cells of each kind the sandbox serves,
following the printers of ``pkg/printers/internalversion/printers.go`` (Pod,
Service, Node, EndpointSlice, Endpoints, Event, Lease, Deployment, ReplicaSet,
PodDisruptionBudget, Namespace, and the RBAC kinds); the default table (Name,
Created At) for the rest; ``HumanDuration`` ages computed at request time; the
row objects (``PartialObjectMetadata``, the whole object, or none, per
``includeObject``); and reading the ``Accept`` header that asks for a Table.
The server always renders wide (priority-1 cells included), as
``pkg/printers/storage`` does; the client hides those columns without ``-o wide``.
Never does: I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Cells = list[Any]

NAME_DOC = ("Name must be unique within a namespace. Is required when creating resources, "
            "although some resources may allow a client to request the generation of an "
            "appropriate name automatically. Name is primarily intended for creation "
            "idempotence and configuration definition. Cannot be updated. More info: "
            "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
AGE_DOC = ("CreationTimestamp is a timestamp representing the server time when this object "
           "was created. It is not guaranteed to be set in happens-before order across "
           "separate operations. Clients may not set this value. It is represented in "
           "RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. "
           "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
           "api-conventions.md#metadata")


class NotAcceptable(Exception):
    """The client asked only for a Table version the server does not render."""


def column(name: str, kind: str = "string", description: str = "", priority: int = 0,
           fmt: str = "") -> Obj:
    if name == "Name" and not description:
        description, fmt = NAME_DOC, "name"
    if name == "Age" and not description:
        description = AGE_DOC
    return {"name": name, "type": kind, "format": fmt, "description": description,
            "priority": priority}


# ------------------------------------------------------------------ time


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds_total: float) -> str:
    """apimachinery/pkg/util/duration.HumanDuration."""
    seconds = int(seconds_total)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if rest == 0 else f"{years}y{rest}d"
    return f"{hours // 24 // 365}y"


def since(text: str | None, now: datetime) -> str:
    """translateTimestampSince: ``<unknown>`` for a zero time."""
    when = parse_time(text)
    if when is None:
        return "<unknown>"
    return human_duration((now - when).total_seconds())


def age(obj: Obj, now: datetime) -> str:
    return since(obj["metadata"].get("creationTimestamp"), now)


def format_labels(labels: dict[str, str] | None) -> str:
    """labels.FormatLabels: sorted ``k=v`` joined by commas, ``<none>`` if empty."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def label_selector_string(selector: Obj | None) -> str:
    """metav1.LabelSelectorAsSelector(...).String() for matchLabels and simple expressions."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], sorted(expr.get("values") or ())
        parts.append({"In": f"{key} in ({','.join(values)})",
                      "NotIn": f"{key} notin ({','.join(values)})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, key))
    return ",".join(sorted(parts))


def more(items: list[str], count: int, limit: int = 3, empty: str = "<unset>") -> str:
    """listWithMoreString."""
    text = ",".join(items[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


# ------------------------------------------------------------------ printers


def _pod(pod: Obj, now: datetime) -> tuple[Cells, list[Obj]]:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    sidecars = [c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    total = len(spec.get("containers") or ()) + len(sidecars)
    reason = status.get("reason") or status.get("phase") or ""
    restarts, ready, running = 0, 0, False
    last_restart: datetime | None = None
    for container in reversed(status.get("containerStatuses") or []):
        restarts += int(container.get("restartCount") or 0)
        finished = ((container.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if (when := parse_time(finished)) is not None and (last_restart is None
                                                            or when > last_restart):
            last_restart = when
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting is not None and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated is not None and terminated.get("reason"):
            reason = terminated["reason"]
        elif terminated is not None:
            signal = terminated.get("signal") or 0
            reason = f"Signal:{signal}" if signal else f"ExitCode:{terminated.get('exitCode', 0)}"
        elif container.get("ready") and state.get("running") is not None:
            running = True
            ready += 1
    if reason == "Completed" and running:
        has_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or ())
        reason = "Running" if has_ready else "NotReady"
    if pod["metadata"].get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    restart_text = str(restarts)
    if restarts and last_restart is not None:
        restart_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    ips = status.get("podIPs") or ()
    gates = spec.get("readinessGates") or ()
    gate_text = "<none>"
    if gates:
        true_ones = {c.get("type") for c in status.get("conditions") or ()
                     if c.get("status") == "True"}
        gate_text = f"{sum(1 for g in gates if g.get('conditionType') in true_ones)}/{len(gates)}"
    cells = [pod["metadata"]["name"], f"{ready}/{total}", reason, restart_text, age(pod, now),
             (ips[0].get("ip") if ips else "") or "<none>", spec.get("nodeName") or "<none>",
             status.get("nominatedNodeName") or "<none>", gate_text]
    conditions: list[Obj] = []
    if status.get("phase") == "Succeeded":
        conditions = [{"type": "Completed", "status": "True", "reason": "Succeeded",
                       "message": "The pod has completed successfully."}]
    elif status.get("phase") == "Failed":
        conditions = [{"type": "Completed", "status": "True", "reason": "Failed",
                       "message": "The pod failed."}]
    return cells, conditions


def _service_external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    external = list(spec.get("externalIPs") or ())
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if kind == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
        balancers = [i.get("ip") or i.get("hostname") or "" for i in ingress]
        balancers = [b for b in balancers if b]
        if external:
            return ",".join([*balancers, *external])
        return ",".join(balancers) if balancers else "<pending>"
    if kind == "ExternalName":
        return str(spec.get("externalName", ""))
    return "<unknown>"


def port_string(ports: Iterable[Obj]) -> str:
    """makePortString: ``53/UDP`` or ``53:30053/UDP``, joined by commas."""
    out = []
    for port in ports:
        node_port = int(port.get("nodePort") or 0)
        proto = port.get("protocol", "TCP")
        out.append(f"{port['port']}:{node_port}/{proto}" if node_port else
                   f"{port['port']}/{proto}")
    return ",".join(out)


def _service(svc: Obj, now: datetime) -> Cells:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [svc["metadata"]["name"], spec.get("type", "ClusterIP"), ips[0] if ips else "<none>",
            _service_external_ip(svc), port_string(spec.get("ports") or ()) or "<none>",
            age(svc, now), format_labels(spec.get("selector"))]


def _node(node: Obj, now: datetime) -> Cells:
    status = node.get("status") or {}
    states = []
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            states.append("Ready" if condition.get("status") == "True" else "NotReady")
    if not states:
        states.append("Unknown")
    if (node.get("spec") or {}).get("unschedulable"):
        states.append("SchedulingDisabled")
    labels = node["metadata"].get("labels") or {}
    roles = {k.removeprefix("node-role.kubernetes.io/") for k in labels
             if k.startswith("node-role.kubernetes.io/")
             and k != "node-role.kubernetes.io/"}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        return next((a["address"] for a in status.get("addresses") or ()
                     if a.get("type") == kind), "<none>")

    return [node["metadata"]["name"], ",".join(states), ",".join(sorted(roles)) or "<none>",
            age(node, now), info.get("kubeletVersion", ""), address("InternalIP"),
            address("ExternalIP"), info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def _endpoint_slice(piece: Obj, now: datetime) -> Cells:
    ports = piece.get("ports") or []
    port_texts = [str(p["port"]) if p.get("port") is not None else (p.get("name") or "*")
                  for p in ports]
    addresses = [a for e in piece.get("endpoints") or () for a in e.get("addresses") or ()]
    return [piece["metadata"]["name"], piece.get("addressType", ""),
            more(port_texts, len(port_texts)), more(addresses, len(addresses)), age(piece, now)]


def _endpoints(endpoints: Obj, now: datetime) -> Cells:
    found: list[str] = []
    for subset in endpoints.get("subsets") or ():
        addresses = [a["ip"] for a in subset.get("addresses") or ()]
        if not subset.get("ports"):
            found.extend(addresses)
        for port in subset.get("ports") or ():
            found.extend(f"[{ip}]:{port['port']}" if ":" in ip else f"{ip}:{port['port']}"
                         for ip in addresses)
    return [endpoints["metadata"]["name"], more(found, len(found), empty="<none>"),
            age(endpoints, now)]


def _event_source(component: str, instance: str) -> str:
    return component if not instance else f"{component}, {instance}"


def _event(event: Obj, now: datetime) -> Cells:
    if "regarding" in event or "note" in event:  # events.k8s.io/v1, as its conversion maps it
        involved = event.get("regarding") or {}
        source = event.get("deprecatedSource") or {}
        first_text, last_text = event.get("deprecatedFirstTimestamp"), \
            event.get("deprecatedLastTimestamp")
        count = int(event.get("deprecatedCount") or 0)
        message = event.get("note") or ""
    else:
        involved = event.get("involvedObject") or {}
        source = event.get("source") or {}
        first_text, last_text = event.get("firstTimestamp"), event.get("lastTimestamp")
        count = int(event.get("count") or 0)
        message = event.get("message") or ""
    first = since(first_text or event.get("eventTime"), now)
    last = since(last_text, now) if last_text else first
    series = event.get("series")
    if series:
        last = since(series.get("lastObservedTime"), now)
        count = int(series.get("count") or 0)
    elif count == 0:
        count = 1
    kind = str(involved.get("kind", "")).lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    origin = _event_source(source.get("component") or event.get("reportingController")
                           or event.get("reportingComponent") or "",
                           source.get("host") or event.get("reportingInstance") or "")
    return [last, event.get("type", ""), event.get("reason", ""), target,
            involved.get("fieldPath", ""), origin, message.strip(), first, count,
            event["metadata"]["name"]]


def _lease(lease: Obj, now: datetime) -> Cells:
    return [lease["metadata"]["name"], (lease.get("spec") or {}).get("holderIdentity") or "",
            age(lease, now)]


def _containers_and_images(template: Obj) -> tuple[str, str]:
    containers = ((template.get("spec") or {}).get("containers")) or ()
    return (",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers))


def _deployment(deployment: Obj, now: datetime) -> Cells:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    names, images = _containers_and_images(spec.get("template") or {})
    return [deployment["metadata"]["name"],
            f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas', 1))}",
            int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0),
            age(deployment, now), names, images, label_selector_string(spec.get("selector"))]


def _replicaset(rs: Obj, now: datetime) -> Cells:
    spec, status = rs.get("spec") or {}, rs.get("status") or {}
    names, images = _containers_and_images(spec.get("template") or {})
    return [rs["metadata"]["name"], int(spec.get("replicas", 1)),
            int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0),
            age(rs, now), names, images, label_selector_string(spec.get("selector"))]


def _pdb(pdb: Obj, now: datetime) -> Cells:
    spec, status = pdb.get("spec") or {}, pdb.get("status") or {}
    return [pdb["metadata"]["name"], str(spec.get("minAvailable", "N/A")),
            str(spec.get("maxUnavailable", "N/A")), int(status.get("disruptionsAllowed") or 0),
            age(pdb, now)]


def _namespace(namespace: Obj, now: datetime) -> Cells:
    return [namespace["metadata"]["name"], (namespace.get("status") or {}).get("phase", ""),
            age(namespace, now)]


def _created_at(obj: Obj) -> str:
    when = parse_time(obj["metadata"].get("creationTimestamp"))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""


def _role(role: Obj, now: datetime) -> Cells:
    return [role["metadata"]["name"], _created_at(role)]


def _binding(binding: Obj, now: datetime) -> Cells:
    ref = binding.get("roleRef") or {}
    users, groups, accounts = [], [], []
    for subject in binding.get("subjects") or ():
        if subject.get("kind") == "User":
            users.append(subject.get("name", ""))
        elif subject.get("kind") == "Group":
            groups.append(subject.get("name", ""))
        elif subject.get("kind") == "ServiceAccount":
            accounts.append(f"{subject.get('namespace', '')}/{subject.get('name', '')}")
    return [binding["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}",
            age(binding, now), ", ".join(users), ", ".join(groups), ", ".join(accounts)]


def _service_account(account: Obj, now: datetime) -> Cells:
    return [account["metadata"]["name"], len(account.get("secrets") or ()), age(account, now)]


def _default(obj: Obj, now: datetime) -> Cells:
    return [obj["metadata"]["name"], _created_at(obj)]


def _with_no_conditions(printer: Callable[[Obj, datetime], Cells],
                        ) -> Callable[[Obj, datetime], tuple[Cells, list[Obj]]]:
    return lambda obj, now: (printer(obj, now), [])


Printer = Callable[[Obj, datetime], tuple[Cells, list[Obj]]]
_CONTAINERS = column("Containers", description="Names of each container in the template.",
                     priority=1)
_IMAGES = column("Images", description="Images referenced by each container in the template.",
                 priority=1)
_EVENT_COLUMNS = [
    column("Last Seen"), column("Type"), column("Reason"), column("Object"),
    column("Subobject", priority=1), column("Source", priority=1), column("Message"),
    column("First Seen", priority=1), column("Count", priority=1), column("Name", priority=1)]
_ROLE_COLUMNS = [column("Name"), column("Created At", "date")]
_BINDING_COLUMNS = [column("Name"), column("Role"), column("Age"),
                    column("Users", priority=1), column("Groups", priority=1),
                    column("ServiceAccounts", priority=1)]

PRINTERS: dict[str, tuple[list[Obj], Printer]] = {
    "pods": ([column("Name"),
              column("Ready", description="The aggregate readiness state of this pod for "
                     "accepting traffic."),
              column("Status", description="The aggregate status of the containers in this "
                     "pod."),
              column("Restarts", description="The number of times the containers in this pod "
                     "have been restarted and when the last container in this pod has "
                     "restarted."),
              column("Age"), column("IP", priority=1), column("Node", priority=1),
              column("Nominated Node", priority=1), column("Readiness Gates", priority=1)],
             _pod),
    "services": ([column("Name"), column("Type"), column("Cluster-IP"), column("External-IP"),
                  column("Port(s)"), column("Age"), column("Selector", priority=1)],
                 _with_no_conditions(_service)),
    "nodes": ([column("Name"), column("Status", description="The status of the node"),
               column("Roles", description="The roles of the node"), column("Age"),
               column("Version"), column("Internal-IP", priority=1),
               column("External-IP", priority=1), column("OS-Image", priority=1),
               column("Kernel-Version", priority=1), column("Container-Runtime", priority=1)],
              _with_no_conditions(_node)),
    "endpointslices": ([column("Name"), column("AddressType"), column("Ports"),
                        column("Endpoints"), column("Age")],
                       _with_no_conditions(_endpoint_slice)),
    "endpoints": ([column("Name"), column("Endpoints"), column("Age")],
                  _with_no_conditions(_endpoints)),
    "events": (_EVENT_COLUMNS, _with_no_conditions(_event)),
    "leases": ([column("Name"), column("Holder"), column("Age")], _with_no_conditions(_lease)),
    "deployments": ([column("Name"), column("Ready"), column("Up-to-date", "number"),
                     column("Available", "number"), column("Age"), _CONTAINERS, _IMAGES,
                     column("Selector", priority=1)], _with_no_conditions(_deployment)),
    "replicasets": ([column("Name"), column("Desired", "integer"),
                     column("Current", "integer"), column("Ready", "integer"), column("Age"),
                     _CONTAINERS, _IMAGES, column("Selector", priority=1)],
                    _with_no_conditions(_replicaset)),
    "poddisruptionbudgets": ([column("Name"), column("Min Available"),
                              column("Max Unavailable"),
                              column("Allowed Disruptions", "integer"), column("Age")],
                             _with_no_conditions(_pdb)),
    "namespaces": ([column("Name"), column("Status", description="The status of the "
                                           "namespace"), column("Age")],
                   _with_no_conditions(_namespace)),
    "roles": (_ROLE_COLUMNS, _with_no_conditions(_role)),
    "clusterroles": (_ROLE_COLUMNS, _with_no_conditions(_role)),
    "rolebindings": (_BINDING_COLUMNS, _with_no_conditions(_binding)),
    "clusterrolebindings": (_BINDING_COLUMNS, _with_no_conditions(_binding)),
    "serviceaccounts": ([column("Name"), column("Secrets", "string"), column("Age")],
                        _with_no_conditions(_service_account)),
}
DEFAULT = ([column("Name"), column("Created At", "date")], _with_no_conditions(_default))


# ------------------------------------------------------------------ tables


def row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"]}


def table(plural: str, objects: Iterable[Obj], resource_version: str, include: str = "Metadata",
          now: datetime | None = None, version: str = "v1") -> Obj:
    """A Table of ``objects`` (of kind ``plural``), cells as of ``now``."""
    moment = now or datetime.now(UTC)
    columns, printer = PRINTERS.get(plural, DEFAULT)
    rows = []
    for obj in objects:
        cells, conditions = printer(obj, moment)
        row: Obj = {"cells": cells}
        if conditions:
            row["conditions"] = conditions
        shown = row_object(obj, include)
        if shown is not None:
            row["object"] = shown
        rows.append(row)
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}


def wants_table(accept: str | None) -> str | None:
    """The Table version (``v1``, ``v1beta1``) the Accept header asks for first, or
    None for plain JSON. Raises NotAcceptable when only other Table versions are asked."""
    refused = False
    for part in (accept or "").split(","):
        media, *raw_params = [p.strip() for p in part.split(";")]
        params = dict(p.split("=", 1) for p in raw_params if "=" in p)
        if params.get("as") == "Table":
            if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
                return params["v"]
            refused = True
            continue
        if "as" in params:
            continue  # PartialObjectMetadata and others: not served, try the next
        if media in ("application/json", "*/*", "application/*", ""):
            return None
    if refused:
        raise NotAcceptable(accept)
    return None
