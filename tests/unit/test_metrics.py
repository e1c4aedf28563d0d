"""Metrics: names and labels as documented, departed targets' series removed, promtool-clean."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from corednsprobe.metrics import Metrics, rtt_buckets
from corednsprobe.model import (
    Diagnosis,
    DiagnosisState,
    Health,
    HealthState,
    IgnoredReply,
    Outcome,
    RoundReport,
)
from tests.unit.helpers import SERVICE, pod, result, targetset

EXPECTED = {
    "corednsprobe_probes", "corednsprobe_probe_rtt_seconds", "corednsprobe_target_healthy",
    "corednsprobe_target_failure_ratio", "corednsprobe_udp_only_failures",
    "corednsprobe_diagnosis", "corednsprobe_restart_candidates", "corednsprobe_rounds",
    "corednsprobe_round_overruns", "corednsprobe_round_duration_seconds", "corednsprobe_targets",
    "corednsprobe_watch_restarts", "corednsprobe_watch_last_event_age_seconds",
    "corednsprobe_build_info", "corednsprobe_remediations", "corednsprobe_remediation_blocked",
    "corednsprobe_leader", "corednsprobe_last_remediation_timestamp_seconds",
    "corednsprobe_gave_up", "corednsprobe_replies_ignored",
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
    assert sample[("corednsprobe_gave_up", ())] == 0.0


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


def test_ignored_replies_are_counted_by_bounded_reason() -> None:
    m = Metrics(1.0)
    zero = {labels["reason"]: v for _, labels, v in families(m)["corednsprobe_replies_ignored"]}
    assert zero == {reason.value: 0.0 for reason in IgnoredReply}  # every series from the start
    m.reply_ignored(IgnoredReply.OTHER_QUESTION)
    m.reply_ignored(IgnoredReply.OTHER_QUESTION)
    got = {labels["reason"]: v for _, labels, v in families(m)["corednsprobe_replies_ignored"]}
    assert got[IgnoredReply.OTHER_QUESTION.value] == 2.0
    assert sum(got.values()) == 2.0
