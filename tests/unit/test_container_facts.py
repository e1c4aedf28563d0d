"""The facts of a pod's containers that an escalation carries, read from the pod object."""

from __future__ import annotations

from corednsprobe.kube.view import containers_of
from corednsprobe.model import ContainerFacts


def test_restarts_last_termination_and_resources_are_read() -> None:
    pod = {"spec": {"containers": [{"name": "coredns", "resources": {
        "requests": {"memory": "70Mi", "cpu": "100m"}, "limits": {"memory": "170Mi"}}}]},
        "status": {"containerStatuses": [{"name": "coredns", "restartCount": 3, "lastState": {
            "terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}}
    [c] = containers_of(pod)
    assert c == ContainerFacts("coredns", 3, "OOMKilled", 137,
                               (("cpu", "100m"), ("memory", "70Mi")), (("memory", "170Mi"),))
    assert c.describe() == ("coredns: 3 restarts, last OOMKilled (exit 137), limits "
                            "memory=170Mi, requests cpu=100m memory=70Mi")


def test_a_pod_without_status_or_resources_says_so_and_a_malformed_one_is_skipped() -> None:
    [c] = containers_of({"spec": {"containers": [{"name": "coredns"}]}})
    assert c.describe() == "coredns: 0 restarts, limits none, requests none"
    assert containers_of({"spec": {"containers": [{"name": "x", "resources": "x"}]}}) == ()
    assert containers_of({"status": {"containerStatuses": "garbage"}}) == ()
