"""The Grafana dashboard: well formed, covering what an operator looks for, naming only
metrics corednsprobe exposes. (That every query parses and returns data from a real
Prometheus is tests/e2e/test_prometheus.py.)"""

from __future__ import annotations

from corednsprobe.metrics import Metrics
from corednsprobe.model import Diagnosis, DiagnosisState, Health, HealthState, Outcome
from tests.monitoring import kit
from tests.unit.helpers import SERVICE, pod, result, targetset


def exposed() -> set[str]:
    m = Metrics(1.0, last_event_at=lambda: 1.0, now=lambda: 2.0)
    p1 = pod(1)
    m.set_remediation_mode("evict")
    m.set_targets(targetset(p1))
    m.observe(result(p1, Outcome.OK, 1.0))
    m.set_health({p1.key: Health(p1, HealthState.HEALTHY, samples=5),
                  SERVICE.key: Health(SERVICE, HealthState.HEALTHY, samples=5)})
    m.set_diagnosis(Diagnosis(DiagnosisState.HEALTHY, "fine"))
    m.set_gave_up((), present=("Deployment/coredns",))
    return kit.metric_names(m.render().decode())


def test_every_metric_the_dashboard_names_is_exposed() -> None:
    named = kit.metric_names(kit.DASHBOARD.read_text())
    assert named, "no metric found in the dashboard"
    assert named <= exposed(), named - exposed()
    assert "corednsprobe_target_healthy" not in named  # the deprecated gauge is not used


def test_the_dashboard_shows_what_the_operator_looks_for() -> None:
    d = kit.dashboard()
    panels = [p for p in d["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["title"] and p["description"] and p["targets"] for p in panels)
    names = kit.metric_names(kit.DASHBOARD.read_text())
    for needed in ("corednsprobe_target_health", "corednsprobe_probe_rtt_seconds_bucket",
                   "corednsprobe_probes_total", "corednsprobe_udp_only_failures_total",
                   "corednsprobe_diagnosis", "corednsprobe_remediations_total",
                   "corednsprobe_remediation_blocked_total", "corednsprobe_gave_up",
                   "corednsprobe_watch_last_event_age_seconds", "corednsprobe_probe_success"):
        assert needed in names, needed
    rtt = [q for t, q in kit.dashboard_queries() if "rtt" in q]
    assert rtt and all("by (le, pod)" in q for q in rtt)  # RTT per pod
    variables = {v["name"] for v in d["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}
    for _, query in kit.dashboard_queries():
        assert "$" not in query, query  # every variable is one the tests can fill


def test_diagnosis_over_time_names_every_diagnosis_state() -> None:
    panel = next(p for p in kit.dashboard()["panels"] if p["title"] == "Diagnosis over time")
    mapped = {o["text"] for m in panel["fieldConfig"]["defaults"]["mappings"]
              for o in m["options"].values()}
    query = panel["targets"][0]["expr"]
    for state in DiagnosisState:
        assert state.value in mapped and f'state="{state.value}"' in query, state
