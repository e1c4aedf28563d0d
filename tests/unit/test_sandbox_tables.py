"""The sandbox's Table cells against the rules of the real printers and of
apimachinery's HumanDuration (values from duration_test.go and printers_test.go)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corednsprobe.sandbox import tables

NOW = datetime(2026, 1, 1, tzinfo=UTC)
Obj = dict[str, Any]


@pytest.mark.parametrize(("seconds", "text"), [
    (-2, "<invalid>"), (-1, "0s"), (0, "0s"), (1, "1s"), (119, "119s"), (120, "2m"),
    (190, "3m10s"), (600, "10m"), (3 * 3600 - 1, "179m"), (3 * 3600, "3h"),
    (4 * 3600 + 30 * 60, "4h30m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (3 * 86400 + 2 * 3600, "3d2h"), (8 * 86400, "8d"), (800 * 86400, "2y70d"),
    (3 * 365 * 86400, "3y"), (9 * 365 * 86400, "9y"),
])
def test_human_duration(seconds: int, text: str) -> None:
    assert tables.human_duration(seconds) == text


def pod(statuses: list[Obj], phase: str = "Running", deleting: bool = False,
        created: timedelta = timedelta(minutes=5)) -> Obj:
    meta: Obj = {"name": "p", "creationTimestamp": (NOW - created).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if deleting:
        meta["deletionTimestamp"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": meta, "spec": {"containers": [{"name": c["name"]} for c in statuses]},
            "status": {"phase": phase, "containerStatuses": statuses}}


def cells(obj: Obj) -> list[Any]:
    row = tables.table("pods", [obj], "1", now=NOW)["rows"][0]
    result: list[Any] = row["cells"]
    return result


def test_pod_status_follows_the_container_states() -> None:
    running = {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}}
    waiting = {"name": "b", "ready": False, "restartCount": 0,
               "state": {"waiting": {"reason": "ImagePullBackOff"}}}
    assert cells(pod([running]))[:5] == ["p", "1/1", "Running", "0", "5m"]
    assert cells(pod([running, waiting], "Pending"))[1:3] == ["1/2", "ImagePullBackOff"]
    done = {"name": "a", "ready": False, "restartCount": 0,
            "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    assert cells(pod([done], "Succeeded"))[2] == "Completed"
    killed = {"name": "a", "ready": False, "restartCount": 0,
              "state": {"terminated": {"exitCode": 3}}}
    assert cells(pod([killed], "Failed"))[2] == "ExitCode:3"
    assert cells(pod([running], deleting=True))[2] == "Terminating"
    assert cells(pod([done], "Succeeded", deleting=True))[2] == "Completed"


def test_restarts_say_when() -> None:
    again = {"name": "a", "ready": True, "restartCount": 2, "state": {"running": {}},
             "lastState": {"terminated": {"finishedAt": (NOW - timedelta(minutes=5)).strftime(
                 "%Y-%m-%dT%H:%M:%SZ")}}}
    assert cells(pod([again]))[3] == "2 (5m ago)"


def test_finished_pods_carry_the_completed_row_condition() -> None:
    done = {"name": "a", "ready": False, "state": {"terminated": {"reason": "Error",
                                                                  "exitCode": 1}}}
    row = tables.table("pods", [pod([done], "Failed")], "1", now=NOW)["rows"][0]
    assert row["conditions"] == [{"type": "Completed", "status": "True", "reason": "Failed",
                                  "message": "The pod failed."}]


def test_service_ports_and_external_ip() -> None:
    svc = {"metadata": {"name": "s"}, "spec": {
        "type": "LoadBalancer", "clusterIPs": ["10.96.0.9"],
        "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}]},
        "status": {"loadBalancer": {}}}
    row = tables.table("services", [svc], "1", now=NOW)["rows"][0]["cells"]
    assert row[1:5] == ["LoadBalancer", "10.96.0.9", "<pending>", "53:30053/UDP"]
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}]}}
    row = tables.table("services", [svc], "1", now=NOW)["rows"][0]["cells"]
    assert row[3] == "198.51.100.10"


def test_endpoint_slice_lists_three_and_counts_the_rest() -> None:
    piece = {"metadata": {"name": "s"}, "addressType": "IPv4",
             "ports": [{"port": 53}], "endpoints": [{"addresses": [f"10.0.0.{i}"]}
                                                    for i in range(5)]}
    row = tables.table("endpointslices", [piece], "1", now=NOW)["rows"][0]["cells"]
    assert row[2:4] == ["53", "10.0.0.0,10.0.0.1,10.0.0.2 + 2 more..."]
    empty = {"metadata": {"name": "s"}, "addressType": "IPv4"}
    assert tables.table("endpointslices", [empty], "1", now=NOW)["rows"][0]["cells"][2:4] == [
        "<unset>", "<unset>"]


def test_accept_header() -> None:
    assert tables.wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,"
                              "application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
                              "application/json") == "v1"
    assert tables.wants_table("application/json") is None
    assert tables.wants_table(None) is None
    with pytest.raises(tables.NotAcceptable):
        tables.wants_table("application/json;as=Table;v=v9;g=meta.k8s.io")
