"""Metrics: names and labels as documented, departed targets' series removed, promtool-clean."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corednsprobe.metrics import (
    ACTION_RESULTS,
    BLOCK_REASONS,
    REMEDIATION_MODES,
    Metrics,
    rtt_buckets,
)
from corednsprobe.model import (
    Diagnosis,
    DiagnosisState,
    EndpointOutcome,
    EndpointState,
    Health,
    HealthEndpoint,
    HealthState,
    IgnoredReply,
    Outcome,
    RoundReport,
    Target,
)
from corednsprobe.remedy.history import Mode, Result
from corednsprobe.remedy.policy import Blocked
from tests.unit.helpers import SERVICE, pod, result, targetset

EXPECTED = {
    "corednsprobe_probes", "corednsprobe_probe_rtt_seconds", "corednsprobe_target_healthy",
    "corednsprobe_target_failure_ratio", "corednsprobe_udp_only_failures",
    "corednsprobe_diagnosis", "corednsprobe_restart_candidates", "corednsprobe_rounds",
    "corednsprobe_round_overruns", "corednsprobe_round_duration_seconds", "corednsprobe_targets",
    "corednsprobe_watch_restarts", "corednsprobe_watch_last_event_age_seconds",
    "corednsprobe_build_info", "corednsprobe_remediations", "corednsprobe_remediation_blocked",
    "corednsprobe_leader", "corednsprobe_last_remediation_timestamp_seconds",
    "corednsprobe_gave_up", "corednsprobe_replies_ignored", "corednsprobe_probe_success",
    "corednsprobe_target_health", "corednsprobe_target_unhealthy_transitions",
    "corednsprobe_remediation_mode", "corednsprobe_health_endpoint_ok",
}


def families(m: Metrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        out[fam.name] = [(s.name, s.labels, s.value) for s in fam.samples]
    return out


def populated() -> Metrics:
    m = Metrics(1.0, last_event_at=lambda: 90.0, now=lambda: 100.0)
    p1, p2 = pod(1), pod(2)
    m.set_targets(targetset(p1, p2))
    m.observe(result(p1, Outcome.OK, 1.0))
    m.observe(result(p2, Outcome.TIMEOUT, 1.0, udp_only=True))
    m.observe(result(SERVICE, Outcome.OK, 1.0))
    m.reply_ignored(IgnoredReply.OTHER_ID)
    m.watch_restarted("endpointslices", "expired")
    m.set_health({p1.key: Health(p1, HealthState.HEALTHY, samples=5),
                  p2.key: Health(p2, HealthState.UNHEALTHY, samples=5, failures=5),
                  SERVICE.key: Health(SERVICE, HealthState.GRACE)})
    m.set_diagnosis(Diagnosis(DiagnosisState.POD, "one sick", (p2,)))
    m.round_done(RoundReport(0, 0.0, 1.5, 3, 0, True))
    m.remediation_attempted("evict", "pdb_blocked", None)
    m.remediation_attempted("evict", "done", 1_700_000_000.0)
    m.remediation_blocked_by("cooldown")
    m.leader.set(1)
    m.set_remediation_mode("evict")
    m.set_gave_up(("Deployment/coredns",), present=("Deployment/coredns",))
    live, ready = HealthEndpoint("liveness", "/health", 8080), HealthEndpoint("readiness", "/ready",
                                                                             8181)
    m.set_health_endpoints({p2.key: (EndpointState(live, EndpointOutcome.OK, 200),
                                     EndpointState(ready, EndpointOutcome.STATUS, 503))})
    return m


def test_every_documented_metric_is_exposed() -> None:
    fams = families(populated())
    assert set(fams) >= EXPECTED
    sample = {(n, tuple(sorted(lbl.items()))): v for n, s in fams.items() for _, lbl, v in s}
    probes = fams["corednsprobe_probes"]
    assert ("corednsprobe_probes_total",
            {"target_kind": "pod", "pod": "coredns-2", "check": "cluster_ip",
             "outcome": "timeout"}, 1.0) in probes
    assert sample[("corednsprobe_diagnosis", (("state", "pod"),))] == 1.0
    assert sample[("corednsprobe_diagnosis", (("state", "healthy"),))] == 0.0
    assert sample[("corednsprobe_restart_candidates", ())] == 1.0
    assert sample[("corednsprobe_watch_last_event_age_seconds", ())] == 10.0
    healthy = {lbl["pod"]: v for _, lbl, v in fams["corednsprobe_target_healthy"]}
    assert healthy == {"coredns-1": 1.0, "coredns-2": 0.0, "service": -1.0}
    assert fams["corednsprobe_round_overruns"][0][2] == 1.0
    assert sample[("corednsprobe_remediations",
                   (("action", "evict"), ("result", "done")))] == 1.0
    assert sample[("corednsprobe_remediation_blocked", (("reason", "cooldown"),))] == 1.0
    assert sample[("corednsprobe_last_remediation_timestamp_seconds", ())] == 1_700_000_000.0
    assert sample[("corednsprobe_leader", ())] == 1.0
    assert "corednsprobe_gave_up" in fams  # one series per workload: see below


def test_no_ip_address_appears_as_a_label_value() -> None:
    text = populated().render().decode()
    assert "10.244.0." not in text and "10.96.0.10" not in text


def test_departed_pod_series_are_removed() -> None:
    m = populated()
    m.set_targets(targetset(pod(1)))
    text = m.render().decode()
    assert 'pod="coredns-2"' not in text
    assert 'pod="coredns-1"' in text


def test_rtt_buckets_end_at_the_timeout() -> None:
    assert rtt_buckets(1.0)[0] == 0.0001
    assert rtt_buckets(1.0)[-1] == 1.0
    assert rtt_buckets(0.3)[-2:] == [0.25, 0.3]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_promtool_accepts_the_exposition() -> None:
    proc = subprocess.run(["promtool", "check", "metrics"], input=populated().render(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_rtt_histogram_counts_answered_probes_only() -> None:
    m = Metrics(1.0)
    p1 = pod(1)
    m.set_targets(targetset(p1))
    m.observe(result(p1, Outcome.OK, 1.0))
    m.observe(result(p1, Outcome.UNREACHABLE, 2.0))  # an ICMP error in 0.4 ms: no answer
    m.observe(result(p1, Outcome.SERVFAIL, 3.0))  # an answer, though a failing one
    count = [v for n, _, v in families(m)["corednsprobe_probe_rtt_seconds"]
             if n == "corednsprobe_probe_rtt_seconds_count"]
    assert count == [2.0]


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_rtt_and_last_success_are_per_pod_and_leave_with_it() -> None:
    m = populated()
    rtt = "corednsprobe_probe_rtt_seconds_count"
    assert value(m, rtt, target_kind="pod", pod="coredns-1", check="cluster_ip") == 1.0
    assert value(m, rtt, target_kind="service", pod="service", check="cluster_ip") == 1.0
    ok = "corednsprobe_probe_success"
    assert value(m, ok, target_kind="pod", pod="coredns-1", check="cluster_ip") == 1.0
    assert value(m, ok, target_kind="pod", pod="coredns-2", check="cluster_ip") == 0.0
    m.observe(result(pod(2), Outcome.OK, 2.0))  # the latest probe decides, not the window
    assert value(m, ok, target_kind="pod", pod="coredns-2", check="cluster_ip") == 1.0
    m.set_targets(targetset(pod(1)))
    assert value(m, ok, target_kind="pod", pod="coredns-2", check="cluster_ip") is None
    assert value(m, rtt, target_kind="pod", pod="coredns-2", check="cluster_ip") is None
    assert value(m, rtt, target_kind="pod", pod="coredns-1", check="cluster_ip") == 1.0


def test_not_judged_is_a_state_of_its_own() -> None:
    m = populated()
    health = {(lbl["pod"], lbl["state"]): v
              for _, lbl, v in families(m)["corednsprobe_target_health"] if v == 1.0}
    assert health == {("coredns-1", "healthy"): 1.0, ("coredns-2", "unhealthy"): 1.0,
                      ("service", "grace"): 1.0}
    states = {lbl["state"] for _, lbl, _ in families(m)["corednsprobe_target_health"]
              if lbl["pod"] == "service"}
    assert states == {s.value for s in HealthState}
    m.set_targets(targetset(pod(1)))
    assert 'corednsprobe_target_health{node="node-2"' not in m.render().decode()


def test_a_node_learned_late_leaves_one_series_per_state() -> None:
    m = Metrics(1.0)
    bare = Target(pod(1).kind, pod(1).address, 53, dataclasses.replace(pod(1).pod, node=""))
    m.set_health({bare.key: Health(bare, HealthState.UNKNOWN)})
    m.set_health({pod(1).key: Health(pod(1), HealthState.HEALTHY, samples=5)})
    nodes = {lbl["node"] for _, lbl, _ in families(m)["corednsprobe_target_health"]}
    assert nodes == {"node-1"}


def test_turning_unhealthy_is_counted_and_outlives_the_pod() -> None:
    m = Metrics(1.0)
    p1 = pod(1)
    m.set_targets(targetset(p1))
    name = "corednsprobe_target_unhealthy_transitions_total"
    assert value(m, name, target_kind="pod") == 0.0  # present before the first, for increase()
    sick = {p1.key: Health(p1, HealthState.UNHEALTHY, samples=5, failures=5)}
    for _ in range(3):  # unhealthy for three rounds: one transition
        m.set_health(sick)
    assert value(m, name, target_kind="pod") == 1.0
    m.set_health({p1.key: Health(p1, HealthState.HEALTHY, samples=5)})
    m.set_health(sick)
    assert value(m, name, target_kind="pod") == 2.0
    m.set_targets(targetset())  # evicted and gone within the round: the count stays
    assert value(m, name, target_kind="pod") == 2.0
    assert value(m, "corednsprobe_target_health", target_kind="pod", pod="coredns-1",
                 node="node-1", state="unhealthy") is None


def test_gave_up_names_the_workload() -> None:
    m = Metrics(1.0)
    w1 = dataclasses.replace(pod(1), pod=dataclasses.replace(pod(1).pod,
                                                             workload="Deployment/coredns"))
    m.set_targets(targetset(w1))
    assert value(m, "corednsprobe_gave_up", workload="Deployment/coredns") == 0.0
    m.set_gave_up(("Deployment/coredns",))
    assert value(m, "corednsprobe_gave_up", workload="Deployment/coredns") == 1.0
    m.set_targets(targetset())  # its pods gone, still escalated: still shown
    assert value(m, "corednsprobe_gave_up", workload="Deployment/coredns") == 1.0
    m.set_gave_up(())  # lifted, and its pods gone: no series
    assert value(m, "corednsprobe_gave_up", workload="Deployment/coredns") is None
    m.set_gave_up(("Deployment/coredns",), present=("Deployment/coredns",))
    m.set_gave_up((), present=("Deployment/coredns",))  # lifted while its pods run: 0
    assert value(m, "corednsprobe_gave_up", workload="Deployment/coredns") == 0.0


def test_counters_alerts_increase_start_at_zero() -> None:
    m = Metrics(1.0)
    m.set_remediation_mode("evict")
    m.set_targets(targetset(pod(1)))
    assert value(m, "corednsprobe_udp_only_failures_total", pod="coredns-1") == 0.0
    for reason in BLOCK_REASONS:
        assert value(m, "corednsprobe_remediation_blocked_total", reason=reason) == 0.0
    for res in ACTION_RESULTS:
        assert value(m, "corednsprobe_remediations_total", action="evict", result=res) == 0.0
    assert value(m, "corednsprobe_remediations_total", action="delete", result="done") is None
    assert value(m, "corednsprobe_remediation_mode", mode="evict") == 1.0
    assert value(m, "corednsprobe_remediation_mode", mode="off") == 0.0


def test_label_value_lists_match_the_remediation() -> None:
    assert set(REMEDIATION_MODES) == {m.value for m in Mode}
    assert set(ACTION_RESULTS) == {r.value for r in Result} - {"started", "dry_run"}
    assert set(BLOCK_REASONS) == ({b.value for b in Blocked} - {"not_leader"}) | {
        "internal_error"}


def test_ignored_replies_are_counted_by_bounded_reason() -> None:
    m = Metrics(1.0)
    zero = {labels["reason"]: v for _, labels, v in families(m)["corednsprobe_replies_ignored"]}
    assert zero == {reason.value: 0.0 for reason in IgnoredReply}  # every series from the start
    m.reply_ignored(IgnoredReply.OTHER_QUESTION)
    m.reply_ignored(IgnoredReply.OTHER_QUESTION)
    got = {labels["reason"]: v for _, labels, v in families(m)["corednsprobe_replies_ignored"]}
    assert got[IgnoredReply.OTHER_QUESTION.value] == 2.0
    assert sum(got.values()) == 2.0


def test_health_gauges_follow_every_round_and_a_target_that_comes_back() -> None:
    m = Metrics(1.0)
    p1 = pod(1)
    labels = {"target_kind": "pod", "pod": "coredns-1"}

    def shown() -> tuple[list[str], float | None, float | None]:
        on = [s.value for s in HealthState
              if value(m, "corednsprobe_target_health", node="node-1", state=s.value,
                       **labels) == 1.0]
        return (on, value(m, "corednsprobe_target_healthy", node="node-1", **labels),
                value(m, "corednsprobe_target_failure_ratio", **labels))

    m.set_targets(targetset(p1))
    m.observe(result(p1, Outcome.OK, 0.5))
    rounds = [(HealthState.HEALTHY, 0), (HealthState.HEALTHY, 1), (HealthState.UNHEALTHY, 5),
              (HealthState.UNHEALTHY, 4), (HealthState.HEALTHY, 0)]
    for state, failures in rounds:
        m.set_health({p1.key: Health(p1, state, samples=5, failures=failures)})
        assert shown() == ([state.value], 1.0 if state is HealthState.HEALTHY else 0.0,
                           failures / 5)
    m.set_targets(targetset())
    assert shown() == ([], None, None)
    m.set_targets(targetset(p1))  # back, e.g. the same pod seen again after a relist
    m.set_health({p1.key: Health(p1, HealthState.HEALTHY, samples=5)})
    assert shown() == (["healthy"], 1.0, 0.0)
    m.observe(result(p1, Outcome.TIMEOUT, 1.0))
    assert value(m, "corednsprobe_probe_success", check="cluster_ip", **labels) == 0.0
    m.observe(result(p1, Outcome.OK, 2.0))
    assert value(m, "corednsprobe_probe_success", check="cluster_ip", **labels) == 1.0
    assert value(m, "corednsprobe_probe_rtt_seconds_count", check="cluster_ip", **labels) == 1.0
