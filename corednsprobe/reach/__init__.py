"""How the probes reach the DNS pods from where the service stands.

Owns: the four strategies of reaching CoreDNS (direct, exposed, probe-pod,
port-forward), choosing one automatically, and telling what each can and cannot
see. It is where probe/ (the DNS exchange) and kube/ (the API) meet.
Never does: judge a target or restart a pod.
"""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    """A way of reaching the pods, in the order ``auto`` tries them."""

    DIRECT = "direct"  # UDP to every pod IP and the ClusterIP, from a routed pod network
    EXPOSED = "exposed"  # a NodePort/LoadBalancer Service of the DNS pods
    PROBE_POD = "probe-pod"  # an agent pod in the cluster does the probing
    PORT_FORWARD = "port-forward"  # DNS over TCP through the API server's pods/portforward
