"""The sandbox's Node objects, shaped as a kubeadm cluster's kubelets register them.

Owns: the names of the sandbox's nodes (``sandbox-node-a`` …), the Node body
for each (the well-known labels ``kubernetes.io/hostname``, ``…/os`` and
``…/arch``, the control-plane role on the first, ``status.addresses`` with the
InternalIP the DNS backend hands out and the Hostname, the four conditions the
kubelet's status setters write, ``nodeInfo``, capacity), and the default node
count of each DNS backend. Never does: I/O, or decide where a pod runs (the
sandbox's scheduler in the controllers does).
"""

from __future__ import annotations

import hashlib
import string
import uuid
from typing import Any

Obj = dict[str, Any]

KUBELET_VERSION = "v1.32.0"
CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"
# pkg/kubelet/nodestatus/setters.go: (type, status, reason, message) of a healthy node.
HEALTHY_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory",
     "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)
MAX_NODES = 26


def default_node_count(backend: str) -> int:
    """One node for the in-process backend (its pods share one loopback), three
    for the others."""
    return 1 if backend == "inprocess" else 3


def node_name(index: int) -> str:
    return f"sandbox-node-{string.ascii_lowercase[index]}"


def node_body(index: int, internal_ip: str, now: str) -> Obj:
    name = node_name(index)
    labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
              "kubernetes.io/os": "linux"}
    if index == 0:
        labels[CONTROL_PLANE_ROLE] = ""
    digest = hashlib.sha256(name.encode()).hexdigest()
    resources = {"cpu": "2", "ephemeral-storage": "102626232Ki", "hugepages-1Gi": "0",
                 "hugepages-2Mi": "0", "memory": "24567012Ki", "pods": "110"}
    # No control-plane taint: the sandbox schedules onto every node, as kind does.
    spec: Obj = {}
    return {
        "metadata": {
            "name": name, "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources), "allocatable": dict(resources),
            "conditions": [{"type": kind, "status": value, "lastHeartbeatTime": now,
                            "lastTransitionTime": now, "reason": reason, "message": message}
                           for kind, value, reason, message in HEALTHY_CONDITIONS],
            "addresses": [{"type": "InternalIP", "address": internal_ip},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": digest[:32], "systemUUID": str(uuid.UUID(digest[32:64])),
                "bootID": str(uuid.UUID(digest[:32])), "kernelVersion": "6.1.0-sandbox",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    }
