"""The probe-pod reach's pure parts: the agent's spec and lines, the pod it makes, and
the Role of deploy/extras against what it asks SelfSubjectAccessReview for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from corednsprobe.model import Outcome, PodRef, ProbeResult, Target, TargetKind
from corednsprobe.probe.checks import Checks
from corednsprobe.reach.agentlines import (
    LineError,
    Lookup,
    UnknownJob,
    parse_spec,
    result_line,
    spec_text,
)
from corednsprobe.reach.probepod import agent_pod, label_value, permissions

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = frozenset({"10.96.0.1"})


def _jobs() -> list[tuple[Target, Any]]:
    checks = Checks("cluster.local", "kube-system", "example.org")
    pod = Target(TargetKind.POD, "10.244.0.5", 53, PodRef("coredns-a", uid="u-1"))
    v6 = Target(TargetKind.POD, "fd00::5", 5353, PodRef("coredns-b", uid="u-2"))
    service = Target(TargetKind.SERVICE, "10.96.0.10", 53)
    return [(t, checks.for_target(t, EXPECTED)) for t in (pod, v6, service)]


def test_the_spec_reads_back_as_the_same_targets_and_checks() -> None:
    jobs = _jobs()
    spec = parse_spec(spec_text(jobs, interval=2.0, timeout=0.5, duration=3540,
                                max_in_flight=64, domain="cluster.local",
                                namespace="kube-system"))
    assert (spec.interval, spec.timeout, spec.duration, spec.max_in_flight) == (2.0, 0.5, 3540,
                                                                                 64)
    assert [t.key for t in spec.targets.targets] == [t.key for t, _ in jobs]
    for target, checks in jobs:
        assert spec.checks[target.key] == checks  # names, qnames, expectations, search…
    assert {c.name for c in spec.checks[jobs[2][0].key]} >= {"app_view", "external"}
    assert spec.jobs == sum(len(c) for _, c in jobs)


def test_a_result_line_reads_back_into_our_own_target_and_check() -> None:
    jobs = _jobs()
    target, checks = jobs[1]
    sent = ProbeResult(target, checks[0], Outcome.TIMEOUT, rcode=None, rtt_seconds=None,
                       udp_only=True, at=1764539000.25, qname="kubernetes.default.svc.",
                       detail="no acceptable reply in 0.5s; tcp ok in 1.0 ms",
                       flags=("qr",), records=("a b c",))
    line = result_line(sent)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b" " not in line.split(b'"')[0]
    got = Lookup(jobs).read(line)
    assert got is not None
    assert got.target is target and got.check is checks[0]
    assert (got.outcome, got.udp_only, got.at, got.detail, got.flags, got.records, got.reach) \
        == (Outcome.TIMEOUT, True, 1764539000.25, sent.detail, ("qr",), ("a b c",), "probe-pod")


@pytest.mark.parametrize("line", [b"", b"hello world", b"[1,2]", b'{"v":2}',
                                  b'{"v":1,"kind":"pod"}',
                                  b'{"v":1,"kind":"pod","address":"10.244.0.5","port":53,'
                                  b'"uid":"u-1","check":"kubernetes","outcome":"sick"}',
                                  b"Traceback (most recent call last):"])
def test_a_malformed_line_is_a_line_error(line: bytes) -> None:
    with pytest.raises(LineError):
        Lookup(_jobs()).read(line)


def test_a_line_of_a_target_no_longer_probed_is_unknown_not_malformed() -> None:
    jobs = _jobs()
    line = result_line(ProbeResult(jobs[0][0], jobs[0][1][0], Outcome.OK))
    with pytest.raises(UnknownJob):
        Lookup(jobs[1:]).read(line)
    hello = json.dumps({"v": 1, "hello": "corednsprobe agent 1.0", "targets": 3, "jobs": 9})
    assert Lookup(jobs).read(hello) is None


def test_the_agent_pod_is_least_privilege_with_a_bounded_life() -> None:
    pod = agent_pod("kube-system", "registry.example/corednsprobe:1.2", '{"v":1}',
                    owner="laptop", instance="abcd1234", lifetime=3600, targets=4)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["labels"] == {"app.kubernetes.io/name": "corednsprobe",
                              "app.kubernetes.io/component": "probe-agent",
                              "corednsprobe.io/owner": "laptop",
                              "corednsprobe.io/instance": "abcd1234"}
    assert meta["namespace"] == "kube-system" and meta["generateName"] == "corednsprobe-agent-"
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 3600
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    (container,) = spec["containers"]
    assert container["image"] == "registry.example/corednsprobe:1.2"
    assert container["args"] == ["agent", '{"v":1}'] and "command" not in container
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_label_values_are_valid() -> None:
    assert label_value("ip-10-0-0-1.eu-west-1.compute.internal") == \
        "ip-10-0-0-1.eu-west-1.compute.internal"
    assert label_value("my laptop (home)") == "my-laptop--home"
    assert len(label_value("x" * 80)) == 63
    assert label_value("...") == "unknown"


def test_the_extras_role_grants_exactly_what_probe_pod_asks_for() -> None:
    yaml = pytest.importorskip("yaml")
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/extras/probe-pod-rbac.yaml")
                                           .read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    namespace = role["metadata"]["namespace"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    assert all(not rule.get("resourceNames") for rule in role["rules"])
    asked = {(p.group, f"{p.resource}/{p.subresource}" if p.subresource else p.resource, p.verb)
             for p in permissions(namespace)}
    assert granted == asked
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["metadata"]["namespace"] == namespace


def test_a_probe_the_reach_did_not_carry_is_never_judged() -> None:
    from corednsprobe.judge.tracker import Thresholds, Tracker
    from corednsprobe.model import HealthState

    target, checks = _jobs()[0]
    tracker = Tracker(Thresholds(window=30.0, failure_ratio=0.5, min_samples=3,
                                 recovery_successes=3, min_pod_age=0.0))
    for i in range(20):
        tracker.record(ProbeResult(target, checks[0], Outcome.TUNNEL, at=100.0 + i),
                       100.0 + i)
    (health,) = tracker.evaluate([target], 120.0).values()
    assert (health.state, health.samples, health.failures) == (HealthState.UNKNOWN, 0, 0)
    for i in range(5):
        tracker.record(ProbeResult(target, checks[0], Outcome.TIMEOUT, at=121.0 + i), 121.0 + i)
    (health,) = tracker.evaluate([target], 126.0).values()
    assert (health.state, health.samples, health.failures) == (HealthState.UNHEALTHY, 5, 5)


async def test_a_malformed_log_line_is_counted_and_skipped_and_the_next_result_served() -> None:
    import asyncio

    from corednsprobe.config import Settings
    from corednsprobe.model import ClusterState, TargetSet
    from corednsprobe.reach.probepod import ProbePodReach, _Agent

    jobs = _jobs()
    reach = ProbePodReach(None, Settings.from_env({"COREDNSPROBE_INTERVAL": "0.5",
                                                   "COREDNSPROBE_TIMEOUT": "0.2"}))
    reach.plan(TargetSet(tuple(t for t, _ in jobs[:2]), (jobs[2][0],), EXPECTED,
                         ClusterState.OK, 1))
    agent = _Agent("corednsprobe-agent-x", asyncio.get_running_loop().time(), (), 1e9)
    target, checks = jobs[0]
    got: list[ProbeResult] = []
    reach.start(target, checks[0], None, got.append)
    for junk in (b"Traceback (most recent call last):\n", b'{"v":1,"kind":\n', b"\n"):
        reach._take(agent, junk)
    assert got == [] and reach.counts["malformed_lines"] == 3 and agent.malformed == 3
    reach._take(agent, result_line(ProbeResult(target, checks[0], Outcome.OK, qname="q.")))
    assert [(r.target, r.check, r.outcome, r.reach) for r in got] == \
        [(target, checks[0], Outcome.OK, "probe-pod")]
    assert agent.first_result is not None and reach.startup_last is not None
    # a line that arrives before its probe is kept for it, and taken once
    reach._take(agent, result_line(ProbeResult(target, checks[1], Outcome.NXDOMAIN)))
    reach.start(target, checks[1], None, got.append)
    assert got[-1].check == checks[1] and reach.counts["answered_at_once"] == 1
    reach.start(target, checks[1], None, got.append)
    assert len(got) == 2  # nothing more yet: it waits for the next line
    await asyncio.sleep(reach.wait + 0.2)  # … and is answered, as not carried, after its wait
    assert len(got) == 3
    assert got[-1].outcome is Outcome.TUNNEL and "no result from the probe pod" in got[-1].detail
    assert reach.counts["no_result"] == 1
