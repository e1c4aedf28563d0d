"""The kubelet's view beside ours: each pod's health endpoints read from its spec, asked
over real HTTP on 127.0.0.1, and said by name beside the DNS evidence and in the metric."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from corednsprobe.judge.diagnose import Policy, diagnose
from corednsprobe.kube.view import health_endpoints_of, targetset_from
from corednsprobe.metrics import Metrics
from corednsprobe.model import (
    DiagnosisState,
    EndpointOutcome,
    EndpointState,
    Health,
    HealthEndpoint,
    HealthState,
    TargetKey,
)
from corednsprobe.probe.health import HealthRounds, get
from tests.unit.helpers import pod, targetset

Obj = dict[str, Any]

COREDNS = {
    "name": "coredns",
    "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
              {"containerPort": 8080, "name": "liveness-probe", "protocol": "TCP"},
              {"containerPort": 8181, "name": "readiness-probe", "protocol": "TCP"}],
    "livenessProbe": {"httpGet": {"path": "/health", "port": "liveness-probe",
                                  "scheme": "HTTP"}},
    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
}
LIVE = HealthEndpoint("liveness", "/health", 8080, "HTTP", "", "coredns")
READY = HealthEndpoint("readiness", "/ready", 8181, "HTTP", "", "coredns")


def pod_obj(*containers: Obj, name: str = "coredns-a", rv: str = "1") -> Obj:
    return {"metadata": {"name": name, "namespace": "kube-system", "uid": f"uid-{name}",
                         "resourceVersion": rv},
            "spec": {"nodeName": "node-1", "containers": list(containers)}}


class Skips:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, kind: str, obj: Obj, exc: Exception) -> None:
        self.seen.append((kind, str(exc)))


# ---------------------------------------------------------------- the spec


def test_named_port_is_resolved_through_the_containers_ports() -> None:
    skips = Skips()
    assert health_endpoints_of(pod_obj(COREDNS), skips) == (LIVE, READY)
    assert skips.seen == []
    assert LIVE.label == ":8080/health"


def test_path_defaults_to_slash_scheme_to_http_and_https_is_kept() -> None:
    container = {"name": "c", "livenessProbe": {"httpGet": {"port": 9000}},
                 "readinessProbe": {"httpGet": {"port": "9001", "scheme": "https",
                                                "path": "/r"}}}
    assert health_endpoints_of(pod_obj(container)) == (
        HealthEndpoint("liveness", "/", 9000, "HTTP", "", "c"),
        HealthEndpoint("readiness", "/r", 9001, "HTTPS", "", "c"))


def test_probes_that_are_not_http_have_no_endpoint_and_are_not_malformed() -> None:
    skips = Skips()
    container = {"name": "c", "livenessProbe": {"tcpSocket": {"port": 8080}},
                 "readinessProbe": {"exec": {"command": ["true"]}}}
    assert health_endpoints_of(pod_obj(container), skips) == ()
    assert skips.seen == []


def test_a_malformed_probe_is_left_out_and_counted_the_other_kept() -> None:
    for bad in ({"port": "nosuchport", "path": "/health"}, {"port": 70000}, {"path": "/x"},
                {"port": 8080, "scheme": "GOPHER"}, {"port": 8080, "path": "no-slash"},
                {"port": 8080, "host": "not-an-ip"}, "a string", {"port": True}):
        container = copy.deepcopy(COREDNS)
        container["livenessProbe"]["httpGet"] = bad
        skips = Skips()
        assert health_endpoints_of(pod_obj(container), skips) == (READY,), bad
        assert [kind for kind, _ in skips.seen] == ["Pod"], bad


def test_the_view_puts_the_endpoints_on_the_podref_and_survives_a_malformed_spec() -> None:
    good = pod_obj(COREDNS, name="coredns-a")
    broken = copy.deepcopy(COREDNS)
    broken["livenessProbe"] = {"httpGet": {"port": "nope"}}
    bad = pod_obj(broken, name="coredns-b")
    slice_ = {"metadata": {"name": "kube-dns-x", "namespace": "kube-system"},
              "addressType": "IPv4",
              "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
              "endpoints": [
                  {"addresses": ["10.244.0.1"], "conditions": {"ready": True},
                   "targetRef": {"kind": "Pod", "name": "coredns-a", "namespace": "kube-system"}},
                  {"addresses": ["10.244.0.2"], "conditions": {"ready": True},
                   "targetRef": {"kind": "Pod", "name": "coredns-b", "namespace": "kube-system"}},
              ]}
    objs = {"service": {"s": {"metadata": {"name": "kube-dns"},
                              "spec": {"clusterIP": "10.96.0.10", "ports": []}}},
            "kubernetes": {}, "endpointslices": {"x": slice_},
            "pods": {"kube-system/coredns-a": good, "kube-system/coredns-b": bad}}
    skips = Skips()
    ts = targetset_from(objs, namespace="kube-system", legacy=False, generation=1, skip=skips)
    by_name = {t.name: t.pod for t in ts.pods}
    assert by_name["coredns-a"] is not None and by_name["coredns-b"] is not None
    assert by_name["coredns-a"].health_endpoints == (LIVE, READY)
    assert by_name["coredns-b"].health_endpoints == (READY,)  # the pod stays a target
    assert [kind for kind, _ in skips.seen] == ["Pod"]


# ---------------------------------------------------------------- the evidence


def _sick_and_well(states: tuple[EndpointState, ...]) -> tuple[str, dict[str, str], str]:
    sick, well = pod(1), pod(2)
    sick = dataclasses.replace(sick, pod=dataclasses.replace(sick.pod, health_endpoints=(LIVE,
                                                                                         READY)))
    ts = targetset(sick, well, service=False)
    healths: dict[TargetKey, Health] = {
        sick.key: Health(sick, HealthState.UNHEALTHY, samples=10, failures=10, udp_only=10,
                         outcomes=(("timeout", 10),)),
        well.key: Health(well, HealthState.HEALTHY, samples=10, outcomes=(("ok", 10),)),
    }
    d = diagnose(ts, healths, Policy(), {sick.key: states})
    assert d.state is DiagnosisState.POD
    assert d.evidence is not None
    return sick.name, d.evidence.as_dict(), d.kubelet_view_of(sick.name)


def test_health_ok_while_udp_fails_is_said_by_name() -> None:
    name, evidence, clause = _sick_and_well((EndpointState(LIVE, EndpointOutcome.OK, 200),
                                             EndpointState(READY, EndpointOutcome.OK, 200)))
    assert evidence[f"pod/{name}/health_endpoint"] == (
        "/health ok, /ready ok — kubelet sees healthy while DNS over UDP fails (coredns#3617)")
    assert clause == evidence[f"pod/{name}/health_endpoint"]
    assert evidence[f"pod/{name}"] == "10/10 failed, udp_only=10, timeout=10"


def test_health_endpoint_down_beside_dead_udp_says_the_kubelet_sees_it_too() -> None:
    name, evidence, _ = _sick_and_well((
        EndpointState(LIVE, EndpointOutcome.TIMEOUT, None),
        EndpointState(READY, EndpointOutcome.OK, 200)))
    said = evidence[f"pod/{name}/health_endpoint"]
    assert said.startswith("/health timeout, /ready ok — the kubelet's liveness probe fails")
    assert "will likely restart it" in said and "3617" not in said


def test_a_failing_readiness_endpoint_alone_says_the_service_drops_it() -> None:
    name, evidence, _ = _sick_and_well((EndpointState(LIVE, EndpointOutcome.OK, 200),
                                        EndpointState(READY, EndpointOutcome.STATUS, 503)))
    said = evidence[f"pod/{name}/health_endpoint"]
    assert said.startswith("/health ok, /ready 503 — the kubelet's readiness probe fails")


def test_no_endpoint_states_no_key_and_the_verdict_is_unchanged() -> None:
    sick, well = pod(1), pod(2)
    ts = targetset(sick, well, service=False)
    healths: dict[TargetKey, Health] = {
        sick.key: Health(sick, HealthState.UNHEALTHY, samples=10, failures=10),
        well.key: Health(well, HealthState.HEALTHY, samples=10)}
    plain = diagnose(ts, healths, Policy())
    assert plain.evidence is not None
    assert not any(k.endswith("/health_endpoint") for k in plain.evidence.as_dict())
    assert plain.kubelet_view_of(sick.name) == ""
    with_ok = diagnose(ts, healths, Policy(),
                       {sick.key: (EndpointState(LIVE, EndpointOutcome.OK, 200),)})
    assert (with_ok.state, with_ok.candidates) == (plain.state, plain.candidates)


# ---------------------------------------------------------------- the metric


def test_the_metric_mirrors_each_endpoint_and_leaves_with_the_pod() -> None:
    m = Metrics(1.0)
    p1, p2 = pod(1), pod(2)
    m.set_targets(targetset(p1, p2))
    m.set_health_endpoints({p1.key: (EndpointState(LIVE, EndpointOutcome.OK, 200),
                                     EndpointState(READY, EndpointOutcome.TIMEOUT))})

    def value(pod_name: str, endpoint: str) -> float | None:
        return m.registry.get_sample_value("corednsprobe_health_endpoint_ok",
                                           {"pod": pod_name, "endpoint": endpoint})

    assert (value("coredns-1", ":8080/health"), value("coredns-1", ":8181/ready")) == (1.0, 0.0)
    m.set_health_endpoints({p1.key: (EndpointState(LIVE, EndpointOutcome.REFUSED),)})
    assert (value("coredns-1", ":8080/health"), value("coredns-1", ":8181/ready")) == (0.0, None)
    m.set_targets(targetset(p2))
    assert value("coredns-1", ":8080/health") is None
    m.set_health_endpoints({p1.key: (EndpointState(LIVE, EndpointOutcome.OK, 200),)})
    assert value("coredns-1", ":8080/health") is None  # a late answer revives nothing


# ---------------------------------------------------------------- the checker


@contextlib.asynccontextmanager
async def http_server(reply: bytes | None) -> AsyncIterator[int]:
    """A server on 127.0.0.1 that reads the request head and sends ``reply`` (None: never
    answers); the requests it read are kept in ``asked``."""
    asked.clear()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        if reply is None:
            await asyncio.sleep(30)
        else:
            writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


asked: list[bytes] = []


def ep(port: int, path: str = "/health") -> HealthEndpoint:
    return HealthEndpoint("liveness", path, port)


async def test_get_reports_ok_a_status_a_timeout_a_refusal_and_garbage_as_values() -> None:
    async with http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK") as port:
        state = await get(ep(port), "127.0.0.1", 1.0)
        assert (state.outcome, state.status, state.ok) == (EndpointOutcome.OK, 200, True)
        assert asked[0].startswith(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:")
    async with http_server(b"HTTP/1.1 302 Found\r\n\r\n") as port:  # the kubelet: success
        assert (await get(ep(port), "127.0.0.1", 1.0)).ok
    async with http_server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n") as port:
        state = await get(ep(port, "/ready"), "127.0.0.1", 1.0)
        assert (state.outcome, state.status, state.said) == (EndpointOutcome.STATUS, 503,
                                                             "/ready 503")
    async with http_server(None) as port:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        state = await get(ep(port), "127.0.0.1", 0.2)
        assert state.outcome is EndpointOutcome.TIMEOUT and loop.time() - t0 < 1.0
    async with http_server(b"SSH-2.0-OpenSSH\r\n") as port:
        assert (await get(ep(port), "127.0.0.1", 1.0)).outcome is EndpointOutcome.ERROR
    async with http_server(b"") as port:
        closed = port
    assert (await get(ep(closed), "127.0.0.1", 1.0)).outcome is EndpointOutcome.REFUSED


async def test_a_round_asks_every_endpoint_of_every_pod_concurrently() -> None:
    async with http_server(None) as slow, http_server(b"HTTP/1.1 200 OK\r\n\r\n") as fast:
        targets = []
        for n, port in ((1, slow), (2, fast)):
            t = pod(n)
            ref = dataclasses.replace(t.pod, health_endpoints=(ep(port), ep(port, "/ready")))
            targets.append(dataclasses.replace(t, address="127.0.0.1", pod=ref))
        ts = targetset(*targets)

        class View:
            current = ts

        rounds = HealthRounds(View(), lambda _s: None, interval=1.0, timeout=0.3,
                              max_in_flight=8)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        states = await rounds.run_round()
        took = loop.time() - t0
    assert took < 0.6  # four GETs, two of them timing out at 0.3 s: side by side
    assert [s.outcome for s in states[targets[0].key]] == [EndpointOutcome.TIMEOUT] * 2
    assert [s.outcome for s in states[targets[1].key]] == [EndpointOutcome.OK] * 2


async def test_a_healthy_pod_is_asked_once_a_period_a_sick_one_every_round() -> None:
    """The kubelet asks every periodSeconds (10 by default); a pod whose DNS is judged
    healthy is asked as often, one whose DNS is unhealthy every round (its evidence)."""
    async with http_server(b"HTTP/1.1 200 OK\r\n\r\n") as port:
        targets = []
        for n in (1, 2):
            t = pod(n)
            ref = dataclasses.replace(t.pod, health_endpoints=(ep(port),))
            targets.append(dataclasses.replace(t, address="127.0.0.1", pod=ref))
        sick, well = targets
        ts = targetset(*targets)

        class View:
            current = ts

        rounds = HealthRounds(View(), lambda _s: None, interval=0.1, timeout=0.3,
                              max_in_flight=8, urgent=lambda key: key == sick.key, period=5.0)
        asked = []
        for _ in range(6):
            asked.append(set(await rounds.run_round()))
            await asyncio.sleep(0.1)
        assert all(sick.key in a for a in asked)
        assert [well.key in a for a in asked] == [True] + [False] * 5
        rounds._asked[well.key] -= 5.0  # a period later
        assert well.key in await rounds.run_round()
